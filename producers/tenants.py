"""Store lookups for the bridge's hot path (`StoreCache.aget`: fresh entries inline,
misses in a thread) and the per-store normalisation info derived from them."""

from __future__ import annotations

from wooflow.producers.normalise import StoreInfo
from wooflow.stores import Store, StoreCache


class Tenants:
    def __init__(self, cache: StoreCache) -> None:
        self.cache = cache
        self._info: dict[str, StoreInfo] = {}

    async def get(self, store_id: str) -> Store | None:
        return await self.cache.aget(store_id)

    def info(self, store: Store) -> StoreInfo:
        info = self._info.get(store.id)
        if info is None or info.timezone != store.timezone or info.currency != store.currency:
            info = self._info[store.id] = StoreInfo(store.id, store.timezone, store.currency)
        return info
