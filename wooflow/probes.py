"""/metrics, /healthz and /readyz for every role.

HTTP roles (bridge, api) mount `probe_routes`; the Kafka-only roles (rules, workers,
sink, scheduler) start `serve_probes` on `WOOFLOW_METRICS_PORT` in a daemon thread.

/healthz is liveness: the process answers. /readyz is readiness: what the role needs to
do its work answers — PostgreSQL for every role, and for the consuming roles also the
consumer having started and Kafka answering the lag reporter. Readiness deliberately does
not require a partition assignment: replicas beyond the partition count idle legitimately,
and the bridge's readiness never depends on Kafka (its outbox keeps WooCommerce answered
during a broker outage; an unready bridge would make WooCommerce count failures).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Every process that serves /metrics exposes the whole catalogue (zeros included), so a
# panel can tell "nothing happened" from "this role is not scraped".
from wooflow import metrics as _catalogue  # noqa: F401

ReadyCheck = Callable[[], bool]

log = logging.getLogger(__name__)


class CachedCheck:
    """A readiness check run at most once per `ttl` seconds; concurrent probes get the last
    answer instead of piling up on a slow dependency."""

    def __init__(self, check: ReadyCheck, ttl: float = 5.0, name: str = "check") -> None:
        self.check, self.ttl, self.name = check, ttl, name
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._ok = False

    def __call__(self) -> bool:
        if time.monotonic() - self._at < self.ttl or not self._lock.acquire(blocking=False):
            return self._ok
        try:
            try:
                ok = bool(self.check())
            except Exception as exc:  # an unreachable dependency is "not ready", never a 500
                log.warning("readiness: %s failed: %s", self.name, exc)
                ok = False
            self._ok, self._at = ok, time.monotonic()
            return ok
        finally:
            self._lock.release()


def db_ready(database_url: str, ttl: float = 5.0, connect_timeout: int = 3) -> ReadyCheck:
    """PostgreSQL answers `SELECT 1`, on a one-connection engine of its own (the probe never
    waits for a slot in the role's busy pool)."""
    engine: Any = None

    def check() -> bool:
        nonlocal engine
        from sqlalchemy import create_engine, text

        from wooflow.db.engine import normalise_url

        if engine is None:
            engine = create_engine(normalise_url(database_url), pool_size=1, max_overflow=0, pool_pre_ping=True,
                                   connect_args={"connect_timeout": connect_timeout})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    return CachedCheck(check, ttl, "database")


def all_of(*checks: ReadyCheck) -> ReadyCheck:
    return lambda: all(c() for c in checks)


def role_readiness(runner: object, database_url: str, lag: Any = None) -> ReadyCheck:
    """Readiness of a Kafka role: its `ready` event (set once its consumer exists), Kafka
    answering its lag reporter (when it has one) and PostgreSQL answering."""
    checks: list[ReadyCheck] = []
    started = getattr(runner, "ready", None)
    if isinstance(started, threading.Event):
        checks.append(started.is_set)
    if lag is not None:
        checks.append(lag.healthy)
    checks.append(db_ready(database_url))
    return all_of(*checks)


def probe_routes(ready: ReadyCheck) -> list[Route]:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ok = await run_in_threadpool(ready)  # checks may block on the network
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    return [Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)]


def serve_probes(port: int, ready: ReadyCheck, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz"):
                body, ctype, code = b'{"status":"ok"}', "application/json", 200
            elif self.path.startswith("/readyz"):
                ok = ready()
                body = b'{"ready":true}' if ok else b'{"ready":false}'
                ctype, code = "application/json", 200 if ok else 503
            else:
                body, ctype, code = b"not found", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
