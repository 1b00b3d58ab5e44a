"""The bridge's way into Kafka: dedupe, then make durable, then answer.

Every event (webhook, storefront) goes through one asyncio task, in arrival order:

1. **dedupe** — in-batch, in-flight and recently-seen ids are answered `duplicate` at
   once; the rest are claimed in PostgreSQL (`bridge_seen`) with one group-committed
   statement per batch, so the hot path costs one round trip per batch, not per request;
2. **durable** — normally each claimed event is produced (acks=all, idempotent producer;
   wooflow/kafka/delivery.py serves the reports on the event loop) and its caller is
   answered when Kafka acknowledges; while Kafka is down (the circuit breaker is open)
   or the outbox is not empty, the claim and an outbox row are committed in one
   transaction instead (outbox.py), and the caller is answered from that commit.

The breaker opens on librdkafka's "all brokers down" error (or a failed delivery); at
that moment messages still in librdkafka's local queue — never sent — are purged, fail
fast and fall back to the outbox, so nothing is written twice. While the breaker is open
the broker is probed every `kafka_probe_interval_s`; once it answers, the outbox is
drained in order and only when it is empty do new events go straight to Kafka again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from wooflow import dlq, metrics
from wooflow.kafka import topics
from wooflow.kafka.delivery import LoopProducer, permanent_error
from wooflow.producers import dedupe
from wooflow.producers.identity import NO_FACTS, Facts, Identities
from wooflow.producers.normalise import Event
from wooflow.producers.outbox import Outbox, Row
from wooflow.schemas.codec import Codec
from wooflow.settings import Settings

log = logging.getLogger(__name__)

PRODUCED, OUTBOX, DUPLICATE = "produced", "outbox", "duplicate"
_RECENT_MAX = 100_000
_BATCH_MAX = 500


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

    def row(self) -> Row:
        return self.event_id, self.store_id, self.topic, self.key, self.value


class _Batch:
    """Events produced together: each caller is answered as soon as Kafka acknowledges its
    event; the ones Kafka refused fall back to the outbox together once every report is in,
    and `finished` resolves after that."""

    __slots__ = ("failed", "finished", "items", "left")

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
        self.kafka = LoopProducer(settings, on_unavailable=self._open_breaker)
        self.outbox = Outbox(settings, engine, codec, self.kafka, on_refused=self._open_breaker)
        self.kafka_up = True
        self._queue: deque[_Item] = deque()
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._done_ids: list[str] = []
        self._batches: set[_Batch] = set()  # produced, not every report in yet (or falling back)
        self._fallbacks: set[asyncio.Task[None]] = set()
        self._claims = dedupe.AsyncClaims(engine)
        self.identities = Identities()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: Connection | None = None
        self._stopping = False
        self._last_probe = 0.0
        self._probing: asyncio.Task[None] | None = None
        self._last_depth_check = 0.0
        self._last_cleanup = time.monotonic()
        metrics.export_bridge_gauges()
        dlq.expose("bridge")
        metrics.kafka_available.set(1)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.kafka.start()
        self._task = asyncio.create_task(self._run(), name="bridge-ingest")

    async def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 15)
            except (TimeoutError, Exception):  # noqa: BLE001 - shutting down regardless
                self._task.cancel()
        if self._batches:
            await asyncio.wait([b.finished for b in self._batches], timeout=self.settings.delivery_timeout_s + 1)
        if self._done_ids:
            await asyncio.to_thread(self._db, lambda c: dedupe.mark_done(c, self._take_done()))
        self.kafka.stop_pump()
        await asyncio.to_thread(self.kafka.close, 5.0)
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
                degraded = self.outbox.backlog or not self.kafka_up
                if not self._queue:
                    timeout = self.settings.kafka_probe_interval_s if degraded else 1.0
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except TimeoutError:
                        pass
                self._wake.clear()
                batch = [self._queue.popleft() for _ in range(min(_BATCH_MAX, len(self._queue)))]
                items = self._dedupe_local(batch)
                facts = await self._key(items) if items else NO_FACTS
                if self.outbox.backlog or not self.kafka_up:
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
        for it, ev in zip(items, keyed, strict=True):
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
        produce = [it for it in items if it.event_id in claimed]
        await self._seen(items, claimed, self._claims.pending)
        if not produce:
            return
        assert self._loop is not None
        batch = _Batch(produce, self._loop.create_future())
        self._batches.add(batch)
        report, send = self.kafka.on_delivery, self.kafka.send
        for n, it in enumerate(produce):
            exc = send(it.topic, it.key, it.value, it.store_id, report(functools.partial(self._ack, batch, n)))
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
            self.outbox.backlog = True
        if not await self.outbox.keep([it.row() for it in failed]):
            for it in failed:
                self._fail(it, Unavailable("Kafka and the outbox are both unavailable"))
            return
        for it in failed:
            self._resolve(it, OUTBOX)

    # --- outbox path ---------------------------------------------------------------------
    async def _to_outbox(self, items: list[_Item], facts: Facts) -> None:
        # Direct batches still awaiting acks land (or fall back to the outbox) first:
        # their events are older than these.
        if self._batches:
            await asyncio.wait([b.finished for b in self._batches])
        if not self.outbox.has_room(len(items)):
            metrics.outbox_rejected.inc(len(items))
            for it in items:
                self._fail(it, OutboxFull(f"the outbox holds {self.outbox.depth} events (bound "
                                          f"{self.settings.outbox_max_rows}) while Kafka is unavailable"))
            return
        rows = [it.row() for it in items]
        try:
            claimed = await asyncio.to_thread(self._db, lambda c: self.outbox.claim_into(c, rows, facts))
        except Exception as exc:  # noqa: BLE001
            for it in items:
                self._fail(it, Unavailable(f"outbox write failed: {exc}"))
            return
        self.identities.committed(facts)
        self.outbox.written(len(claimed))
        for it in items:
            if it.event_id in claimed:
                self._resolve(it, OUTBOX)
        await self._seen(items, claimed,
                         lambda ids: asyncio.to_thread(self._db, lambda c: dedupe.pending(c, ids)))

    async def _seen(self, items: list[_Item], claimed: set[str],
                    pending: Callable[[list[str]], Awaitable[set[str]]]) -> None:
        """The events this batch could not claim: a duplicate when already durable; while
        another claim is pending (in flight elsewhere, or a failed attempt that could not
        release it) "not now" — a 2xx would be a lie if that attempt never made it durable,
        and the sender's retry would be answered "duplicate" until the claim went stale."""
        others = [it for it in items if it.event_id not in claimed]
        if not others:
            return
        busy = await pending([it.event_id for it in others])
        for it in others:
            if it.event_id in busy:
                self._fail(it, Unavailable("the same event is being made durable by another request: "
                                           "retry in a few seconds"))
            else:
                self._resolve(it, DUPLICATE)

    # --- breaker -------------------------------------------------------------------------
    def _open_breaker(self, reason: str) -> None:
        if self.kafka_up:
            log.warning("Kafka unavailable (%s): new events go to the PostgreSQL outbox", reason)
        self.kafka_up = False
        self.outbox.backlog = True
        self._last_probe = time.monotonic()
        metrics.kafka_available.set(0)
        # Messages still in librdkafka's queue were never sent: fail them now so they fall
        # back to the outbox at once.
        self.kafka.purge_unsent()
        if self._wake is not None:
            self._wake.set()

    async def _recover(self) -> None:
        if not self.kafka_up:
            # Probing can take seconds against a dead broker: it runs beside the pipeline,
            # which keeps writing the outbox meanwhile, and wakes it when Kafka answers.
            now = time.monotonic()
            if self._probing is None and now - self._last_probe >= self.settings.kafka_probe_interval_s:
                self._last_probe = now
                self._probing = asyncio.create_task(self._probe_task())
            return
        if self.outbox.backlog and await self.outbox.drain_step():
            self.outbox.backlog = False
            log.info("outbox drained: events go straight to Kafka again")

    async def _probe_task(self) -> None:
        try:
            ok = await asyncio.to_thread(self.kafka.answers, self.settings.topic(topics.ORDERS),
                                         min(2.0, self.settings.kafka_probe_interval_s * 4))
        finally:
            self._probing = None
        if ok and not self.kafka_up:
            log.info("Kafka answers again: draining the outbox")
            self.kafka_up = True
            metrics.kafka_available.set(1)
        if self._wake is not None:
            self._wake.set()

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_depth_check > 2.0:
            self._last_depth_check = now
            await self.outbox.check_depth(self._db)
        if now - self._last_cleanup > 600:
            self._last_cleanup = now
            days = self.settings.dedupe_retention_days
            await asyncio.to_thread(self._db, lambda c: dedupe.forget_old(c, days))
