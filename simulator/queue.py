"""The background queue webhook deliveries wait in (WooCommerce's Action Scheduler).

WooCommerce never delivers inside the request that changed the data: at the end
of the request it schedules a ``woocommerce_deliver_webhook_async`` action per
(webhook, hook argument) and a queue runner sends it later.  Two properties of
that scheduling matter to a consumer and are reproduced here:

* **collapse** – wc_webhook_execute_queue() only schedules when no *pending*
  action with the same (webhook id, argument) exists, so a burst of updates to
  one order before the runner gets to it becomes a single delivery, and since
  the payload is built when it runs, it carries the latest state.  Once a
  delivery has started it is no longer pending, so a later change queues anew.
* **lateness / reordering** – runners are cron/loopback driven; deliveries
  arrive late and can overtake each other.  ``delay``/``jitter`` reproduce this
  deterministically from ``seed`` (off by default: FIFO, as fast as possible).

This module only holds jobs; :mod:`wooflow.simulator.delivery` runs them.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeliveryQueue", "QueuedDelivery"]


@dataclass(order=True)
class QueuedDelivery:
    due: float
    seq: int
    webhook_id: int = field(compare=False)
    arg: Any = field(compare=False)
    hook: str = field(compare=False)
    enqueued_at: float = field(compare=False)

    @property
    def key(self) -> tuple[int, Hashable]:
        return (self.webhook_id, _arg_key(self.arg))


def _arg_key(arg: Any) -> Hashable:
    # Action Scheduler compares serialized args; ints are the common case.
    try:
        hash(arg)
        return arg
    except TypeError:
        return repr(arg)


class DeliveryQueue:
    """Thread-safe pending-delivery queue with collapse, delay/jitter and pause."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        jitter: float = 0.0,
        seed: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition()
        self._heap: list[QueuedDelivery] = []
        self._pending: dict[tuple[int, Hashable], QueuedDelivery] = {}
        self._in_flight = 0
        self._seq = 0
        self._paused = False
        self._wakers: list[Callable[[], None]] = []
        self._monotonic = monotonic
        self.delay = delay
        self.jitter = jitter
        self._rng = random.Random(seed)
        self.collapsed = 0  # how many enqueues were absorbed by a pending job

    # -- configuration -------------------------------------------------------

    def configure(self, *, delay: float | None = None, jitter: float | None = None, seed: int | None = None) -> None:
        """Change lateness simulation; ``seed`` restarts the jitter sequence."""
        with self._cond:
            if delay is not None:
                self.delay = delay
            if jitter is not None:
                self.jitter = jitter
            if seed is not None:
                self._rng = random.Random(seed)

    def add_waker(self, waker: Callable[[], None]) -> None:
        """Register a callback run (outside the lock) when work may be ready."""
        with self._cond:
            self._wakers.append(waker)

    def remove_waker(self, waker: Callable[[], None]) -> None:
        with self._cond:
            if waker in self._wakers:
                self._wakers.remove(waker)

    def _wake(self) -> None:
        with self._cond:
            wakers = list(self._wakers)
        for waker in wakers:
            waker()

    # -- producer side -------------------------------------------------------

    def enqueue(self, webhook_id: int, arg: Any, hook: str) -> bool:
        """Schedule a delivery; False when an identical pending one absorbed it."""
        with self._cond:
            key = (webhook_id, _arg_key(arg))
            if key in self._pending:
                self.collapsed += 1
                return False
            now = self._monotonic()
            lateness = self.delay + (self._rng.uniform(0.0, self.jitter) if self.jitter > 0 else 0.0)
            self._seq += 1
            job = QueuedDelivery(
                due=now + lateness, seq=self._seq, webhook_id=webhook_id, arg=arg, hook=hook, enqueued_at=now
            )
            heapq.heappush(self._heap, job)
            self._pending[key] = job
        self._wake()
        return True

    def pause(self) -> None:
        """Stop handing out jobs (as if no queue runner fired); they keep collapsing."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
        self._wake()

    @property
    def paused(self) -> bool:
        return self._paused

    # -- consumer side -------------------------------------------------------

    def pop_due(self) -> QueuedDelivery | None:
        """Take the earliest job whose time has come; it counts as in flight."""
        with self._cond:
            if self._paused or not self._heap:
                return None
            if self._heap[0].due > self._monotonic():
                return None
            job = heapq.heappop(self._heap)
            del self._pending[job.key]
            self._in_flight += 1
            return job

    def seconds_until_next(self) -> float | None:
        """How long until a job becomes due; None when nothing can run."""
        with self._cond:
            if self._paused or not self._heap:
                return None
            return max(0.0, self._heap[0].due - self._monotonic())

    def task_done(self, job: QueuedDelivery) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def drop_all(self) -> int:
        """Forget pending jobs (used when the worker stops for good)."""
        with self._cond:
            dropped = len(self._heap)
            self._heap.clear()
            self._pending.clear()
            self._cond.notify_all()
            return dropped

    # -- observation ---------------------------------------------------------

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def pending_jobs(self) -> list[QueuedDelivery]:
        with self._cond:
            return sorted(self._heap)

    def is_idle(self) -> bool:
        with self._cond:
            return not self._heap and self._in_flight == 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or in flight; False on timeout."""
        deadline = None if timeout is None else self._monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                if deadline is None:
                    self._cond.wait(0.05)
                    continue
                remaining = deadline - self._monotonic()
                if remaining <= 0:
                    return False
                # Short waits: a job becoming due does not notify the condition.
                self._cond.wait(min(remaining, 0.05))
            return True
