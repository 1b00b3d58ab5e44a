"""Benchmark: due steps emitted per second by ONE scheduler process (`wooflow scheduler`),
and lateness (due → emitted), with 100,000 pending steps, on the real broker and database.

Scenarios
  drain    100,000 steps already due (a backlog, e.g. after an outage): steps/s from the
           first to the last emission.
  steady   100,000 pending steps falling due at a fixed rate (default 5,000/s, over 20 s):
           lateness = emitted_at − due_at per step, p50 / p99 / max. `emitted_at` is taken
           after Kafka acknowledged the batch (acks=all), i.e. when the command is durable.

Each step is a real ActionCommand (~1 KB JSON in `scheduled_steps.command`), produced to
automation.commands (Avro, 12 partitions) after its rule's goals and exit conditions are
checked.

Workloads (`--workload`)
  branched (default) a workflow with a yes/no branch and goals: the rule has goals
           `ordered` + `tag_added` and an `unsubscribed` exit (every batch pays for the
           calendar, customer-state and consent queries); one seeded row in five is the
           branch (a condition on the customer's tags, half of them VIPs), which the
           scheduler decides and which stores the side's email step, due at once and
           emitted in a later round — 120,000 rows leave `pending` for 100,000 commands;
  plain    the linear workflow of earlier runs: `ordered` + `unsubscribed` exits, every row
           an email step.
 The scheduler runs with its production defaults (batch 2000, poll 0.1 s) as a
separate process started with `--no-scan --no-activity`; CPU (user+system) and peak RSS of
that process are sampled.

Needs Kafka and PostgreSQL: `eval "$(.venv/bin/wooflow dev up)"` (or export
KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL), then

    .venv/bin/python bench/scheduler/bench_scheduler.py --runs 3
    .venv/bin/python bench/scheduler/bench_scheduler.py --only steady --rate 8000 --runs 3
    .venv/bin/python bench/scheduler/bench_scheduler.py --history 1000000   # a table holding 1M finished steps

Rows that interrupted runs left behind are deleted and the table vacuumed before the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text

from wooflow.consumer.commands import WORKFLOW_BRANCH, build_command
from wooflow.db.engine import get_engine
from wooflow.db.migrate import upgrade
from wooflow.db.tables import rules
from wooflow.kafka.admin import create_topics
from wooflow.settings import Settings
from wooflow.stores import Store, upsert_store

ROOT = Path(__file__).resolve().parents[2]
N = 100_000
LEAD_S = 30  # steady: the first step falls due this long after seeding starts (seeding takes ~15 s)

_INSERT = text("""
INSERT INTO scheduled_steps (idempotency_key, store_id, customer_key, rule_id, event_id, step, due_at, command,
                             rule_version)
SELECT k, :store, c, :rule, e, st, d, CAST(j AS jsonb), 1
FROM unnest(CAST(:keys AS text[]), CAST(:customers AS text[]), CAST(:events AS text[]), CAST(:steps AS int[]),
            CAST(:dues AS timestamptz[]), CAST(:cmds AS text[])) AS t(k, c, e, st, d, j)
""")

_VIPS = text("""
INSERT INTO customer_state (store_id, customer_key, tags)
SELECT :store, k, ARRAY['vip'] FROM unnest(CAST(:keys AS text[])) AS k
""")

EMAIL = {"type": "send_email", "params": {"subject": "Tips for your purchase",
                                          "html": "<p>Hi {{ customer.first_name }}</p>", "marketing": True}}
RULES = {
    "plain": {"trigger": "first_purchase", "actions": [{**EMAIL, "delay": "day 3"}],
              "exit_conditions": [{"type": "ordered"}, {"type": "unsubscribed"}]},
    "branched": {"trigger": "first_purchase", "actions": [
        {**EMAIL, "delay": "day 3"},
        {"type": "branch", "delay": "day 3", "condition": {"type": "condition", "conditions": {
            "match": "all", "conditions": [{"field": "tags", "operator": "contains", "value": "vip"}]}},
         "yes": {"steps": [EMAIL]}, "no": {"steps": [EMAIL]}}],
        "goals": [{"type": "ordered"}, {"type": "tag_added", "tag": "converted"}],
        "exit_conditions": [{"type": "unsubscribed"}]},
}
BRANCH_EVERY = 5  # branched: one row in five is the branch (step 1)


def seed(engine: Any, store_id: str, rule_id: int, dues: list[datetime], workload: str) -> None:
    """N pending steps, inserted in chunks (unnest: one round trip per 10,000 rows)."""
    from wooflow.consumer.commands import to_json

    now = datetime.now(timezone.utc)
    order = {"id": 1, "number": "1", "total": "49.90", "currency": "PLN", "status": "processing",
             "billing": {"email": "x@example.com", "first_name": "Ala", "last_name": "Nowak", "country": "PL"},
             "line_items": [{"product_id": 10, "quantity": 1, "name": "Mug", "total": "49.90"}]}
    chunk = 10_000
    for start in range(0, len(dues), chunk):
        keys, customers, events, steps, ds, cmds, vips = [], [], [], [], [], [], []
        for i in range(start, min(start + chunk, len(dues))):
            ev = {"event_id": f"bench-{store_id}-{i}", "store_id": store_id, "customer_key": f"c{i + 1}",
                  "order_id": i + 1, "order": order | {"id": i + 1}, "received_at": now, "topic": "order.created"}
            branch = workload == "branched" and i % BRANCH_EVERY == 0
            step = 1 if branch else 0
            cmd = build_command(rule_id=rule_id, rule_version=1, step=step,
                                action_type=WORKFLOW_BRANCH if branch else "send_email",
                                params={} if branch else EMAIL["params"],
                                delay_s=86400 * 3, schema="OrderEvent", event=ev, trigger="first_purchase", now=now)
            keys.append(cmd["idempotency_key"])
            customers.append(cmd["customer_key"])
            events.append(cmd["event_id"])
            steps.append(step)
            ds.append(dues[i])
            cmds.append(to_json(cmd | {"not_before": dues[i]}))
            if branch and i % (2 * BRANCH_EVERY) == 0:
                vips.append(cmd["customer_key"])
        with engine.begin() as conn:
            conn.execute(_INSERT, {"store": store_id, "rule": rule_id, "keys": keys, "customers": customers,
                                   "events": events, "steps": steps, "dues": ds, "cmds": cmds})
            if vips:
                conn.execute(_VIPS, {"store": store_id, "keys": vips})


_HISTORY = text("""
INSERT INTO scheduled_steps (idempotency_key, store_id, customer_key, rule_id, event_id, step, due_at, command,
                             rule_version, status, emitted_at)
SELECT 'history-' || :store || '-' || g, :store, 'c' || g, :rule, 'history-' || g, 0, :at, CAST(:cmd AS jsonb), 1,
       'emitted', :at
FROM generate_series(:first, :last) AS g
""")


def forget(engine: Any, where: str, params: dict[str, Any] | None = None) -> None:
    """Delete the steps, customer state and rules of the stores `where` selects, then VACUUM:
    a run must not pay for another run's dead rows."""
    with engine.begin() as conn:
        for table in ("scheduled_steps", "customer_state", "rules"):
            conn.execute(text(f"DELETE FROM {table} WHERE {where}"), params or {})
    vacuum(engine)


def clean(engine: Any) -> None:
    """Remove what interrupted runs left behind (their stores' rows)."""
    forget(engine, "store_id LIKE 'bench-%' OR store_id LIKE 'history-%'")


def vacuum(engine: Any) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE scheduled_steps"))


def history(engine: Any, n: int) -> None:
    """`n` steps emitted a day ago (other customers' finished runs), as a store accumulates them:
    the claims, marks and exit checks then work against a table and indexes of that size."""
    from wooflow.consumer.commands import to_json

    store = Store(id=f"history-{uuid.uuid4().hex[:8]}", url="http://127.0.0.1:1", webhook_secret="x")
    upsert_store(engine, store)
    with engine.begin() as conn:
        rule_id = int(conn.execute(rules.insert().values(store_id=store.id, name="history", **RULES["plain"])
                                   .returning(rules.c.id)).scalar_one())
    at = datetime.now(timezone.utc) - timedelta(days=1)
    cmd = to_json(build_command(rule_id=rule_id, rule_version=1, step=0, action_type="send_email",
                                params=EMAIL["params"], delay_s=0, schema="OrderEvent", trigger="first_purchase",
                                now=at, event={"event_id": "history", "store_id": store.id, "customer_key": "c",
                                               "received_at": at, "topic": "order.created"}))
    for first in range(1, n + 1, 100_000):
        with engine.begin() as conn:
            conn.execute(_HISTORY, {"store": store.id, "rule": rule_id, "at": at, "cmd": cmd, "first": first,
                                    "last": min(n, first + 99_999)})
        print(f"# history: {min(n, first + 99_999):,} of {n:,} emitted rows", flush=True)
    vacuum(engine)


def start_scheduler(s: Settings, store_id: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOOFLOW_")}
    env.update({"WOOFLOW_SCHEDULER_THREADS": str(s.scheduler_threads), "WOOFLOW_SCHEDULER_BATCH_SIZE":
                str(s.scheduler_batch_size), "WOOFLOW_SCHEDULER_POLL_S": str(s.scheduler_poll_s)})
    env.update({"WOOFLOW_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers, "WOOFLOW_DATABASE_URL": s.database_url,
                "WOOFLOW_TOPIC_PREFIX": s.topic_prefix, "WOOFLOW_SCHEDULER_STORES": store_id,
                "WOOFLOW_LOG_LEVEL": "INFO"})
    return subprocess.Popen([sys.executable, "-m", "wooflow.cli", "scheduler", "--no-scan", "--no-activity"],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.rss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.rss = max(self.rss, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)


def pending(engine: Any, store_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM scheduled_steps WHERE store_id = :s AND status = 'pending'"),
                                {"s": store_id}).scalar_one())


def one_run(s: Settings, engine: Any, scenario: str, rate: float, log_dir: Path, workload: str) -> dict[str, float]:
    store = Store(id=f"bench-{uuid.uuid4().hex[:8]}", url="http://127.0.0.1:1", webhook_secret="x")
    upsert_store(engine, store)
    with engine.begin() as conn:
        rule_id = int(conn.execute(rules.insert().values(store_id=store.id, name="bench", **RULES[workload])
                                   .returning(rules.c.id)).scalar_one())
    now = datetime.now(timezone.utc)
    # drain: all due a minute ago; steady: due at `rate` per second from LEAD_S after now, written
    # once (an UPDATE of the due times would leave 100,000 dead rows for autovacuum during the run)
    start = now + (timedelta(seconds=-60) if scenario == "drain" else timedelta(seconds=LEAD_S))
    dues = [start + timedelta(microseconds=i if scenario == "drain" else i * 1e6 / rate) for i in range(N)]
    t_seed = time.perf_counter()
    seed(engine, store.id, rule_id, dues, workload)
    seeded = time.perf_counter() - t_seed
    vacuum(engine)
    log = log_dir / f"scheduler-{store.id}.log"
    proc = start_scheduler(s, store.id, log)
    sampler = Sampler(proc.pid)
    sampler.start()
    ok = False
    try:
        if scenario == "steady":
            deadline = time.monotonic() + 60
            while "running (clock" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"scheduler did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            if datetime.now(timezone.utc) > start:
                raise SystemExit(f"seeding and starting the scheduler took longer than the {LEAD_S} s lead")
        deadline = time.monotonic() + 600
        while pending(engine, store.id) and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"scheduler exited: {(log_dir / f'scheduler-{store.id}.log').read_text()[-2000:]}")
            time.sleep(0.5)
        cpu = sampler.cpu()
        ok = True
    finally:
        sampler.stop.set()
        proc.terminate()
        proc.wait(30)
        if not ok:  # leave no pending rows behind for the next run
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM scheduled_steps WHERE store_id = :s"), {"s": store.id})
    with engine.connect() as conn:
        # Every row that left `pending` (commands and decided branches) is a step, with its lateness
        # (emitted_at: after Kafka's ack for a command, the decision's commit for a branch); a branch's
        # side is due when the branch decides, so its lateness is also taken from the branch's due time.
        done = int(conn.execute(text("SELECT count(*) FROM scheduled_steps WHERE store_id = :s "
                                     "AND status <> 'pending'"), {"s": store.id}).scalar_one())
        row = conn.execute(text("""
            SELECT count(*) FILTER (WHERE status = 'emitted') AS n, min(emitted_at) AS first, max(emitted_at) AS last,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM emitted_at - due_at)) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM emitted_at - due_at)) AS p99,
                   max(extract(epoch FROM emitted_at - due_at)) AS worst
            FROM scheduled_steps WHERE store_id = :s AND status IN ('emitted', 'done')"""),
                           {"s": store.id}).mappings().one()
        # the branch rows first, hashed: a nested loop over the run index took minutes after the bulk seed
        side = conn.execute(text("""
            WITH b AS MATERIALIZED (SELECT event_id, due_at FROM scheduled_steps WHERE store_id = :s AND step = 1)
            SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM s.emitted_at - b.due_at))
            FROM scheduled_steps s JOIN b ON b.event_id = s.event_id
            WHERE s.store_id = :s AND s.step > 1 AND s.status = 'emitted'"""), {"s": store.id}).scalar_one()
    forget(engine, "store_id = :s", {"s": store.id})  # the next run must not pay for this one's rows
    span = (row["last"] - row["first"]).total_seconds()
    out = {"emitted": float(row["n"]), "steps": float(done), "seed_s": seeded, "cpu_us_per_step": cpu / done * 1e6,
           "rss_mb": sampler.rss / 2**20, "steps_per_s": done / span if span else float("inf"),
           "commands_per_s": row["n"] / span if span else float("inf")}
    if scenario == "steady":
        out.update({"p50_s": float(row["p50"]), "p99_s": float(row["p99"]), "max_s": float(row["worst"])})
        if side is not None:
            out["branch_side_p99_s"] = float(side)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=["drain", "steady"])
    ap.add_argument("--rate", type=float, default=5000.0, help="steady: steps falling due per second")
    ap.add_argument("--threads", type=int, help="emitter loops of the scheduler (default: the setting's default)")
    ap.add_argument("--workload", choices=sorted(RULES), default="branched")
    ap.add_argument("--history", type=int, default=0,
                    help="emitted rows of finished runs in the table before the runs (a store's history)")
    args = ap.parse_args()
    base = Settings()
    s = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}.", "topic_partitions": 12,
                                **({"scheduler_threads": args.threads} if args.threads else {})})
    upgrade(s.database_url)
    create_topics(s)
    engine = get_engine(s.database_url)
    clean(engine)
    if args.history:
        history(engine, args.history)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "wooflow-bench-scheduler"
    log_dir.mkdir(exist_ok=True)
    print(f"# scheduler benchmark ({args.workload}): {N:,} pending steps, {args.runs} runs, "
          f"{s.scheduler_threads} emitter loops, "
          f"batch {s.scheduler_batch_size}, poll {s.scheduler_poll_s}s, history {args.history:,} rows, "
          f"topic prefix {s.topic_prefix}")
    try:
        for scenario in ([args.only] if args.only else ["drain", "steady"]):
            results = []
            for i in range(args.runs):
                r = one_run(s, engine, scenario, args.rate, log_dir, args.workload)
                results.append(r)
                print(f"{scenario} run {i + 1}: " + ", ".join(f"{k}={v:,.3f}" for k, v in r.items()), flush=True)
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            print(f"{scenario} MEDIAN: " + json.dumps({k: round(v, 4) for k, v in med.items()}), flush=True)
    finally:
        clean(engine)

if __name__ == "__main__":
    main()
