"""The bridge's way into Kafka: dedupe, then make durable, then answer.

Every event (webhook, storefront) goes through one asyncio task, in arrival order:

1. **dedupe** — in-batch, in-flight and recently-seen ids are answered `duplicate` at
   once; the rest are claimed in PostgreSQL (`bridge_seen`) with one group-committed
   statement per batch, so the hot path costs one round trip per batch, not per request;
2. **durable** — normally each claimed event is produced (acks=all, idempotent producer)
   and its caller is answered when Kafka acknowledges; while Kafka is down (the circuit
   breaker is open) or the outbox is not empty, the claim and an outbox row are committed
   in one transaction instead, and the caller is answered from that commit.

The breaker opens on librdkafka's "all brokers down" error (or a failed delivery); at
that moment messages still in librdkafka's local queue — never sent — are purged, fail
fast and fall back to the outbox, so nothing is written twice. While the breaker is open
the broker is probed every `kafka_probe_interval_s`; once it answers, the outbox is
drained in `seq` order (one drainer at a time, by advisory lock) and only when it is
empty do new events go straight to Kafka again — per-key order survives the outage.
The outbox is bounded (`outbox_max_rows`): beyond it callers get 503.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from sqlalchemy import Connection, Engine

from wooflow import metrics
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.producers import dedupe
from wooflow.producers.identity import NO_FACTS, Facts, Identities
from wooflow.producers.normalise import Event
from wooflow.schemas.codec import Codec
from wooflow.settings import Settings

log = logging.getLogger(__name__)

PRODUCED, OUTBOX, DUPLICATE = "produced", "outbox", "duplicate"
_RECENT_MAX = 100_000
_BATCH_MAX = 500


# Answers Kafka will give again however long we wait: not an outage, a poison event.
_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE: "message_too_large", KafkaError.RECORD_LIST_TOO_LARGE: "message_too_large",
    KafkaError.INVALID_RECORD: "invalid_record", KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic_not_authorized",
    KafkaError._UNKNOWN_TOPIC: "unknown_topic", KafkaError.UNKNOWN_TOPIC_OR_PART: "unknown_topic",
    KafkaError._INVALID_ARG: "invalid_message",
}


def permanent_error(exc: BaseException) -> str | None:
    """The DLQ reason when `exc` is a produce failure no retry will fix, else None."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return _PERMANENT.get(err.code()) if isinstance(err, KafkaError) else None


class Unavailable(RuntimeError):
    """The event could not be made durable (503)."""


class OutboxFull(Unavailable):
    pass


@dataclass(slots=True)
class _Item:
    event_id: str
    store_id: str
    topic: str
    key: str
    value: bytes
    source: str
    future: asyncio.Future[str] = field(repr=False)
    event: Event = field(repr=False)


class _Throttle(logging.Filter):
    """librdkafka logs every refused reconnect (several a second during an outage):
    let each distinct message through once a minute."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        key = f"{args[0]}|{str(args[-1])[:60]}" if args else str(record.msg)[:80]
        now = time.monotonic()
        if now - self._seen.get(key, -1e9) < self.every_s:
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = now
        return True


_rdkafka_log = logging.getLogger("wooflow.librdkafka")
_rdkafka_log.addFilter(_Throttle())


def bridge_producer(settings: Settings, on_error: Callable[[KafkaError], None]) -> Producer:
    overrides: dict[str, Any] = {
        "error_cb": on_error,
        "logger": _rdkafka_log,
        # Notice a broker that is back within a second, not librdkafka's default 10 s.
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "linger.ms": 1,
    }
    return Producer(settings, **overrides)


Report = Callable[[BaseException | None], None]


class _Completions:
    """Delivery reports, served by `poll()` on the event loop itself (see `_DeliveryPump`):
    no thread taking the GIL once per report. A report served anywhere else (the final
    flush at shutdown, in a worker thread) is handed to the loop, one wake-up per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._items: list[tuple[Report, KafkaError | None]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def callback(self, target: Report) -> Callable[[KafkaError | None, Message], None]:
        return functools.partial(self._report, target)

    def future(self, fut: asyncio.Future[Any]) -> Callable[[KafkaError | None, Message], None]:
        return self.callback(functools.partial(_settle, fut))

    def _report(self, target: Report, err: KafkaError | None, _msg: Message) -> None:
        if threading.get_ident() == self._loop_thread:
            target(None if err is None else KafkaException(err))
            return
        with self._lock:
            self._items.append((target, err))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # loop closed at shutdown
            pass

    def _drain(self) -> None:
        with self._lock:
            items, self._items, self._scheduled = self._items, [], False
        for target, err in items:
            target(None if err is None else KafkaException(err))


class _DeliveryPump:
    """Serves librdkafka's delivery reports and error callbacks from the event loop:
    `poll(0)` every `busy_s` while messages await their acknowledgement, every `idle_s`
    otherwise (error callbacks: the breaker). A poll thread instead took the GIL from the
    loop for every report, which cost the loop more than the reports themselves.
    (uvloop's timers have millisecond resolution: below 1 ms this would spin.)"""

    def __init__(self, loop: asyncio.AbstractEventLoop, poll: Callable[[float], int], pending: Callable[[], int],
                 busy_s: float = 0.001, idle_s: float = 0.05) -> None:
        self.loop, self.poll, self.pending = loop, poll, pending
        self.busy_s, self.idle_s = busy_s, idle_s
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._tick()

    def kick(self) -> None:
        """Messages were just produced: make sure the next poll comes soon."""
        if self._due - self.loop.time() > self.busy_s and self._handle is not None:
            self._handle.cancel()
            self._schedule(self.busy_s)

    def _schedule(self, delay: float) -> None:
        self._due = self.loop.time() + delay
        self._handle = self.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        try:
            self.poll(0)
        except Exception:  # noqa: BLE001 - a failing callback must not stop the pump
            log.exception("serving Kafka delivery reports failed")
        self._schedule(self.busy_s if self.pending() else self.idle_s)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _settle(fut: asyncio.Future[Any], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


class _Batch:
    """Events produced together: each caller is answered as soon as Kafka acknowledges its
    event; the ones Kafka refused fall back to the outbox together once every report is in,
    and `finished` resolves after that."""

    __slots__ = ("items", "left", "failed", "finished")

    def __init__(self, items: list[_Item], finished: asyncio.Future[None]) -> None:
        self.items = items
        self.left = len(items)
        self.failed: list[tuple[_Item, BaseException]] = []
        self.finished = finished


class Ingestor:
    def __init__(self, settings: Settings, engine: Engine, codec: Codec) -> None:
        self.settings = settings
        self.engine = engine
        self.codec = codec
        self.producer = bridge_producer(settings, self._on_kafka_error)
        self.kafka_up = True
        self.backlog = False  # outbox mode: new events queue behind the outbox
        self.outbox_depth = 0
        self._queue: deque[_Item] = deque()
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._done_ids: list[str] = []
        self._batches: set[_Batch] = set()  # produced, not every report in yet (or falling back)
        self._fallbacks: set[asyncio.Task[None]] = set()
        self._headers: dict[tuple[str, str], list[tuple[str, str | bytes | None]] | None] = {}
        self._claims = dedupe.AsyncClaims(engine)
        self.identities = Identities()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._completions: _Completions | None = None
        self._pump: _DeliveryPump | None = None
        self._conn: Connection | None = None
        self._dconn: Connection | None = None  # the drainer's own (autocommit, advisory lock)
        self._stopping = False
        self._last_probe = 0.0
        self._probing: asyncio.Task[None] | None = None
        self._last_depth_check = 0.0
        self._last_cleanup = time.monotonic()
        metrics.kafka_available.set(1)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._completions = _Completions(self._loop)
        self._pump = _DeliveryPump(self._loop, self.producer.raw.poll, lambda: len(self.producer.raw))
        self._pump.start()
        self._task = asyncio.create_task(self._run(), name="bridge-ingest")

    async def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 15)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - shutting down regardless
                self._task.cancel()
        if self._batches:
            await asyncio.wait([b.finished for b in self._batches], timeout=self.settings.delivery_timeout_s + 1)
        if self._done_ids:
            await asyncio.to_thread(self._db, lambda c: dedupe.mark_done(c, self._take_done()))
        if self._pump is not None:
            self._pump.stop()
        await asyncio.to_thread(self.producer.close, 5.0)
        if self._conn is not None:
            self._conn.close()
        await self._claims.close()

    @property
    def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    # --- the caller's side ---------------------------------------------------------------
    async def submit(self, events: Sequence[Event], source: str) -> list[str]:
        """Make `events` durable (or find them already seen); one outcome per event.
        Raises Unavailable when neither Kafka nor the outbox took them."""
        if not events:
            return []
        assert self._loop is not None and self._wake is not None, "Ingestor.start() first"
        items = []
        for ev in events:
            topic = self.settings.topic(ev.topic)
            value = self.codec.encode(ev.schema, ev.record, topic)
            items.append(_Item(ev.event_id, str(ev.record["store_id"]), topic, ev.key, value, source,
                               self._loop.create_future(), ev))
        self._queue.extend(items)
        self._wake.set()
        if len(items) == 1:  # the common case: skip gather's task machinery
            return [await items[0].future]
        return list(await asyncio.gather(*(i.future for i in items)))

    # --- the pipeline task ---------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while not (self._stopping and not self._queue):
            batch: list[_Item] = []
            try:
                degraded = self.backlog or not self.kafka_up
                if not self._queue:
                    timeout = self.settings.kafka_probe_interval_s if degraded else 1.0
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
                self._wake.clear()
                batch = [self._queue.popleft() for _ in range(min(_BATCH_MAX, len(self._queue)))]
                items = self._dedupe_local(batch)
                facts = await self._key(items) if items else NO_FACTS
                if self.backlog or not self.kafka_up:
                    if items:
                        await self._to_outbox(items, facts)
                    await self._recover()
                else:
                    if items:
                        await self._direct(items, facts)
                    elif self._done_ids:
                        await asyncio.to_thread(self._db, lambda c: dedupe.mark_done(c, self._take_done()))
                await self._housekeeping()
            except Exception as exc:  # noqa: BLE001 - the pipeline must outlive any one batch
                log.exception("bridge ingest step failed")
                for it in batch:
                    self._fail(it, Unavailable(f"ingest failed: {exc}"))
                await asyncio.sleep(0.2)

    def _dedupe_local(self, batch: list[_Item]) -> list[_Item]:
        """Answer what is a duplicate without asking the database."""
        fresh = []
        for it in batch:
            if it.event_id in self._recent:
                self._resolve(it, DUPLICATE)
                continue
            primary = self._inflight.get(it.event_id)
            if primary is not None:
                # Same content still in flight: answer with its outcome (a duplicate if it
                # became durable, its error if not — never a 2xx for a lost event).
                primary.add_done_callback(functools.partial(self._follow, it))
                continue
            self._inflight[it.event_id] = it.future
            fresh.append(it)
        return fresh

    def _follow(self, it: _Item, primary: asyncio.Future[str]) -> None:
        exc = primary.exception()
        if exc is not None:
            self._fail(it, exc)
        else:
            self._resolve(it, DUPLICATE)

    def _resolve(self, it: _Item, outcome: str) -> None:
        if self._inflight.get(it.event_id) is it.future:
            del self._inflight[it.event_id]
        if outcome in (PRODUCED, OUTBOX):
            self._recent[it.event_id] = None
            if len(self._recent) > _RECENT_MAX:
                self._recent.popitem(last=False)
        elif outcome == DUPLICATE:
            metrics.events_duplicate.labels(it.source).inc()
        if not it.future.done():
            it.future.set_result(outcome)

    def _fail(self, it: _Item, exc: BaseException) -> None:
        if self._inflight.get(it.event_id) is it.future:
            del self._inflight[it.event_id]
        if not it.future.done():
            it.future.set_exception(exc)

    def _take_done(self) -> list[str]:
        ids, self._done_ids = self._done_ids, []
        return ids

    # --- database ------------------------------------------------------------------------
    def _db(self, fn: Callable[[Connection], Any]) -> Any:
        """Run fn in one transaction on the pipeline's own connection (reconnecting if needed)."""
        for attempt in (1, 2):
            if self._conn is None or self._conn.closed or self._conn.invalidated:
                self._conn = self.engine.connect()
            try:
                with self._conn.begin():
                    return fn(self._conn)
            except Exception:
                if attempt == 2 or not (self._conn.invalidated or self._conn.closed):
                    raise
                self._conn = None
        return None

    # --- one person per shopper ---------------------------------------------------------
    async def _key(self, items: list[_Item]) -> Facts:
        """Key the batch's events by person (identity.py): guest orders of registered
        customers, deletions and failed read-backs change key (and are encoded again)."""
        events = [it.event for it in items]
        need = self.identities.lookup(events)
        if need:
            self.identities.found(await self._claims.lookup(need))
        keyed, facts = self.identities.settle(events)
        for it, ev in zip(items, keyed):
            if ev is not it.event:
                it.event, it.key, it.value = ev, ev.key, self.codec.encode(ev.schema, ev.record, it.topic)
        return facts

    # --- direct path ---------------------------------------------------------------------
    async def _direct(self, items: list[_Item], facts: Facts) -> None:
        done = self._take_done()
        try:
            claimed = await self._claims.claim([i.event_id for i in items], [i.store_id for i in items], done,
                                               stale_s=self.settings.claim_stale_s, facts=facts)
        except Exception:
            self._done_ids.extend(done)
            raise
        self.identities.committed(facts)
        produce = []
        for it in items:
            if it.event_id in claimed:
                produce.append(it)
            else:
                self._resolve(it, DUPLICATE)
        if not produce:
            return
        assert self._loop is not None and self._completions is not None
        batch = _Batch(produce, self._loop.create_future())
        self._batches.add(batch)
        report = self._completions.callback
        for n, it in enumerate(produce):
            exc = self._send(it.topic, it.key, it.value, it.store_id, report(functools.partial(self._ack, batch, n)))
            if exc is not None:
                self._ack(batch, n, exc)

    def _ack(self, batch: _Batch, n: int, exc: BaseException | None) -> None:
        it = batch.items[n]
        if exc is None:
            self._done_ids.append(it.event_id)
            self._resolve(it, PRODUCED)
        else:
            batch.failed.append((it, exc))
        batch.left -= 1
        if batch.left:
            return
        if batch.failed:
            task = asyncio.get_running_loop().create_task(self._fallback(batch))
            self._fallbacks.add(task)
            task.add_done_callback(self._fallbacks.discard)
        else:
            self._finish(batch)

    def _finish(self, batch: _Batch) -> None:
        self._batches.discard(batch)
        if not batch.finished.done():
            batch.finished.set_result(None)

    def _send(self, topic: str, key: str, value: bytes, store_id: str | None,
              on_delivery: Callable[[KafkaError | None, Message], None]) -> BaseException | None:
        """Hand one message to librdkafka; the error when it refused it outright."""
        hkey = (topic, store_id or "")
        if hkey in self._headers:
            headers = self._headers[hkey]
        else:
            # `store`/`schema` headers: the rule consumer skips, without decoding, events of
            # stateless schemas that no rule of the store listens to (consumer/runner.py)
            schema = topics.SCHEMA_OF_TOPIC.get(topic.removeprefix(self.settings.topic_prefix)) if store_id else None
            headers = [("store", store_id.encode()), ("schema", schema.encode())] if store_id and schema else None
            if len(self._headers) < 10_000:
                self._headers[hkey] = headers
        for _ in range(200):
            try:
                self.producer.raw.produce(topic, value=value, key=key, on_delivery=on_delivery, headers=headers)
                if self._pump is not None:
                    self._pump.kick()
                return None
            except BufferError:
                self.producer.raw.poll(0.01)  # local queue full: let reports make room
            except KafkaException as exc:
                return exc
        return KafkaException(KafkaError(KafkaError._QUEUE_FULL))

    def _produce(self, topic: str, key: str, value: bytes, store_id: str | None = None) -> asyncio.Future[None]:
        """One message with its own future (outbox drain, dead letters)."""
        assert self._loop is not None and self._completions is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        exc = self._send(topic, key, value, store_id, self._completions.future(fut))
        if exc is not None:
            fut.set_exception(exc)
        return fut

    async def _fallback(self, batch: _Batch) -> None:
        try:
            await self._to_outbox_after_failure(batch.failed)
        finally:
            self._finish(batch)

    async def _to_outbox_after_failure(self, failures: list[tuple[_Item, BaseException]]) -> None:
        failed = [it for it, _ in failures]
        errors = [exc for _, exc in failures]
        reason = str(errors[0])
        log.warning("%d events not acknowledged by Kafka (%s): writing them to the outbox", len(failed), reason)
        if any(permanent_error(e) is None for e in errors):
            self._open_breaker(reason)
        else:  # Kafka is fine, these events are not: the drainer dead-letters them, in order
            self.backlog = True
        rows = [(i.event_id, i.store_id, i.topic, i.key, i.value) for i in failed]

        def fallback(c: Connection) -> None:
            dedupe.outbox_insert(c, rows)
            dedupe.mark_done(c, [r[0] for r in rows])

        try:
            await asyncio.to_thread(self._db_pool, fallback)
        except Exception as exc:  # noqa: BLE001 - neither Kafka nor PostgreSQL: 503, claims released
            log.error("outbox write failed too: %s", exc)
            try:
                await asyncio.to_thread(self._db_pool, lambda c: dedupe.release(c, [r[0] for r in rows]))
            except Exception:  # noqa: BLE001 - stale claims are reclaimed after claim_stale_s anyway
                pass
            for it in failed:
                self._fail(it, Unavailable("Kafka and the outbox are both unavailable"))
            return
        self.outbox_depth += len(rows)
        metrics.outbox_written.inc(len(rows))
        metrics.outbox_depth.set(self.outbox_depth)
        for it in failed:
            self._resolve(it, OUTBOX)

    def _db_pool(self, fn: Callable[[Connection], Any]) -> Any:
        with self.engine.begin() as conn:
            return fn(conn)

    # --- outbox path ---------------------------------------------------------------------
    async def _to_outbox(self, items: list[_Item], facts: Facts) -> None:
        # Direct batches still awaiting acks land (or fall back to the outbox) first:
        # their events are older than these.
        if self._batches:
            await asyncio.wait([b.finished for b in self._batches])
        if self.outbox_depth + len(items) > self.settings.outbox_max_rows:
            metrics.outbox_rejected.inc(len(items))
            for it in items:
                self._fail(it, OutboxFull(f"the outbox holds {self.outbox_depth} events (bound "
                                          f"{self.settings.outbox_max_rows}) while Kafka is unavailable"))
            return
        stale = self.settings.claim_stale_s

        def write(c: Connection) -> set[str]:
            claimed = dedupe.claim(c, [i.event_id for i in items], [i.store_id for i in items], stale_s=stale,
                                   state="done")
            dedupe.outbox_insert(c, [(i.event_id, i.store_id, i.topic, i.key, i.value)
                                     for i in items if i.event_id in claimed])
            dedupe.remember(c, facts)
            return claimed

        try:
            claimed = await asyncio.to_thread(self._db, write)
        except Exception as exc:  # noqa: BLE001
            for it in items:
                self._fail(it, Unavailable(f"outbox write failed: {exc}"))
            return
        self.identities.committed(facts)
        self.backlog = True
        self.outbox_depth += len(claimed)
        metrics.outbox_written.inc(len(claimed))
        metrics.outbox_depth.set(self.outbox_depth)
        for it in items:
            self._resolve(it, OUTBOX if it.event_id in claimed else DUPLICATE)

    # --- breaker -------------------------------------------------------------------------
    def _on_kafka_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (poll thread)."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal():
            loop = self._loop
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(self._open_breaker, err.str())
                except RuntimeError:
                    pass

    def _open_breaker(self, reason: str) -> None:
        if self.kafka_up:
            log.warning("Kafka unavailable (%s): new events go to the PostgreSQL outbox", reason)
        self.kafka_up = False
        self.backlog = True
        self._last_probe = time.monotonic()
        metrics.kafka_available.set(0)
        # Messages still in librdkafka's queue were never sent: fail them now so they fall
        # back to the outbox at once (in-flight ones are left to their own ack/timeout).
        try:
            self.producer.raw.purge(in_queue=True, in_flight=False, blocking=False)
        except (KafkaException, NotImplementedError):
            pass
        if self._wake is not None:
            self._wake.set()

    def _probe(self) -> bool:
        topic = self.settings.topic(topics.ORDERS)
        try:
            md = self.producer.raw.list_topics(topic, timeout=min(2.0, self.settings.kafka_probe_interval_s * 4))
        except KafkaException:
            return False
        t = md.topics.get(topic)
        return bool(md.brokers) and t is not None and t.error is None and all(
            p.leader >= 0 for p in t.partitions.values())

    async def _recover(self) -> None:
        if not self.kafka_up:
            # Probing can take seconds against a dead broker: it runs beside the pipeline,
            # which keeps writing the outbox meanwhile, and wakes it when Kafka answers.
            now = time.monotonic()
            if self._probing is None and now - self._last_probe >= self.settings.kafka_probe_interval_s:
                self._last_probe = now
                self._probing = asyncio.create_task(self._probe_task())
            return
        if self.backlog and await self._drain_step():
            self.backlog = False
            log.info("outbox drained: events go straight to Kafka again")

    async def _probe_task(self) -> None:
        try:
            ok = await asyncio.to_thread(self._probe)
        finally:
            self._probing = None
        if ok and not self.kafka_up:
            log.info("Kafka answers again: draining the outbox")
            self.kafka_up = True
            metrics.kafka_available.set(1)
        if self._wake is not None:
            self._wake.set()

    async def _drain_step(self) -> bool:
        """Produce the oldest outbox rows; True once the outbox is empty."""
        conn = await asyncio.to_thread(self._drain_conn)
        locked = await asyncio.to_thread(dedupe.try_lock, conn)
        if not locked:
            return False  # another bridge drains; keep queueing behind the outbox
        try:
            rows = await asyncio.to_thread(dedupe.outbox_read, conn, self.settings.outbox_drain_batch)
            if not rows:
                self.outbox_depth = 0
                metrics.outbox_depth.set(0)
                return True
            acks = [self._produce(topic, key, value, store_id) for _, topic, key, value, store_id, _ in rows]
            try:
                results = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True),
                                                 self.settings.delivery_timeout_s + 5)
            except asyncio.TimeoutError:
                results = [a.result() if a.done() and not a.exception() else TimeoutError() for a in acks]
            # Delete the acknowledged prefix only: a failure keeps its row and everything
            # after it, so the next attempt resumes in order.
            ok, dead = [], []
            for row, res in zip(rows, results):
                if isinstance(res, BaseException):
                    # Kafka will never take this one (too large, topic gone...): it goes to
                    # the DLQ with its reason instead of blocking the outbox forever.
                    reason = permanent_error(res)
                    if reason is not None and await self._dead_letter(row, reason, str(res)):
                        dead.append(row[0])
                    break
                ok.append(row[0])
            await asyncio.to_thread(dedupe.outbox_delete, conn, ok + dead)
            metrics.outbox_drained.inc(len(ok))
            self.outbox_depth = max(0, self.outbox_depth - len(ok) - len(dead))
            metrics.outbox_depth.set(self.outbox_depth)
            if len(ok) + len(dead) < len(rows):
                self._open_breaker("outbox drain not acknowledged")
                return False
            if dead:
                return False
            if len(rows) < self.settings.outbox_drain_batch:
                depth = await asyncio.to_thread(dedupe.outbox_depth, conn)
                self.outbox_depth = depth
                metrics.outbox_depth.set(depth)
                return depth == 0
            return False
        finally:
            await asyncio.to_thread(dedupe.unlock, conn)

    async def _dead_letter(self, row: tuple[int, str, str, bytes, str, str], reason: str, error: str) -> bool:
        seq, topic, key, value, store_id, eid = row
        dlq_topic = self.settings.topic(topics.DLQ)
        record = {
            "dlq_id": hashlib.sha256(f"bridge|{eid}".encode()).hexdigest()[:32], "stage": "bridge",
            "reason": reason, "error": error[:4000], "store_id": store_id, "source_topic": topic,
            "source_partition": -1, "source_offset": seq, "key": key.encode(),
            # a value Kafka refused for its size would be refused again inside the dead letter
            "value": value if len(value) < 900_000 else None,
            "headers_json": json.dumps({"event_id": eid}), "failed_at": datetime.now(timezone.utc), "attempts": 1,
        }
        try:
            await asyncio.wait_for(self._produce(dlq_topic, key, self.codec.encode("DeadLetter", record, dlq_topic)),
                                   self.settings.delivery_timeout_s + 5)
        except Exception as exc:  # noqa: BLE001 - keep the row; the next drain tries again
            log.error("could not dead-letter outbox row %s: %s", seq, exc)
            return False
        metrics.dlq.labels("bridge", reason).inc()
        log.error("event %s of store %s dead-lettered (%s): %s", eid, store_id, reason, error[:200])
        return True

    def _drain_conn(self) -> Connection:
        conn = self._dconn
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._dconn = conn
        return conn

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_depth_check > 2.0:
            # Rows another bridge wrote during an outage: queue behind them until drained.
            self._last_depth_check = now
            depth = await asyncio.to_thread(self._db, dedupe.outbox_depth)
            self.outbox_depth = depth
            metrics.outbox_depth.set(depth)
            if depth and not self.backlog:
                log.info("the outbox holds %d events: queueing behind them", depth)
                self.backlog = True
        if now - self._last_cleanup > 600:
            self._last_cleanup = now
            days = self.settings.dedupe_retention_days
            await asyncio.to_thread(self._db, lambda c: dedupe.forget_old(c, days))
