"""wooflow side by side with what a user would pick instead, on one backlog.

    eval "$(.venv/bin/wooflow dev up)"      # or export KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL
    .venv/bin/python bench/peers/run.py --events 100000 --runs 3
    env -u KAFKA_BOOTSTRAP_SERVERS -u DATABASE_URL .venv/bin/python bench/peers/run.py   # private services

One backlog of OrderEvents is produced once, as the bridge writes them: WooCommerce REST
order JSON through the bridge's `normalise`, its codec, keys and `store`/`schema` headers,
raw JSON included, on a 12-partition topic. Then, per run and per job, each system reads
the whole backlog with a consumer group of its own, in a process of its own:

- `plain`: a confluent-kafka + fastavro batch loop (plain_job.py; job B's state in a dict);
- `quix`: a Quix Streams 3.28.1 app (quix_job.py; job B in RocksDB state with its
  changelog topic), in a virtual environment this script creates (its pins conflict with
  wooflow's): `--quix-venv`, default ~/.cache/wooflow/peers-quix-venv;
- `wooflow`: the rule consumer with the equivalent rule in every store (from empty state);
- `replay`: right after it, `wooflow replay --dry-run` of the same topic.

The systems take turns within a run (the order rotates from run to run) so the box's load
drifts over all of them alike. Every system must produce exactly the commands the
backlog calls for (counted here from the generated events), or the run fails.
Reported per system: events/s (first batch handed over → last offsets committed), the
process's CPU per event, and the broker's and PostgreSQL's CPU per event over the same
interval (sampled every 0.2 s; with shared services that includes other clients' work).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wooflow.settings import Settings

HERE = Path(__file__).resolve().parent
# the bridge benchmark's helpers: services from the environment or launched, their CPU
_spec = importlib.util.spec_from_file_location("bench_bridge_run", HERE.parent / "bridge" / "run.py")
assert _spec is not None and _spec.loader is not None
_bridge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bridge)
service_procs, services = _bridge.service_procs, _bridge.services

QUIX = "quixstreams==3.28.1"
STORES, CUSTOMERS = 50, 400  # 20,000 customers
PAID = ("processing", "completed")
COUNTRIES = ("PL", "PL", "DE", "CZ", "FR")
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)

RULES = {
    "A": {"name": "big PL order", "trigger": "new_order", "actions": [
        {"type": "add_order_note", "params": {"note": "big order from Poland"}}],
        "conditions": {"match": "all", "conditions": [
            {"field": "order_total", "operator": "gt", "value": 100},
            {"field": "billing_country", "operator": "equals", "value": "PL"}]}},
    "B": {"name": "first paid order", "trigger": "first_purchase", "actions": [
        {"type": "add_order_note", "params": {"note": "welcome"}}]},
}


# --- the backlog ---------------------------------------------------------------------------

def woo_order(oid: int, cust: int, status: str, at: datetime, rng: random.Random) -> dict[str, Any]:
    """An order as WooCommerce's REST v3 (and its webhooks) render it."""
    country = COUNTRIES[cust % len(COUNTRIES)]
    total = max(1, int(rng.lognormvariate(4.2, 0.6)))
    gmt = at.strftime("%Y-%m-%dT%H:%M:%S")
    created = (T0 + timedelta(seconds=oid)).strftime("%Y-%m-%dT%H:%M:%S")
    addr = {"first_name": "Zofia", "last_name": "Kowalska", "company": "", "address_1": "ul. Długa 1",
            "address_2": "", "city": "Kraków", "state": "", "postcode": "30-001", "country": country}
    return {
        "id": oid, "parent_id": 0, "number": str(oid), "status": status, "currency": "PLN", "version": "9.4.0",
        "prices_include_tax": False, "date_created": created, "date_created_gmt": created, "date_modified": gmt,
        "date_modified_gmt": gmt, "discount_total": "0.00", "shipping_total": "10.00", "total": f"{total}.00",
        "total_tax": "0.00", "customer_id": cust, "order_key": f"wc_order_{oid}",
        "billing": {**addr, "email": f"c{cust}@example.com", "phone": "+48 600 000 000"},
        "shipping": {**addr, "phone": ""}, "payment_method": "przelewy24", "payment_method_title": "Przelewy24",
        "transaction_id": f"tx{oid}", "created_via": "checkout", "customer_note": "",
        "line_items": [{"id": 1, "name": "Kubek żółty", "product_id": 42, "variation_id": 0, "quantity": 2,
                        "tax_class": "", "subtotal": f"{total - 10}.00", "subtotal_tax": "0.00",
                        "total": f"{total - 10}.00", "total_tax": "0.00", "taxes": [], "meta_data": [],
                        "sku": "MUG-Y", "price": 19.5}],
        "shipping_lines": [{"id": 3, "method_title": "Flat rate", "method_id": "flat_rate", "total": "10.00"}],
        "coupon_lines": [], "fee_lines": [], "refunds": [], "meta_data": [{"id": 10, "key": "_source", "value": "web"}],
        "_links": {"self": [{"href": f"https://shop.example/wp-json/wc/v3/orders/{oid}"}]},
    }


def deliveries(n: int, stores: list[str], seed: int = 7):  # type: ignore[no-untyped-def]
    """(store, WooCommerce topic, order JSON): 55% new orders (half of them pending, half
    paid at once), the rest moving an open order on (pending → processing → completed)."""
    rng = random.Random(seed)
    open_orders: list[tuple[str, int, int, str]] = []
    oid = 1000
    for i in range(n):
        at = T0 + timedelta(seconds=10 * i)
        if rng.random() < 0.55 or not open_orders:
            store, cust = rng.choice(stores), rng.randint(1, CUSTOMERS)
            oid += 1
            status = rng.choice(("pending", "processing"))
            open_orders.append((store, oid, cust, status))
            yield store, "order.created", woo_order(oid, cust, status, at, random.Random(oid))
        else:
            k = rng.randrange(len(open_orders))
            store, o, cust, status = open_orders[k]
            status = "processing" if status == "pending" else "completed"
            if status == "completed":
                open_orders[k] = open_orders[-1]
                open_orders.pop()
            else:
                open_orders[k] = (store, o, cust, status)
            yield store, "order.updated", woo_order(o, cust, status, at, random.Random(o))


def expected(events: list[dict[str, Any]]) -> dict[str, int]:
    """What each job must emit, counted from the backlog itself."""
    a = sum(1 for e in events if e["action"] == "created" and e["order"]["total"] > 100
            and e["order"]["billing"]["country"] == "PL")
    paid: set[tuple[str, str]] = set()
    for e in events:
        if e["order"]["status"] in PAID:
            paid.add((e["store_id"], e["customer_key"]))
    return {"A": a, "B": len(paid)}


def produce_backlog(s: Settings, n: int, stores: list[str]) -> dict[str, int]:
    import orjson
    from confluent_kafka import Producer

    from wooflow.kafka.config import producer_config
    from wooflow.kafka.headers import event_headers
    from wooflow.kafka.producer import produce_when_room
    from wooflow.producers.normalise import StoreInfo, normalise
    from wooflow.schemas.codec import get_codec

    codec = get_codec(None)
    p = Producer(producer_config(s) | {"linger.ms": 20, "batch.size": 1_000_000,
                                       "queue.buffering.max.messages": 1_000_000})
    infos = {sid: StoreInfo(sid, "Europe/Warsaw", "PLN") for sid in stores}
    records = []
    for store, wc_topic, payload in deliveries(n, stores):
        raw = orjson.dumps(payload).decode()
        for ev in normalise(infos[store], wc_topic, payload, source="webhook", received_at=datetime.now(timezone.utc),
                            raw=raw):
            topic = s.topic(ev.topic)
            produce_when_room(p, topic, codec.encode(ev.schema, ev.record, topic), key=ev.key,
                              headers=event_headers(store, ev.schema), wait_s=0.1)
            records.append(ev.record)
    assert p.flush(120) == 0
    return expected(records)


# --- measuring ------------------------------------------------------------------------------

class Sampler(threading.Thread):
    """The broker's and PostgreSQL's CPU seconds every 0.2 s, to read off any interval.
    Summed per process as increments: a PostgreSQL backend that exits (another client's,
    on shared services) takes its total with it, which must not count as negative CPU; one
    that starts meanwhile counts from its start."""

    def __init__(self, procs: Any) -> None:
        super().__init__(daemon=True)
        self.roots = [p for ps in procs.values() for p in ps]
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self._last: dict[int, float] = {}
        self._total = 0.0
        self._since = time.time()

    def _sample(self) -> float:
        import psutil

        seen: dict[int, float] = {}
        for root in self.roots:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for q in procs:
                try:
                    seen[q.pid] = sum(q.cpu_times()[:2])
                    if q.pid not in self._last and q.create_time() < self._since:
                        self._last[q.pid] = seen[q.pid]  # running before we looked: count from now
                except psutil.Error:
                    pass
        self._total += sum(cpu - self._last.get(pid, 0.0) for pid, cpu in seen.items())
        self._last = seen
        return self._total

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), self._sample()))
            self.stop.wait(0.2)

    def at(self, t: float) -> float:
        s = self.samples
        for (t0, c0), (t1, c1) in itertools.pairwise(s):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0 or 1)
        return s[-1][1] if t > s[-1][0] else s[0][1]


def watermark_sum(s: Settings, topic: str) -> int:
    from confluent_kafka import TopicPartition

    from wooflow.kafka.consumer import make_reader

    c = make_reader(s, "peers-watermarks")
    try:
        md = c.list_topics(topic, timeout=10)
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.topics[topic].partitions)
    finally:
        c.close()


def run_job(cmd: list[str], procs: Any, timeout: float) -> dict[str, Any]:
    sampler = Sampler(procs)
    sampler.start()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    finally:
        sampler.stop.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    # the job's JSON line: the last one that is JSON (py-spy, when it wraps the job, writes after it)
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    span = out["done"] - out["first"]
    n = out["events"]
    out.update(events_per_s=n / span, cpu_us=out["cpu_s"] / n * 1e6,
               services_us=(sampler.at(out["done"]) - sampler.at(out["first"])) / n * 1e6, seconds=span)
    return out


def quix_python(venv: Path) -> str:
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} with {QUIX} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", QUIX, "fastavro"], check=True)
    return str(py)


class Bench:
    def __init__(self, s: Settings, n: int, quix: str, procs: Any, tag: str, spy: Path | None = None) -> None:
        self.s, self.n, self.quix, self.procs, self.tag, self.spy = s, n, quix, procs, tag, spy
        self.topic = s.topic("woo.orders")
        self.tmp = Path(tempfile.mkdtemp(prefix="wooflow-peers-"))
        self.schema = self.tmp / "OrderEvent.avsc"
        from wooflow.schemas.codec import get_codec

        self.schema.write_text(json.dumps(get_codec(None).catalog.latest("OrderEvent").raw))
        self.groups = 0

    def group(self, system: str, job: str) -> str:
        self.groups += 1
        return f"peers-{self.tag}-{system}-{job}-{self.groups}"

    def peer(self, system: str, job: str) -> dict[str, Any]:
        out = self.s.topic(f"peers.{system}.commands")
        before = watermark_sum(self.s, out)
        group = self.group(system, job)
        common = ["--bootstrap", self.s.kafka_bootstrap_servers, "--topic", self.topic, "--out", out,
                  "--group", group, "--schema", str(self.schema), "--job", job, "--events", str(self.n)]
        if system == "plain":
            cmd = [sys.executable, "plain_job.py", *common]
        else:
            cmd = [self.quix, "quix_job.py", *common, "--state-dir", str(self.tmp / group)]
        res = run_job(cmd, self.procs, 900)
        res["commands"] = watermark_sum(self.s, out) - before
        return res

    def wooflow(self, job: str, stores: list[str]) -> dict[str, Any]:
        set_rules(self.s, stores, RULES[job])
        out = self.s.topic("automation.commands")
        before = watermark_sum(self.s, out)
        group = self.group("wooflow", job)
        cmd = [sys.executable, "wooflow_job.py", "rules", "--prefix", self.s.topic_prefix, "--group", group,
               "--events", str(self.n)]
        res = run_job(self.spied(cmd, f"rules-{job}-{group}"), self.procs, 900)
        res["produced"] = watermark_sum(self.s, out) - before
        return res

    def replay(self) -> dict[str, Any]:
        cmd = [sys.executable, "wooflow_job.py", "replay", "--prefix", self.s.topic_prefix, "--group", "replay",
               "--events", str(self.n)]
        return run_job(self.spied(cmd, f"replay-{self.groups}"), self.procs, 900)

    def spied(self, cmd: list[str], name: str) -> list[str]:
        """`--py-spy DIR`: the wooflow processes sampled by py-spy (collapsed stacks of the
        threads holding the GIL, one file per run; py-spy must be installed)."""
        if self.spy is None:
            return cmd
        self.spy.mkdir(parents=True, exist_ok=True)
        spy = str(Path(sys.executable).with_name("py-spy"))
        return [spy, "record", "-r", "250", "-g", "-f", "raw", "-o", str(self.spy / f"{name}.txt"), "--", *cmd]


# --- wooflow's stores and rules ---------------------------------------------------------------

def add_stores(s: Settings, stores: list[str]) -> None:
    from wooflow.db.engine import get_engine
    from wooflow.stores import Store, upsert_store

    engine = get_engine(s.database_url)
    for sid in stores:
        upsert_store(engine, Store(id=sid, url="http://127.0.0.1:1", webhook_secret="x", timezone="Europe/Warsaw",
                                   currency="PLN"))


def clear_state(s: Settings, stores: list[str], *, drop_stores: bool = False) -> None:
    from sqlalchemy import text

    from wooflow.db.engine import get_engine

    with get_engine(s.database_url).begin() as conn:
        for table in ("rule_firings", "scheduled_steps", "customer_state", "order_state", "rules"):
            conn.execute(text(f"DELETE FROM {table} WHERE store_id = ANY(:ids)"), {"ids": stores})
        if drop_stores:
            conn.execute(text("DELETE FROM stores WHERE id = ANY(:ids)"), {"ids": stores})


def set_rules(s: Settings, stores: list[str], rule: dict[str, Any]) -> None:
    """Every store gets the job's one rule, and starts from empty state."""
    from sqlalchemy import insert

    from wooflow.consumer.model import RuleSpec
    from wooflow.db.engine import get_engine
    from wooflow.db.tables import rules

    clear_state(s, stores)
    spec = RuleSpec.model_validate(rule).model_dump(mode="json")
    with get_engine(s.database_url).begin() as conn:
        conn.execute(insert(rules), [{"store_id": sid, **spec} for sid in stores])


# --- main -----------------------------------------------------------------------------------

def med(rs: list[dict[str, Any]], k: str) -> float:
    return statistics.median(r[k] for r in rs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", nargs="+", default=["A", "B"], choices=["A", "B"])
    ap.add_argument("--systems", nargs="+", default=["plain", "quix", "wooflow"],
                    choices=["plain", "quix", "wooflow"])
    ap.add_argument("--py-spy", type=Path, metavar="DIR", help="sample the wooflow processes with py-spy")
    ap.add_argument("--quix-venv", type=Path, default=Path.home() / ".cache" / "wooflow" / "peers-quix-venv")
    args = ap.parse_args()
    quix = quix_python(args.quix_venv) if "quix" in args.systems else ""
    tmp = Path(tempfile.mkdtemp(prefix="wooflow-peers-services-"))
    kafka, db, state = services(tmp)
    os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"] = kafka, db
    from wooflow.db.migrate import upgrade
    from wooflow.kafka.admin import admin_client, create_topics, delete_topics_with_prefix
    from wooflow.kafka.topics import TopicSpec

    upgrade(db)
    tag = uuid.uuid4().hex[:8]
    s = Settings(topic_prefix=f"peers-{tag}.", log_level="WARNING")
    stores = [f"peers-{tag}-{i:02d}" for i in range(STORES)]
    procs = service_procs(kafka, db)
    results: dict[str, list[dict[str, Any]]] = {}
    bench = None
    try:
        create_topics(s)
        create_topics(s, [TopicSpec(s.topic(f"peers.{x}.commands"), s.topic_partitions, 1, {})
                          for x in ("plain", "quix")])
        add_stores(s, stores)
        t = time.perf_counter()
        want = produce_backlog(s, args.events, stores)
        print(f"backlog: {args.events} OrderEvents on {s.topic('woo.orders')} in {time.perf_counter() - t:.1f}s; "
              f"commands due: A {want['A']}, B {want['B']}", flush=True)
        bench = Bench(s, args.events, quix, procs, tag, args.py_spy)
        for r in range(args.runs):
            for job in args.jobs:
                order = args.systems[r % len(args.systems):] + args.systems[:r % len(args.systems)]
                for system in order:
                    if system == "wooflow":
                        res = bench.wooflow(job, stores)
                        got = res["produced"] + res["delayed"]
                        runs = [(f"wooflow {job}", res, got)]
                        rep = bench.replay()
                        runs.append((f"replay {job}", rep, rep["commands"]))
                    else:
                        res = bench.peer(system, job)
                        runs = [(f"{system} {job}", res, res["commands"])]
                    for name, res, got in runs:
                        print(f"run {r + 1} {name:10s}: {res['events_per_s']:8,.0f} events/s, process "
                              f"{res['cpu_us']:5.1f} µs/event, broker+PostgreSQL {res['services_us']:5.1f} µs/event, "
                              f"{got} commands, load {os.getloadavg()[0]:.1f}", flush=True)
                        if got != want[job]:
                            raise SystemExit(f"{name} produced {got} commands, the backlog calls for {want[job]}")
                        results.setdefault(name, []).append(res)
        print(f"\nmedians of {args.runs} runs, {args.events} events, load average now "
              f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}:")
        print(f"{'system':12s} {'events/s':>9s} {'process µs/ev':>14s} {'broker+PG µs/ev':>16s}")
        for name, rs in results.items():
            print(f"{name:12s} {med(rs, 'events_per_s'):9,.0f} {med(rs, 'cpu_us'):14.1f} "
                  f"{med(rs, 'services_us'):16.1f}")
        rate = {k: med(v, "events_per_s") for k, v in results.items()}
        for job in args.jobs:
            w = rate.get(f"wooflow {job}")
            for peer in ("quix", "plain"):
                if w and f"{peer} {job}" in rate:
                    print(f"job {job}: wooflow / {peer} = {w / rate[f'{peer} {job}']:.2f}x")
            if f"replay {job}" in rate and f"plain {job}" in rate:
                print(f"job {job}: replay dry run / plain = {rate[f'replay {job}'] / rate[f'plain {job}']:.2f}x")
    finally:
        clear_state(s, stores, drop_stores=True)
        delete_topics_with_prefix(s, s.topic_prefix)
        admin = admin_client(s)  # Quix's changelog topics carry its group names
        names = [t for t in admin.list_topics(timeout=10).topics if f"peers-{tag}-" in t]
        if names:
            for f in admin.delete_topics(names, operation_timeout=30).values():
                f.result(30)
        if state is not None:
            from wooflow.devinfra.launcher import down

            down(state)


if __name__ == "__main__":
    main()
