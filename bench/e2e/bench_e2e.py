"""End-to-end latency: a webhook leaves the simulated store → bridge → rule consumer →
worker → the note is on the order in the store, and its row is in `execution_logs`.

    .venv/bin/python bench/e2e/bench_e2e.py [--rates 100,300,1000] [--duration 30] [--runs 1]

Every role is its own process, as in production (`wooflow bridge|rules|workers|sink`), on
the broker and PostgreSQL of KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL (else started like
`wooflow dev up` in a throw-away directory); the store is the simulator in a process of its
own (simstore.py), delivering its own signed `order.created` webhooks, 64 at a time. One
rule: new order → `add_order_note`. Orders are created open-loop at each rate.

Per order it reports (ms, p50 / p99 / max over the run):
- `webhook_to_effect`: the delivery's start → the note arriving at the store's REST API;
- `webhook_to_log_row`: the delivery's start → the `execution_logs` row (`logged_at`, the
  sink's insert);
- `scheduled_to_effect`: the open-loop due time → the note (adds the store's own queue);
- stages, from the Kafka timestamps of the event, the command and the log (CreateTime,
  set by each producer at `produce()`, ms): `due→send` (store's delivery queue),
  `send→2xx` (bridge), `send→event` (bridge until produce), `event→command` (rule consumer),
  `command→effect` (worker: consume, claim, REST), `effect→log` (worker: finish, produce),
  `log→row` (sink).
And the CPU each process spent per order (roles, store, broker, PostgreSQL) with the machine's
total CPU use and load average during the run: the box is shared, and a latency that only
fails under load shows up as saturated cores, not as one slow stage.

`--env NAME=VALUE` (repeatable) is passed to every role (e.g. WOOFLOW_BATCH_TIMEOUT_S=0.05).

`--nice N` (root) runs the roles and the store at that scheduling priority, and the broker
and PostgreSQL too when the benchmark started its own (KAFKA_BOOTSTRAP_SERVERS /
DATABASE_URL unset): on a box shared with other work, a negative N shows what the
pipeline does with the CPU it asks for, next to the same runs without it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bridge"))

from run import (  # noqa: E402  (bench/bridge/run.py)
    free_port,
    release,
    service_procs,
    services,
    services_cpu,
    wait_ready,
)

ROLES = ("bridge", "rules", "workers", "sink")
RULE = {
    "name": "e2e note", "trigger": "new_order",
    "conditions": {"match": "all", "conditions": [{"field": "order_total", "operator": "gt", "value": "0"}]},
    "actions": [{"type": "add_order_note", "params": {"note": "wooflow-e2e: order {{ order.number }}"}}],
}


class Sim:
    """simstore.py in its own process, spoken to one JSON line at a time."""

    def __init__(self, log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:  # the child keeps its own handle
            self.proc = subprocess.Popen([sys.executable, str(HERE / "simstore.py")], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True, cwd=log.parent)
        self.info = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the simulated store stopped: " + self.log.read_text()[-3000:])
        return dict(json.loads(line))

    def ask(self, *words: object) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([str(w) for w in words]) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except (OSError, SystemExit, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def renice(roots: list[psutil.Process], nice: int) -> None:
    """Every thread of these processes and their children (PostgreSQL's backends, the JVM's
    threads): on Linux a nice value belongs to a thread."""
    for root in roots:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            try:
                for t in p.threads():
                    os.setpriority(os.PRIO_PROCESS, t.id, nice)
            except (psutil.Error, OSError):
                pass


def pct(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {"n": len(v), "p50": round(v[len(v) // 2], 1), "p99": round(v[min(len(v) - 1, int(0.99 * len(v)))], 1),
            "max": round(v[-1], 1)}


def read_topic(s: Any, base: str, sizes: dict[str, int]) -> list[tuple[float, dict[str, Any]]]:
    """(CreateTime in seconds, decoded record) of every message of a topic, from the start;
    `sizes[base]` adds up their bytes (key and value)."""
    from confluent_kafka import TopicPartition

    from wooflow.kafka.consumer import make_reader
    from wooflow.schemas.codec import get_codec

    codec = get_codec(None)
    topic = s.topic(base)
    c = make_reader(s, f"e2e-reader-{uuid.uuid4().hex[:6]}")
    try:
        parts = [TopicPartition(topic, p, 0) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        c.assign(parts)
        out: list[tuple[float, dict[str, Any]]] = []
        left = sum(ends.values())
        deadline = time.monotonic() + 120
        while left > 0 and time.monotonic() < deadline:
            for m in c.consume(5000, 1.0):
                if m.error() is not None:
                    continue
                left -= 1
                sizes[base] += len(m.value() or b"") + len(m.key() or b"")
                out.append((m.timestamp()[1] / 1000, codec.decode(m.value())[1]))
        return out
    finally:
        c.close()


STAGES = ("due→send", "send→2xx", "send→event", "event→command", "command→effect", "effect→log", "log→row")


def table(summary: dict[str, Any]) -> str:
    """The runs as a readable table (the JSON on stdout has everything)."""
    lines = []
    for r in summary["runs"]:
        lat = r["latency_ms"]

        def f(name: str, lat: dict[str, Any] = lat) -> str:
            v = lat.get(name, {})
            return f"{v.get('p50', '-')}/{v.get('p99', '-')}/{v.get('max', '-')}"

        lines.append(f"{r['label']:>10} {r['rate']:>6.0f}/s effects {r['effects']}/{r['orders']} rows {r['log_rows']} "
                     f"load {r['load_1m']} cores busy {r['machine_cores_busy']} (ours {r['ours_cores_busy']})")
        lines.append(f"{'':>12}webhook→effect {f('webhook_to_effect')}  webhook→row {f('webhook_to_log_row')}  "
                     f"due→effect {f('scheduled_to_effect')}  (ms p50/p99/max)")
        lines.append(f"{'':>12}" + "  ".join(f"{k} {f(k)}" for k in STAGES))
        lines.append(f"{'':>12}CPU µs/order " + " ".join(f"{k} {v}" for k, v in r["cpu_us_per_order"].items()))
        lines.append(f"{'':>12}PostgreSQL per order " + " ".join(f"{k} {v}" for k, v in r["db_per_order"].items()))
    return "\n".join(lines)


def logs_of(tmp: Path, procs: dict[str, subprocess.Popen[bytes]]) -> str:
    return "\n".join(f"--- {name} (exit code {p.poll()}) ---\n" + (tmp / f"{name}.log").read_text()[-3000:]
                     for name, p in procs.items())


def ts(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="100,300,1000")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=1, help="rounds over the rates")
    ap.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the last effects of a run")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for every role")
    ap.add_argument("--py-spy", action="append", default=[], metavar="PROCESS=OUT",
                    help="profile a role or the store (bridge, rules, workers, sink, store) with py-spy during the "
                         "first measured run: collapsed stacks of the threads holding the GIL to OUT")
    ap.add_argument("--nice", type=int, help="scheduling priority of the roles and the store (and of the broker and "
                    "PostgreSQL when the benchmark started them), e.g. -10")
    ap.add_argument("--keep", metavar="DIR", help="keep the raw per-order timings and role logs in DIR")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="wooflow-e2e-"))
    kafka, db, state = services(tmp)
    s = None
    sim: Sim | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        from sqlalchemy import insert, text

        from wooflow.consumer.model import RuleSpec
        from wooflow.db.engine import get_engine
        from wooflow.db.migrate import upgrade
        from wooflow.db.tables import rules
        from wooflow.kafka.admin import create_topics
        from wooflow.kafka.topics import COMMANDS, LOGS, ORDERS
        from wooflow.settings import Settings
        from wooflow.stores import Store, upsert_store

        tag = f"e2e{uuid.uuid4().hex[:6]}"
        s = Settings(kafka_bootstrap_servers=kafka, database_url=db, topic_prefix=f"{tag}.", topic_partitions=12)
        upgrade(db)
        create_topics(s)
        engine = get_engine(db)
        sim = Sim(tmp / "simstore.log")
        store = Store(id=tag, url=sim.info["url"], webhook_secret="e2e & <secret> of fifty characters .........",
                      consumer_key=sim.info["consumer_key"], consumer_secret=sim.info["consumer_secret"],
                      timezone="Europe/Warsaw", currency="PLN", public_key=f"pk_{tag}")
        upsert_store(engine, store)
        spec = RuleSpec.model_validate(RULE)
        with engine.begin() as conn:
            conn.execute(insert(rules).values(store_id=store.id, **spec.model_dump(mode="json")))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WOOFLOW_")} | {
            "WOOFLOW_KAFKA_BOOTSTRAP_SERVERS": kafka, "WOOFLOW_DATABASE_URL": db,
            "WOOFLOW_TOPIC_PREFIX": s.topic_prefix,
            "WOOFLOW_RULES_GROUP": f"{tag}-rules", "WOOFLOW_WORKERS_GROUP": f"{tag}-workers",
            "WOOFLOW_SINK_GROUP": f"{tag}-sink", "WOOFLOW_LOG_LEVEL": "WARNING"}
        env |= dict(e.split("=", 1) for e in args.env)
        for role in ROLES:
            extra = ("--host", "127.0.0.1", "--port", str(port)) if role == "bridge" else ()
            with open(tmp / f"{role}.log", "wb") as log:
                # cwd: `-m` puts the working directory first on sys.path, where a checkout's
                # own `wooflow/` folder would shadow the installed package
                procs[role] = subprocess.Popen([sys.executable, "-m", "wooflow.cli", role, *extra], env=env,
                                               stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, 60, lambda: "roles did not start: " + logs_of(tmp, procs),
                   lambda: any(p.poll() is not None for p in procs.values()))
        print(sim.ask("hook", f"{base}/webhooks/woocommerce/{store.id}", store.webhook_secret), file=sys.stderr)

        watched = {name: psutil.Process(p.pid) for name, p in procs.items()} | {"store": psutil.Process(sim.proc.pid)}
        svc = service_procs(kafka, db)

        def cpu() -> dict[str, float]:
            out = {name: sum(p.cpu_times()[:2]) for name, p in watched.items()} | services_cpu(svc)
            t = psutil.cpu_times()
            out["machine_busy"] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
            return out

        def db_stats() -> dict[str, float]:
            """Rows this database wrote, its size, and the server's WAL (all databases: a clean
            figure only on the benchmark's own PostgreSQL)."""
            with engine.connect() as conn:
                t = conn.execute(text("SELECT tup_inserted, tup_updated, tup_deleted, pg_database_size(datname) "
                                      "FROM pg_stat_database WHERE datname = current_database()")).one()
                wal = conn.execute(text("SELECT wal_bytes FROM pg_stat_wal")).scalar_one()
            return {"rows_inserted": t[0], "rows_updated": t[1], "rows_deleted": t[2], "db_bytes": t[3],
                    "wal_bytes": float(wal)}

        def logged() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM execution_logs WHERE store_id = :s"),
                                        {"s": store.id}).scalar_one())

        def one_run(rate: float, seconds: float, label: str, profile: bool = False) -> dict[str, Any]:
            spies = [subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p",
                                       str(watched[name].pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                                       "--threads", "--nonblocking", "--gil", "-o", out],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for name, out in (a.split("=", 1) for a in args.py_spy)] if profile else []
            if args.nice is not None:  # before each run: PostgreSQL's new backends too
                renice(list(watched.values()) + ([p for ps in svc.values() for p in ps] if state is not None else []),
                       args.nice)
            before, logs0, load0, t0 = cpu(), logged(), os.getloadavg()[0], time.monotonic()
            db0 = db_stats()
            driven = sim.ask("run", rate, seconds)
            n = driven["created"]
            drain = time.monotonic() + args.drain
            while logged() - logs0 < n and time.monotonic() < drain:
                time.sleep(0.5)
            wall, after = time.monotonic() - t0, cpu()
            time.sleep(0.6)  # PostgreSQL's statistics are flushed by each backend within a second
            db1 = db_stats()
            if any(p.poll() is not None for p in procs.values()):
                raise SystemExit("a role stopped: " + logs_of(tmp, procs))
            for spy in spies:
                spy.wait(30)
            path = tmp / f"{label}.json"
            sim.ask("dump", path)
            timings = json.loads(path.read_text())
            used = {k: after[k] - before[k] for k in after}
            return {"label": label, "rate": rate, "orders": n, "driver_late_max_ms": driven["driver_late_max_ms"],
                    "timings": timings, "load_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
                    "cpu_us_per_order": {k: round(v / max(1, n) * 1e6) for k, v in used.items() if k != "machine_busy"},
                    "db_per_order": {k: round((db1[k] - db0[k]) / max(1, n), 1) for k in db1},
                    "machine_cores_busy": round(used["machine_busy"] / wall, 2),
                    "ours_cores_busy": round(sum(v for k, v in used.items() if k != "machine_busy") / wall, 2)}

        warm = one_run(20, 5, "warmup")
        print(f"warm-up: {len(warm['timings']['noted'])}/{warm['orders']} notes", file=sys.stderr)
        runs = []
        for r in range(args.runs):
            for rate in rates:
                runs.append(one_run(rate, args.duration, f"r{r}-{int(rate)}", profile=not runs))
                print(f"run {runs[-1]['label']}: {len(runs[-1]['timings']['noted'])}/{runs[-1]['orders']} notes, "
                      f"load {runs[-1]['load_1m']}", file=sys.stderr)
        for p in procs.values():
            p.terminate()

        # --- per-order stages from the topics and the log table --------------------------
        sizes: dict[str, int] = defaultdict(int)
        event_of: dict[int, tuple[str, float]] = {}
        for t, ev in read_topic(s, ORDERS, sizes):
            if ev.get("order"):
                event_of.setdefault(int(ev["order"]["id"]), (ev["event_id"], t))
        command_at = {}
        for t, cmd in read_topic(s, COMMANDS, sizes):
            command_at.setdefault(cmd["event_id"], t)
        log_at = {}
        for t, lg in read_topic(s, LOGS, sizes):
            log_at.setdefault(lg["event_id"], t)
        with engine.connect() as conn:
            row_at = {e: ts(t) for e, t in conn.execute(
                text("SELECT event_id, logged_at FROM execution_logs WHERE store_id = :s"), {"s": store.id})}

        orders = sum(r["orders"] for r in runs) + warm["orders"]
        summary: dict[str, Any] = {"cpus": os.cpu_count(), "duration_s": args.duration, "env": args.env,
                                   "nice": args.nice, "own_services": state is not None,
                                   "kafka_bytes_per_order": {k: round(v / orders) for k, v in sizes.items()},
                                   "runs": []}
        for run in runs:
            tm = run["timings"]
            m: dict[str, list[float]] = defaultdict(list)
            for oid_s, due in tm["scheduled"].items():
                sent, noted = tm["sent"].get(oid_s), tm["noted"].get(oid_s)
                ev = event_of.get(int(oid_s))
                if sent is None:
                    continue
                start, took, _status = sent
                m["due→send"].append((start - due) * 1000)
                m["send→2xx"].append(took * 1000)
                if noted is not None:
                    m["webhook_to_effect"].append((noted - start) * 1000)
                    m["scheduled_to_effect"].append((noted - due) * 1000)
                if ev is None:
                    continue
                eid, ev_t = ev
                m["send→event"].append((ev_t - start) * 1000)
                cmd_t, log_t, row_t = command_at.get(eid), log_at.get(eid), row_at.get(eid)
                if cmd_t is not None:
                    m["event→command"].append((cmd_t - ev_t) * 1000)
                    if noted is not None:
                        m["command→effect"].append((noted - cmd_t) * 1000)
                if log_t is not None and noted is not None:
                    m["effect→log"].append((log_t - noted) * 1000)
                if row_t is not None:
                    m["webhook_to_log_row"].append((row_t - start) * 1000)
                    if log_t is not None:
                        m["log→row"].append((row_t - log_t) * 1000)
            statuses = defaultdict(int)
            for _s, _t, st in tm["sent"].values():
                statuses[str(st)] += 1
            summary["runs"].append({
                "label": run["label"], "rate": run["rate"], "orders": run["orders"],
                "effects": len(tm["noted"]), "log_rows": len(m["webhook_to_log_row"]), "statuses": dict(statuses),
                "driver_late_max_ms": run["driver_late_max_ms"], "load_1m": run["load_1m"],
                "machine_cores_busy": run["machine_cores_busy"], "ours_cores_busy": run["ours_cores_busy"],
                "cpu_us_per_order": run["cpu_us_per_order"], "db_per_order": run["db_per_order"],
                "latency_ms": {k: pct(v) for k, v in m.items()}})
        print(json.dumps(summary, indent=1, ensure_ascii=False))
        print(table(summary), file=sys.stderr)
        print(f"Kafka bytes per order: {summary['kafka_bytes_per_order']}", file=sys.stderr)
        with engine.begin() as conn:  # the store's rules, state and logs go with it
            for name in ("execution_logs", "action_executions", "customer_state", "order_state"):
                conn.execute(text(f"DELETE FROM {name} WHERE store_id = :s"), {"s": store.id})
            conn.execute(text("DELETE FROM stores WHERE id = :s"), {"s": store.id})
        if args.keep:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for f in tmp.glob("*.log"):
                shutil.copy(f, keep / f.name)
            (keep / "runs.json").write_text(json.dumps(runs))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if sim is not None:
            sim.stop()
        release(s, state, tmp)


if __name__ == "__main__":
    main()
