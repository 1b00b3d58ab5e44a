"""Benchmark: commands per second through ONE worker process (`wooflow workers`), on the
real broker and database.

Scenarios
  points     add_points (PostgreSQL customer state; effect + finish in one transaction)
  local      a mix of local-state actions: add_points, change_tier, add_customer_tag (guest:
             no WooCommerce mirror), create_admin_task
  notes      add_order_note: REST to the store simulator (Python, same machine)
  tags       add_customer_tag for 500 registered customers: PostgreSQL + REST mirror to the simulator
  webhook    webhook to a local receiver answering every request after 50 ms

Method: a backlog of N commands (distinct customers, so nothing is serialised per key) is
produced first; then a worker process starts and drains it. Throughput is N divided by the
span between the first and the last execution log's Kafka timestamp (process start-up and
group join excluded). CPU is the worker process's user+system time over the whole run
divided by N. Peak RSS is sampled. Each scenario runs --runs times; medians are printed.

Needs Kafka and PostgreSQL: `eval "$(.venv/bin/wooflow dev up)"` (or export
KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL), then

    .venv/bin/python bench/workers/bench_workers.py                       # all scenarios
    .venv/bin/python bench/workers/bench_workers.py --only webhook --runs 3 --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import TopicPartition

from wooflow.db.engine import get_engine
from wooflow.db.migrate import upgrade
from wooflow.kafka.admin import create_topics
from wooflow.kafka.consumer import make_reader
from wooflow.settings import Settings
from wooflow.stores import Store, upsert_store
from wooflow.workers.testing import command, produce

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_N = {"points": 30_000, "local": 30_000, "notes": 5_000, "tags": 5_000, "webhook": 20_000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_timestamps(s: Settings, expected: int, timeout: float) -> tuple[list[int], dict[str, int]]:
    topic = s.topic("automation.logs")
    c = make_reader(s, f"bench-{uuid.uuid4().hex[:8]}")
    try:
        parts = [TopicPartition(topic, p, 0) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
        c.assign(parts)
        stamps: list[int] = []
        statuses: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while len(seen) < expected and time.monotonic() < deadline:
            for m in c.consume(5000, 0.5):
                if m.error():
                    continue
                from wooflow.schemas.codec import get_codec

                _, rec = get_codec().decode(m.value())
                if rec["log_id"] in seen:
                    continue
                seen.add(rec["log_id"])
                stamps.append(m.timestamp()[1])
                statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
        return stamps, statuses
    finally:
        c.close()


def make_commands(kind: str, n: int, store: Store, run: str, order_ids: list[int], customer_ids: list[int],
                  hook_url: str) -> list[dict[str, Any]]:
    cmds = []
    for i in range(n):
        common = {"store_id": store.id, "event_id": f"{run}:{i}", "rule_id": 1}
        if kind == "points":
            cmds.append(command(action_type="add_points", params={"points": 5}, customer_key=f"g{run}{i}", **common))
        elif kind == "local":
            which = i % 4
            action, params = [("add_points", {"points": 5}), ("change_tier", {"tier": "gold"}),
                              ("add_customer_tag", {"tag": "vip"}), ("create_admin_task", {"title": "Call"})][which]
            cmds.append(command(action_type=action, params=params, customer_key=f"g{run}{i}", **common))
        elif kind == "notes":
            oid = order_ids[i % len(order_ids)]
            cmds.append(command(action_type="add_order_note", params={"note": f"bench {run} {i}"},
                                customer_key=f"g{run}{i}", subject_id=str(oid),
                                context={"order": {"id": oid}}, **common))
        elif kind == "tags":
            cid = customer_ids[i % len(customer_ids)]
            cmds.append(command(action_type="add_customer_tag", params={"tag": f"t{i % 7}"},
                                customer_key=f"c{cid}", **{**common, "event_id": f"{run}:{i}"}))
        elif kind == "webhook":
            cmds.append(command(action_type="webhook", params={"url": hook_url, "secret": "s"},
                                customer_key=f"g{run}{i}", context={"order": {"id": i, "total": "10.00"}}, **common))
    return cmds


def run_once(kind: str, n: int, base: Settings, env_extra: dict[str, str], sim: Any, hook_url: str) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    s = base.model_copy(update={"topic_prefix": f"bench-{run}.", "workers_group": f"bench-{run}"})
    create_topics(s)
    engine = get_engine(s.database_url)
    store = Store(id=f"bench-{run}", url=sim.url if sim else "http://127.0.0.1:1", webhook_secret="x",
                  consumer_key=sim.auth[0] if sim else "", consumer_secret=sim.auth[1] if sim else "")
    upsert_store(engine, store)
    order_ids: list[int] = []
    customer_ids: list[int] = []
    if kind in ("notes", "tags"):
        p = sim.store.create_product(f"P{run}", "10.00")
        order_ids = [sim.store.create_order(line_items=[{"product_id": p.id, "quantity": 1}],
                                            billing={"email": f"o{i}@x.pl"}).id for i in range(200)]
        customer_ids = [sim.store.create_customer(f"{run}{i}@x.pl").id for i in range(min(n, 500))] \
            if kind == "tags" else []
    cmds = make_commands(kind, n, store, run, order_ids, customer_ids, hook_url)
    produce(s, cmds)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOOFLOW_")}
    env.update({"WOOFLOW_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers, "WOOFLOW_DATABASE_URL": s.database_url,
                "WOOFLOW_TOPIC_PREFIX": s.topic_prefix, "WOOFLOW_WORKERS_GROUP": s.workers_group,
                "WOOFLOW_WEBHOOK_ALLOWLIST": "127.0.0.1/32", "WOOFLOW_LOG_LEVEL": "WARNING", **env_extra})
    proc = subprocess.Popen([sys.executable, "-m", "wooflow.cli", "workers"], env=env)
    ps = psutil.Process(proc.pid)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], ps.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    try:
        stamps, statuses = log_timestamps(s, n, timeout=600)
        cpu = ps.cpu_times()
    finally:
        done.set()
        proc.terminate()
        proc.wait(60)
    span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else float("nan")
    return {"kind": kind, "n": n, "logs": len(stamps), "statuses": statuses, "seconds": round(span, 2),
            "per_s": round(n / span) if span else None, "cpu_us_per_cmd": round((cpu.user + cpu.system) / n * 1e6),
            "peak_rss_mb": round(peak[0] / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=list(DEFAULT_N), choices=list(DEFAULT_N))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=None, help="commands per run (default per scenario)")
    ap.add_argument("--concurrency", type=int, default=None, help="WOOFLOW_WORKER_CONCURRENCY for the worker")
    ap.add_argument("--batch-size", type=int, default=2000, help="WOOFLOW_BATCH_SIZE for the worker")
    args = ap.parse_args()
    base = Settings(topic_partitions=12, batch_timeout_s=0.05)
    upgrade(base.database_url)
    receiver = None
    hook_url = ""
    sim = None
    try:
        if "webhook" in args.only:
            port = free_port()
            receiver = subprocess.Popen([sys.executable, str(ROOT / "bench/workers/receiver.py"), "--port", str(port),
                                         "--delay", "0.05"], stdout=subprocess.PIPE)
            assert receiver.stdout is not None
            receiver.stdout.readline()
            hook_url = f"http://127.0.0.1:{port}/hook"
        if {"notes", "tags"} & set(args.only):
            from wooflow.simulator.server import SimulatorServer

            sim = SimulatorServer(seed=1, max_log_entries=1000).start()
        results: dict[str, list[dict[str, Any]]] = {}
        for kind in args.only:
            n = args.n or DEFAULT_N[kind]
            env_extra = {"WOOFLOW_BATCH_SIZE": str(args.batch_size)}
            if args.concurrency:
                env_extra["WOOFLOW_WORKER_CONCURRENCY"] = str(args.concurrency)
            elif kind in ("webhook", "points", "local"):
                env_extra["WOOFLOW_WORKER_CONCURRENCY"] = "512" if kind == "webhook" else "2000"
            for _ in range(args.runs):
                r = run_once(kind, n, base, env_extra, sim, hook_url)
                print(json.dumps(r), flush=True)
                results.setdefault(kind, []).append(r)
        print("\nmedians (commands/s per worker process):")
        for kind, rs in results.items():
            rates = [r["per_s"] for r in rs if r["per_s"]]
            print(f"  {kind:8s} {statistics.median(rates):>8.0f}/s   runs {rates}   cpu "
                  f"{statistics.median(r['cpu_us_per_cmd'] for r in rs)} µs/cmd   peak RSS "
                  f"{statistics.median(r['peak_rss_mb'] for r in rs)} MB")
    finally:
        if receiver is not None:
            receiver.terminate()
        if sim is not None:
            sim.stop()


if __name__ == "__main__":
    main()
