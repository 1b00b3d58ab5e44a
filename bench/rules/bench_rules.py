"""Rule consumer benchmark: events/s per consumer process on the real broker, p50/p99 of
per-event evaluation (state apply + trigger + conditions), RSS — and, in the same run, a
naive baseline that loads the store's rules from PostgreSQL for every event (as the PHP
plugins do) and keeps state with per-event queries.

    eval "$(.venv/bin/wooflow dev up)"        # or export KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL
    .venv/bin/python bench/rules/bench_rules.py --events 200000 --runs 3
    .venv/bin/python bench/rules/bench_rules.py --events 50000 --runs 1 --profile   # pyinstrument

Workload: 100 stores × 10 rules (mixed triggers and conditions, tiers configured), 500
customers per store; events: 30% new orders, 20% order status updates, 10% customers,
10% products, 30% storefront views. Line items carry no categories, as WooCommerce's don't:
the `category` condition resolves them through the product catalog, seeded with each
store's 40 products (a store whose catalog was backfilled); product events update it.
Events are produced first (with the bridge's `store`/`schema` headers), then one
in-process RuleConsumer (the same code `wooflow rules` runs) consumes the backlog;
throughput = events / (first batch → last commit). Each run deletes its stores (rules,
firings, state, catalog, delayed steps) at the end, and a new benchmark first deletes
what interrupted runs left.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka import Producer

from wooflow.kafka import topics
from wooflow.kafka.admin import create_topics, delete_topics_with_prefix
from wooflow.kafka.config import producer_config
from wooflow.kafka.headers import event_headers
from wooflow.kafka.producer import produce_when_room
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings

STORES, RULES_PER_STORE, CUSTOMERS, PRODUCTS = 100, 10, 100, 40
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
ADDR = ("first_name", "last_name", "company", "address_1", "address_2", "city", "state", "postcode", "country",
        "email", "phone")
COUNTRIES = ["PL", "PL", "DE", "FR", "NO", "US", "GB", "CZ"]
NOTE = [{"type": "add_order_note", "params": {"note": "wooflow {{ order.number }}"}}]


def rules_for(i: int) -> list[dict[str, Any]]:
    """Ten rules per store: every seed-001/002 trigger family, conditions of every kind."""
    def leaf(f: str, op: str, v: Any) -> dict[str, Any]:
        return {"field": f, "operator": op, "value": v}

    big = 100 + (i % 5) * 50
    return [
        {"name": "big order", "trigger": "new_order", "actions": NOTE, "conditions": {"match": "all", "conditions": [
            leaf("order_total", "gt", big), leaf("geo_scope", "equals", "eu")]}},
        {"name": "pl cod", "trigger": "new_order", "actions": NOTE, "conditions": {"match": "any", "conditions": [
            {"match": "all", "conditions": [leaf("billing_country", "in", "PL,CZ"),
                                            leaf("payment_method", "equals", "bacs"),
                                            leaf("product_id", "in", [3, 7, 11])]},
            leaf("coupon_code", "equals", "VIP")]}},
        {"name": "completed", "trigger": "order_status_changed", "trigger_options": {"to": "completed"},
         "actions": NOTE, "conditions": {"match": "all", "conditions": [leaf("item_count", "gt", 4)]}},
        {"name": "cancelled", "trigger": "order_status_changed",
         "trigger_options": {"from": "processing", "to": "cancelled"},
         "actions": NOTE},
        {"name": "welcome", "trigger": "first_purchase", "frequency": {"once_per_customer": True},
         "actions": [*NOTE, {"type": "add_order_note", "params": {"note": "day 3"}, "delay": "day 3"}]},
        {"name": "repeat", "trigger": "repeat_purchase", "actions": NOTE, "frequency": {"per_days": 30},
         "conditions": {"match": "all", "conditions": [leaf("days_since_last_order", "gt", 20),
                                                       leaf("category", "not_in", "9")]}},
        {"name": "vip", "trigger": "high_value_order", "trigger_options": {"threshold": 250}, "actions": NOTE},
        {"name": "5th", "trigger": "order_count_milestone", "trigger_options": {"counts": [5, 10, 20]},
         "actions": NOTE},
        {"name": "gold", "trigger": "tier_upgrade", "trigger_options": {"to": "gold"}, "actions": NOTE},
        {"name": "signup", "trigger": "new_customer", "actions": NOTE, "conditions": {"match": "all", "conditions": [
            leaf("customer_email", "contains", "@")]}},
    ]


def _addr(country: str, email: str = "") -> dict[str, str]:
    return {k: "" for k in ADDR} | {"country": country, "email": email}


def _eid(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


class Workload:
    def __init__(self, run: str, n: int, seed: int, stores: list[str] | None = None,
                 customers: int = CUSTOMERS) -> None:
        self.run = run
        self.n = n
        self.rng = random.Random(seed)
        self.stores = stores or [f"b{run}-{i:03d}" for i in range(STORES)]
        self.customers = customers
        self.orders: dict[str, list[tuple[int, int, str]]] = {}  # store → [(order id, customer, status)]
        self.next_order = 1

    def order(self, store: str, oid: int, cust: int, status: str, minute: int, action: str) -> dict[str, Any]:
        rng = random.Random(oid)
        items = [{"id": j, "product_id": rng.randint(1, PRODUCTS), "variation_id": 0, "name": "Item", "sku": "",
                  "quantity": rng.randint(1, 3), "price": Decimal("19.9900"), "total": Decimal("39.9800"),
                  "category_ids": []} for j in range(rng.randint(1, 4))]
        country = COUNTRIES[cust % len(COUNTRIES)]
        at = T0 + timedelta(minutes=minute)
        order = {"id": oid, "number": str(oid), "status": status, "currency": "PLN",
                 # order totals: median ~45, 1% above ~230
                 "total": Decimal(int(rng.lognormvariate(3.8, 0.7))), "subtotal": Decimal(0), "total_tax": Decimal(0),
                 "shipping_total": Decimal(0), "discount_total": Decimal(0), "customer_id": cust,
                 "billing": _addr(country, f"c{cust}@example.com"), "shipping": _addr(""),
                 "payment_method": "cod" if cust % 3 else "bacs", "payment_method_title": "",
                 "shipping_methods": ["flat_rate"], "line_items": items, "coupon_codes": [], "created_via": "checkout",
                 "customer_note": "", "date_created": T0 + timedelta(minutes=oid % 100000), "date_modified": at,
                 "date_paid": None, "date_completed": None, "meta": {"_note": "x" * 40}}
        return {"event_id": _eid(store, "order", oid, minute, status), "store_id": store, "customer_key": f"c{cust}",
                "occurred_at": at, "received_at": datetime.now(timezone.utc), "source": "webhook", "schema_version": 1,
                "topic": f"order.{action}", "store_timezone": "UTC", "order_id": oid, "action": action,
                "order": order, "previous_status": None, "raw_json": None}

    def events(self):  # type: ignore[no-untyped-def]
        rng = self.rng
        for i in range(self.n):
            store = self.stores[rng.randrange(len(self.stores))]
            cust = rng.randint(1, self.customers)
            minute = i
            r = rng.random()
            if r < 0.30 or (r < 0.50 and not self.orders.get(store)):
                oid = self.next_order
                self.next_order += 1
                status = "processing" if rng.random() < 0.8 else "pending"
                self.orders.setdefault(store, []).append((oid, cust, status))
                yield "OrderEvent", self.order(store, oid, cust, status, minute, "created")
            elif r < 0.50:
                lst = self.orders[store]
                k = rng.randrange(len(lst))
                oid, c, status = lst[k]
                nxt = {"pending": "processing", "processing": rng.choice(["completed", "completed", "cancelled"]),
                       "completed": "refunded"}.get(status, "completed")
                lst[k] = (oid, c, nxt)
                yield "OrderEvent", self.order(store, oid, c, nxt, minute, "updated")
            elif r < 0.60:
                at = T0 + timedelta(minutes=minute)
                yield "CustomerEvent", {
                    "event_id": _eid(store, "customer", cust, minute), "store_id": store, "customer_key": f"c{cust}",
                    "occurred_at": at, "received_at": datetime.now(timezone.utc), "source": "webhook",
                    "schema_version": 1, "topic": "customer.created", "store_timezone": "UTC", "customer_id": cust,
                    "action": "created", "raw_json": None, "customer": {
                        "id": cust, "email": f"c{cust}@example.com", "first_name": "A", "last_name": "B",
                        "username": f"c{cust}", "role": "customer", "billing": _addr("PL"), "shipping": _addr(""),
                        "is_paying_customer": False, "date_created": at, "date_modified": at, "meta": {}}}
            elif r < 0.70:
                pid = rng.randint(1, PRODUCTS)
                at = T0 + timedelta(minutes=minute)
                yield "ProductEvent", {
                    "event_id": _eid(store, "product", pid, minute), "store_id": store, "customer_key": f"p{pid}",
                    "occurred_at": at, "received_at": datetime.now(timezone.utc), "source": "webhook",
                    "schema_version": 1, "topic": "product.updated", "store_timezone": "UTC", "product_id": pid,
                    "action": "updated", "raw_json": None, "product": {
                        "id": pid, "name": "P", "sku": "", "type": "simple", "status": "publish",
                        "price": Decimal("19.9900"), "categories": [{"id": 3, "name": "c", "slug": "c"}], "tags": [],
                        "stock_status": "instock", "permalink": "", "date_modified": at}}
            else:
                at = T0 + timedelta(minutes=minute)
                yield "StorefrontEvent", {
                    "event_id": _eid(store, "view", cust, minute), "store_id": store, "customer_key": f"c{cust}",
                    "occurred_at": at, "received_at": datetime.now(timezone.utc), "source": "storefront",
                    "schema_version": 1, "topic": "storefront.product_viewed", "store_timezone": "UTC",
                    "event_type": "product_viewed", "session_id": f"s{cust}", "customer_id": cust, "email": None,
                    "product_id": rng.randint(1, PRODUCTS), "category_id": None, "query": None, "cart": [],
                    "cart_total": None, "currency": None, "url": None, "properties": {}}


TOPIC_OF = {"OrderEvent": topics.ORDERS, "CustomerEvent": topics.CUSTOMERS, "ProductEvent": topics.PRODUCTS,
            "StorefrontEvent": topics.STOREFRONT}


def setup(s: Settings, w: Workload) -> list[tuple[str, dict[str, Any]]]:
    from sqlalchemy import insert

    from wooflow.consumer.model import RuleSpec
    from wooflow.db.engine import get_engine
    from wooflow.db.tables import product_catalog, rules
    from wooflow.stores import Store, upsert_store

    create_topics(s)
    engine = get_engine(s.database_url)
    loyalty = {"loyalty": {"points_per_unit": 1, "tiers": {"metric": "total_spent", "levels": [
        {"name": "silver", "min": 500}, {"name": "gold", "min": 1500}]}}}
    rows = []
    for i, sid in enumerate(w.stores):
        upsert_store(engine, Store(id=sid, url="http://127.0.0.1:1", webhook_secret="x", currency="PLN",
                                   settings=loyalty))
        rows += [{"store_id": sid, **RuleSpec.model_validate(r).model_dump(mode="json")} for r in rules_for(i)]
    with engine.begin() as conn:
        conn.execute(insert(rules), rows)
        conn.execute(insert(product_catalog), [  # the catalog a backfill leaves: one category per product
            {"store_id": sid, "product_id": pid, "type": "simple", "status": "publish",
             "category_ids": [random.Random(pid).randint(1, 12)], "source": "rest"}
            for sid in w.stores for pid in range(1, PRODUCTS + 1)])
    events = list(w.events())
    produce_backlog(s, events)
    return events


def produce_backlog(s: Settings, events: list[tuple[str, dict[str, Any]]]) -> None:
    codec = get_codec(None)
    # wooflow's producer configuration, lingering longer: the backlog is loaded in big batches
    p = Producer(producer_config(s) | {"linger.ms": 20, "batch.size": 1_000_000,
                                       "queue.buffering.max.messages": 1_000_000})
    for schema, ev in events:
        topic = s.topic(TOPIC_OF[schema])
        produce_when_room(p, topic, codec.encode(schema, ev, topic), key=f"{ev['store_id']}:{ev['customer_key']}",
                          headers=event_headers(ev["store_id"], schema), wait_s=0.1)
    assert p.flush(120) == 0


BENCH_STORE = r"^b[0-9a-f]{8}-[0-9]{3}$"  # only this benchmark names stores like that


def cleanup(s: Settings, store_ids: list[str] | None = None) -> None:
    """Delete a run's stores (their rules and firings cascade) and the state and delayed
    steps it left, or every earlier run's: 1,000 rules per run would otherwise pile up in
    `rules` and slow down every later full rule reload (and every other consumer's)."""
    from sqlalchemy import text

    from wooflow.db.engine import get_engine

    where = "store_id = ANY(:ids)" if store_ids is not None else "store_id ~ :pat"
    params = {"ids": store_ids, "pat": BENCH_STORE}
    with get_engine(s.database_url).begin() as conn:
        for table in ("scheduled_steps", "customer_state", "order_state", "product_catalog"):
            conn.execute(text(f"DELETE FROM {table} WHERE {where}"), params)
        conn.execute(text(f"DELETE FROM stores WHERE {where.replace('store_id', 'id')}"), params)


def run_consumer(s: Settings, n: int, profile: bool) -> dict[str, float]:
    from wooflow.consumer.runner import RuleConsumer
    from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - wired like `wooflow rules`
    from wooflow.scheduler.steps import store_delayed

    latencies: list[float] = []
    rc = RuleConsumer(s, store_delayed=store_delayed, latencies=latencies)
    stop = threading.Event()
    marks: dict[str, float] = {}
    orig = rc.handle
    orig_run = rc.processor.run

    def run(items, **kw):  # type: ignore[no-untyped-def]
        out = orig_run(items, **kw)
        for _, m in out.matches:
            rc.stats[f"rule:{m.rule.id}"] += 1
        return out

    rc.processor.run = run  # type: ignore[method-assign]

    def handle(batch):  # type: ignore[no-untyped-def]
        if "first" not in marks:
            marks["first"], marks["cpu_first"] = time.perf_counter(), time.process_time()
        orig(batch)

    def save() -> None:
        RuleConsumer.save_state(rc)
        if rc.stats["events"] >= n:
            marks["last"], marks["cpu_last"] = time.perf_counter(), time.process_time()
            stop.set()

    rc.handle = handle  # type: ignore[method-assign]
    rc.save_state = save  # type: ignore[method-assign]
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    rc.run(stop)
    if profiler is not None:
        profiler.stop()
        out = Path(__file__).with_name("profile.txt")
        out.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        print(f"  profile written to {out}")
    elapsed = marks["last"] - marks["first"]
    latencies.sort()
    from collections import Counter

    names: Counter[str] = Counter()
    for rid, count in rc.stats.items():
        if rid.startswith("rule:"):
            r = rc.rules.get(int(rid[5:]))
            names[r.spec.name if r else rid] += count
    print("  commands by rule:", dict(names.most_common()))
    return {"events_per_s": n / elapsed, "seconds": elapsed,
            # all of this process's threads (librdkafka's too): what one event costs, whatever else runs
            "cpu_us_per_event": (marks["cpu_last"] - marks["cpu_first"]) / n * 1e6, "commands": rc.stats["commands"],
            "delayed": rc.stats["delayed"], "skipped_by_headers": rc.stats["skipped"],
            "p50_us": latencies[len(latencies) // 2] * 1e6, "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_naive(s: Settings, events: list[tuple[str, dict[str, Any]]], limit: int) -> dict[str, float]:
    """The PHP way: every event on its own — decode, SELECT the store's rules for the trigger's
    event type, compile them, read and write the customer's state, evaluate, emit."""
    from sqlalchemy import select

    from wooflow.consumer.apply import APPLIERS
    from wooflow.consumer.batch import Item
    from wooflow.consumer.commands import build_command
    from wooflow.consumer.engine import RuleEngine
    from wooflow.consumer.rules import RuleCache, compile_rule
    from wooflow.consumer.state import StateBatch
    from wooflow.consumer.tiers import loyalty_of
    from wooflow.consumer.triggers import TRIGGERS
    from wooflow.db.engine import get_engine
    from wooflow.db.tables import rules, stores
    from wooflow.kafka.producer import Producer as WProducer

    engine = get_engine(s.database_url)
    codec = get_codec(None)
    producer = WProducer(s)
    cmd_topic = s.topic(topics.COMMANDS)
    encoded = [(sch, codec.encode(sch, ev)) for sch, ev in events[:limit]]
    triggers_of: dict[str, list[str]] = {}
    for t in TRIGGERS.values():
        triggers_of.setdefault(t.schema, []).append(t.name)
    latencies = []
    started = time.perf_counter()
    for _, value in encoded:
        t0 = time.perf_counter()
        schema, ev = codec.decode(value)
        with engine.begin() as conn:
            rows = conn.execute(select(rules).where(rules.c.store_id == ev["store_id"], rules.c.enabled.is_(True),
                                                    rules.c.trigger.in_(triggers_of.get(schema, [])))
                                .order_by(rules.c.priority)).mappings().all()
            settings_row = conn.execute(select(stores.c.settings, stores.c.currency)
                                        .where(stores.c.id == ev["store_id"])).one()
            cache = RuleCache(engine)
            cache._swap({ev["store_id"]: [compile_rule(dict(r)) for r in rows]})
            state = StateBatch()
            state.load(conn, {(ev["store_id"], ev["customer_key"])},
                       {(ev["store_id"], int(ev["order_id"]))} if schema == "OrderEvent" else set())
            ctx = APPLIERS[schema](ev, state, loyalty_of(settings_row[0], settings_row[1]))
            for m in RuleEngine(cache).matches(ctx):
                for step, a in enumerate(m.rule.actions):
                    cmd = build_command(rule_id=m.rule.id, rule_version=m.rule.version, step=step,
                                        action_type=a.type, params=a.params, delay_s=a.delay_s, schema=schema,
                                        event=ev, trigger=m.trigger, state=ctx.customer.public())
                    producer.produce(cmd_topic, codec.encode("ActionCommand", cmd), key=ev["customer_key"])
            state.save(conn)
        latencies.append(time.perf_counter() - t0)
        _ = Item
    producer.flush(60)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"events_per_s": limit / elapsed, "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--naive-events", type=int, default=3000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or not os.environ.get("DATABASE_URL"):
        sys.exit('set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (e.g. eval "$(.venv/bin/wooflow dev up)")')
    from wooflow.db.migrate import upgrade

    upgrade(os.environ["DATABASE_URL"])
    cleanup(Settings())  # leftovers of interrupted runs
    results, naive = [], []
    for r in range(args.runs):
        tag = uuid.uuid4().hex[:8]
        s = Settings(topic_prefix=f"bench-{tag}.", rules_group=f"bench-{tag}", batch_size=args.batch_size,
                     batch_timeout_s=0.05, log_level="WARNING")
        w = Workload(tag, args.events, seed=r)
        t = time.perf_counter()
        events = setup(s, w)
        print(f"run {r + 1}: {len(events)} events produced in {time.perf_counter() - t:.1f}s", flush=True)
        res = run_consumer(s, len(events), args.profile and r == 0)
        print("  consumer: " + ", ".join(f"{k}={v:,.1f}" for k, v in res.items()), flush=True)
        results.append(res)
        if args.naive_events:
            nv = run_naive(s, events, min(args.naive_events, len(events)))
            print("  naive:    " + ", ".join(f"{k}={v:,.1f}" for k, v in nv.items()), flush=True)
            naive.append(nv)
        cleanup(s, w.stores)
        delete_topics_with_prefix(s, s.topic_prefix)  # a shared broker: leave it no partitions behind
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"\nmedian of {len(results)} runs, {args.events} events, batch {args.batch_size}, "
          f"{STORES} stores x {RULES_PER_STORE} rules:")
    print(f"  rule consumer: {med['events_per_s']:,.0f} events/s, p50 {med['p50_us']:.1f} us, "
          f"p99 {med['p99_us']:.1f} us per event, CPU {med['cpu_us_per_event']:.0f} us/event, "
          f"RSS {med['rss_mb']:.0f} MB, {med['commands']:,.0f} commands")
    if naive:
        nmed = statistics.median(n["events_per_s"] for n in naive)
        print(f"  naive baseline: {nmed:,.0f} events/s (p99 {statistics.median(n['p99_us'] for n in naive):,.0f} us)"
              f" → speed-up {med['events_per_s'] / nmed:,.1f}x")


if __name__ == "__main__":
    main()
