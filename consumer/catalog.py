"""Each store's product catalog, as `category` and `product_tag` conditions need it.

WooCommerce's order line items name a product and a variation, never categories or tags,
so those conditions resolve every ordered product through a per-store catalog:
categories, tags, type, and the parent of each variation (a variation counts with its
parent's categories and tags). Where a row comes from, in order:

1. `woo.products` events (webhooks, backfill, poller): the rule consumer decodes every
   product event, whatever rules exist (`CATALOGUED`), and records the product; the
   newest `date_modified` wins.
2. `product_catalog` in PostgreSQL, what any rule consumer recorded: read once per batch
   for the products the batch needs that memory lacks or has held for longer than
   `WOOFLOW_CATALOG_TTL_S`.
3. The store's REST API, for a product met before its event: `GET /products?include=…`,
   then `GET /products/{id}` for what the list leaves out (variations, trashed products).
   Stores are asked concurrently and a batch waits for them at most
   `WOOFLOW_CATALOG_FETCH_TIMEOUT_S`, so a slow store delays its partition by that much,
   never more; an answer that arrives later is used by the next batch. A product read this
   way is recorded like an event (`source = rest`), a 404 as `gone` (known, no terms).
   A store that failed or did not answer in time is not asked again for
   `WOOFLOW_CATALOG_RETRY_S`.

A product that is still unknown makes the fact `Incomplete` (consumer/conditions.py):
`category in X` holds only through the products that are known, `category not_in X` does
not hold — no action fires on an absence nobody could check. Each such fact is counted in
`wooflow_catalog_unknown_total{store}`, each failed ask in
`wooflow_catalog_fetches_total{outcome="failed"}` and logged once per store and retry
interval.

Only the rule consumer writes `product_catalog` (`save`, in its state transaction, after
the batch's commands are acknowledged); dry runs and replays read it and ask the store
without writing (`record=False`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timezone
from typing import Literal, Protocol, cast
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Connection, Engine, text

from wooflow import metrics
from wooflow.consumer.values import Envelope, ProductEventIn, as_order_event, ms
from wooflow.jsontypes import JSONObject
from wooflow.settings import Settings
from wooflow.stores import Store, StoreCache

log = logging.getLogger(__name__)

CATALOGUED = frozenset({"ProductEvent"})  # schemas the rule consumer always decodes, for the catalog
# condition fields that resolve through it
CATALOG_FIELDS = frozenset({"category", "product_tag", "purchased_categories_all_time", "item.category",
                            "item.product_tag"})
Terms = Literal["category_ids", "tag_ids"]
Key = tuple[str, int]
USER_AGENT = "wooflow-rules/0.1"
PER_PAGE = 100  # WooCommerce's maximum page size (and `include` list length)


@dataclass(frozen=True, slots=True)
class CatalogProduct:
    """One row of `product_catalog`."""

    store_id: str
    product_id: int
    parent_id: int = 0
    type: str = ""
    status: str = ""
    category_ids: tuple[int, ...] = ()
    tag_ids: tuple[int, ...] = ()
    modified_ms: int = 0
    source: str = "event"  # event | rest | gone
    # the terms' names, parallel to the ids (conditions never read them: the console's pickers do)
    category_names: tuple[str, ...] = ()
    tag_names: tuple[str, ...] = ()


class FetchError(RuntimeError):
    """A store that could not describe its products (unreachable, refused, malformed)."""


class ProductSource(Protocol):
    """Where products missing from the catalog are asked for (a store's REST API)."""

    def fetch(self, store_id: str, ids: list[int], deadline: float) -> dict[int, CatalogProduct]: ...


def from_event(ev: ProductEventIn) -> CatalogProduct | None:
    p = ev.get("product")
    if p is None:  # product.deleted: a trashed product still describes the orders that hold it
        return None
    categories = p.get("categories") or ()
    tags = _named_tags(p.get("tag_ids") or (), p.get("tags") or ())
    return CatalogProduct(
        ev["store_id"], int(p["id"]), int(p.get("parent_id") or 0), str(p.get("type") or ""),
        str(p.get("status") or ""), tuple(int(c["id"]) for c in categories), tuple(i for i, _ in tags),
        ms(p.get("date_modified")), "event", tuple(str(c.get("name") or "") for c in categories),
        tuple(n for _, n in tags))


def _named_tags(ids: Iterable[int], names: Iterable[str]) -> list[tuple[int, str]]:
    """(id, name) of each tag with an id (`tags` and `tag_ids` list a product's tags in the
    same order; events older than tag ids name tags only: none then)."""
    return [(int(i), str(n)) for i, n in zip(ids, names, strict=False) if i]


def from_rest(store: Store, item: JSONObject) -> CatalogProduct:
    """A product (or variation) as `GET /products[/{id}]` answers it."""
    from wooflow.producers.normalise import NormaliseError, product_record

    try:
        p = product_record(item, ZoneInfo(store.timezone or "UTC"))
    except (NormaliseError, ValueError, KeyError) as exc:
        raise FetchError(f"product {item.get('id')!r}: {exc}") from exc
    tags = _named_tags(p["tag_ids"], p["tags"])
    return CatalogProduct(store.id, p["id"], p["parent_id"], p["type"], p["status"],
                          tuple(c["id"] for c in p["categories"]), tuple(i for i, _ in tags),
                          int(p["date_modified"].astimezone(timezone.utc).timestamp() * 1000), "rest",
                          tuple(c["name"] for c in p["categories"]), tuple(n for _, n in tags))


def _terms(p: CatalogProduct) -> tuple[object, ...]:
    """What conditions (and the console's pickers: the names) read of a row."""
    return p.parent_id, p.type, p.category_ids, p.tag_ids, p.source == "gone", p.category_names, p.tag_names


class StoreProducts:
    """Asks stores about products through WooCommerce REST v3, within a deadline."""

    def __init__(self, stores: StoreCache, transport: httpx.BaseTransport | None = None) -> None:
        self.stores = stores
        self._http = httpx.Client(headers={"User-Agent": USER_AGENT}, transport=transport)

    def fetch(self, store_id: str, ids: list[int], deadline: float) -> dict[int, CatalogProduct]:
        store = self.stores.get(store_id)
        if store is None or not store.consumer_key:
            raise FetchError("no REST credentials for this store")
        found: dict[int, CatalogProduct] = {}
        for start in range(0, len(ids), PER_PAGE):
            chunk = ids[start:start + PER_PAGE]
            listed = self._get(store, "/products", deadline,
                               {"include": ",".join(map(str, chunk)), "per_page": PER_PAGE}).json()
            if not isinstance(listed, list):
                raise FetchError("GET /products did not answer a list")
            for item in listed:
                if isinstance(item, dict):
                    p = from_rest(store, item)
                    found[p.product_id] = p
        for pid in ids:  # variations and trashed products are not listed: one by one
            if pid not in found:
                resp = self._get(store, f"/products/{pid}", deadline)
                body = resp.json()
                if resp.status_code == 404:
                    found[pid] = CatalogProduct(store.id, pid, source="gone")
                elif isinstance(body, dict):
                    found[pid] = from_rest(store, body)
                else:
                    raise FetchError(f"GET /products/{pid} did not answer an object")
        return found

    def _get(self, store: Store, path: str, deadline: float,
             params: Mapping[str, str | int] | None = None) -> httpx.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("out of time")
        try:
            resp = self._http.get(store.api_base + path, params=params, timeout=remaining,
                                  auth=(store.consumer_key, store.consumer_secret))
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400 and not _no_such_product(resp):
            raise FetchError(f"GET {path}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp

    def close(self) -> None:
        self._http.close()


def _no_such_product(resp: httpx.Response) -> bool:
    """WooCommerce's 404 for a product id it does not have — not any 404 (a wrong store URL
    answers `rest_no_route`, which must not make every product `gone`)."""
    if resp.status_code != 404:
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and str(body.get("code", "")).endswith("product_invalid_id")


class ProductCatalog:
    """The catalog rows a rule-consumer process holds in memory, and the way to more.

    Not thread-safe: one batch at a time prepares and reads it (fetch threads only hand
    their answers back through a queue). `record=False` (dry runs, replays) never keeps
    rows to write."""

    def __init__(self, db: Engine | None, source: ProductSource | None, *, fetch_timeout: float = 2.0,
                 retry_s: float = 30.0, ttl_s: float = 60.0, record: bool = True, max_entries: int = 500_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.source = db, source
        self.fetch_timeout, self.retry_s, self.ttl_s = fetch_timeout, retry_s, ttl_s
        self.record, self.max_entries, self.clock = record, max_entries, clock
        self._products: dict[Key, CatalogProduct] = {}
        self._read_at: dict[Key, float] = {}
        self._down_until: dict[str, float] = {}
        self._pending: dict[Key, CatalogProduct] = {}
        self._late: queue.SimpleQueue[tuple[str, dict[int, CatalogProduct]]] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # --- reading (the facts of one event) -------------------------------------------------
    def terms(self, store: str, product_id: int, which: Terms) -> tuple[tuple[int, ...], int]:
        """The category or tag ids of an ordered product (a variation: with its parent's),
        and the id of the product that is unknown (0: none)."""
        p = self._products.get((store, product_id))
        if p is None:
            return (), product_id
        own: tuple[int, ...] = getattr(p, which)
        if not p.parent_id:
            return own, 0
        parent = self._products.get((store, p.parent_id))
        if parent is None:
            return own, p.parent_id
        return own + getattr(parent, which), 0

    def get(self, store: str, product_id: int) -> CatalogProduct | None:
        return self._products.get((store, product_id))

    # --- learning -----------------------------------------------------------------------
    def observe(self, events: Iterable[ProductEventIn]) -> None:
        """Record product events; what the table holds of them is read first (one query for
        those not in memory), so an event that changes no term writes nothing."""
        found = [p for p in map(from_event, events) if p is not None]
        now = self.clock()
        unread = [k for k in {(p.store_id, p.product_id) for p in found} if k not in self._read_at]
        if unread and self.db is not None and self.record:
            self._read(unread, now)
        for p in found:
            self._remember(p, now)

    def prepare(self, wanted: Mapping[str, Iterable[int]]) -> None:
        """Make the products `wanted` (store → ids) known if at all possible: memory, then
        PostgreSQL, then the stores (at most `fetch_timeout` in all); the parents of
        variations found on the way too."""
        self._take_late()
        keys = {(store, pid) for store, ids in wanted.items() for pid in ids if pid > 0}
        deadline = time.monotonic() + self.fetch_timeout
        for _ in range(2):  # the products, then the parents of the variations among them
            now = self.clock()
            stale, parents = self._stale(keys, now)
            if stale and self.db is not None:
                self._read(stale, now)
            missing = [k for k in stale if k not in self._products]
            if missing and self.source is not None:
                self._fetch(missing, deadline)
            keys = parents | self._stale(stale, now)[1]
            if not keys:
                break
        if len(self._products) > self.max_entries:  # a bound, not an LRU: rows come back from PostgreSQL
            self._products.clear()
            self._read_at.clear()

    def _stale(self, keys: Iterable[Key], now: float) -> tuple[list[Key], set[Key]]:
        """The keys not in memory or held longer than the TTL, and the parents missing from
        memory of the variations among the others (one pass: the hot path of every batch)."""
        read_at, products, ttl = self._read_at, self._products, self.ttl_s
        stale: list[Key] = []
        parents: set[Key] = set()
        for k in keys:
            at = read_at.get(k)
            if at is None or now - at > ttl:
                stale.append(k)
                continue
            parent = products[k].parent_id  # read_at and products hold the same keys
            if parent and (k[0], parent) not in products:
                parents.add((k[0], parent))
        return stale, parents

    def take_pending(self) -> list[CatalogProduct]:
        """Rows learnt since the last call, to be written with the batch's state."""
        rows, self._pending = list(self._pending.values()), {}
        return rows

    def _remember(self, p: CatalogProduct, now: float, pending: bool = True) -> None:
        key = (p.store_id, p.product_id)
        known = self._products.get(key)
        if known is None or p.modified_ms >= known.modified_ms:
            self._products[key] = p
            # most product.updated deliveries are stock or price changes: a row whose terms
            # did not change is not written again (its `status` and `modified_ms` in the
            # table may lag)
            if pending and self.record and (known is None or _terms(known) != _terms(p)):
                self._pending[key] = p
        self._read_at[key] = now

    def _read(self, keys: list[Key], now: float) -> None:
        assert self.db is not None
        with self.db.connect() as conn:
            rows = conn.execute(text(
                "SELECT store_id, product_id, parent_id, type, status, category_ids, tag_ids, modified_ms, source, "
                "category_names, tag_names FROM product_catalog WHERE (store_id, product_id) IN "
                "(SELECT * FROM unnest(CAST(:stores AS text[]), CAST(:ids AS bigint[])))"),
                {"stores": [k[0] for k in keys], "ids": [k[1] for k in keys]}).all()
        for r in rows:
            self._remember(CatalogProduct(r.store_id, r.product_id, r.parent_id, r.type, r.status,
                                          tuple(r.category_ids), tuple(r.tag_ids), r.modified_ms, r.source,
                                          tuple(r.category_names), tuple(r.tag_names)),
                           now, pending=False)

    # --- asking the stores ----------------------------------------------------------------
    def _fetch(self, keys: list[Key], deadline: float) -> None:
        now = time.monotonic()
        by_store: dict[str, list[int]] = {}
        for store, pid in keys:
            by_store.setdefault(store, []).append(pid)
        asks: dict[Future[dict[int, CatalogProduct]], str] = {}
        for store, ids in by_store.items():
            if self._down_until.get(store, 0.0) > now:
                metrics.catalog_fetches.labels(store, "skipped").inc(len(ids))
                continue
            asks[self._executor().submit(self._ask, store, sorted(ids), deadline)] = store
        if not asks:
            return
        done, late = wait(asks, timeout=max(0.0, deadline - time.monotonic()))
        for fut in done:
            store = asks[fut]
            try:
                self._learnt(store, fut.result())
            except FetchError as exc:
                self._failed(store, by_store[store], str(exc))
        for fut in late:
            store = asks[fut]
            self._failed(store, by_store[store], f"no answer within {self.fetch_timeout:g}s")
            fut.add_done_callback(self._keep_late(store))

    def _keep_late(self, store: str) -> Callable[[Future[dict[int, CatalogProduct]]], None]:
        """An answer that came after the batch stopped waiting: the next batch uses it."""
        def keep(fut: Future[dict[int, CatalogProduct]]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                self._late.put((store, fut.result()))
        return keep

    def _ask(self, store: str, ids: list[int], deadline: float) -> dict[int, CatalogProduct]:
        assert self.source is not None
        try:
            return self.source.fetch(store, ids, deadline)
        except FetchError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a store does, it is that store's failure
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc

    def _learnt(self, store: str, found: dict[int, CatalogProduct]) -> None:
        now = self.clock()
        for p in found.values():
            self._remember(p, now)
            metrics.catalog_fetches.labels(store, "gone" if p.source == "gone" else "fetched").inc()

    def _failed(self, store: str, ids: list[int], why: str) -> None:
        metrics.catalog_fetches.labels(store, "failed").inc(len(ids))
        self._down_until[store] = time.monotonic() + self.retry_s
        log.warning("catalog: store %s could not describe products %s (%s); conditions on their categories and "
                    "tags count them as unknown, and the store is asked again in %gs", store, sorted(ids)[:20],
                    why, self.retry_s)

    def _take_late(self) -> None:
        while True:
            try:
                store, found = self._late.get_nowait()
            except queue.Empty:
                return
            self._learnt(store, found)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="catalog-fetch")
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def catalog_for(settings: Settings, db: Engine, *, record: bool = True) -> ProductCatalog:
    """The catalog of a process: PostgreSQL, then the stores' REST APIs, with the settings'
    bounds. `record=False` for readers that never save (dry runs, replays)."""
    return ProductCatalog(db, StoreProducts(StoreCache(db, settings.store_cache_ttl_s)),
                          fetch_timeout=settings.catalog_fetch_timeout_s, retry_s=settings.catalog_retry_s,
                          ttl_s=settings.catalog_ttl_s, record=record)


def save(conn: Connection, rows: list[CatalogProduct]) -> None:
    """Upsert rows in key order (concurrent consumers lock them in the same order), in one
    statement; a row never replaces a newer one."""
    if not rows:
        return
    rows = sorted(rows, key=lambda p: (p.store_id, p.product_id))
    conn.execute(text(
        "INSERT INTO product_catalog AS c (store_id, product_id, parent_id, type, status, category_ids, tag_ids, "
        "modified_ms, source, category_names, tag_names) "
        "SELECT r.s, r.p, r.parent, r.type, r.status, "
        "ARRAY(SELECT jsonb_array_elements_text(r.cats)::bigint), "
        "ARRAY(SELECT jsonb_array_elements_text(r.tags)::bigint), r.modified, r.source, "
        "ARRAY(SELECT jsonb_array_elements_text(r.cat_names)), ARRAY(SELECT jsonb_array_elements_text(r.tag_names)) "
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(s text, p bigint, parent bigint, type text, status text, "
        "cats jsonb, tags jsonb, modified bigint, source text, cat_names jsonb, tag_names jsonb) "
        "ON CONFLICT (store_id, product_id) DO UPDATE SET parent_id = excluded.parent_id, type = excluded.type, "
        "status = excluded.status, category_ids = excluded.category_ids, tag_ids = excluded.tag_ids, "
        "modified_ms = excluded.modified_ms, source = excluded.source, category_names = excluded.category_names, "
        "tag_names = excluded.tag_names, updated_at = now() "
        "WHERE excluded.modified_ms >= c.modified_ms"),
        {"rows": json.dumps([{"s": p.store_id, "p": p.product_id, "parent": p.parent_id, "type": p.type,
                              "status": p.status, "cats": p.category_ids, "tags": p.tag_ids,
                              "modified": p.modified_ms, "source": p.source, "cat_names": p.category_names,
                              "tag_names": p.tag_names} for p in rows])})


def batch_products(catalog: ProductCatalog, items: Iterable[tuple[str, Envelope]],
                   wants: Callable[[str], bool]) -> None:
    """One consumer batch: record its product events, then make known the products its
    orders name, for the stores that have rules on catalog fields (`wants`)."""
    wanted: dict[str, set[int]] = {}
    products: list[ProductEventIn] = []
    for schema, ev in items:
        oev = as_order_event(schema, ev)
        if oev is not None:
            order = oev["order"]
            if order is None or not wants(oev["store_id"]):
                continue
            ids = wanted.setdefault(oev["store_id"], set())
            for li in order["line_items"]:
                ids.add(li["product_id"] or li["variation_id"])
        elif schema in CATALOGUED:
            products.append(cast(ProductEventIn, ev))
    if products:
        catalog.observe(products)
    if wanted:
        catalog.prepare(wanted)
