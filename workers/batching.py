"""Coalescing many concurrent calls into one blocking call on a thread.

Hundreds of commands in flight each need a claim, a finish, a deferral... One PostgreSQL
round trip per command would cap a worker at a few hundred commands per second; a
`Batcher` gathers the calls made while the previous round trip was running and sends
them together. At low load a call waits one loop tick; under load batches grow by
themselves (no timers, no tuning).

With `retry_while`, a batch whose call fails that way (PostgreSQL restarting: see
`wooflow.db.engine.unavailable`) is sent again after a growing pause instead of failing
its callers: they wait for the database, as a command must not be given up (or
dead-lettered) because the database blinked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)
RETRY_FIRST_S, RETRY_MAX_S = 0.2, 5.0


class Batcher(Generic[T, R]):
    """`await submit(item)` → the item's result from `fn(items)`, run in `executor`.

    `fn` returns one result per item, in order; a result that is an exception instance
    is raised to that item's caller only. An exception raised by `fn` fails the batch.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R | BaseException]], *, executor: Executor | None = None,
                 max_size: int = 2000, parallel: int = 2, name: str = "batch",
                 retry_while: Callable[[BaseException], bool] | None = None) -> None:
        self.fn, self.executor, self.max_size, self.parallel, self.name = fn, executor, max_size, parallel, name
        self.retry_while = retry_while
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = 0
        self._scheduled = False
        self._flushing: set[asyncio.Future[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, fut))
        if not self._scheduled:
            # Flush on the next tick, so every call made in this tick joins the batch.
            self._scheduled = True
            loop.call_soon(self._kick)
        return await fut

    def _kick(self) -> None:
        self._scheduled = False
        while self._pending and self._running < self.parallel:
            batch, self._pending = self._pending[:self.max_size], self._pending[self.max_size:]
            self._running += 1
            task = asyncio.ensure_future(self._flush(batch))
            self._flushing.add(task)  # a reference until it ends (the loop keeps only weak ones)
            task.add_done_callback(self._flushing.discard)

    async def _call(self, items: list[T], waiting: list[asyncio.Future[R]]) -> Sequence[R | BaseException]:
        loop = asyncio.get_running_loop()
        pause = RETRY_FIRST_S
        while True:
            try:
                return await loop.run_in_executor(self.executor, self.fn, items)
            except Exception as exc:
                if self.retry_while is None or not self.retry_while(exc) or all(f.done() for f in waiting):
                    raise
                log.warning("%s: %d items wait for the database (%s); trying again in %.1fs", self.name, len(items),
                            str(exc).splitlines()[0][:200], pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._call([item for item, _ in batch], [fut for _, fut in batch])
        except BaseException as exc:  # the whole batch failed: every caller sees why
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, fut), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
        finally:
            self._running -= 1
            if self._pending:
                self._kick()
