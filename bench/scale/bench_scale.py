"""Scale: one rule consumer against 10,000 stores, 100,000 rules and 5,000,000 customers'
state — its RSS, start-up time, how long a rule change takes to apply, and its events/s
next to the same process on bench/rules' catalogue (100 stores × 10 rules), side by side.

    .venv/bin/python bench/scale/bench_scale.py [--events 60000] [--runs 2] [--probes 6] [--drop] [--env N=V]

`--stores N` builds a smaller catalogue (N stores, the same rules and customers per store) in
its own `--database`, for a smoke run; `--only rules` leaves the scale catalogue alone.

PostgreSQL: the catalogue lives in its own database (`--database`, default `wooflow_scale`
on the server of DATABASE_URL), created, migrated and loaded the first time in bulk
(`INSERT … SELECT generate_series` for stores and state, COPY for the rules) and reused by
later runs (`--reload` loads it again, `--drop` drops it at the end). The bench/rules
catalogue runs on DATABASE_URL itself, created and deleted per run as bench/rules does.

Per run, each catalogue: the backlog of `--events` events (bench/rules' mix: orders, status
changes, customers, products, storefront views; on the scale catalogue spread over all stores
and their 500 customers each, so almost every customer is read from the 5,000,000-row table)
is produced first, then `wooflow rules` starts as its own process:
- start-up: process start → "rule consumer running" (rules loaded) and → first offsets committed;
- events/s: events committed after the first commit / time from the first to the last commit
  (the group's committed offsets, polled);
- RSS: sampled every 0.1 s, peak and at the end; CPU per event;
- rule changes (scale catalogue, the consumer caught up): a new rule for a random store is
  written to `rules` (what the API does), then an order event of that store is produced every
  20 ms until a command of the new rule appears; the change applied at the latest when that
  command was produced (its Kafka timestamp), measured from the write's commit.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "rules"))

import psutil  # noqa: E402
from bench_rules import PRODUCTS, Workload, cleanup, produce_backlog, rules_for  # noqa: E402

from wooflow.settings import Settings  # noqa: E402

STORES, RULES_PER_STORE, CUSTOMERS = 10_000, 10, 500
PREFIX = "sc-"  # the scale catalogue's store ids: sc-00000 … sc-09999
LOYALTY = {"loyalty": {"points_per_unit": 1, "tiers": {"metric": "total_spent", "levels": [
    {"name": "silver", "min": 500}, {"name": "gold", "min": 1500}]}}}


def store_id(i: int) -> str:
    return f"{PREFIX}{i:05d}"


def scale_rules(i: int) -> list[dict[str, Any]]:
    """bench/rules' ten rules, with this store's own numbers, product ids and note texts:
    no two stores share a rule (a catalogue of custom rules, the hard case for memory)."""
    rng = random.Random(i)
    out = copy.deepcopy(rules_for(i))

    def vary(node: Any) -> None:
        if isinstance(node, dict):
            if "field" in node:
                v = node["value"]
                if isinstance(v, int) and not isinstance(v, bool):
                    node["value"] = max(1, int(v * rng.uniform(0.5, 2.0)))
                elif isinstance(v, list):
                    node["value"] = rng.sample(range(1, 41), len(v))
            for child in node.get("conditions", []):
                vary(child)

    for rule in out:
        vary(rule.get("conditions", {}))
        opts = rule.get("trigger_options", {})
        if "threshold" in opts:
            opts["threshold"] = rng.randint(100, 500)
        for action in rule["actions"]:
            action["params"] = {**action["params"], "note": f"{action['params']['note']} · {store_id(i)}"}
    return out


# --- the catalogue in its own database ----------------------------------------------------
def psycopg_dsn(url: str) -> str:
    from wooflow.db.engine import normalise_url

    return normalise_url(url).replace("postgresql+psycopg://", "postgresql://")


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(psycopg_dsn(url).rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            c.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(psycopg_dsn(url).rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def loaded(url: str, stores: int) -> bool:
    import psycopg

    n = stores
    with psycopg.connect(psycopg_dsn(url)) as c:
        found = c.execute("SELECT count(*) FROM stores WHERE id LIKE %s", (PREFIX + "%",)).fetchone()
        rules = c.execute("SELECT count(*) FROM rules WHERE store_id LIKE %s", (PREFIX + "%",)).fetchone()
        state = c.execute("SELECT reltuples FROM pg_class WHERE relname = 'customer_state'").fetchone()
        products = c.execute("SELECT count(*) FROM product_catalog WHERE store_id = %s",
                             (store_id(n - 1),)).fetchone()
    return (found and found[0] == n and rules and rules[0] >= n * RULES_PER_STORE
            and state is not None and state[0] >= n * CUSTOMERS * 0.95 and products and products[0] == PRODUCTS)


def load(url: str, stores: int) -> dict[str, float]:
    """Stores, state and the product catalog by generate_series, rules by COPY; ~1.5 GB with indexes."""
    import psycopg

    from wooflow.consumer.model import RuleSpec

    took: dict[str, float] = {}
    with psycopg.connect(psycopg_dsn(url)) as c:
        t = time.perf_counter()
        c.execute("DELETE FROM stores WHERE id LIKE %s", (PREFIX + "%",))  # rules cascade
        for table in ("customer_state", "order_state", "scheduled_steps", "product_catalog"):
            c.execute(f"DELETE FROM {table} WHERE store_id LIKE %s", (PREFIX + "%",))
        c.execute("""INSERT INTO stores (id, url, webhook_secret, currency, timezone, settings)
                     SELECT %s || lpad(g::text, 5, '0'), 'http://127.0.0.1:1', md5(g::text), 'PLN', 'Europe/Warsaw',
                            %s::jsonb
                     FROM generate_series(0, %s - 1) g""", (PREFIX, json.dumps(LOYALTY), stores))
        took["stores_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cols = ("store_id", "name", "trigger", "trigger_options", "conditions", "actions", "priority", "enabled",
                "group_label", "frequency", "exit_conditions")
        with c.cursor().copy(f"COPY rules ({', '.join(cols)}) FROM STDIN") as copy_in:
            for i in range(stores):
                for r in scale_rules(i):
                    d = RuleSpec.model_validate(r).model_dump(mode="json")
                    copy_in.write_row([store_id(i), d["name"], d["trigger"], json.dumps(d["trigger_options"]),
                                       json.dumps(d["conditions"]), json.dumps(d["actions"]), d["priority"],
                                       d["enabled"], d["group_label"], json.dumps(d["frequency"]),
                                       json.dumps(d["exit_conditions"])])
        took["rules_s"] = time.perf_counter() - t
        t = time.perf_counter()
        # 500 registered customers per store, with what the rule consumer keeps for them: order
        # count and totals, first/last order, tier, points, views for a third, the bookkeeping
        c.execute("""
            INSERT INTO customer_state (store_id, customer_key, customer_id, email, order_count, totals,
                                        first_order_at, last_order_at, tier, points, view_counts, engine)
            SELECT %(prefix)s || lpad((g / %(per)s)::text, 5, '0'), 'c' || (g %% %(per)s + 1), g %% %(per)s + 1,
                   'c' || (g %% %(per)s + 1) || '@example.com', g %% 7,
                   CASE WHEN g %% 7 = 0 THEN '{}'::jsonb
                        ELSE jsonb_build_object('PLN', ((g %% 7) * (20 + g %% 97))::text || '.0000') END,
                   CASE WHEN g %% 7 = 0 THEN NULL ELSE timestamptz '2025-01-01' + (g %% 400) * interval '1 day' END,
                   CASE WHEN g %% 7 = 0 THEN NULL ELSE timestamptz '2026-01-01' + (g %% 60) * interval '1 day' END,
                   CASE WHEN (g %% 7) * (20 + g %% 97) >= 500 THEN 'silver' ELSE '' END,
                   (g %% 7) * (20 + g %% 97),
                   CASE WHEN g %% 3 = 0 THEN jsonb_build_object((g %% 40 + 1)::text, g %% 5 + 1) ELSE '{}'::jsonb END,
                   jsonb_build_object('created_event', md5('c' || g::text),
                                      'g', jsonb_build_array('g' || left(md5('c' || (g %% %(per)s + 1)), 24)))
            FROM generate_series(0, %(n)s - 1) g""", {"prefix": PREFIX, "per": CUSTOMERS, "n": stores * CUSTOMERS})
        took["customers_s"] = time.perf_counter() - t
        # the catalog a backfill leaves, as bench/rules seeds it: each store's products, one category each
        c.execute("""
            INSERT INTO product_catalog (store_id, product_id, type, status, category_ids, source)
            SELECT %(prefix)s || lpad((g / %(per)s)::text, 5, '0'), g %% %(per)s + 1, 'simple', 'publish',
                   ARRAY[g::bigint * 7919 %% 12 + 1], 'rest'
            FROM generate_series(0, %(n)s - 1) g""", {"prefix": PREFIX, "per": PRODUCTS, "n": stores * PRODUCTS})
        c.commit()
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as c:
        t = time.perf_counter()
        c.execute("VACUUM ANALYZE stores, rules, customer_state, product_catalog")
        took["analyze_s"] = time.perf_counter() - t
    return {k: round(v, 1) for k, v in took.items()}


def scale_cleanup(url: str) -> None:
    """What a run adds to the catalogue: its orders, firings, delayed steps, probe rules."""
    import psycopg

    with psycopg.connect(psycopg_dsn(url)) as c:
        for table in ("order_state", "rule_firings", "scheduled_steps"):
            c.execute(f"DELETE FROM {table} WHERE store_id LIKE %s", (PREFIX + "%",))
        c.execute("DELETE FROM rules WHERE store_id LIKE %s AND name LIKE 'probe %%'", (PREFIX + "%",))


# --- the consumer as a process ---------------------------------------------------------
class ConsumerProcess:
    def __init__(self, s: Settings, log: Path, extra: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WOOFLOW_")} | {
            "WOOFLOW_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers, "WOOFLOW_DATABASE_URL": s.database_url,
            "WOOFLOW_TOPIC_PREFIX": s.topic_prefix, "WOOFLOW_RULES_GROUP": s.rules_group, "WOOFLOW_LOG_LEVEL": "INFO",
            **(extra or {})}
        self.log = log
        self.started = time.monotonic()
        with open(log, "wb") as out:  # the child keeps its own handle
            # cwd: `-m` puts it first on sys.path, where a checkout's `wooflow/` would shadow the package
            self.proc = subprocess.Popen([sys.executable, "-m", "wooflow.cli", "rules"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=log.parent)
        self.ps = psutil.Process(self.proc.pid)
        self.rss: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                self.rss.append((time.monotonic(), self.ps.memory_info().rss))
            except psutil.Error:
                return
            time.sleep(0.1)

    def cpu(self) -> float:
        return float(sum(self.ps.cpu_times()[:2]))

    def wait_running(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "rule consumer running" in self.log.read_text(errors="replace"):
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise SystemExit("the rule consumer stopped: " + self.log.read_text()[-3000:])
            time.sleep(0.05)
        raise SystemExit("the rule consumer did not start: " + self.log.read_text()[-3000:])

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def committed(s: Settings, reader: Any, parts: list[Any]) -> int:
    return sum(max(0, tp.offset) for tp in reader.committed(parts, timeout=10))


def event_partitions(s: Settings, reader: Any) -> list[Any]:
    from confluent_kafka import TopicPartition

    from wooflow.kafka import topics

    return [TopicPartition(s.topic(base), p) for base in topics.EVENT_TOPICS
            for p in reader.list_topics(s.topic(base), timeout=10).topics[s.topic(base)].partitions]


def drain(s: Settings, consumer: ConsumerProcess, reader: Any, parts: list[Any], base: int) -> dict[str, float]:
    """Throughput of a consumer draining what was produced after the group had committed
    `base` offsets: events after its first commit / time from that commit to the last."""
    end = sum(reader.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    first = None
    cpu0 = 0.0
    deadline = time.monotonic() + 1800
    done = base
    while time.monotonic() < deadline:
        done = committed(s, reader, parts)
        now = time.monotonic()
        if first is None and done > base:
            first, cpu0 = (now, done), consumer.cpu()
        if done >= end:
            break
        if consumer.proc.poll() is not None:
            raise SystemExit("the rule consumer stopped: " + consumer.log.read_text()[-3000:])
        time.sleep(0.25)
    else:
        raise SystemExit(f"not drained within 30 min: {done}/{end}")
    last, cpu1 = time.monotonic(), consumer.cpu()
    assert first is not None
    counted = end - first[1]
    return {"events": end - base, "first_commit_s": round(first[0] - consumer.started, 2),
            "events_per_s": round(counted / max(1e-6, last - first[0])),
            "cpu_us_per_event": round((cpu1 - cpu0) / max(1, counted) * 1e6)}


# --- rule changes --------------------------------------------------------------------------
def probe_rule_changes(s: Settings, url: str, probes: int, seed: int, stores: int) -> list[dict[str, float]]:
    """A new rule for a random store, then one order event of that store every 20 ms until a
    command of the new rule shows up: when it applied, at the latest."""
    import psycopg
    from confluent_kafka import TopicPartition

    from wooflow.consumer.model import RuleSpec
    from wooflow.kafka import topics
    from wooflow.kafka.consumer import make_reader
    from wooflow.kafka.producer import Producer
    from wooflow.schemas.codec import get_codec

    rng = random.Random(seed)
    codec = get_codec(None)
    producer = Producer(s)
    cmd_topic, orders_topic = s.topic(topics.COMMANDS), s.topic(topics.ORDERS)
    reader = make_reader(s, f"scale-probe-{uuid.uuid4().hex[:6]}")
    partitions = reader.list_topics(cmd_topic, timeout=10).topics[cmd_topic].partitions
    parts = [TopicPartition(cmd_topic, p) for p in partitions]
    reader.assign([TopicPartition(tp.topic, tp.partition, reader.get_watermark_offsets(tp, timeout=10)[1])
                   for tp in parts])
    w = Workload("probe", 0, seed, stores=[store_id(0)], customers=CUSTOMERS)
    results = []
    try:
        with psycopg.connect(psycopg_dsn(url), autocommit=True) as db:
            for k in range(probes):
                store = store_id(rng.randrange(stores))
                spec = RuleSpec.model_validate({
                    "name": f"probe {k}", "trigger": "new_order",
                    "actions": [{"type": "add_order_note", "params": {"note": f"probe {k}"}}]})
                d = spec.model_dump(mode="json")
                row = db.execute(
                    "INSERT INTO rules (store_id, name, trigger, conditions, actions) VALUES (%s, %s, %s, %s, %s) "
                    "RETURNING id", (store, d["name"], d["trigger"], json.dumps(d["conditions"]),
                                     json.dumps(d["actions"]))).fetchone()
                assert row is not None
                rule_id, written = int(row[0]), time.time()
                sent = 0
                found = None
                deadline = time.monotonic() + 120
                while found is None and time.monotonic() < deadline:
                    oid = 900_000_000 + seed * 10_000 + k * 1000 + sent
                    ev = w.order(store, oid, 1 + sent % CUSTOMERS, "processing", 0, "created")
                    ev["received_at"] = datetime.now(timezone.utc)
                    producer.produce(orders_topic, codec.encode("OrderEvent", ev, orders_topic),
                                     key=f"{store}:{ev['customer_key']}")
                    producer.flush(10)
                    sent += 1
                    end = time.monotonic() + 0.02
                    while found is None and time.monotonic() < end:
                        for m in reader.consume(100, 0.005):
                            if m.error() is None:
                                cmd = codec.decode(m.value())[1]
                                if cmd["rule_id"] == rule_id:
                                    found = m.timestamp()[1] / 1000
                results.append({"applied_within_s": round(found - written, 3) if found else float("nan"),
                                "probes_sent": sent})
                time.sleep(rng.uniform(0.5, 1.5))
    finally:
        reader.close()
        producer.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--runs", type=int, default=2, help="pairs: bench/rules catalogue, then the scale catalogue")
    ap.add_argument("--probes", type=int, default=6, help="rule changes timed per run")
    ap.add_argument("--database", default="wooflow_scale")
    ap.add_argument("--stores", type=int, default=STORES, help="stores of the scale catalogue (a smaller one for a "
                    "smoke run: give it its own --database)")
    ap.add_argument("--reload", action="store_true", help="load the scale catalogue again")
    ap.add_argument("--drop", action="store_true", help="drop the scale database at the end")
    ap.add_argument("--only", choices=("rules", "scale"), help="run one catalogue only")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for the rule consumer (e.g. WOOFLOW_METRICS_STORE_LABEL=false)")
    ap.add_argument("--py-spy", metavar="OUT", help="profile the consumer's warm drain of the first run with py-spy "
                    "(stacks holding the GIL) into OUT.rules and OUT.scale")
    args = ap.parse_args()
    base_url = os.environ.get("DATABASE_URL")
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or not base_url:
        sys.exit('set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (e.g. eval "$(.venv/bin/wooflow dev up)")')
    from wooflow.db.migrate import upgrade
    from wooflow.kafka.admin import create_topics, delete_topics_with_prefix

    url = base_url.rsplit("/", 1)[0] + "/" + args.database
    upgrade(base_url)
    cleanup(Settings(database_url=base_url))  # bench/rules leftovers of interrupted runs
    if args.only != "rules":
        ensure_database(url)
        upgrade(url)
        if args.reload or not loaded(url, args.stores):
            print("loading the scale catalogue:", load(url, args.stores), flush=True)
        scale_cleanup(url)
        with psycopg_connect(url) as c:
            size = c.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
        print(f"scale database {args.database}: {size[0] if size else '?'}", flush=True)
    out: dict[str, list[dict[str, Any]]] = {"rules": [], "scale": []}
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-scale-{uuid.uuid4().hex[:6]}"
    logs.mkdir(parents=True)
    try:
        for r in range(args.runs):
            for which in ("rules", "scale"):
                if args.only and which != args.only:
                    continue
                tag = uuid.uuid4().hex[:8]
                s = Settings(database_url=base_url if which == "rules" else url, topic_prefix=f"scale-{tag}.",
                             rules_group=f"scale-{tag}")
                create_topics(s)
                if which == "rules":
                    from bench_rules import setup

                    w = Workload(tag, args.events, seed=r)
                    setup(s, w)
                else:
                    w = Workload(tag, args.events, seed=r, stores=[store_id(i) for i in range(args.stores)],
                                 customers=CUSTOMERS)
                    w.next_order = 100_000_000 * (r + 1)
                    produce_backlog(s, list(w.events()))
                load0 = os.getloadavg()[0]
                consumer = ConsumerProcess(s, logs / f"{which}-{r}.log", dict(e.split("=", 1) for e in args.env))
                from wooflow.kafka.consumer import make_reader

                reader = make_reader(s, s.rules_group)  # asks the group's committed offsets; never joins it
                try:
                    parts = event_partitions(s, reader)
                    res: dict[str, Any] = {"startup_ready_s": round(consumer.wait_running(), 2)}
                    cold = drain(s, consumer, reader, parts, 0)
                    res |= {"startup_first_commit_s": cold["first_commit_s"], "cold_events_per_s":
                            cold["events_per_s"], "cold_cpu_us_per_event": cold["cpu_us_per_event"]}
                    # the same number of new events again, every store's rules compiled by now
                    w2 = Workload(tag + "w", args.events, seed=100 + r, stores=w.stores, customers=w.customers)
                    w2.next_order = w.next_order + 1_000_000
                    base = committed(s, reader, parts)
                    produce_backlog(s, list(w2.events()))
                    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p",
                                            str(consumer.proc.pid), "-d", "30", "-r", "200", "-f", "raw",
                                            "--nonblocking", "--gil", "-o", f"{args.py_spy}.{which}"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) \
                        if args.py_spy and r == 0 else None
                    warm = drain(s, consumer, reader, parts, base)
                    if spy is not None:
                        spy.wait(60)
                    res |= {"events_per_s": warm["events_per_s"], "cpu_us_per_event": warm["cpu_us_per_event"]}
                    if which == "scale" and args.probes:
                        changes = probe_rule_changes(s, url, args.probes, seed=r, stores=args.stores)
                        res["rule_change_applied_s"] = [c["applied_within_s"] for c in changes]
                    res["rss_mb_peak"] = round(max(x for _, x in consumer.rss) / 2**20)
                    res["rss_mb_end"] = round(consumer.rss[-1][1] / 2**20)
                finally:
                    reader.close()
                    consumer.stop()
                    if which == "rules":
                        cleanup(s, w.stores)
                    else:
                        scale_cleanup(url)
                    delete_topics_with_prefix(s, s.topic_prefix)
                res["load_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                print(f"run {r + 1} {which}: {res}", flush=True)
                out[which].append(res)
    finally:
        if args.drop and args.only != "rules":
            drop_database(url)
    for which, runs in out.items():
        if not runs:
            continue
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))}
        print(f"{which}: median of {len(runs)}: {med}")
    if out["rules"] and out["scale"]:
        ratios = [sc["events_per_s"] / ru["events_per_s"] for ru, sc in zip(out["rules"], out["scale"], strict=False)]
        print(f"scale / bench-rules events/s, per pair: {[round(x, 2) for x in ratios]}")


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(psycopg_dsn(url))


if __name__ == "__main__":
    main()
