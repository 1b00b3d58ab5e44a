"""Building and producing action commands by hand: for tests, benchmarks and plugin authors
who want to run one action through a real worker without a rule or an event."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from wooflow.consumer.commands import idempotency_key, to_json
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import get_codec
from wooflow.schemas.types import ActionCommand
from wooflow.settings import Settings


def command(*, store_id: str, action_type: str, params: Mapping[str, object], rule_id: int = 1,
            event_id: str | None = None, step: int = 0, customer_key: str = "c1", subject_type: str = "order",
            subject_id: str = "1", context: Mapping[str, object] | None = None, not_before: datetime | None = None,
            dry_run: bool = False, attempt: int = 1, trigger: str = "new_order") -> ActionCommand:
    event_id = event_id or f"test:{uuid.uuid4().hex}"
    key = idempotency_key(rule_id, event_id, step)
    now = datetime.now(timezone.utc)
    return {
        "command_id": key, "idempotency_key": key, "store_id": store_id, "customer_key": customer_key,
        "rule_id": rule_id, "rule_version": 1, "event_id": event_id, "trigger": trigger, "step": step,
        "action_type": action_type, "params_json": json.dumps(params), "subject_type": subject_type,
        "subject_id": subject_id, "context_json": to_json(context or {}), "created_at": now,
        "not_before": not_before, "received_at": now, "dry_run": dry_run, "attempt": attempt,
    }


def produce(settings: Settings, commands: Iterable[ActionCommand], *, copies: int = 1,
            producer: Producer | None = None) -> int:
    """Produce each command `copies` times (a redelivery) to automation.commands; returns the count."""
    topic = settings.topic(topics.COMMANDS)
    codec = get_codec(settings.schema_registry_url)
    own = producer is None
    producer = producer or Producer(settings)
    n = 0
    for cmd in commands:
        value = codec.encode("ActionCommand", cmd, topic)
        for _ in range(copies):
            producer.produce(topic, value, key=f"{cmd['store_id']}:{cmd['customer_key']}")
            n += 1
    producer.flush(30)
    if own:
        producer.close()
    return n


class WorkerThread:
    """A worker (wooflow.workers.runner.Worker) in a thread of this process — for tests that
    inject a resolver or a mailer. `with WorkerThread(settings) as w: ...` stops it on exit."""

    def __init__(self, settings: Settings, **worker_kwargs: Any) -> None:
        import threading

        from wooflow.workers.runner import Worker

        self.worker = Worker(settings, **worker_kwargs)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="wooflow-worker", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.worker.run(self.stop_event)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        if not self.worker.ready.wait(30):
            raise RuntimeError("worker did not start")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        if self.error is not None:
            raise RuntimeError(f"worker failed: {self.error!r}") from self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()
