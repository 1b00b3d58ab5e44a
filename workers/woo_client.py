"""WooCommerce REST v3 client used by actions (one pooled httpx client per store)."""

from __future__ import annotations

from typing import Any

import httpx

from wooflow.stores import Store
from wooflow.workers.errors import ActionError, TransientError


class WooClient:
    def __init__(self, store: Store, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.store = store
        self._http = httpx.AsyncClient(base_url=store.api_base, auth=(store.consumer_key, store.consumer_secret),
                                       timeout=timeout, transport=transport,
                                       headers={"User-Agent": "wooflow/0.1"},
                                       limits=httpx.Limits(max_connections=50, max_keepalive_connections=20))

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            resp = await self._http.request(method, path, json=json, params=params)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{method} {path}: timeout") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise TransientError(f"{method} {path}: HTTP {resp.status_code}")
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("message", resp.text)
            except ValueError:
                detail = resp.text
            raise ActionError(f"{method} {path}: HTTP {resp.status_code}: {str(detail)[:300]}")
        return resp.json() if resp.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params or None)

    async def post(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, json=body)

    async def put(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, json=body)

    async def aclose(self) -> None:
        await self._http.aclose()


class WooClients:
    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._clients: dict[str, WooClient] = {}

    def for_store(self, store: Store) -> WooClient:
        client = self._clients.get(store.id)
        if client is None or client.store != store:
            client = self._clients[store.id] = WooClient(store, self.timeout)
        return client

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
