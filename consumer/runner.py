"""`wooflow rules`: the rule consumer process.

Reads the woo.* topics in one consumer group (scaled by adding processes; partitions are
shared with cooperative-sticky rebalancing), and per batch:

1. skips events no rule can care about, from their `store`/`schema` headers
   (wooflow/kafka/headers.py, without decoding them): no rule of the store listens to the
   schema and the state its rules read (consumer/needs.py) does not change with it;
   decodes the rest (`decode.py`, no logical types);
2. `BatchProcessor`: records its product events and makes known the products its orders
   name (`catalog.py`: memory, PostgreSQL, then the store's REST API within
   `WOOFLOW_CATALOG_FETCH_TIMEOUT_S`), loads the customers and orders of the batch in two queries, applies
   every event in order (`apply.py`), matches rules, applies frequency limits;
3. produces the commands keyed like their events (one customer stays on one partition),
   re-routes the events of guests folded into a customer to that customer's partition
   (consumer/merge.py), logs `held_out` for a holdout rule's control group on
   automation.logs (wooflow/holdout.py) and dead-letters what could not be decoded or
   evaluated;
4. `Checkpoint.commit`: waits for every command to be acknowledged (or puts them in the
   Kafka transaction), then commits the state transaction (`before_commit`), then the
   offsets. A crash anywhere re-processes at most the batch, and re-processing is
   harmless: state updates are idempotent, commands carry the same idempotency keys.
   Outside transactional mode the state transaction runs in a background thread while
   the next batch is fetched and decoded; that batch settles it (`Checkpoint.settle`:
   waits for the write, then commits its offsets) before reading state (step 2).

Delayed steps (`not_before` in the future) are not produced: they are stored with the
`store_delayed` the process was built with (the scheduler's `scheduled_steps`, wired in
by wooflow/cli.py) in the same transaction as the state, and the scheduler produces them
when due (same idempotency key).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone

from confluent_kafka import Consumer, Message, TopicPartition
from sqlalchemy import Connection, Engine, Text, func, select

from wooflow import metrics
from wooflow.checkpointing import Checkpoint, run_batches
from wooflow.clock import get_clock
from wooflow.consumer.apply import STATEFUL, changes_state
from wooflow.consumer.batch import BatchProcessor, FirstSights, Item
from wooflow.consumer.catalog import CATALOGUED, CatalogProduct, catalog_for
from wooflow.consumer.catalog import save as save_products
from wooflow.consumer.commands import held, idempotency_key
from wooflow.consumer.decode import EventDecoder
from wooflow.consumer.engine import RuleEngine
from wooflow.consumer.rules import RuleCache, RuleListener
from wooflow.consumer.state import Order, StateBatch, StateCache, record_levels
from wooflow.consumer.tiers import Loyalty, loyalty_of
from wooflow.consumer.triggers import Keep
from wooflow.consumer.values import is_event
from wooflow.db.engine import get_engine, when_available
from wooflow.db.tables import stores
from wooflow.dlq import dead_letter
from wooflow.gc_tuning import tune_gc
from wooflow.holdout import held_out_log
from wooflow.kafka import topics
from wooflow.kafka.config import BATCH, TRANSACTIONAL
from wooflow.kafka.consumer import make_consumer
from wooflow.kafka.headers import read_hint
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import DecodeError, get_codec
from wooflow.schemas.types import ActionCommand
from wooflow.settings import Settings

log = logging.getLogger(__name__)

# Stores a batch's delayed commands in the open state transaction; returns how many were new.
StoreDelayed = Callable[[Connection, Sequence[ActionCommand]], int]


class LoyaltyCache:
    """Store loyalty settings (tiers, points, counted statuses) for the hot path. Every `ttl`
    seconds one query asks for each store's settings digest, and only the stores whose
    settings changed are read and parsed again (with 10,000 stores, parsing them all every
    10 s took a fifth of the consumer's time: bench/scale). A store not seen yet is read alone."""

    def __init__(self, engine: Engine, ttl: float = 10.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._by_store: dict[str, Loyalty] = {}
        self._digests: dict[str, str] = {}
        self._loaded = -1e9

    def _load(self, store_id: str | None = None) -> None:
        with self.engine.connect() as conn:
            if store_id is None:
                digests = {sid: d for sid, d in conn.execute(select(stores.c.id, _DIGEST))}
                changed = [sid for sid, d in digests.items() if self._digests.get(sid) != d]
            else:
                digests, changed = {}, [store_id]
            rows = conn.execute(select(stores.c.id, stores.c.settings, stores.c.currency, _DIGEST)
                                .where(stores.c.id.in_(changed))).all() if changed else []
        found = {sid: loyalty_of(settings, currency) for sid, settings, currency, _ in rows}
        if store_id is None:  # stores gone since are forgotten
            self._by_store = {sid: lo for sid, lo in self._by_store.items() if sid in digests} | found
            self._digests = digests | {sid: d for sid, _, _, d in rows}
        else:
            self._by_store = {**self._by_store, **found}
            self._digests |= {sid: d for sid, _, _, d in rows}

    def __call__(self, store_id: str) -> Loyalty:
        now = time.monotonic()
        if now - self._loaded > self.ttl:
            self._loaded = now
            self._load()
        lo = self._by_store.get(store_id)
        if lo is None:
            self._load(store_id)
            lo = self._by_store.setdefault(store_id, loyalty_of(None))
        return lo


# what a store's loyalty settings depend on, in one value to compare
_DIGEST = func.md5(stores.c.settings.cast(Text) + stores.c.currency)


class RuleConsumer:
    def __init__(self, settings: Settings, *, store_delayed: StoreDelayed,
                 latencies: list[float] | None = None) -> None:
        self.settings = settings
        self.store_delayed = store_delayed
        self.codec = get_codec(settings.schema_registry_url)
        self.decoder = EventDecoder(self.codec)
        self.db = get_engine(settings.database_url)
        self.rules = RuleCache(self.db, fallback_interval=settings.rules_reload_s)
        self.catalog = catalog_for(settings, self.db)
        self.engine = RuleEngine(self.rules, self.catalog)
        self.processor = BatchProcessor(self.engine, self.db, LoyaltyCache(self.db), self.decoder.full,
                                        latencies=latencies, context_event=self.decoder.json_event)
        self.state_cache = StateCache(max_rows=settings.state_cache_rows)
        self.processor.cache = self.state_cache
        instance = settings.instance_id.strip()
        txn_id = None
        if settings.transactional:
            # A stable id (from WOOFLOW_INSTANCE_ID) lets a restarted instance fence its dead
            # predecessor and abort its open transaction at once; without one, that
            # transaction blocks read_committed readers until transaction.timeout.ms.
            txn_id = (f"wooflow-rules-{settings.rules_group}-{instance}" if instance
                      else f"wooflow-rules-{socket.gethostname()}-{os.getpid()}")
        self.producer = Producer(settings, TRANSACTIONAL if settings.transactional else BATCH, transactional_id=txn_id)
        self.group_instance = f"{settings.rules_group}-{instance}" if instance else None
        self.commands_topic = settings.topic(topics.COMMANDS)
        self.logs_topic = settings.topic(topics.LOGS)
        self.clock = get_clock(settings)
        self.ready = threading.Event()
        self._pending: StateBatch | None = None
        self._pending_items: list[Item] = []
        self._pending_levels: dict[str, int] = {}  # levels of the stores met while skipping (some only there)
        self._recent_orders: dict[tuple[str, int], Order] = {}  # the last batch's, read by the main thread only
        self._pending_products: list[CatalogProduct] = []
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-save")
        self._delayed: list[ActionCommand] = []
        self.stats: Counter[str] = Counter()
        self.checkpoint: Checkpoint | None = None

    # --- one batch ---------------------------------------------------------------------
    def handle(self, batch: list[Message]) -> None:
        self.rules.refresh()  # the fallback; cheap unless its interval has passed
        items: list[Item] = []
        consumed: Counter[tuple[str, str]] = Counter()
        triggers = self.rules.triggers
        keeps: dict[str, Keep] = {}
        sights = FirstSights(self.processor, self.decoder.peek, self._first_event_of)
        for msg in batch:
            store, schema = read_hint(msg)
            value = msg.value() or b""
            if store is not None and schema is not None:
                if not triggers(store, schema):
                    keep = keeps.get(store)
                    if keep is None:
                        keep = keeps[store] = self.processor.keep_of(store)
                    # nothing listens, no state kept changes, not a catalog row
                    skip = schema not in CATALOGUED and not changes_state(schema, keep)
                else:
                    skip = sights.later(store, schema, value)  # cannot be the first sight that matters
                if skip:  # not decoded
                    self.stats["skipped"] += 1
                    consumed[(msg.topic() or "", store)] += 1
                    continue
            try:
                schema, record = self.decoder.decode(value)
                if not is_event(record):
                    raise DecodeError(f"{schema} is not an event (no store_id/event_id/customer_key)")
                event = record
            except DecodeError as exc:
                dead_letter(self.producer, self.codec, self.settings, msg, stage="rules", reason="undecodable",
                            error=str(exc))
                continue
            consumed[(msg.topic() or "", event["store_id"])] += 1
            items.append(Item(schema, event, msg, value))
        for (topic, store), n in consumed.items():
            metrics.events_consumed.labels("rules", topic, store).inc(n)
        self.stats["events"] += len(batch)

        if self.checkpoint is not None:  # the previous batch's state: durable and cached before we read
            self.checkpoint.settle()
        started = time.perf_counter()
        # the workflow clock (WOOFLOW_CLOCK): delays are measured on the same time as the scheduler's
        now = self.clock.now()
        outcome = self.processor.run(items, now=now)
        elapsed = time.perf_counter() - started
        if items:
            metrics.rule_eval_seconds.observe(elapsed / len(items))
        for it, target in outcome.rerouted:
            self._reroute(it, target)
        for it, reason, error in outcome.failed:
            dead_letter(self.producer, self.codec, self.settings, it.source, stage="rules", reason=reason, error=error,
                        store_id=it.event.get("store_id"))
        wall = datetime.now(timezone.utc)  # latency metrics are real time, whatever the clock says
        emitted: Counter[tuple[str, str]] = Counter()
        delayed: list[ActionCommand] = []
        for it, cmd in outcome.commands:
            if held(cmd, now):  # a later step, or a staged workflow's start: the scheduler's
                delayed.append(cmd)
                continue
            received = cmd["received_at"]
            value = self.codec.encode("ActionCommand", cmd, self.commands_topic)
            self.producer.produce(self.commands_topic, value, key=it.source.key())
            emitted[(cmd["store_id"], cmd["action_type"])] += 1
            if received:
                metrics.event_to_command_seconds.observe((wall - received).total_seconds())
        for (store, action), n in emitted.items():
            metrics.commands_emitted.labels(store, action).inc(n)
            metrics.events_out.labels("rules", self.commands_topic, store).inc(n)
        for it, m, x in outcome.held_out:  # a holdout rule's control group: logged, no effect
            # the workflow's first action (a staged workflow parses its program for it)
            rec = held_out_log(x, idempotency_key(m.rule.id, x.event_id, 0), m.rule.first_action,
                               m.rule.holdout_percent, now)
            self.producer.produce(self.logs_topic, self.codec.encode("ExecutionLog", rec, self.logs_topic),
                                  key=it.source.key())
        self.stats["held_out"] += len(outcome.held_out)
        self.stats["commands"] += len(outcome.commands)
        self.stats["matches"] += len(outcome.matches)
        self.stats["frequency_skipped"] += outcome.skipped_by_frequency
        self.stats["delayed"] += len(delayed)
        self._pending, self._delayed, self._pending_items = outcome.state, delayed, items
        self._pending_levels = dict(keeps)
        self._recent_orders = outcome.state.orders
        self._pending_products = outcome.products

    def _first_event_of(self, key: tuple[str, int]) -> str | None:
        """The first event id of an order this process kept: in the cache, or in the
        batch whose state is being saved (a row's first event id never changes)."""
        hit = self.state_cache.orders.get(key)
        if hit is not None:
            return hit[0].first_event_id
        recent = self._recent_orders.get(key)
        return recent.first_event_id if recent is not None else None

    def _reroute(self, it: Item, target: str) -> None:
        """An event of a guest merged into customer `target`: produced again on the
        customer's partition, same event id (its commands keep their idempotency keys),
        with the customer key rewritten (consumer/merge.py)."""
        msg = it.source
        schema, full = self.decoder.full(it.raw if it.raw is not None else msg.value())
        event = {**full, "customer_key": target}
        topic = msg.topic()
        self.producer.produce(topic, self.codec.encode(schema, event, topic), key=f"{event['store_id']}:{target}",
                              headers=msg.headers())
        self.stats["rerouted"] += 1

    def save_state_in_background(self) -> Future[None]:
        """Checkpoint's before_commit outside transactions: the write overlaps the next batch."""
        return self._saver.submit(self.save_state)

    def save_state(self) -> None:
        """Checkpoint's before_commit: commands are acknowledged, offsets not yet committed."""
        pending, self._pending = self._pending, None
        delayed, self._delayed = self._delayed, []
        items, self._pending_items = self._pending_items, []
        levels, self._pending_levels = self._pending_levels, {}
        if pending is not None:
            levels = {**levels, **pending.levels}
        recorded = self.state_cache.levels
        levels = {s: k for s, k in levels.items() if recorded.get(s) != k}
        products, self._pending_products = self._pending_products, []
        lost: dict[tuple[str, str], str] = {}
        if (pending is not None and (any(pending.dirty_counts()) or pending.merges or pending.exposures)) or delayed \
                or levels or products:
            with self.db.begin() as conn:
                if levels:
                    record_levels(conn, levels)
                if pending is not None:
                    lost = pending.save(conn)
                if delayed:
                    self.store_delayed(conn, delayed)
                save_products(conn, products)  # last: the catalog rows are locked in key order, briefly
        recorded.update(levels)
        if pending is not None:  # committed (or nothing to write): the rows are what the database has
            self.state_cache.keep(pending)
        if lost:
            # guests merged into a customer between this batch's read and its write: their
            # events go to the customer instead, before the offsets move
            for it in items:
                target = lost.get((it.event["store_id"], it.event["customer_key"])) if it.schema in STATEFUL else None
                if target is not None:
                    self._reroute(it, target)
            self.producer.flush(300)

    # --- rebalancing ------------------------------------------------------------------
    def on_revoke(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        if self.checkpoint is not None:
            self.checkpoint.revoke(parts)  # first: waits for a state write still in flight
        self.state_cache.clear()  # the cache is a per-ownership hint: start over with the new assignment
        self._recent_orders = {}

    def on_lost(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        # Someone else owns these now: our uncommitted offsets (and the state of a batch
        # not yet saved) would race theirs. Drop them; the new owner re-processes.
        if self.checkpoint is not None:
            self.checkpoint.forget(parts)
        self.state_cache.clear()
        self._recent_orders = {}

    def idle(self) -> None:
        self.rules.refresh()

    def rewound(self) -> None:
        """PostgreSQL was away and the uncommitted batches are read again (run_batches):
        nothing kept from them may be taken for the database's state."""
        self._pending, self._delayed, self._pending_items = None, [], []
        self.state_cache.clear()

    def run(self, stop: threading.Event) -> None:
        when_available(lambda: self.rules.refresh(force=True), stop, "loading the rules")
        if stop.is_set():
            return
        listener = RuleListener(self.rules, self.settings.database_url, stop)
        listener.start()
        consumer = make_consumer(self.settings, self.settings.rules_group,
                                 [self.settings.topic(t) for t in topics.EVENT_TOPICS],
                                 on_revoke=self.on_revoke, on_lost=self.on_lost, instance_id=self.group_instance)
        self.checkpoint = Checkpoint(consumer, self.producer, transactional=self.settings.transactional,
                                     asynchronous=True,
                                     before_commit=self.save_state if self.settings.transactional
                                     else self.save_state_in_background)
        listener.listening.wait(5)
        tune_gc()
        self.ready.set()
        started = time.monotonic()
        log.info("rule consumer running (group %s, %d rules, transactional=%s)", self.settings.rules_group,
                 len(self.rules), self.settings.transactional)
        try:
            run_batches(consumer, self.checkpoint, self.handle, stop, batch_size=self.settings.batch_size,
                        timeout=self.settings.batch_timeout_s, on_idle=self.idle, on_rewind=self.rewound,
                        stall_after_s=self.settings.stall_refetch_s)
        finally:
            stop.set()
            self._saver.shutdown(wait=True)
            self.catalog.close()
            self.producer.close(5)
        log.info("rule consumer stopped after %.0fs: %s", time.monotonic() - started, dict(self.stats))
