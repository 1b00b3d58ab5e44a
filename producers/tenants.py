"""Store lookups for the bridge's hot path: answered from memory, refreshed in a thread.

`StoreCache.get` hits PostgreSQL after its TTL; calling it on the event loop would block
every request, and hopping to a thread on every request costs more than the lookup. So
a fresh entry is read synchronously and only a miss or an expired entry goes to a thread.
"""

from __future__ import annotations

import asyncio
import time

from wooflow.producers.normalise import StoreInfo
from wooflow.stores import Store, StoreCache


class Tenants:
    def __init__(self, cache: StoreCache, ttl: float) -> None:
        self.cache = cache
        self.ttl = ttl
        self._mem: dict[str, tuple[float, Store | None]] = {}
        self._info: dict[str, StoreInfo] = {}

    async def get(self, store_id: str) -> Store | None:
        hit = self._mem.get(store_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        store = await asyncio.to_thread(self.cache.get, store_id)
        if len(self._mem) > 10_000:  # unknown ids probed at random must not grow this forever
            self._mem.clear()
        self._mem[store_id] = (now, store)
        return store

    def info(self, store: Store) -> StoreInfo:
        info = self._info.get(store.id)
        if info is None or info.timezone != store.timezone or info.currency != store.currency:
            info = self._info[store.id] = StoreInfo(store.id, store.timezone, store.currency)
        return info
