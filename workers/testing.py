"""Building and producing action commands by hand, and running a role in a thread: for
tests, benchmarks and plugin authors who want to run one action through a real worker
without a rule or an event."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from wooflow.consumer.commands import idempotency_key, to_json
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import get_codec
from wooflow.schemas.types import ActionCommand
from wooflow.settings import Settings

if TYPE_CHECKING:  # the runner is imported when a worker thread is made, not by command()/produce()
    from wooflow.workers.runner import Worker


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


class ThreadedRole(Protocol):
    """What runs in a RoleThread: a role's loop (`wooflow.process.Role`) that says when it is ready."""

    ready: threading.Event

    def run(self, stop: threading.Event) -> None: ...


R = TypeVar("R", bound=ThreadedRole)


class RoleThread(Generic[R]):
    """A role (a Worker, a RuleConsumer...) in a thread of this process — for tests that
    inject a resolver or a mailer, or look at the role's state while it runs.
    `with RoleThread(role) as t: ...` waits until the role is ready and stops it on exit; an
    exception the role raised fails the start or the stop, so a role that died never passes
    for an idle one."""

    def __init__(self, role: R, name: str = "wooflow-role") -> None:
        self.role = role
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.role.run(self.stop_event)
        except BaseException as exc:  # surfaced by __enter__ or stop()
            self.error = exc

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.role.ready.wait(0.05):
            if self.error is not None or time.monotonic() > deadline:
                self.stop()  # raises the role's error, if it had one
                raise RuntimeError(f"{self.thread.name} did not start within 30 s")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        if self.error is not None:
            raise RuntimeError(f"{self.thread.name} failed: {self.error!r}") from self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerThread(RoleThread["Worker"]):
    """A worker (wooflow.workers.runner.Worker) in a thread: `with WorkerThread(settings,
    resolver=...) as w: ...`; keyword arguments go to the Worker."""

    def __init__(self, settings: Settings, **worker_kwargs: Any) -> None:
        from wooflow.workers.runner import Worker

        super().__init__(Worker(settings, **worker_kwargs), "wooflow-worker")

    @property
    def worker(self) -> Worker:
        return self.role
