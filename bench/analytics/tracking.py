"""Tracking benchmark: open/click hits per second of one API process, and p50/p99 time to
answer at a fixed rate.

    DATABASE_URL=... .venv/bin/python bench/analytics/tracking.py [--runs 3] [--duration 5] [--rates 1000]

Creates a throw-away database on the server of DATABASE_URL (migrated, dropped at the end),
one store, and runs `wooflow api` (uvicorn, uvloop + httptools) in its own process; the
load generator (loadgen.py) in another. Every hit is a distinct signed link (70% pixels,
30% clicks), answered only once its row is committed: the benchmark checks at the end that
the database holds exactly one row per answered hit. Reports medians over the runs, the
API process's CPU per hit and PostgreSQL's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from bench.bridge.run import free_port, service_procs, services_cpu, wait_ready  # noqa: E402


@contextmanager
def scratch_database(url: str, prefix: str) -> Iterator[str]:
    """A new database on the server of `url`, migrated; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from wooflow.db.engine import get_engine, normalise_url
    from wooflow.db.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(normalise_url(url)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    fresh = make_url(normalise_url(url)).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(fresh)
        yield fresh
    finally:
        get_engine(fresh).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def api_process(db: str, log: Path, **env: str) -> Iterator[tuple[str, psutil.Process]]:
    """`wooflow api` on a free port, ready; terminated afterwards."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WOOFLOW_")} | {
        "WOOFLOW_DATABASE_URL": db, "WOOFLOW_LOG_LEVEL": "WARNING", **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wooflow.cli", "api", "--host", "127.0.0.1", "--port",
                                 str(port)], env=environ, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 60, lambda: "api did not start: " + log.read_text()[-2000:], lambda: proc.poll() is not None)
        yield base, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)


def bare_run(key: str, args: argparse.Namespace, seed: str) -> dict[str, Any]:
    """The same closed-loop load on bare.py in its own uvicorn process."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.analytics.bare:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", "--no-access-log"], cwd=HERE.parents[1])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 30, lambda: "the bare app did not start", lambda: proc.poll() is not None)
        ps = psutil.Process(proc.pid)
        cpu0 = sum(ps.cpu_times()[:2])
        done = subprocess.run([sys.executable, str(HERE / "loadgen.py"), "--url", base, "--store", "bench",
                               "--key-hex", key, "--duration", str(args.duration), "--seed", seed,
                               "--connections", str(args.connections), "--mode", "max"],
                              capture_output=True, text=True, check=True)
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["cpu_us_per_hit"] = round((sum(ps.cpu_times()[:2]) - cpu0) / max(1, result["requests"]) * 1e6, 1)
        return result
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rates", default="1000")
    ap.add_argument("--compare-bare", action="store_true", help="after each closed-loop run, the same load on a bare "
                    "uvicorn app that records nothing (bare.py): the ratio of the two is what the box's load leaves "
                    "out")
    args = ap.parse_args()
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        raise SystemExit("set DATABASE_URL (a PostgreSQL server this benchmark may create a database on)")
    from sqlalchemy import text

    from wooflow import engagement
    from wooflow.db.engine import get_engine
    from wooflow.settings import Settings
    from wooflow.stores import Store, StoreCache, upsert_store

    with scratch_database(db_url, "bench_tracking") as db:
        engine = get_engine(db)
        upsert_store(engine, Store(id="bench", url="https://shop.example", webhook_secret="bench"))
        store = StoreCache(engine, ttl=0).get("bench")
        assert store is not None
        key = engagement.signing_key(Settings(), store.link_key).hex()
        svc = service_procs(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"), db)
        with api_process(db, Path(f"/tmp/bench-tracking-{os.getpid()}.log")) as (base, proc):
            def loadgen(*extra: str, seed: str) -> dict[str, Any]:
                cpu0, svc0 = sum(proc.cpu_times()[:2]), services_cpu(svc)
                done = subprocess.run([sys.executable, str(HERE / "loadgen.py"), "--url", base, "--store", "bench",
                                       "--key-hex", key, "--duration", str(args.duration), "--seed", seed,
                                       "--connections", str(args.connections), *extra],
                                      capture_output=True, text=True, check=True)
                result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
                result["loadgen_cpu_us_per_req"] = result.pop("cpu_us_per_req")
                n = max(1, result["requests"])
                result["api_cpu_us_per_hit"] = round((sum(proc.cpu_times()[:2]) - cpu0) / n * 1e6, 1)
                result["postgres_cpu_us_per_hit"] = round(
                    (services_cpu(svc)["postgres"] - svc0["postgres"]) / n * 1e6, 1)
                return result

            warm = loadgen("--mode", "max", seed="warm")
            results: dict[str, list[dict[str, Any]]] = {"max": [], "bare": [], **{r: [] for r in args.rates.split(",")}}
            for run in range(args.runs):
                results["max"].append(loadgen("--mode", "max", seed=f"m{run}"))
                if args.compare_bare:
                    results["bare"].append(bare_run(key, args, seed=f"b{run}"))
                for rate in args.rates.split(","):
                    results[rate].append(loadgen("--mode", "rate", "--rate", rate, seed=f"r{rate}-{run}"))
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM engagements")).scalar_one()

    def med(rows_: list[dict[str, Any]], k: str) -> float:
        return round(statistics.median(r[k] for r in rows_), 2)

    answered = warm["ok"] + sum(r["ok"] for k, rs in results.items() if k != "bare" for r in rs)
    summary: dict[str, Any] = {
        "hits_per_s": med(results["max"], "ok_per_s"), "hits_per_s_runs": [r["ok_per_s"] for r in results["max"]],
        "closed_loop_p50_ms": med(results["max"], "p50_ms"), "closed_loop_p99_ms": med(results["max"], "p99_ms"),
        "api_cpu_us_per_hit": med(results["max"], "api_cpu_us_per_hit"),
        "postgres_cpu_us_per_hit": med(results["max"], "postgres_cpu_us_per_hit"),
        "loadgen_cpu_us_per_hit": med(results["max"], "loadgen_cpu_us_per_req"),
        "non_2xx_3xx": sum(r["requests"] - r["ok"] for k, rs in results.items() if k != "bare" for r in rs),
        "answered_hits": answered, "rows_recorded": rows, "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    if results["bare"]:
        summary["bare_hits_per_s_runs"] = [r["ok_per_s"] for r in results["bare"]]
        summary["bare_cpu_us_per_hit"] = med(results["bare"], "cpu_us_per_hit")
        summary["tracking_to_bare_throughput_runs"] = [round(t["ok_per_s"] / b["ok_per_s"], 2)
                                                       for t, b in zip(results["max"], results["bare"], strict=True)]
    for rate in args.rates.split(","):
        summary[f"rate_{rate}"] = {"p50_ms": med(results[rate], "p50_ms"), "p99_ms": med(results[rate], "p99_ms"),
                                   "achieved_per_s": med(results[rate], "ok_per_s"),
                                   "p99_runs": [r["p99_ms"] for r in results[rate]]}
    print(json.dumps(summary, indent=2))
    if rows != answered:
        raise SystemExit(f"{answered} hits answered but {rows} rows recorded")


if __name__ == "__main__":
    main()
