"""`wooflow backfill --store S --since DATE [--resources orders,customers,products,coupons,subscriptions]`.

Reads WooCommerce REST v3 page by page (per_page=100, `X-WP-TotalPages`, oldest id first,
`modified_after` with `dates_are_gmt=true` so the date means UTC, not the site's zone),
normalises each resource into the event a webhook of that state would give, and produces
the ones not seen before (dedupe store shared with the bridge). After each page the
checkpoint (`bridge_backfill_checkpoints`) moves on, so an interrupted run resumes at
the next page; a page that was produced but not yet checkpointed dedupes on re-read.
Ctrl-C finishes the current page, checkpoints and exits; a second Ctrl-C aborts.

A run is what the operator asked: the store, `--since` as given (`6h` is the same
request at 10:00 and at 11:00; `2026-01-31` and `2026-01-31T00:00Z` are one request too)
and the set of resources. Running the same command again resumes the unfinished run from
its checkpoints, reading from the instant it started with; once it finished, the same
command starts a new run. A different `--since` or `--resources` is another run, from
page 1 — the interrupted one keeps its checkpoints until its own command is run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, text, update
from sqlalchemy.dialects.postgresql import insert

from wooflow import metrics
from wooflow.db.tables import bridge_backfill_checkpoints as checkpoints
from wooflow.jsontypes import JSONObject
from wooflow.producers.normalise import Event, NormaliseError, StoreInfo, normalise_rest, parse_time
from wooflow.producers.sync_ingest import SyncIngest
from wooflow.producers.woo_rest import Page, WooRest
from wooflow.schemas.types import Source
from wooflow.stores import Store
from wooflow.timespec import TimeSpec

log = logging.getLogger(__name__)

# CLI name → (REST collection, webhook resource)
RESOURCES = {"orders": ("orders", "order"), "customers": ("customers", "customer"),
             "products": ("products", "product"), "coupons": ("coupons", "coupon"),
             "subscriptions": ("subscriptions", "subscription")}  # the last with WooCommerce Subscriptions
DEFAULT_RESOURCES = ("orders", "customers", "products")


def rest_since(since: datetime) -> str:
    """A naive UTC timestamp: WooCommerce converts offsets to site-local time first."""
    return since.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat()


def query(resource: str, since: datetime) -> dict[str, str]:
    base = {"orderby": "id", "order": "asc"}
    if resource == "customers":
        # No date filters on /customers: every user, filtered by modification here.
        return base | {"role": "all"}
    return base | {"modified_after": rest_since(since), "dates_are_gmt": "true"}


_UTC = ZoneInfo("UTC")


def modified_since(item: JSONObject, since: datetime) -> bool:
    tz = _UTC
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

def page_events(info: StoreInfo, resource: str, items: list[JSONObject], since: datetime,
                source: Source) -> tuple[list[Event], list[JSONObject], int]:
    """One REST page → (events, the items they came from, items that could not be normalised).

    Customers are filtered by date here: WooCommerce's customers endpoint has no
    modified-after filter."""
    _, wc_resource = RESOURCES[resource]
    received = datetime.now(timezone.utc)
    events: list[Event] = []
    used: list[JSONObject] = []
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



@dataclass(frozen=True)
class BackfillRun:
    """One operator request — store, `--since` as asked, resources — and the instant it
    reads from, fixed when the run started (a resumed `--since 6h` keeps its first
    instant, so the pages after its checkpoint are the pages it did not read yet)."""

    store_id: str
    since_spec: str  # TimeSpec.key: `6h ago`, or an instant in UTC ISO form
    resources: str  # sorted, comma-joined
    since: datetime
    started_at: datetime
    resumed: bool

    def where(self, resource: str | None = None) -> list[Any]:
        clauses = [checkpoints.c.store_id == self.store_id, checkpoints.c.since_spec == self.since_spec,
                   checkpoints.c.resources == self.resources]
        return clauses + ([checkpoints.c.resource == resource] if resource else [])


def open_run(engine: Engine, store_id: str, since: TimeSpec, resources: list[str], *,
             restart: bool = False) -> BackfillRun:
    """Resume this request's unfinished run, or start a new one (no run yet, the last one
    finished, or `restart`): one checkpoint row per resource, from page 1."""
    probe = BackfillRun(store_id, since.key, ",".join(sorted(set(resources))), since.at,
                        datetime.now(timezone.utc), False)
    with engine.begin() as conn:
        # two copies of the same command: the second waits and then resumes the first's run
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                     {"k": f"backfill|{store_id}|{probe.since_spec}|{probe.resources}"})
        rows = conn.execute(select(checkpoints).where(*probe.where())).all()
        if rows and not restart and not all(r.done for r in rows) \
                and {r.resource for r in rows} == set(resources):
            return replace(probe, since=rows[0].since, started_at=rows[0].started_at, resumed=True)
        conn.execute(checkpoints.delete().where(*probe.where()))
        conn.execute(insert(checkpoints), [
            {"store_id": store_id, "since_spec": probe.since_spec, "resources": probe.resources, "resource": r,
             "since": probe.since, "started_at": probe.started_at} for r in sorted(set(resources))])
    return probe


def unfinished_runs(engine: Engine, run: BackfillRun) -> list[tuple[str, str]]:
    """Other requests' runs of the same store that stopped before the end: (since, resources)."""
    with engine.connect() as conn:
        rows = conn.execute(select(checkpoints.c.since_spec, checkpoints.c.resources).distinct().where(
            checkpoints.c.store_id == run.store_id, checkpoints.c.done.is_(False),
            (checkpoints.c.since_spec != run.since_spec) | (checkpoints.c.resources != run.resources),
        ).order_by(checkpoints.c.since_spec, checkpoints.c.resources))
        return [(str(r[0]), str(r[1])) for r in rows]


def _checkpoint(engine: Engine, run: BackfillRun, resource: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(checkpoints).where(*run.where(resource))).one()


def _save(engine: Engine, run: BackfillRun, resource: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(checkpoints).where(*run.where(resource))
                     .values(updated_at=datetime.now(timezone.utc), **values))


def backfill_resource(store: Store, run: BackfillRun, resource: str, *, engine: Engine, rest: WooRest,
                      ingest: SyncIngest, report: Reporter, should_stop: Callable[[], bool],
                      source: Source = "rest") -> Progress:
    collection, _ = RESOURCES[resource]
    since = run.since
    cp = _checkpoint(engine, run, resource)
    progress = Progress(resource, page=cp.next_page - 1, total_pages=cp.total_pages or 0,
                        total_items=cp.total_items or 0, produced=cp.produced, duplicates=cp.duplicates,
                        first_page=cp.next_page)
    if cp.done:
        report(progress)
        return progress
    info = StoreInfo(store.id, store.timezone, store.currency)
    page: Page
    for page in rest.pages(collection, query(resource, since), start=cp.next_page):
        events, _, invalid = page_events(info, resource, page.items, since, source)
        progress.invalid += invalid
        produced, duplicates = ingest.submit(events)
        metrics.rest_events.labels(source, store.id).inc(produced)
        progress.page, progress.total_pages, progress.total_items = page.number, page.total_pages, page.total
        progress.produced += produced
        progress.duplicates += duplicates
        _save(engine, run, resource, next_page=page.number + 1, total_pages=page.total_pages,
              total_items=page.total, produced=progress.produced, duplicates=progress.duplicates)
        report(progress)
        if should_stop() and page.number < page.total_pages:
            return progress
    _save(engine, run, resource, done=True)
    return progress
