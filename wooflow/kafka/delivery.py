"""Producing from an asyncio event loop, each message answered by its own delivery report:
the bridge's way into Kafka (producers/ingest.py answers each webhook from its event's
acks=all report).

Delivery reports are served by `poll(0)` on the event loop itself (`_DeliveryPump`): no
thread taking the GIL once per report. A report served anywhere else (the final flush at
shutdown, a worker thread) is handed to the loop, one wake-up per burst (`_Completions`).
librdkafka's error callback reports a broker that is gone (`on_unavailable`, on the
loop); `permanent_error` tells a produce failure no retry will fix from an outage.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from wooflow.kafka.config import BRIDGE
from wooflow.kafka.headers import HeaderCache
from wooflow.kafka.producer import OnDelivery, Producer, produce_when_room
from wooflow.settings import Settings

log = logging.getLogger(__name__)

Report = Callable[[BaseException | None], None]

# Answers Kafka will give again however long we wait: not an outage, a poison event.
_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE: "message_too_large", KafkaError.RECORD_LIST_TOO_LARGE: "message_too_large",
    KafkaError.INVALID_RECORD: "invalid_record", KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic_not_authorized",
    KafkaError._UNKNOWN_TOPIC: "unknown_topic", KafkaError.UNKNOWN_TOPIC_OR_PART: "unknown_topic",
    KafkaError._INVALID_ARG: "invalid_message",
}

PERMANENT_REASONS = tuple(sorted(set(_PERMANENT.values())))


def permanent_error(exc: BaseException) -> str | None:
    """The DLQ reason when `exc` is a produce failure no retry will fix, else None."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return _PERMANENT.get(err.code()) if isinstance(err, KafkaError) else None


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

    def callback(self, target: Report) -> OnDelivery:
        return functools.partial(self._report, target)

    def future(self, fut: asyncio.Future[Any]) -> OnDelivery:
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


class LoopProducer:
    """The bridge's producer (`BRIDGE` profile): events carry their `store`/`schema`
    headers, reports come back on the event loop. `start()` on the running loop first."""

    def __init__(self, settings: Settings, on_unavailable: Callable[[str], None]) -> None:
        self.producer = Producer(settings, BRIDGE, on_error=self._on_error, logger=_rdkafka_log)
        self.headers = HeaderCache(settings)
        self._on_unavailable = on_unavailable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._completions: _Completions | None = None
        self._pump: _DeliveryPump | None = None
        # A delivery callback that calls `target(None or the error)` on the event loop.
        self.on_delivery: Callable[[Report], OnDelivery] = self._not_started

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._completions = _Completions(self._loop)
        self.on_delivery = self._completions.callback
        raw = self.producer.raw
        self._pump = _DeliveryPump(self._loop, raw.poll, lambda: len(raw))
        self._pump.start()

    @staticmethod
    def _not_started(_target: Report) -> OnDelivery:
        raise RuntimeError("LoopProducer.start() first")

    def send(self, topic: str, key: str, value: bytes, store_id: str | None,
             on_delivery: OnDelivery) -> BaseException | None:
        """Hand one message to librdkafka; the error when it refused it outright."""
        try:
            produce_when_room(self.producer.raw, topic, value, key=key, headers=self.headers[topic, store_id or ""],
                              on_delivery=on_delivery, wait_s=0.01, attempts=200)
        except BufferError:
            return KafkaException(KafkaError(KafkaError._QUEUE_FULL))
        except KafkaException as exc:
            return exc
        if self._pump is not None:
            self._pump.kick()
        return None

    def produce(self, topic: str, key: str, value: bytes, store_id: str | None = None) -> asyncio.Future[None]:
        """One message with its own future (outbox drain, dead letters)."""
        assert self._loop is not None and self._completions is not None, "LoopProducer.start() first"
        fut: asyncio.Future[None] = self._loop.create_future()
        exc = self.send(topic, key, value, store_id, self._completions.future(fut))
        if exc is not None:
            fut.set_exception(exc)
        return fut

    def purge_unsent(self) -> None:
        """Fail the messages still in librdkafka's queue — never sent — at once (in-flight
        ones are left to their own acknowledgement or timeout)."""
        try:
            self.producer.raw.purge(in_queue=True, in_flight=False, blocking=False)
        except (KafkaException, NotImplementedError):
            pass

    def answers(self, topic: str, timeout: float) -> bool:
        """Does the cluster answer, with a leader for every partition of `topic`? (blocking)"""
        try:
            md = self.producer.raw.list_topics(topic, timeout=timeout)
        except KafkaException:
            return False
        t = md.topics.get(topic)
        return bool(md.brokers) and t is not None and t.error is None and all(
            p.leader >= 0 for p in t.partitions.values())

    def stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.stop()

    def close(self, timeout: float) -> None:
        """Flush what is left and close (blocking)."""
        self.producer.close(timeout)

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: a cluster that is gone is reported on the loop."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal():
            loop = self._loop
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(self._on_unavailable, err.str())
                except RuntimeError:
                    pass
