"""Database engines: one pooled SQLAlchemy engine per process and URL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine

log = logging.getLogger(__name__)
T = TypeVar("T")


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` / `postgres://` URLs (what platform teams export)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@lru_cache(maxsize=8)
def get_engine(url: str, pool_size: int = 5) -> Engine:
    # orjson for json/jsonb results (set on every psycopg connection by the dialect): state
    # rows carry JSON documents, and the stdlib parser was a tenth of a replay's time
    return create_engine(normalise_url(url), pool_size=pool_size, max_overflow=10, pool_pre_ping=True,
                         future=True, json_deserializer=orjson.loads)


def driver_cursor(conn: Connection) -> Any:
    """The psycopg cursor under a SQLAlchemy connection (same transaction), for statements
    run once per batch with thousands of array elements, where SQLAlchemy's parameter
    processing would cost more than the database does. Arrays can go as binary parameters
    (`%(name)b`): in text format psycopg quotes every element with regular expressions,
    which for arrays of JSON documents cost ten times more than the statement itself."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def unavailable(exc: BaseException) -> bool:
    """PostgreSQL could not be reached or dropped the connection — a restart, a failover,
    a network cut, a full pool — rather than refusing the statement: worth waiting for and
    trying the same work again. (psycopg's OperationalError also covers a deadlock victim
    and a cancelled statement: those are worth a retry too.)"""
    import psycopg
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig: BaseException | None = exc.orig
        if orig is None:
            return False
        exc = orig
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def when_available(fn: Callable[[], T], stop: threading.Event, what: str) -> T | None:
    """`fn()`, tried again while PostgreSQL is `unavailable` (a role starting during a
    database restart waits for it instead of exiting); None if `stop` is set first."""
    pause = 0.5
    while True:
        try:
            return fn()
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning("%s: PostgreSQL is unavailable (%s); trying again in %.1fs", what,
                        str(exc).splitlines()[0][:200], pause)
            if stop.wait(pause):
                return None
            pause = min(pause * 2, 10.0)
