"""Lease renewal: a claim whose worker is alive never expires.

A claim's lease (`WOOFLOW_ACTION_LEASE_S`, workers/claims.py) is how long other workers
wait before they decide its worker stopped and recover the key. An action may take
longer than that (an SMTP server or a webhook receiver answering late), so while it runs
its worker renews the lease: every `WOOFLOW_ACTION_LEASE_RENEW_S` (a third of the lease
unless set) one UPDATE extends every key this worker holds. Renewal runs on a thread of
its own with its own database connection, so a busy event loop delays no renewal. A
renewal extends only rows whose `owner` is this worker (a random id per process start):
a worker that stops renewing — it died — lets its leases expire.

When renewals fail (PostgreSQL unreachable) for so long that a lease might expire, this
worker can no longer vouch that nobody else runs the key: one renewal interval before the
lease would end, it cancels the actions still running under it and stops with
`LeaseLost` (`wooflow workers` exits with code 3; its supervisor restarts it). Their
offsets were not committed, so the commands come back, and the next claim counts an
interrupted attempt (workers/executor.py decides, per action, whether to repeat it).
A key another worker owns by now is given up the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine

from wooflow.db.engine import normalise_url
from wooflow.settings import Settings
from wooflow.workers import claims

log = logging.getLogger(__name__)

MIN_RENEW_S = 1.0  # a renewal is one PostgreSQL round trip; under load it must still fit


class LeaseLost(RuntimeError):
    """This worker could not renew a lease in time and stopped its actions (see module doc)."""


def renew_interval(s: Settings) -> float:
    return s.action_lease_renew_s or s.action_lease_s / 3


def settings_problem(s: Settings) -> str | None:
    """Why leases could not be kept with these settings (None: they can)."""
    lease, renew = s.action_lease_s, renew_interval(s)
    if renew < MIN_RENEW_S:
        return (f"leases would be renewed every {renew:g} s (WOOFLOW_ACTION_LEASE_RENEW_S, default a third of "
                f"WOOFLOW_ACTION_LEASE_S={lease:g}); a renewal is a PostgreSQL round trip and needs at least "
                f"{MIN_RENEW_S:g} s: set WOOFLOW_ACTION_LEASE_S to {3 * MIN_RENEW_S:g} s or more")
    if renew * 3 > lease:
        return (f"WOOFLOW_ACTION_LEASE_RENEW_S={renew:g} must be at most a third of WOOFLOW_ACTION_LEASE_S={lease:g}: "
                "a lease must outlive a failed renewal and still be given up one renewal interval before it ends")
    return None


def instance_id() -> str:
    """A worker instance's claim owner: unique per process start (a restarted worker owns nothing)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Held:
    task: asyncio.Task[object]
    loop: asyncio.AbstractEventLoop
    vouched_until: float  # monotonic: the lease surely lasts until here


class LeaseKeeper:
    """Renews the leases of the keys this worker holds, from a thread (see module doc)."""

    def __init__(self, settings: Settings, owner: str) -> None:
        self.owner = owner
        self.lease_s = settings.action_lease_s
        self.renew_s = renew_interval(settings)
        self.lapsed: str | None = None  # why this worker stopped vouching for its leases (it must stop)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wooflow-leases", daemon=True)
        self._db = ThreadPoolExecutor(1, thread_name_prefix="wooflow-leases-db")
        # Its own connection: the worker's pool may be exhausted by the very work being renewed.
        # A renewal is abandoned when the next one is due (statement and TCP timeouts).
        ms = int(self.renew_s * 1000)
        self._engine: Engine = create_engine(
            normalise_url(settings.database_url), pool_size=1, max_overflow=0, pool_pre_ping=True,
            connect_args={"connect_timeout": max(2, int(self.renew_s)), "tcp_user_timeout": ms,
                          "options": f"-c statement_timeout={ms}"})

    # --- the event loop's side ----------------------------------------------------------------
    @contextmanager
    def holding(self, key: str, since: float) -> Iterator[None]:
        """Keep `key`'s lease alive while the block runs; `since` is the monotonic time the claim
        was sent (its lease lasts at least until since + lease). If the lease cannot be vouched
        for any more, the current task is cancelled."""
        if self.lapsed:
            raise asyncio.CancelledError(self.lapsed)
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._held[key] = _Held(task, asyncio.get_running_loop(), since + self.lease_s)
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(key, None)

    # --- the renewal thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.renew_s + 5)
        self._db.shutdown(wait=False)
        self._engine.dispose()

    def _run(self) -> None:
        pending: Future[set[str]] | None = None
        keys: list[str] = []
        sent = next_renewal = time.monotonic() + self.renew_s
        while not self._stop.is_set():
            now = time.monotonic()
            if pending is not None and pending.done():
                self._absorb(pending, keys, sent)
                pending = None
            if pending is None and now >= next_renewal:
                keys = self._keys()
                if keys:
                    sent, pending = now, self._db.submit(claims.renew, self._engine, keys, self.owner, self.lease_s)
                next_renewal = now + self.renew_s
            self._expire(time.monotonic())
            timeout = self._next_deadline() - time.monotonic()
            if pending is None:
                timeout = min(timeout, next_renewal - time.monotonic())
                self._stop.wait(max(0.01, timeout))
            else:  # a renewal in flight: wake when it answers, or when a lease must be given up
                wait([pending], timeout=max(0.01, min(timeout, self.renew_s)))

    def _keys(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def _absorb(self, done: Future[set[str]], keys: list[str], sent: float) -> None:
        """A renewal sent at `sent` answered: every key it did not find lost is safe until
        sent + lease (renewed, or already finished — nobody runs a finished key again)."""
        try:
            lost = done.result()
        except Exception as exc:  # PostgreSQL away: the leases run down; _expire gives them up in time
            log.warning("lease renewal failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        with self._lock:
            for key in keys:
                held = self._held.get(key)
                if held is not None and key not in lost:
                    held.vouched_until = max(held.vouched_until, sent + self.lease_s)
        if lost:
            self._give_up(lost, "another worker took over its claim")

    def _next_deadline(self) -> float:
        with self._lock:
            return min((h.vouched_until - self.renew_s for h in self._held.values()),
                       default=time.monotonic() + self.renew_s)

    def _expire(self, now: float) -> None:
        with self._lock:
            late = [k for k, h in self._held.items() if h.vouched_until - self.renew_s <= now]
        if late:
            self._give_up(late, f"its lease could not be renewed for {self.lease_s - self.renew_s:.1f} s "
                                f"(WOOFLOW_ACTION_LEASE_S={self.lease_s:g})")

    def _give_up(self, keys: list[str] | set[str], why: str) -> None:
        with self._lock:
            held = [self._held.pop(k) for k in keys if k in self._held]
        reason = f"stopped {len(held)} running action(s): {why}"
        log.error("%s; stopping this worker so that no effect runs unvouched", reason)
        for h in held:
            h.loop.call_soon_threadsafe(h.task.cancel)
        if self.lapsed is None:
            self.lapsed = reason
