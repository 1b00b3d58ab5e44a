"""`wooflow poller`: the reconciliation poller.

WooCommerce never retries a failed delivery, so a change whose webhook was lost (bridge
unreachable, webhook disabled, force-deleted queue) would be gone for good. Every
`poll_interval_s` the poller lists each store's resources modified since its watermark
(minus `poll_overlap_s`, because deliveries and saves race) through REST and produces
what the dedupe store has not seen: a change that did arrive by webhook has the same
event id and is skipped. Watermarks live in `bridge_poller_state`; the first poll of a
store starts at "now" (history is `wooflow backfill`'s job).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from wooflow import metrics
from wooflow.db.tables import bridge_poller_state as state
from wooflow.producers.backfill import RESOURCES, page_events, query
from wooflow.producers.normalise import StoreInfo, parse_time
from wooflow.producers.sync_ingest import SyncIngest
from wooflow.producers.woo_rest import RestError, Transient, WooRest
from wooflow.settings import Settings
from wooflow.stores import Store, list_stores

log = logging.getLogger(__name__)

DEFAULT_RESOURCES = ("orders", "products", "coupons", "customers")


def _watermark(engine: Engine, store_id: str, resource: str, now: datetime) -> datetime:
    with engine.begin() as conn:
        conn.execute(insert(state).values(store_id=store_id, resource=resource, watermark=now)
                     .on_conflict_do_nothing())
        return conn.execute(select(state.c.watermark).where(state.c.store_id == store_id,
                                                            state.c.resource == resource)).scalar_one()


def _advance(engine: Engine, store_id: str, resource: str, watermark: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(state.update().where(state.c.store_id == store_id, state.c.resource == resource)
                     .values(watermark=watermark, polled_at=datetime.now(timezone.utc)))


def poll_store(store: Store, settings: Settings, engine: Engine, ingest: SyncIngest,
               resources: tuple[str, ...] = DEFAULT_RESOURCES) -> dict[str, int]:
    """One reconciliation pass over a store; returns events produced per resource."""
    info = StoreInfo(store.id, store.timezone, store.currency)
    produced: dict[str, int] = {}
    now = datetime.now(timezone.utc)
    with WooRest(store, timeout=settings.rest_timeout_s, max_attempts=settings.rest_max_attempts) as rest:
        for resource in resources:
            collection, _ = RESOURCES[resource]
            mark = _watermark(engine, store.id, resource, now)
            since = mark - timedelta(seconds=settings.poll_overlap_s)
            newest = mark
            count = 0
            for page in rest.pages(collection, query(resource, since)):
                events, used, _ = page_events(info, resource, page.items, since, "poller")
                received = datetime.now(timezone.utc)
                for item in used:
                    when = parse_time(item.get("date_modified"), ZoneInfo("UTC"), item.get("date_modified_gmt"))
                    if when is not None and when > newest:
                        newest = min(when, received)
                n, _ = ingest.submit(events)
                count += n
            metrics.rest_events.labels("poller", store.id).inc(count)
            _advance(engine, store.id, resource, newest)
            produced[resource] = count
            if count:
                log.info("poller: %d change(s) of %s in store %s had no webhook", count, resource, store.id)
    return produced


def run_poller(settings: Settings, engine: Engine, ingest: SyncIngest, stop: threading.Event, *,
               once: bool = False, store_ids: list[str] | None = None,
               resources: tuple[str, ...] = DEFAULT_RESOURCES) -> None:
    while not stop.is_set():
        try:
            stores = list_stores(engine)
        except DBAPIError as exc:  # PostgreSQL away: /readyz says so; try again next interval
            if once:
                raise
            log.warning("poller: cannot list stores: %s", type(exc.orig).__name__ if exc.orig else exc)
            stop.wait(settings.poll_interval_s)
            continue
        for store in stores:
            if store_ids and store.id not in store_ids:
                continue
            if not store.consumer_key:
                continue
            try:
                poll_store(store, settings, engine, ingest, resources)
            except (RestError, Transient) as exc:
                log.warning("poller: store %s: %s", store.id, exc)
            except Exception:  # noqa: BLE001 - one store's trouble must not stop the others
                log.exception("poller: store %s failed", store.id)
        if once:
            return
        stop.wait(settings.poll_interval_s)
