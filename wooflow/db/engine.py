"""Database engines: one pooled SQLAlchemy engine per process and URL."""

from __future__ import annotations

from functools import lru_cache

import orjson
from sqlalchemy import Engine, create_engine


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
