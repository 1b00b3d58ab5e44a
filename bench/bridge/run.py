"""Bridge benchmark: signed webhooks/s per bridge process (acks=all), and p50/p99
time-to-2xx at fixed rates.

    .venv/bin/python bench/bridge/run.py [--runs 3] [--duration 5] [--rates 500,1000] [--connections 128]

Uses KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL when set, else starts the local broker and
PostgreSQL the way `wooflow dev up` does (in a throw-away state dir). The bridge runs as
`wooflow bridge` (uvicorn, uvloop + httptools) in its own process; the load generator
(loadgen.py) in another. Reports medians over the runs, and the bridge's peak RSS.

CPU per webhook is reported for the bridge (all threads, and its event-loop thread alone,
with how busy that thread was), for the broker and for PostgreSQL, and for the load generator:
all of them share the machine's cores. `--py-spy OUT` profiles the first closed-loop run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def services(tmp: Path) -> tuple[str, str, Path | None]:
    kafka, db = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("DATABASE_URL")
    if kafka and db:
        return kafka, db, None
    from wooflow.devinfra.launcher import up
    from wooflow.settings import Settings

    state = tmp / "devinfra"
    started = up(state, Settings().cache_dir, kafka=not kafka, postgres=not db)
    return kafka or started.kafka_bootstrap_servers or "", db or started.database_url or "", state


def wait_ready(base: str, timeout: float, failure: Callable[[], str], dead: Callable[[], bool] = lambda: False) -> None:
    """Until `base`/readyz answers 200; SystemExit with `failure()` after `timeout` or once
    `dead()` (a process it waits for stopped)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or dead():
            raise SystemExit(failure())
        time.sleep(0.2)


def release(s: Any, state: Path | None, tmp: Path) -> None:
    """After a benchmark: its topics deleted from a shared broker, or the services it started
    stopped; its temporary directory removed."""
    if s is not None and state is None:  # a shared broker: leave it no partitions behind
        from wooflow.kafka.admin import delete_topics_with_prefix

        delete_topics_with_prefix(s, s.topic_prefix)
    if state is not None:
        from wooflow.devinfra.launcher import down

        down(state)
    shutil.rmtree(tmp, ignore_errors=True)


def service_procs(kafka: str, db: str) -> dict[str, list[psutil.Process]]:
    """The broker and the PostgreSQL server (with its backends) listening on this box: their
    CPU per webhook is part of what one bridge costs on a machine they share."""
    from urllib.parse import urlsplit

    ports = {"broker": int(kafka.rsplit(",", 1)[-1].rsplit(":", 1)[1]),
             "postgres": urlsplit(db.replace("+psycopg", "")).port or 5432}
    try:
        listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.pid]
    except psutil.Error:
        listening = []  # not allowed to look: report 0 µs rather than fail the run
    return {name: [psutil.Process(pid) for pid in {c.pid for c in listening if c.laddr.port == port}]
            for name, port in ports.items()}


def services_cpu(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    totals = {}
    for name, roots in procs.items():
        total = 0.0
        for p in roots:
            try:
                for q in (p, *p.children(recursive=True)):
                    total += sum(q.cpu_times()[:2])
            except psutil.Error:
                pass
        totals[name] = total
    return totals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    # 128: at 5,000/s and ~25 ms per request that many deliveries are in flight (Little's
    # law); with 64 the bridge idles ~20% waiting on claims and acks — the client's
    # concurrency, not the bridge, sets the rate (docs/benchmarks.md has the sweep).
    ap.add_argument("--connections", type=int, default=128)
    ap.add_argument("--rates", default="500,1000")
    ap.add_argument("--py-spy", metavar="OUT", help="profile the bridge with py-spy during the first "
                    "closed-loop run: collapsed stacks of the threads holding the GIL, written to OUT (py-spy must "
                    "be installed: pip install py-spy)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wooflow-bench-"))
    kafka, db, state = services(tmp)
    s = None
    try:
        from wooflow.db.engine import get_engine
        from wooflow.db.migrate import upgrade
        from wooflow.kafka.admin import create_topics
        from wooflow.settings import Settings
        from wooflow.stores import Store, upsert_store

        tag = f"bench{uuid.uuid4().hex[:6]}"
        s = Settings(kafka_bootstrap_servers=kafka, database_url=db, topic_prefix=f"{tag}.", topic_partitions=12)
        upgrade(db)
        create_topics(s)
        store = Store(id=tag, url="https://shop.example", webhook_secret="bench & <secret> 50 chars long..........",
                      timezone="Europe/Warsaw", currency="PLN", public_key="pk_bench")
        upsert_store(get_engine(db), store)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WOOFLOW_")} | {
            "WOOFLOW_KAFKA_BOOTSTRAP_SERVERS": kafka, "WOOFLOW_DATABASE_URL": db,
            "WOOFLOW_TOPIC_PREFIX": s.topic_prefix, "WOOFLOW_LOG_LEVEL": "WARNING"}
        with open(tmp / "bridge.log", "wb") as log:  # the child keeps its own handle
            bridge = subprocess.Popen([sys.executable, "-m", "wooflow.cli", "bridge", "--host", "127.0.0.1", "--port",
                                       str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, 30, lambda: "bridge did not start: " + (tmp / "bridge.log").read_text()[-2000:])
        proc = psutil.Process(bridge.pid)
        url = f"{base}/webhooks/woocommerce/{store.id}"
        peak_rss = 0

        svc = service_procs(kafka, db)

        def main_thread_cpu() -> float:
            return sum(sum(t[1:3]) for t in proc.threads() if t.id == bridge.pid)

        def loadgen(*extra: str, seed: str) -> dict:
            nonlocal peak_rss
            cpu0, svc0, main0 = sum(proc.cpu_times()[:2]), services_cpu(svc), main_thread_cpu()
            p = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "--url", url, "--secret",
                                  store.webhook_secret, "--duration", str(args.duration), "--seed", seed, *extra],
                                 stdout=subprocess.PIPE, text=True)
            while p.poll() is None:
                peak_rss = max(peak_rss, proc.memory_info().rss)
                time.sleep(0.2)
            out = p.stdout.read() if p.stdout else ""
            result = json.loads(out.strip().splitlines()[-1])
            result["loadgen_cpu_us_per_req"] = result.pop("cpu_us_per_req")
            # CPU the bridge process spent per request (all its threads): independent of how
            # busy the machine is, unlike the wall-clock numbers.
            result["cpu_us_per_req"] = round((sum(proc.cpu_times()[:2]) - cpu0) / max(1, result["requests"]) * 1e6, 1)
            # ... of which on the event-loop (main) thread, the one that serialises the requests
            main = main_thread_cpu() - main0
            result["main_cpu_us_per_req"] = round(main / max(1, result["requests"]) * 1e6, 1)
            result["main_thread_busy"] = round(main / result["elapsed_s"], 2)
            # Broker and PostgreSQL CPU per request (backends that ended mid-run are not counted).
            svc1 = services_cpu(svc)
            for name in svc1:
                per_req = (svc1[name] - svc0[name]) / max(1, result["requests"])
                result[f"{name}_cpu_us_per_req"] = round(per_req * 1e6, 1)
            return result

        # warm-up at the measured concurrency: caches, connections, the broker's JIT
        loadgen("--mode", "max", "--connections", str(args.connections), seed="warm")
        results: dict[str, list[dict]] = {"max": []}
        for rate in args.rates.split(","):
            results[rate] = []
        for run in range(args.runs):
            spy = None
            if args.py_spy and run == 0 and Path(sys.executable).with_name("py-spy").exists():
                spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(bridge.pid),
                                        "-d", str(int(args.duration)), "-r", "250", "-f", "raw", "--threads",
                                        "--nonblocking", "--gil", "-o", args.py_spy],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            results["max"].append(loadgen("--mode", "max", "--connections", str(args.connections), seed=f"m{run}"))
            if spy is not None:
                spy.wait(30)
            for rate in args.rates.split(","):
                results[rate].append(loadgen("--mode", "rate", "--rate", rate, "--connections",
                                             str(args.connections), seed=f"r{rate}-{run}"))
        bridge.terminate()
        bridge.wait(20)

        def med(rows: list[dict], key: str) -> float:
            return round(statistics.median(r[key] for r in rows), 2)

        summary = {
            "cpus": os.cpu_count(),
            "throughput_ok_per_s": med(results["max"], "ok_per_s"),
            "throughput_runs": [r["ok_per_s"] for r in results["max"]],
            "throughput_p50_ms": med(results["max"], "p50_ms"), "throughput_p99_ms": med(results["max"], "p99_ms"),
            "bridge_cpu_us_per_webhook": med(results["max"], "cpu_us_per_req"),
            "broker_cpu_us_per_webhook": med(results["max"], "broker_cpu_us_per_req"),
            "postgres_cpu_us_per_webhook": med(results["max"], "postgres_cpu_us_per_req"),
            "bridge_cpu_us_runs": [r["cpu_us_per_req"] for r in results["max"]],
            "bridge_event_loop_thread_cpu_us_per_webhook": med(results["max"], "main_cpu_us_per_req"),
            "bridge_event_loop_thread_busy": med(results["max"], "main_thread_busy"),
            "loadgen_cpu_us_per_webhook": med(results["max"], "loadgen_cpu_us_per_req"),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "non_2xx": sum(r["requests"] - r["ok"] for rows in results.values() for r in rows),
            "bridge_peak_rss_mb": round(peak_rss / 2**20, 1),
        }
        for rate in args.rates.split(","):
            summary[f"rate_{rate}"] = {"p50_ms": med(results[rate], "p50_ms"), "p99_ms": med(results[rate], "p99_ms"),
                                       "achieved_per_s": med(results[rate], "ok_per_s"),
                                       "p99_runs": [r["p99_ms"] for r in results[rate]]}
        print(json.dumps(summary, indent=2))
    finally:
        release(s, state, tmp)


if __name__ == "__main__":
    main()
