"""Stores (tenants): lookup with a short cache, shared by the bridge, workers and API."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text

from wooflow.db.engine import unavailable
from wooflow.db.tables import stores

# What `wooflow stores add` accepts. Anything else names no store, and is answered so without
# a database read: ids come from URL paths and headers, and PostgreSQL refuses some strings
# (a NUL byte) with an error rather than "no row".
STORE_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def valid_store_id(store_id: str) -> bool:
    return STORE_ID.fullmatch(store_id) is not None


@dataclass(frozen=True)
class Store:
    id: str
    url: str
    webhook_secret: str = field(repr=False)
    consumer_key: str = field(default="", repr=False)
    consumer_secret: str = field(default="", repr=False)
    timezone: str = "UTC"
    currency: str = "USD"
    public_key: str = ""
    name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    # Signs the links wooflow puts in messages; set by the database when the store is first
    # saved and never changed by a webhook-secret rotation ("" for a store not saved yet).
    link_key: str = field(default="", repr=False)

    @property
    def api_base(self) -> str:
        return self.url.rstrip("/") + "/wp-json/wc/v3"


def _row_to_store(row: Any) -> Store:
    m = row._mapping
    return Store(id=m["id"], url=m["url"], webhook_secret=m["webhook_secret"], consumer_key=m["consumer_key"],
                 consumer_secret=m["consumer_secret"], timezone=m["timezone"], currency=m["currency"],
                 public_key=m["public_key"], name=m["name"], settings=dict(m["settings"] or {}),
                 link_key=m["link_key"])


MISS = object()


class StoreCache:
    """Store rows change rarely; the hot path (every webhook, every command) reads them
    from memory and re-reads the database after `ttl` seconds — keeping the row it had
    while PostgreSQL is unreachable."""

    def __init__(self, engine: Engine, ttl: float = 5.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Store | None]] = {}
        self._refreshed: dict[str, float] = {}  # arefresh's last read per store
        self._lock = threading.Lock()

    def peek(self, store_id: str) -> Store | object | None:
        """A fresh cached answer without any I/O, or MISS."""
        with self._lock:
            hit = self._cache.get(store_id)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return MISS

    def get(self, store_id: str) -> Store | None:
        hit = self.peek(store_id)
        if hit is not MISS:
            return hit  # type: ignore[return-value]
        return self._read(store_id) if valid_store_id(store_id) else None

    def _read(self, store_id: str) -> Store | None:
        now = time.monotonic()
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(stores).where(stores.c.id == store_id)).first()
        except Exception as exc:
            with self._lock:
                hit = self._cache.get(store_id)
            if hit is not None and unavailable(exc):
                return hit[1]  # the row as last read: stores change rarely, and PostgreSQL is away
            raise
        store = _row_to_store(row) if row else None
        with self._lock:
            if len(self._cache) > 10_000:  # unknown ids probed at random must not grow this forever
                self._cache.clear()
                self._refreshed.clear()
            self._cache[store_id] = (now, store)
        return store

    async def aget(self, store_id: str) -> Store | None:
        """For event loops: a fresh entry is answered inline; only a miss hops to a thread
        (the hop costs more than the lookup, and a database read must not block the loop)."""
        hit = self.peek(store_id)
        if hit is not MISS:
            return hit  # type: ignore[return-value]
        if not valid_store_id(store_id):
            return None
        return await asyncio.to_thread(self._read, store_id)

    async def arefresh(self, store_id: str, min_interval: float = 1.0) -> Store | None:
        """The row read again now, unless this store was refreshed less than `min_interval`
        seconds ago (then the cached row). The bridge calls this when a signature does not
        match the cached secret: a rotated secret works from its first delivery instead of
        after the TTL, and forged signatures cost at most one read per store per interval."""
        if not valid_store_id(store_id):
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(store_id)
            if now - self._refreshed.get(store_id, float("-inf")) < min_interval:
                return hit[1] if hit else None
            self._refreshed[store_id] = now
        return await asyncio.to_thread(self._read, store_id)


def upsert_store(engine: Engine, store: Store) -> None:
    from sqlalchemy.dialects.postgresql import insert

    values = {"id": store.id, "url": store.url, "webhook_secret": store.webhook_secret,
              "consumer_key": store.consumer_key, "consumer_secret": store.consumer_secret,
              "timezone": store.timezone, "currency": store.currency, "public_key": store.public_key,
              "name": store.name, "settings": store.settings}
    stmt = insert(stores).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=[stores.c.id],
                                      set_={k: v for k, v in values.items() if k != "id"})
    with engine.begin() as conn:
        conn.execute(stmt)


def set_setting(engine: Engine, store_id: str, key: str, value_json: str) -> bool:
    """Replace one top-level key of the store's settings (the others untouched); False: no
    such store."""
    with engine.begin() as conn:
        res = conn.execute(text("UPDATE stores SET settings = jsonb_set(settings, ARRAY[CAST(:k AS text)], "
                                "CAST(:v AS jsonb)) WHERE id = :id"), {"k": key, "v": value_json, "id": store_id})
        return bool(res.rowcount)


def list_stores(engine: Engine) -> list[Store]:
    with engine.connect() as conn:
        return [_row_to_store(r) for r in conn.execute(select(stores).order_by(stores.c.id))]
