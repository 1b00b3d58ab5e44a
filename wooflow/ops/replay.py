"""`wooflow replay`: run a range of an event topic through the rules again.

The range is a time window or explicit offsets; it can be narrowed to one store and to
some rules. Events go through the same BatchProcessor as the rule consumer, against the
stored customer/order state — which remembers which event first saw an order and which
event changed its status, so an old event decides its triggers the way it did then.
The replay never saves state: the live consumer owns it.

- `--dry-run` reports what would fire per rule; nothing is produced or written.
- `--live` emits only commands whose idempotency key has not executed (or been scheduled)
  yet; since keys are (rule, event, step), a rule added after the fact fires once per
  matching event and nothing that already ran fires again.

It reads with its own consumer group (`wooflow-replay-<id>`), assigned explicitly, so it
never disturbs the live groups' offsets.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, text

from wooflow.consumer.batch import BatchProcessor, FirstSights, Item
from wooflow.consumer.catalog import catalog_for
from wooflow.consumer.commands import held
from wooflow.consumer.decode import EventDecoder
from wooflow.consumer.engine import RuleEngine
from wooflow.consumer.rules import RuleCache
from wooflow.consumer.runner import LoyaltyCache
from wooflow.consumer.state import StateBatch
from wooflow.consumer.values import is_event
from wooflow.db.engine import get_engine
from wooflow.gc_tuning import tune_gc
from wooflow.kafka import topics
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.headers import read_hint
from wooflow.kafka.producer import Producer
from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - rules naming them compile here too
from wooflow.scheduler.steps import store_delayed
from wooflow.schemas.codec import DecodeError, get_codec
from wooflow.schemas.types import ActionCommand
from wooflow.settings import Settings

MAX_CARRIED = 300_000  # customer + order rows a replay keeps between batches


class ReplayError(ValueError):
    pass


@dataclass(frozen=True)
class ReplaySpec:
    topic: str  # base name, e.g. woo.orders
    start: datetime | None = None
    end: datetime | None = None
    start_offsets: dict[int, int] | None = None  # partition → first offset
    end_offsets: dict[int, int] | None = None  # partition → offset to stop before
    store: str | None = None
    rules: frozenset[int] | None = None
    live: bool = False
    batch_size: int = 2000


@dataclass
class RuleTally:
    matched: int = 0
    commands: int = 0
    emitted: int = 0
    already: int = 0


@dataclass
class Summary:
    events: int = 0
    decoded: int = 0
    skipped_store: int = 0
    # no rule listening, or a later event of a seen order where only first sights matter: not decoded
    skipped_unwatched: int = 0
    undecodable: int = 0
    failed: int = 0
    seconds: float = 0.0
    rules: dict[int, RuleTally] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


_EXECUTED = text("""
SELECT idempotency_key FROM action_executions WHERE idempotency_key = ANY(CAST(:keys AS text[]))
UNION ALL
SELECT idempotency_key FROM scheduled_steps WHERE idempotency_key = ANY(CAST(:keys AS text[]))
""")


def executed_keys(db: Engine, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    with db.connect() as conn:
        return set(conn.execute(_EXECUTED, {"keys": keys}).scalars())


def _share(bounds: list[tuple[int, int, int]], workers: int) -> list[list[tuple[int, int, int]]]:
    """Partitions dealt out to `workers` groups, the biggest first to the lightest group."""
    groups: list[list[tuple[int, int, int]]] = [[] for _ in range(max(1, min(workers, len(bounds))))]
    load = [0] * len(groups)
    for b in sorted(bounds, key=lambda b: b[2] - b[1], reverse=True):
        i = load.index(min(load))
        groups[i].append(b)
        load[i] += b[2] - b[1]
    return [g for g in groups if g]


def merge(summaries: list[Summary]) -> Summary:
    out = Summary()
    for sm in summaries:
        for f in ("events", "decoded", "skipped_store", "skipped_unwatched", "undecodable", "failed"):
            setattr(out, f, getattr(out, f) + getattr(sm, f))
        for rid, t in sm.rules.items():
            mine = out.rules.setdefault(rid, RuleTally())
            for f in ("matched", "commands", "emitted", "already"):
                setattr(mine, f, getattr(mine, f) + getattr(t, f))
    return out


def _bounds(consumer: Consumer, name: str, spec: ReplaySpec, timeout: float) -> list[tuple[int, int, int]]:
    """(partition, first offset, end offset) for every partition with something to replay."""
    md = consumer.list_topics(name, timeout=timeout)
    if name not in md.topics or md.topics[name].error is not None:
        raise ReplayError(f"topic {name} does not exist")
    out = []
    for p in sorted(md.topics[name].partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
        first, end = low, high
        if spec.start is not None:
            found = consumer.offsets_for_times([TopicPartition(name, p, int(spec.start.timestamp() * 1000))],
                                               timeout=timeout)[0].offset
            first = found if found >= 0 else high
        if spec.end is not None:
            found = consumer.offsets_for_times([TopicPartition(name, p, int(spec.end.timestamp() * 1000))],
                                               timeout=timeout)[0].offset
            end = found if found >= 0 else high
        if spec.start_offsets is not None:
            if p not in spec.start_offsets:
                continue
            first = max(low, spec.start_offsets[p])
        if spec.end_offsets is not None and p in spec.end_offsets:
            end = min(high, spec.end_offsets[p])
        if first < end:
            out.append((p, first, end))
    return out


class Replayer:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.codec = get_codec(s.schema_registry_url)
        self.decoder = EventDecoder(self.codec)
        self.db = get_engine(s.database_url)
        self.rules = RuleCache(self.db, fallback_interval=0)  # every run checks the (cheap) fingerprint
        # conditions on categories and tags read the catalog (and ask the stores), never write it
        engine = RuleEngine(self.rules, catalog_for(s, self.db, record=False))
        self.processor = BatchProcessor(engine, self.db, LoyaltyCache(self.db), self.decoder.full,
                                        context_event=self.decoder.json_event)
        # never saving, a replay applies a merged guest's events to the customer they belong
        # to in memory (the live consumer re-routes them to that customer's partition)
        self.processor.reroute = False
        self._loaded = False
        self._state = StateBatch()

    def plan(self, spec: ReplaySpec, timeout: float = 10.0) -> list[tuple[int, int, int]]:
        consumer = make_reader(self.s, "wooflow-replay-plan")
        try:
            return _bounds(consumer, self.s.topic(spec.topic), spec, timeout)
        finally:
            consumer.close()

    def run(self, spec: ReplaySpec, progress: Callable[[int], None] | None = None, workers: int = 1) -> Summary:
        """Replay `spec`; with `workers` > 1 the partitions are shared among that many
        forked processes (a customer's events are all in one partition, so each process
        sees whole customers)."""
        if spec.topic not in topics.EVENT_TOPICS:
            raise ReplayError(f"only event topics can be replayed through the rules: {', '.join(topics.EVENT_TOPICS)}")
        # Compiling every rule takes a while with many stores: once per Replayer, then only
        # when the rules changed (the cheap fingerprint check).
        self.rules.refresh(force=not self._loaded)
        if not self._loaded:
            tune_gc()
        self._loaded = True
        if spec.rules:
            unknown = set(spec.rules) - {r for r in spec.rules if self.rules.get(r) is not None}
            if unknown:
                raise ReplayError(f"no enabled rule with id {sorted(unknown)}")
        started = time.perf_counter()
        bounds = self.plan(spec)
        groups = _share(bounds, workers)
        if len(groups) <= 1:
            summary = self._replay(spec, bounds, progress)
        else:
            summary = self._replay_forked(spec, groups, progress)
        summary.seconds = time.perf_counter() - started
        for rid in summary.rules:
            rule = self.rules.get(rid)
            summary.names[rid] = rule.spec.name if rule else "?"
        return summary

    def _replay_forked(self, spec: ReplaySpec, groups: list[list[tuple[int, int, int]]],
                       progress: Callable[[int], None] | None) -> Summary:
        # fork, not spawn: the children start at once with the rules already compiled. No
        # Kafka client is open here (plan() closed its consumer); each child opens its own,
        # and its own database connections.
        ctx = multiprocessing.get_context("fork")
        done = ctx.Value("q", 0)
        results: Any = ctx.Queue()
        procs = [ctx.Process(target=self._child, args=(spec, g, done, results), daemon=True) for g in groups]
        for proc in procs:
            proc.start()
        summaries: list[Summary] = []
        errors: list[str] = []
        reported = 0
        try:
            while len(summaries) + len(errors) < len(procs):
                try:
                    kind, payload = results.get(timeout=0.2)
                    (summaries if kind == "ok" else errors).append(payload)
                except queue.Empty:
                    if not any(p.is_alive() for p in procs) and results.empty():
                        errors.append("a replay process died without a result")
                        break
                if progress is not None and done.value > reported:
                    progress(done.value - reported)
                    reported = done.value
        finally:
            for proc in procs:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
        if progress is not None and done.value > reported:
            progress(done.value - reported)
        if errors:
            raise ReplayError("; ".join(errors))
        return merge(summaries)

    def _child(self, spec: ReplaySpec, bounds: list[tuple[int, int, int]], done: Any, results: Any) -> None:
        self.db.dispose(close=False)  # the parent's pooled connections are the parent's

        def count(n: int) -> None:
            with done.get_lock():
                done.value += n
        try:
            results.put(("ok", self._replay(spec, bounds, count)))
        except Exception as exc:  # reported by the parent
            results.put(("error", f"{type(exc).__name__}: {exc}"))

    def _replay(self, spec: ReplaySpec, bounds: list[tuple[int, int, int]],
                progress: Callable[[int], None] | None) -> Summary:
        summary = Summary()
        if not bounds:
            return summary
        # Rows read once per run and carried from batch to batch (a replay never saves them;
        # applying events is idempotent, so carrying them or re-reading them decides alike).
        self._state = StateBatch()
        name = self.s.topic(spec.topic)
        consumer = make_reader(self.s, f"wooflow-replay-{uuid.uuid4().hex[:8]}")
        producer = Producer(self.s) if spec.live else None
        try:
            consumer.assign([TopicPartition(name, p, first) for p, first, _ in bounds])
            ends = {p: end for p, _, end in bounds}
            # The replay never saves state, and every event of a topic has the topic's schema:
            # an event of a store where no (selected) rule listens to that schema can change
            # nothing this replay reports, whatever state it carries. Skipped undecoded.
            only = set(spec.rules) if spec.rules else None
            listened: dict[tuple[str, str], bool] = {}

            def listening(store: str, schema: str) -> bool:
                hit = listened.get((store, schema))
                if hit is None:
                    wanted = self.rules.triggers(store, schema)
                    hit = listened[(store, schema)] = bool(wanted) and (only is None or any(
                        r.id in only for t in wanted for r in self.rules.for_trigger(store, t)))
                return hit
            # where only an order's first sight matters (`new_order` stores), its later events
            # are skipped undecoded too: the carried state or this range saw the order before
            def first_event(key: tuple[str, int]) -> str | None:
                row = self._state.orders.get(key)
                return row.first_event_id if row is not None else None
            open_parts = set(ends)
            # consume() returns early only with a full batch: ask for no more than is left, so
            # the last batch does not wait out the timeout (it still does where offsets hold no
            # message — transaction markers, compacted records — and positions settle it)
            left = sum(end - first for _, first, end in bounds)
            while open_parts:
                batch: list[Item] = []
                sights = FirstSights(self.processor, self.decoder.peek, first_event)
                msgs = consumer.consume(max(1, min(spec.batch_size, left)), 0.1)
                for m in msgs:
                    p, off = m.partition(), m.offset()
                    if m.error() or p is None or off is None or p not in open_parts:
                        continue
                    if off >= ends[p]:
                        open_parts.discard(p)
                        continue
                    if off >= ends[p] - 1:
                        open_parts.discard(p)
                    summary.events += 1
                    left -= 1
                    store, schema = read_hint(m)
                    value = m.value() or b""
                    if store is not None and schema is not None:
                        if spec.store is not None and store != spec.store:
                            summary.skipped_store += 1
                            continue
                        if not listening(store, schema) or sights.later(store, schema, value):
                            summary.skipped_unwatched += 1
                            continue
                    try:
                        schema, event = self.decoder.decode(value)
                    except DecodeError:
                        summary.undecodable += 1
                        continue
                    if not is_event(event):
                        summary.undecodable += 1
                        continue
                    if spec.store is not None and event.get("store_id") != spec.store:
                        summary.skipped_store += 1
                        continue
                    batch.append(Item(schema, event, m, value))
                if not msgs:
                    # nothing more arrives within the window: positions tell whether we are done
                    for tp in consumer.position([TopicPartition(name, p) for p in list(open_parts)]):
                        if tp.offset >= ends[tp.partition]:
                            open_parts.discard(tp.partition)
                summary.decoded += len(batch)
                self._process(batch, spec, summary, producer)
                if progress:
                    progress(len(msgs))
            if producer is not None:
                producer.flush(60)
        finally:
            consumer.close()
        return summary

    def _process(self, batch: list[Item], spec: ReplaySpec, summary: Summary, producer: Producer | None) -> None:
        if not batch:
            return
        out = self.processor.run(batch, only_rules=set(spec.rules) if spec.rules else None, dry_run=not spec.live,
                                 plan_only=not spec.live, state=self._state)
        if len(self._state.customers) + len(self._state.orders) > MAX_CARRIED:
            self._state = StateBatch()  # bounded memory: read again from the database
        summary.failed += len(out.failed)
        for _, m in out.matches:
            summary.rules.setdefault(m.rule.id, RuleTally()).matched += 1
        commands = out.commands
        for _, step in [*commands, *out.planned]:
            summary.rules.setdefault(step["rule_id"], RuleTally()).commands += 1
        if producer is None:
            return
        done = executed_keys(self.db, [c["idempotency_key"] for _, c in commands])
        delayed: list[ActionCommand] = []
        now = datetime.now(timezone.utc)
        topic = self.s.topic(topics.COMMANDS)
        for it, cmd in commands:
            tally = summary.rules[cmd["rule_id"]]
            if cmd["idempotency_key"] in done:
                tally.already += 1
                continue
            tally.emitted += 1
            if held(cmd, now):  # a later step, or a staged workflow's start: the scheduler's
                delayed.append(cmd)
            else:
                # keyed by the event's customer (a merged guest's events belong to the customer now)
                producer.produce(topic, self.codec.encode("ActionCommand", cmd, topic),
                                 key=f"{it.event['store_id']}:{it.event['customer_key']}")
        if delayed:
            with self.db.begin() as conn:
                store_delayed(conn, delayed)
