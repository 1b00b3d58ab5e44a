"""`wooflow backfill --store S --since DATE [--resources orders,customers,products,coupons]`.

Reads WooCommerce REST v3 page by page (per_page=100, `X-WP-TotalPages`, oldest id first,
`modified_after` with `dates_are_gmt=true` so the date means UTC, not the site's zone),
normalises each resource into the event a webhook of that state would give, and produces
the ones not seen before (dedupe store shared with the bridge). After each page the
checkpoint (`bridge_backfill_checkpoints`) moves on, so an interrupted run resumes at
the next page; a page that was produced but not yet checkpointed dedupes on re-read.
Ctrl-C finishes the current page, checkpoints and exits; a second Ctrl-C aborts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert

from wooflow import metrics
from wooflow.db.tables import bridge_backfill_checkpoints as checkpoints
from wooflow.producers.normalise import NormaliseError, StoreInfo, normalise_rest, parse_time
from wooflow.producers.sync_ingest import SyncIngest
from wooflow.producers.woo_rest import Page, WooRest
from wooflow.stores import Store

log = logging.getLogger(__name__)

# CLI name → (REST collection, webhook resource)
RESOURCES = {"orders": ("orders", "order"), "customers": ("customers", "customer"),
             "products": ("products", "product"), "coupons": ("coupons", "coupon")}
DEFAULT_RESOURCES = ("orders", "customers", "products")


def rest_since(since: datetime) -> str:
    """A naive UTC timestamp: WooCommerce converts offsets to site-local time first."""
    return since.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat()


def query(resource: str, since: datetime) -> dict[str, Any]:
    base = {"orderby": "id", "order": "asc"}
    if resource == "customers":
        # No date filters on /customers: every user, filtered by modification here.
        return base | {"role": "all"}
    return base | {"modified_after": rest_since(since), "dates_are_gmt": "true"}


def modified_since(item: dict[str, Any], since: datetime) -> bool:
    tz = timezone.utc
    when = parse_time(item.get("date_modified"), tz, item.get("date_modified_gmt")) or parse_time(
        item.get("date_created"), tz, item.get("date_created_gmt"))
    return when is None or when > since


@dataclass
class Progress:
    """What a run reports after every page (to a progress bar, a log, a test)."""

    resource: str
    page: int = 0
    total_pages: int = 0
    total_items: int = 0
    produced: int = 0
    duplicates: int = 0
    invalid: int = 0
    started: float = field(default_factory=time.monotonic)
    first_page: int = 1

    @property
    def items_done(self) -> int:
        return min(self.total_items, self.page * 100) if self.total_items else 0

    def eta_s(self) -> float | None:
        pages_here = self.page - self.first_page + 1
        left = self.total_pages - self.page
        if pages_here <= 0 or left < 0:
            return None
        return (time.monotonic() - self.started) / pages_here * left


Reporter = Callable[[Progress], None]

def page_events(info: StoreInfo, resource: str, items: list[dict[str, Any]], since: datetime,
                source: str) -> tuple[list[Any], list[dict[str, Any]], int]:
    """One REST page → (events, the items they came from, items that could not be normalised).

    Customers are filtered by date here: WooCommerce's customers endpoint has no
    modified-after filter."""
    _, wc_resource = RESOURCES[resource]
    received = datetime.now(timezone.utc)
    events: list[Any] = []
    used: list[dict[str, Any]] = []
    invalid = 0
    for item in items:
        if resource == "customers" and not modified_since(item, since):
            continue
        try:
            events.append(normalise_rest(info, wc_resource, item, source=source, received_at=received))
            used.append(item)
        except NormaliseError as exc:
            invalid += 1
            log.warning("%s %s/%s: skipping %s %s: %s", source, info.id, resource, wc_resource, item.get("id"), exc)
    return events, used, invalid



def _load(engine: Engine, store_id: str, resource: str, since: datetime, restart: bool) -> dict[str, Any]:
    key = {"store_id": store_id, "resource": resource, "since": since}
    with engine.begin() as conn:
        if restart:
            conn.execute(checkpoints.delete().where(*[checkpoints.c[k] == v for k, v in key.items()]))
        conn.execute(insert(checkpoints).values(**key).on_conflict_do_nothing())
        row = conn.execute(select(checkpoints).where(*[checkpoints.c[k] == v for k, v in key.items()])).one()
    return dict(row._mapping)


def _save(engine: Engine, store_id: str, resource: str, since: datetime, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(checkpoints).where(
            checkpoints.c.store_id == store_id, checkpoints.c.resource == resource, checkpoints.c.since == since,
        ).values(updated_at=datetime.now(timezone.utc), **values))


def backfill_resource(store: Store, resource: str, since: datetime, *, engine: Engine, rest: WooRest,
                      ingest: SyncIngest, report: Reporter, should_stop: Callable[[], bool],
                      restart: bool = False, source: str = "rest") -> Progress:
    collection, _ = RESOURCES[resource]
    cp = _load(engine, store.id, resource, since, restart)
    progress = Progress(resource, page=cp["next_page"] - 1, total_pages=cp["total_pages"] or 0,
                        total_items=cp["total_items"] or 0, produced=cp["produced"], duplicates=cp["duplicates"],
                        first_page=cp["next_page"])
    if cp["done"]:
        report(progress)
        return progress
    info = StoreInfo(store.id, store.timezone, store.currency)
    page: Page
    for page in rest.pages(collection, query(resource, since), start=cp["next_page"]):
        events, _, invalid = page_events(info, resource, page.items, since, source)
        progress.invalid += invalid
        produced, duplicates = ingest.submit(events)
        metrics.rest_events.labels(source, store.id).inc(produced)
        progress.page, progress.total_pages, progress.total_items = page.number, page.total_pages, page.total
        progress.produced += produced
        progress.duplicates += duplicates
        _save(engine, store.id, resource, since, next_page=page.number + 1, total_pages=page.total_pages,
              total_items=page.total, produced=progress.produced, duplicates=progress.duplicates)
        report(progress)
        if should_stop() and page.number < page.total_pages:
            return progress
    _save(engine, store.id, resource, since, done=True)
    return progress
