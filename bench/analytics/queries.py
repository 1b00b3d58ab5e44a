"""Analytics query benchmark: p50/p99 of `GET /v1/analytics/summary` and
`GET /v1/analytics/rules/{id}` for a store with 1,000,000 execution logs and 100,000 orders.

    DATABASE_URL=... .venv/bin/python bench/analytics/queries.py [--logs 1000000] [--orders 100000] [--requests 100]

Creates a throw-away database on the server of DATABASE_URL (migrated, dropped at the end)
and bulk-loads one store with COPY, over the 90 days up to today:
- 50 rules of three steps (send_email, create_admin_task, send_email), 5 with a 10% holdout;
- `--logs` execution logs (80% succeeded, then skipped, failed, held_out);
- a `messages` row per sent email; a person's open for 25% of them, a click for 6%;
- `--orders` orders (`customer_orders`), 30% of them credited to a message
  (`message_conversions`, a tenth partly refunded); 40,000 exposures per holdout rule;
- then the counts the roles keep as they write (daily executions, first opens and clicks,
  each exposure's orders) computed from those rows by `wooflow.api.funnel.rebuild`.
Then runs `wooflow api` in its own process and times `--requests` sequential requests of
each kind through HTTP (what a dashboard sees): the summary over 30 and 90 days, a holdout
rule's report and a plain rule's report over 30 and 90 days.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from bench.analytics.tracking import api_process, scratch_database  # noqa: E402

STORE = "bench"
RULES = 50
HOLDOUT_RULES = range(1, 6)
STEPS = ("send_email", "create_admin_task", "send_email")
DAYS = 90


def copy(conn: Any, table: str, columns: str, rows: Any) -> int:
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)
            n += 1
    return n


def load(db: str, logs: int, orders: int) -> dict[str, float]:
    """The data set; → seconds each part took."""
    import psycopg

    from wooflow.api.funnel import rebuild
    from wooflow.db.engine import get_engine

    rng = random.Random(18)
    end = datetime.combine(date.today(), datetime.min.time(), timezone.utc) + timedelta(hours=23)
    start = end - timedelta(days=DAYS)
    span = (end - start).total_seconds()
    took: dict[str, float] = {}
    with psycopg.connect(db.replace("postgresql+psycopg", "postgresql")) as conn:
        conn.execute("INSERT INTO stores (id, url, webhook_secret, currency) VALUES (%s, 'https://shop.example', "
                     "'x', 'PLN')", (STORE,))
        for r in range(1, RULES + 1):
            conn.execute("INSERT INTO rules (id, store_id, name, trigger, actions, holdout_percent) "
                         "VALUES (%s, %s, %s, 'new_order', '[]', %s)",
                         (r, STORE, f"rule {r}", 10.0 if r in HOLDOUT_RULES else 0.0))
        t0 = time.perf_counter()
        sent: list[tuple[str, int, int, str, datetime]] = []

        def log_rows() -> Any:
            statuses = ["succeeded"] * 16 + ["skipped"] * 2 + ["failed", "held_out"]
            for i in range(logs):
                rule, step = 1 + i % RULES, i // RULES % 3
                at = start + timedelta(seconds=rng.random() * span)
                status = rng.choice(statuses)
                ckey = f"c{rng.randrange(200_000)}"
                key = f"k{i:010d}"
                if status == "succeeded" and STEPS[step] == "send_email":
                    sent.append((key, rule, step, ckey, at))
                yield (f"{key}:1", key, STORE, ckey, rule, f"e{i}", step, STEPS[step], status, "", 1, 3.5, False,
                       "{}", at)

        copy(conn, "execution_logs", "log_id, idempotency_key, store_id, customer_key, rule_id, event_id, step, "
             "action_type, status, message, attempt, duration_ms, dry_run, details, executed_at", log_rows())
        took["execution_logs"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        copy(conn, "messages", "message_id, store_id, rule_id, step, customer_key, event_id, sent_at",
             ((k, STORE, r, p, c, "e", at) for k, r, p, c, at in sent))

        def hits() -> Any:
            for k, r, p, c, at in sent:
                x = rng.random()
                if x < 0.25:
                    yield (k, "open", -1, False, STORE, r, p, c, at + timedelta(hours=rng.random() * 48))
                if x < 0.06:
                    yield (k, "click", rng.randrange(3), False, STORE, r, p, c, at + timedelta(hours=rng.random() * 48))

        copy(conn, "engagements", "message_id, kind, link, machine, store_id, rule_id, step, customer_key, at", hits())
        took["messages_engagements"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        credited: list[tuple[Any, ...]] = []

        def order_rows() -> Any:
            for o in range(orders):
                k, r, p, c, at = sent[rng.randrange(len(sent))]
                ordered = at + timedelta(hours=1 + rng.random() * 100)
                total = Decimal(rng.randrange(1000, 40000)) / 100
                refunded = (total / 4).quantize(Decimal("0.01")) if o % 10 == 0 else Decimal(0)
                if o % 10 < 3:
                    credited.append((STORE, o, k, r, p, c, "click", at, ordered, "PLN", total, refunded, False,
                                     ordered))
                yield (STORE, c, o, ordered, "PLN", total, refunded, False, ordered)

        copy(conn, "customer_orders", "store_id, customer_key, order_id, ordered_at, currency, revenue, refunded, "
             "voided, order_modified", order_rows())
        copy(conn, "message_conversions", "store_id, order_id, message_id, rule_id, step, customer_key, touch, "
             "touched_at, ordered_at, currency, revenue, refunded, voided, order_modified", credited)
        copy(conn, "holdout_exposures", "rule_id, customer_key, store_id, held_out, event_id, exposed_at",
             ((r, f"c{c}", STORE, rng.random() < 0.1, "e", start + timedelta(seconds=rng.random() * span))
              for r in HOLDOUT_RULES for c in rng.sample(range(200_000), 40_000)))
        took["orders_conversions_exposures"] = time.perf_counter() - t0
        conn.commit()
    t0 = time.perf_counter()
    with get_engine(db).begin() as c:  # the counts the roles keep as they go, from the rows loaded around them
        rebuild(c, STORE)
    took["rebuild_counts"] = time.perf_counter() - t0
    with psycopg.connect(db.replace("postgresql+psycopg", "postgresql")) as conn:
        t0 = time.perf_counter()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        took["vacuum_analyze"] = time.perf_counter() - t0
    return took


def timed(client: httpx.Client, path: str, params: dict[str, str], n: int) -> dict[str, float]:
    client.get(path, params=params).raise_for_status()  # warm: plans, caches
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        times.append(time.perf_counter() - t0)
        r.raise_for_status()
    times.sort()
    return {"p50_ms": round(statistics.median(times) * 1000, 1),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))] * 1000, 1),
            "max_ms": round(times[-1] * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", type=int, default=1_000_000)
    ap.add_argument("--orders", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        raise SystemExit("set DATABASE_URL (a PostgreSQL server this benchmark may create a database on)")
    from wooflow.api.auth import create_token
    from wooflow.db.engine import get_engine

    with scratch_database(db_url, "bench_analytics") as db:
        took = load(db, args.logs, args.orders)
        token = create_token(get_engine(db), STORE, "bench")
        today = date.today()
        month = {"since": (today - timedelta(days=29)).isoformat(), "until": today.isoformat()}
        quarter = {"since": (today - timedelta(days=DAYS)).isoformat(), "until": today.isoformat()}
        results: dict[str, Any] = {"load_s": {k: round(v, 1) for k, v in took.items()}}
        with api_process(db, Path(f"/tmp/bench-analytics-{os.getpid()}.log")) as (base, _), \
                httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for name, path, params in (
                    ("summary_30d", "/v1/analytics/summary", month),
                    ("summary_90d", "/v1/analytics/summary", quarter),
                    ("rule_holdout_30d", "/v1/analytics/rules/1", month),
                    ("rule_holdout_90d", "/v1/analytics/rules/1", quarter),
                    ("rule_plain_30d", "/v1/analytics/rules/17", month),
                    ("rule_plain_90d", "/v1/analytics/rules/17", quarter)):
                results[name] = timed(client, path, params, args.requests)
            sample = client.get("/v1/analytics/summary", params=quarter).json()
        results["summary_90d_totals"] = sample["totals"]
        results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
