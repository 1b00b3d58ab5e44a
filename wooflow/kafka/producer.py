"""Producing with delivery reports.

Two ways to wait for durability:
- batch roles (rules, workers, sink) produce many messages and `flush()` once before
  their checkpoint commits offsets; any failed delivery raises, so offsets never move
  past an output that was not acknowledged;
- the bridge (`producers/ingest.py`) serves delivery reports with `raw.poll()` on its
  event loop and answers each webhook only once its own acks=all report arrived;
- the workers produce with their own callbacks and serve reports from a thread
  (`start_polling`).
"""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as _Producer

from wooflow.kafka.config import producer_config
from wooflow.settings import Settings

Headers = list[tuple[str, str | bytes | None]] | None


class DeliveryFailed(RuntimeError):
    pass


class Producer:
    def __init__(self, s: Settings, *, transactional_id: str | None = None, **overrides: Any) -> None:
        self._p = _Producer(producer_config(s, transactional_id=transactional_id) | overrides)
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
        while True:
            try:
                self._p.produce(topic, value=value, key=key, headers=headers, on_delivery=self._record)
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room, then retry.
                self._p.poll(0.05)

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
