"""WooCommerce REST v3 for the bridge's own needs: backfill and poller pages, resources
named by action webhooks, and the webhooks `wooflow stores add` creates.

429 and 5xx answers and network errors are retried with exponential backoff (honouring
`Retry-After`) through tenacity; other 4xx are errors with WooCommerce's message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_attempt

from wooflow.jsontypes import JSONObject, JSONValue
from wooflow.stores import Store

log = logging.getLogger(__name__)

PER_PAGE = 100  # WooCommerce's maximum
USER_AGENT = "wooflow-bridge/0.1"
# REST collection of each resource the bridge reads.
COLLECTIONS = {"order": "orders", "customer": "customers", "product": "products", "coupon": "coupons",
               "subscription": "subscriptions"}


class RestError(RuntimeError):
    """A WooCommerce REST answer that retrying will not fix."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Transient(RuntimeError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


Query = Mapping[str, str | int]  # REST query parameters


@dataclass(frozen=True)
class Page:
    number: int
    total_pages: int
    total: int
    items: list[JSONObject]


def _backoff(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, Transient) and exc.retry_after is not None:
        return min(60.0, exc.retry_after)
    return min(30.0, 0.25 * 2 ** (state.attempt_number - 1))


def _check(resp: httpx.Response, what: str) -> None:
    if resp.status_code == 429 or resp.status_code >= 500:
        retry_after = resp.headers.get("retry-after")
        raise Transient(f"{what}: HTTP {resp.status_code}",
                        float(retry_after) if retry_after and retry_after.isdigit() else None)
    if resp.status_code >= 400:
        try:
            body = resp.json()
            code, message = str(body.get("code", "")), str(body.get("message", resp.text))
        except (ValueError, AttributeError):
            code, message = "", resp.text
        raise RestError(f"{what}: HTTP {resp.status_code} {code}: {message[:300]}", resp.status_code, code)


class WooRest:
    """Synchronous client (backfill, poller, CLI)."""

    def __init__(self, store: Store, *, timeout: float = 30.0, max_attempts: int = 6,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self._http = httpx.Client(base_url=store.api_base, auth=(store.consumer_key, store.consumer_secret),
                                  timeout=timeout, transport=transport, headers={"User-Agent": USER_AGENT})

    def request(self, method: str, path: str, *, params: Query | None = None,
                json: JSONValue = None) -> httpx.Response:
        @retry(retry=retry_if_exception_type(Transient), stop=stop_after_attempt(self.max_attempts), wait=_backoff,
               reraise=True)
        def once() -> httpx.Response:
            try:
                resp = self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                raise Transient(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            _check(resp, f"{method} {path}")
            return resp

        return once()

    def page(self, collection: str, number: int, params: Query) -> Page:
        resp = self.request("GET", f"/{collection}", params={**params, "page": number, "per_page": PER_PAGE})
        items = resp.json()
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise RestError(f"GET /{collection}: expected a JSON list of objects")
        return Page(number, int(resp.headers.get("x-wp-totalpages") or 0), int(resp.headers.get("x-wp-total") or 0),
                    items)

    def pages(self, collection: str, params: Query, start: int = 1) -> Iterator[Page]:
        number = start
        while True:
            page = self.page(collection, number, params)
            yield page
            if number >= page.total_pages or not page.items:
                return
            number += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WooRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncWooRest:
    """The bridge's reads of single resources (action and deletion webhooks)."""

    def __init__(self, *, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, headers={"User-Agent": USER_AGENT})

    async def get_item(self, store: Store, resource: str, item_id: int, attempts: int = 2) -> dict[str, Any] | None:
        """The resource as REST shows it now, or None (gone, no credentials, unreachable)."""
        if resource not in COLLECTIONS:
            return None
        body = await self.get(store, f"/{COLLECTIONS[resource]}/{item_id}", attempts=attempts)
        return body if isinstance(body, dict) else None

    async def get(self, store: Store, path: str, params: Query | None = None, attempts: int = 2) -> JSONValue:
        """`GET <api base><path>` as JSON, or None (gone, no credentials, unreachable)."""
        if not store.consumer_key:
            return None
        url = f"{store.api_base}{path}"
        for attempt in range(attempts):
            try:
                resp = await self._http.get(url, params=params, auth=(store.consumer_key, store.consumer_secret))
                _check(resp, f"GET {url}")
                body: JSONValue = resp.json()
                return body
            except Transient as exc:
                log.info("GET %s of %s: %s (attempt %d)", path, store.id, exc, attempt + 1)
            except (httpx.HTTPError, RestError, ValueError) as exc:
                log.info("GET %s of %s failed: %s", path, store.id, exc)
                return None
        return None

    async def aclose(self) -> None:
        await self._http.aclose()
