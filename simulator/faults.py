"""A store whose REST API is failing or slow for a while (a PHP fatal, a database that
stalls, an overloaded host), switched on and off from the outside.

`SimulatedStore.rest_fault` holds the fault in force, if any; `RestFaults` is the ASGI
middleware in front of the REST app that applies it to `/wp-json/...` requests only (the
`/__sim__` introspection always answers). Two modes:

* ``error``: the request is answered ``status`` (5xx) with a WP_Error body — before the
  request runs, or, for a share ``after_effect`` of them, *after* it ran (the change is
  saved, the client only sees the error: what a fatal in a later hook does);
* ``slow``: the request waits ``delay_s`` — before it runs, or (share ``after_effect``)
  after it ran and before the answer leaves (a client that times out may still have
  changed the store).

Which requests fail after their effect is drawn from a seeded generator, so a run is
reproducible given the same request order.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["error", "slow"]
ASGIApp = Any


@dataclass
class RestFault:
    mode: Mode
    until: float  # time.monotonic() at which the fault ends
    status: int = 503
    delay_s: float = 5.0
    after_effect: float = 0.3  # share of requests failed/delayed after they ran
    seed: int = 0
    requests: int = 0  # requests the fault touched
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def active(self) -> bool:
        return time.monotonic() < self.until

    def draw_after(self) -> bool:
        with self._lock:
            self.requests += 1
            return self._rng.random() < self.after_effect


def _error_body(status: int) -> bytes:
    return json.dumps({"code": "internal_server_error",
                       "message": "There has been a critical error on this website.",
                       "data": {"status": status}}).encode()


class RestFaults:
    """ASGI middleware: applies the store's `rest_fault` to its REST API."""

    PREFIX = "/wp-json/"

    def __init__(self, app: ASGIApp, store: Any) -> None:
        self.app, self.store = app, store

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fault: RestFault | None = getattr(self.store, "rest_fault", None)
        if scope["type"] != "http" or fault is None or not fault.active() \
                or not str(scope.get("path", "")).startswith(self.PREFIX):
            await self.app(scope, receive, send)
            return
        after = fault.draw_after()
        if fault.mode == "slow":
            if not after:
                await asyncio.sleep(fault.delay_s)
                await self.app(scope, receive, send)
                return
            held: list[Any] = []

            async def hold(message: Any) -> None:
                held.append(message)

            await self.app(scope, receive, hold)
            await asyncio.sleep(fault.delay_s)
            for message in held:
                await send(message)
            return
        if after:
            async def swallow(_message: Any) -> None:
                return None

            await self.app(scope, receive, swallow)
        await _answer(send, fault.status)


async def _answer(send: Any, status: int) -> None:
    body = _error_body(status)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=UTF-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
