"""Console benchmark: how fast the web console's first page shows for a big store.

    export DATABASE_URL=postgresql+psycopg://...   # a server where a database can be created
    .venv/bin/python bench/console/bench_console.py [--rules 1000] [--logs 1000000]

In a database of its own (created on DATABASE_URL's server, dropped at the end): one
store with `--rules` rules and `--logs` execution logs spread over 60 days
(bulk-loaded with COPY at the revision before the console's indexes; then `wooflow
migrate` builds them, timed), plus `--other-logs` of a second store. `wooflow api` runs as
its own process; Debian's Chromium (Playwright, `executable_path`) loads the console:

- first page, cold: a new browser context each sample (no HTTP cache), the tab's
  sessionStorage as sign-in leaves it (the store token, and who it is), `/#/rules` loaded
  until the rules table is drawn — the time is the console's `wooflow:ready:rules`
  performance mark, from the navigation's start (the page, then /v1/rules);
- the same with the HTTP cache warm (a reload), and the log explorer's first page;
- the API calls behind the pages with httpx: rules page, log pages (first, 20 pages deep
  by cursor, by status, by customer, by rule), the 30-day outcome summary.

p50/p95/max over `--samples` each. Target: the first page ≤ 300 ms at p95.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import free_port, fresh_database, ready, wait_for
from wooflow.api.auth import create_token
from wooflow.consumer.model import RuleSpec
from wooflow.db.engine import get_engine
from wooflow.db.migrate import upgrade
from wooflow.db.tables import rules
from wooflow.stores import Store, upsert_store

COLUMNS = ("log_id", "idempotency_key", "store_id", "customer_key", "rule_id", "event_id", "step", "action_type",
           "status", "message", "attempt", "duration_ms", "dry_run", "details", "executed_at")
# When each part of a page load had arrived, in ms from the navigation's start.
PHASES = """() => {
    const res = performance.getEntriesByType('resource');
    const end = (p) => res.filter(e => e.name.includes(p)).map(e => e.responseEnd)[0];
    return {html: performance.getEntriesByType('navigation')[0].responseEnd,
            api_start: res.filter(e => e.name.includes('/v1/')).map(e => e.startTime)[0], api_end: end('/v1/rules')};
}"""
STATUSES = ["succeeded"] * 90 + ["skipped"] * 6 + ["failed"] * 3 + ["dead_lettered"]


def add_rules(url: str, store_id: str, n: int) -> list[int]:
    triggers = ["new_order", "order_status_changed", "first_purchase", "repeat_purchase", "new_customer"]
    rows = []
    for i in range(n):
        spec = RuleSpec.model_validate({
            "name": f"Rule {i:04d}", "trigger": triggers[i % len(triggers)], "priority": i % 50,
            "group_label": f"group {i % 20}", "enabled": i % 7 != 0,
            "conditions": {"match": "all", "conditions": [
                {"field": "order_total", "operator": "gt", "value": str(10 + i % 300)},
                {"match": "any", "conditions": [{"field": "billing_country", "operator": "in", "value": ["PL", "DE"]},
                                                {"field": "tags", "operator": "contains", "value": "vip"}]}]},
            "actions": [{"type": "add_order_note", "params": {"note": f"rule {i}: {{{{ order.number }}}}"}},
                        {"type": "add_customer_tag", "params": {"tag": f"r{i}"}, "delay": "day 1"}]})
        rows.append({"store_id": store_id, **spec.model_dump(mode="json")})
    with get_engine(url).begin() as conn:
        # the logs go in at an older revision (see main): only the columns it has
        have = {c["name"] for c in inspect(conn).get_columns("rules")}
        rows = [{k: v for k, v in r.items() if k in have} for r in rows]
        return list(conn.execute(insert(rules).returning(rules.c.id), rows).scalars())


def copy_logs(url: str, store_id: str, rule_ids: list[int], n: int, seed: int) -> float:
    """COPY `n` execution logs of the store, spread over the last 60 days; returns seconds."""
    import psycopg

    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, \
            cur.copy(f"COPY execution_logs ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for i in range(n):
            key = f"{store_id}-{i:08d}"
            rule = rng.choice(rule_ids)
            status = rng.choice(STATUSES)
            copy.write_row((f"{key}:1", key, store_id, f"c{rng.randrange(50_000)}", rule, f"ev{i}", i % 2,
                            "add_order_note", status, f"note added to order {i}", 1, rng.random() * 40, False,
                            json.dumps({"order_id": str(i)}), now - timedelta(seconds=rng.randrange(60 * 86400))))
    return time.perf_counter() - started


def pcts(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1), "p95": round(p95, 1),
            "max": round(ordered[-1], 1)}


@contextmanager
def api_process(url: str) -> Iterator[str]:
    """`wooflow api` as its own process, as deployed."""
    port = free_port()
    wooflow = str(Path(sys.executable).with_name("wooflow"))
    proc = subprocess.Popen([wooflow, "api", "--host", "127.0.0.1", "--port", str(port)],
                            env={**os.environ, "DATABASE_URL": url})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(base, 1) or proc.poll() is not None, 60, 0.2, "wooflow api")
        if proc.poll() is not None:
            raise SystemExit("wooflow api exited")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def timed_http(client: httpx.Client, path: str, samples: int, params: Callable[[], dict[str, str]] | None = None
               ) -> dict[str, float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        r = client.get(path, params=params() if params else None)
        out.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
    return pcts(out)


def api_figures(base: str, token: str, samples: int) -> dict[str, dict[str, float]]:
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    cursor = None
    for _ in range(20):  # 20 pages of 50 deep
        cursor = client.get("/v1/logs", params={"limit": 50, **({"cursor": cursor} if cursor else {})}).json()[
            "next_cursor"]
    assert cursor is not None
    first = client.get("/v1/logs", params={"limit": 1}).json()["logs"][0]
    since = (datetime.now(timezone.utc) - timedelta(days=30)).isoformat()
    return {
        "GET /v1/rules (page of 50, with total)": timed_http(client, "/v1/rules", samples, lambda: {"limit": "50"}),
        "GET /v1/schema": timed_http(client, "/v1/schema", samples),
        "GET /v1/logs (first page of 50)": timed_http(client, "/v1/logs", samples, lambda: {"limit": "50"}),
        "GET /v1/logs (20 pages deep, cursor)": timed_http(client, "/v1/logs", samples,
                                                           lambda: {"limit": "50", "cursor": cursor}),
        "GET /v1/logs?status=failed": timed_http(client, "/v1/logs", samples,
                                                 lambda: {"limit": "50", "status": "failed"}),
        "GET /v1/logs?customer_key=…": timed_http(client, "/v1/logs", samples,
                                                  lambda: {"limit": "50", "customer_key": first["customer_key"]}),
        "GET /v1/logs?rule_id=…": timed_http(client, "/v1/logs", samples,
                                             lambda: {"limit": "50", "rule_id": str(first["rule_id"])}),
        "GET /v1/logs/summary (30 days)": timed_http(client, "/v1/logs/summary", max(5, samples // 5),
                                                     lambda: {"since": since}),
    }


def browser_figures(base: str, token: str, samples: int) -> dict[str, dict[str, float]]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium is missing: ./run setup as root installs Debian's chromium")
    me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    # the tab as sign-in leaves it: the token and who it is
    state = json.dumps(json.dumps({"token": token, "store": None, "me": me}))
    seed = f"sessionStorage.setItem('wooflow.console', {state});"

    def ready_ms(page: Any, name: str) -> float:
        marks = page.evaluate(f"performance.getEntriesByName('wooflow:ready:{name}').map(m => m.startTime)")
        return float(marks[-1])

    phases: dict[str, list[float]] = {}

    def record_phases(page: Any) -> None:
        """When the page and its API call had arrived (from navigation start)."""
        got = page.evaluate(PHASES)
        for k, v in got.items():
            phases.setdefault(k, []).append(float(v))

    out: dict[str, dict[str, float]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        for label, route, name, warm in (("first page (rules), cold cache", "#/rules", "rules", False),
                                         ("first page (rules), warm cache", "#/rules", "rules", True),
                                         ("log explorer, cold cache", "#/logs", "logs", False)):
            times = []
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            ctx.add_init_script(seed)
            page = ctx.new_page()
            for i in range(samples + 2):  # the first two of each series warm the API process up
                if not warm:
                    ctx.close()
                    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                    ctx.add_init_script(seed)
                    page = ctx.new_page()
                    page.goto(f"{base}/{route}")
                elif i == 0:
                    page.goto(f"{base}/{route}")
                else:
                    page.reload()
                page.wait_for_selector(f"main[data-ready='{name}']")
                if i >= 2:
                    times.append(ready_ms(page, name))
                    if name == "rules" and not warm:
                        record_phases(page)
            ctx.close()
            out[label] = pcts(times)
        browser.close()
    out["first page (rules), cold cache: p50 of when each part arrived"] = {
        k: round(statistics.median(v), 1) for k, v in phases.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--logs", type=int, default=1_000_000)
    ap.add_argument("--other-logs", type=int, default=100_000, help="Execution logs of another store")
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args()
    with fresh_database(os.environ["DATABASE_URL"], "wooflow_bench_console") as url:
        upgrade(url, "0013_catalog")  # the logs go in before the console's indexes exist
        engine = get_engine(url)
        store, other = (Store(id=f"bench-{x}", url="http://127.0.0.1:1", webhook_secret="s", name=f"Bench store {x}",
                              timezone="Europe/Warsaw", currency="PLN") for x in ("a", "b"))
        upsert_store(engine, store)
        upsert_store(engine, other)
        rule_ids = add_rules(url, store.id, args.rules)
        load_s = copy_logs(url, store.id, rule_ids, args.logs, 1)
        other_s = copy_logs(url, other.id, add_rules(url, other.id, 10), args.other_logs, 2)
        started = time.perf_counter()
        upgrade(url)
        index_s = time.perf_counter() - started
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        token = create_token(engine, store.id, "bench")
        report: dict[str, object] = {
            "rules": args.rules, "logs": args.logs, "other_store_logs": args.other_logs,
            "copy_s": round(load_s + other_s, 1), "migration_0014_s": round(index_s, 1)}
        with api_process(url) as base:
            browser = browser_figures(base, token, args.samples)
            report["browser_ms"] = browser
            report["api_ms"] = api_figures(base, token, args.samples)
        report["load_average"] = os.getloadavg()
        print(json.dumps(report, indent=2, ensure_ascii=False))
        first = browser["first page (rules), cold cache"]
        verdict = "meets" if first["p95"] <= 300 else "MISSES"
        print(f"first page p95 {first['p95']} ms: {verdict} the 300 ms target")


if __name__ == "__main__":
    main()
