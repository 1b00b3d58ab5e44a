"""Producing with delivery reports.

Three ways to wait for durability:
- batch roles (rules, sink, scheduler, backfill, poller) produce many messages and
  `flush()` once before their checkpoint commits offsets (or before they mark their rows
  done); any failed delivery raises, so nothing moves past an output that was not
  acknowledged;
- the workers produce with their own callbacks (`produce_when_room` on `raw`) and serve
  reports from a thread (`start_polling`);
- the bridge serves reports on its event loop (wooflow/kafka/delivery.py) and answers
  each webhook only once its own acks=all report arrived.

A full local queue (BufferError) is never an error: `produce_when_room` serves delivery
reports to make room and tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message
from confluent_kafka import Producer as _Producer

from wooflow.kafka.config import DEFAULT, ProducerProfile, producer_config
from wooflow.settings import Settings

Headers = list[tuple[str, str | bytes | None]] | None
OnDelivery = Callable[[KafkaError | None, Message], None]


class DeliveryFailed(RuntimeError):
    pass


def produce_when_room(raw: _Producer, topic: str, value: bytes, *, key: str | bytes | None = None,
                      headers: Headers = None, on_delivery: OnDelivery | None = None, wait_s: float = 0.05,
                      attempts: int | None = None) -> None:
    """Hand one message to librdkafka. While its local queue is full, serve delivery reports
    for up to `wait_s` to make room and try again — `attempts` times at most (None: until it
    fits), then the BufferError is raised."""
    tries = 0
    while True:
        try:
            raw.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            tries += 1
            if attempts is not None and tries >= attempts:
                raise
            raw.poll(wait_s)


class Producer:
    def __init__(self, s: Settings, profile: ProducerProfile = DEFAULT, *, transactional_id: str | None = None,
                 on_error: Callable[[KafkaError], None] | None = None, logger: logging.Logger | None = None) -> None:
        # typed loosely: the client's stubs admit scalar values, but callbacks and a Logger go in too
        conf: dict[str, Any] = {**producer_config(s, profile, transactional_id=transactional_id)}
        if on_error is not None:
            conf["error_cb"] = on_error
        if logger is not None:
            conf["logger"] = logger
        self._p = _Producer(conf)
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    # --- batch mode -----------------------------------------------------------------
    def _record(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._errors.append(f"{msg.topic()}: {err.str()}")

    def produce(self, topic: str, value: bytes, key: str | bytes | None = None, headers: Headers = None) -> None:
        produce_when_room(self._p, topic, value, key=key, headers=headers, on_delivery=self._record)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every produced message is acknowledged; raise if any was not."""
        remaining = self._p.flush(timeout)
        with self._lock:
            errors, self._errors = self._errors, []
        if remaining:
            raise DeliveryFailed(f"{remaining} messages not acknowledged within {timeout}s")
        if errors:
            raise DeliveryFailed(f"{len(errors)} deliveries failed, first: {errors[0]}")

    def poll(self, timeout: float = 0) -> int:
        return self._p.poll(timeout)

    # --- background delivery reports (workers) ------------------------------------------
    def start_polling(self) -> None:
        """Serve delivery reports from a thread, for callers that produce with their own
        `on_delivery` callbacks through `raw` and never flush per batch (the workers)."""
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll_forever, name="kafka-delivery", daemon=True)
            self._poller.start()

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self._p.poll(0.05)

    # --- transactions ---------------------------------------------------------------
    @property
    def raw(self) -> _Producer:
        return self._p

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=1)
        self._p.flush(timeout)
