"""Store lookups for the bridge's hot path (`StoreCache.aget`: fresh entries inline,
misses in a thread) and the per-store normalisation info derived from them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from wooflow.producers.normalise import StoreInfo
from wooflow.stores import Store, StoreCache


class Tenants:
    def __init__(self, cache: StoreCache) -> None:
        self.cache = cache
        # the cache's own coroutine: no pass-through coroutine per request
        self.get: Callable[[str], Awaitable[Store | None]] = cache.aget
        # after a signature mismatch: the row as it is now (a secret rotated within the TTL)
        self.refresh: Callable[[str], Awaitable[Store | None]] = cache.arefresh
        self._info: dict[str, StoreInfo] = {}

    def info(self, store: Store) -> StoreInfo:
        info = self._info.get(store.id)
        if info is None or info.timezone != store.timezone or info.currency != store.currency:
            info = self._info[store.id] = StoreInfo(store.id, store.timezone, store.currency)
        return info
