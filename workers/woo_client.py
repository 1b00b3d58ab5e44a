"""WooCommerce REST v3 client used by actions (one pooled aiohttp session per store).

aiohttp rather than httpx: with hundreds of commands in flight against one store,
httpx's connection pool costs O(queued requests × connections) per request (measured:
~5 ms of CPU per order note). The store URL is operator-configured (`wooflow stores
add`), so these requests do not pass the webhook egress guard.
"""

from __future__ import annotations

import base64
import json as jsonlib
from collections.abc import Mapping

import aiohttp

from wooflow.jsontypes import JSONObject, JSONValue, as_object
from wooflow.stores import Store
from wooflow.workers.errors import ActionError, TransientError


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class WooClient:
    def __init__(self, store: Store, timeout: float = 10.0, max_connections: int = 64) -> None:
        self.store = store
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on the running loop, on first use
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=60),
                timeout=aiohttp.ClientTimeout(total=self.timeout), headers={"User-Agent": "wooflow/0.1"},
                trust_env=False)
        return self._session

    async def _call(self, method: str, url: str, path: str, *, json: JSONValue = None,
                    params: Mapping[str, object] | None = None, auth: str) -> JSONValue:
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (params or {}).items()}
        try:
            async with self._client().request(method, url, json=json, params=query or None,
                                              headers={"Authorization": auth}) as resp:
                status, body = resp.status, await resp.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransientError(f"{method} {path}: timeout") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if status == 429 or status >= 500:
            raise TransientError(f"{method} {path}: HTTP {status}")
        if status >= 400:
            text = body.decode("utf-8", "replace")
            try:
                detail = as_object(jsonlib.loads(body)).get("message", text)
            except ValueError:
                detail = text
            raise ActionError(f"{method} {path}: HTTP {status}: {str(detail)[:300]}")
        parsed: JSONValue = jsonlib.loads(body) if body else None
        return parsed

    async def request(self, method: str, path: str, *, json: JSONValue = None,
                      params: Mapping[str, object] | None = None) -> JSONValue:
        auth = _basic(self.store.consumer_key, self.store.consumer_secret)
        return await self._call(method, self.store.api_base + path, path, json=json, params=params, auth=auth)

    async def get(self, path: str, **params: object) -> JSONValue:
        return await self.request("GET", path, params=params or None)

    async def get_object(self, path: str, **params: object) -> JSONObject:
        """GET of one resource: its JSON object ({} if the answer was something else)."""
        return as_object(await self.get(path, **params))

    async def post(self, path: str, body: JSONValue) -> JSONValue:
        return await self.request("POST", path, json=body)

    async def put(self, path: str, body: JSONValue) -> JSONValue:
        return await self.request("PUT", path, json=body)

    async def delete(self, path: str, **params: object) -> JSONValue:
        return await self.request("DELETE", path, params=params or None)

    async def wp(self, method: str, path: str, body: JSONValue = None) -> JSONValue:
        """WordPress core REST (`/wp-json/wp/v2`), e.g. user roles, which WooCommerce's REST keeps
        read-only. It takes an application password (store settings `wp_username` and
        `wp_app_password`), not the WooCommerce consumer key."""
        user = self.store.settings.get("wp_username")
        password = self.store.settings.get("wp_app_password")
        if not user or not password:
            raise ActionError(f"store {self.store.id} has no WordPress application password "
                              "(settings.wp_username / settings.wp_app_password) for /wp/v2")
        url = self.store.url.rstrip("/") + "/wp-json/wp/v2" + path
        return await self._call(method, url, f"/wp/v2{path}", json=body, params={"context": "edit"},
                                auth=_basic(str(user), str(password)))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class WooClients:
    def __init__(self, timeout: float = 10.0, max_connections: int = 64) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self._clients: dict[str, WooClient] = {}

    def for_store(self, store: Store) -> WooClient:
        client = self._clients.get(store.id)
        if client is None or (client.store is not store and client.store != store):
            client = self._clients[store.id] = WooClient(store, self.timeout, self.max_connections)
        return client

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
