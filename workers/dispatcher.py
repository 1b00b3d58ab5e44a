"""Runs commands concurrently while keeping each key's commands in order.

Commands of one Kafka key (`store:customer`) run one after another, in offset order —
step 2 of a workflow sees what step 1 did, and a customer's tag/untag never swap. Commands
of different keys run concurrently, up to `concurrency` at once, so one slow webhook
holds back only its own customer's later commands, never anyone else's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wooflow.schemas.types import ActionCommand
from wooflow.workers.tracker import TP, Handle

log = logging.getLogger(__name__)

Key = tuple[str, int, bytes | None]
_RESERVED: Any = object()  # placeholder for keys run by a bulk batch


@dataclass(eq=False)
class Item:
    tp: TP
    key: Key
    msg: Any  # confluent_kafka.Message
    handle: Handle
    cmd: ActionCommand


class Dispatcher:
    def __init__(self, run: Callable[[Item], Awaitable[None]], concurrency: int) -> None:
        self.run = run
        self.concurrency = concurrency
        self._queues: dict[Key, deque[Item]] = {}
        self._ready: deque[Key] = deque()
        self._active: dict[Key, Item] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.queued = 0

    def submit(self, items: list[Item]) -> None:
        for it in items:
            q = self._queues.get(it.key)
            if q is None:
                self._queues[it.key] = deque([it])
                self._ready.append(it.key)
            else:
                q.append(it)
            self.queued += 1
        self._pump()

    def _pump(self) -> None:
        while len(self._active) < self.concurrency and self._ready:
            key = self._ready.popleft()
            q = self._queues.get(key)
            if not q or key in self._active:
                continue
            item = q[0]
            self._active[key] = item
            task = asyncio.ensure_future(self._run_one(key, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_one(self, key: Key, item: Item) -> None:
        try:
            await self.run(item)
        except Exception:  # run() handles its own errors; this is a last resort
            log.exception("command task failed")
        finally:
            self._active.pop(key, None)
            q = self._queues.get(key)
            if q and q[0] is item:
                q.popleft()
                self.queued -= 1
                if q:
                    self._ready.append(key)
                else:
                    del self._queues[key]
            self._pump()

    def reserve(self, keys: list[Key]) -> None:
        """Mark keys as running elsewhere (a bulk batch): their next commands wait behind it."""
        for key in keys:
            self._active[key] = _RESERVED
            self._queues.setdefault(key, deque())

    def release(self, keys: list[Key]) -> None:
        for key in keys:
            if self._active.get(key) is _RESERVED:
                del self._active[key]
            q = self._queues.get(key)
            if q:
                self._ready.append(key)
            elif q is not None:
                del self._queues[key]
        self._pump()

    def busy(self, key: Key) -> bool:
        return key in self._queues or key in self._active

    def drop(self, tps: set[TP]) -> int:
        """Forget commands of revoked partitions that have not started (their new owner runs them)."""
        dropped = 0
        for key in [k for k in self._queues if (k[0], k[1]) in tps]:
            q = self._queues[key]
            head = self._active.get(key)
            keep = deque([head]) if head is not None and q and q[0] is head else deque()
            dropped += len(q) - len(keep)
            if keep:
                self._queues[key] = keep
            else:
                del self._queues[key]
        self.queued -= dropped
        return dropped

    def active_in(self, tps: set[TP]) -> int:
        return sum(1 for k in self._active if (k[0], k[1]) in tps)

    @property
    def idle(self) -> bool:
        return not self._queues and not self._active
