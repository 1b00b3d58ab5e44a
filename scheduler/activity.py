"""The scheduler's activity reader: what the cart, behaviour and time triggers look at.

It consumes woo.storefront, woo.orders and woo.customers in its own consumer group
(`WOOFLOW_SCHEDULER_GROUP`) and records, idempotently (a re-read batch changes nothing):
- `carts` and `storefront_activity` from storefront events (scheduler/carts.py);
- `customer_calendar`: first/last order, birthday, subscription renewal and card expiry
  (scheduler/customer_calendar.py, the meta dates parsed by scheduler/dates.py);
- cart recovery and attribution of an order's revenue to the workflows that reached the
  customer (scheduler/attribution.py);
- an order's credit to the last message the customer opened or clicked, and to the
  holdout comparisons of the rules that reached them, kept up to date with its refunds
  (scheduler/conversions.py);
- `consents`: the marketing-consent answers events carry (the store's checkout meta key,
  a storefront `email_captured` with `marketing_consent`), once per event
  (wooflow/consent_policy.py).

One person per shopper (scheduler/guests.py: `People`): a guest key whose email belongs
to a registered customer is applied as that customer's; and the first time a registered
customer's order or customer event carries an email, what its guest key collected before
— carts, storefront activity, calendar (folded: earliest first order, latest last order),
scheduler trigger firings, attributions — moves to the customer.

A batch is recorded in one transaction; if an event cannot be recorded, the batch is
recorded again with each event in a savepoint of its own, and the one that cannot goes
to the DLQ with the reason while the batch continues. (A savepoint per event from the
start cost two more round trips per event — most events are one insert — and with them
the reader fell behind 100 storefront events a second under a chaos run's load.) (These `record_*` functions write the
scheduler's activity tables; consumer/apply.py applies events to the rule consumer's
in-memory state.)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import Message
from sqlalchemy import Connection, Engine

from wooflow import attribution_policy, consent_policy, metrics
from wooflow.attribution_policy import AttributionPolicy
from wooflow.checkpointing import Checkpoint, run_batches
from wooflow.consumer.values import Envelope, is_event
from wooflow.db.engine import unavailable
from wooflow.dlq import dead_letter
from wooflow.kafka import topics
from wooflow.kafka.config import BATCH
from wooflow.kafka.consumer import make_consumer
from wooflow.kafka.producer import Producer
from wooflow.scheduler.attribution import DEFAULT_ATTRIBUTION_DAYS, person_keys, record_conversion
from wooflow.scheduler.carts import record_storefront
from wooflow.scheduler.conversions import record_order_credit
from wooflow.scheduler.customer_calendar import record_customer, record_order_dates
from wooflow.scheduler.guests import Link, People
from wooflow.schemas.codec import DecodeError, get_codec, narrow
from wooflow.schemas.types import CUSTOMER_EVENT, ORDER_EVENT, STOREFRONT_EVENT, OrderEvent
from wooflow.settings import Settings
from wooflow.stores import Store, StoreCache

log = logging.getLogger(__name__)

NOT_PURCHASES = frozenset({"failed", "cancelled", "checkout-draft", "trash", "refunded", "draft", "auto-draft"})


def record_order(conn: Connection, ev: OrderEvent, attribution_days: int = DEFAULT_ATTRIBUTION_DAYS,
                 policy: AttributionPolicy | None = None) -> None:
    """The order's credit to messages and holdout groups (its refunds and cancellation too);
    for a purchase (not a failed, cancelled or draft order): the customer's calendar, the
    carts it converts, the workflows it is attributed to."""
    order = ev.get("order")
    if not order or ev.get("action") == "deleted":
        return
    store, ckey = ev["store_id"], ev["customer_key"]
    record_order_credit(conn, store, person_keys(ckey, order), order, policy or AttributionPolicy())
    status = str(order.get("status") or "").removeprefix("wc-")
    if status in NOT_PURCHASES:
        return
    at = order["date_created"]
    record_order_dates(conn, store, ckey, order, at)
    record_conversion(conn, store, ckey, order, at, attribution_days)


def record_event(conn: Connection, schema: str, ev: Envelope, stores: StoreCache | None = None) -> None:
    settings: dict[str, Any] = {}
    store = None
    if stores is not None:
        store = stores.get(ev["store_id"])
        settings = dict(store.settings) if store else {}
    record_consent(conn, schema, ev, store)
    if (storefront := narrow(schema, ev, STOREFRONT_EVENT)) is not None:
        record_storefront(conn, storefront)
    elif (order := narrow(schema, ev, ORDER_EVENT)) is not None:
        record_order(conn, order, int(settings.get("attribution_days") or DEFAULT_ATTRIBUTION_DAYS),
                     attribution_policy.policy_of(store))
    elif (customer := narrow(schema, ev, CUSTOMER_EVENT)) is not None:
        record_customer(conn, customer, settings.get("meta_keys"))


def record_consent(conn: Connection, schema: str, ev: Envelope, store: Store | None) -> None:
    """Consent answers the event carries (checkout checkbox meta, storefront capture), so
    later emails not tied to this event see them too (wooflow/consent_policy.py)."""
    consent_policy.record_event_answers(conn, consent_policy.policy_of(store), schema, ev)


class ActivityReader:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.codec = get_codec(settings.schema_registry_url)
        self.stores = StoreCache(engine, settings.store_cache_ttl_s)
        self.producer = Producer(settings, BATCH)  # dead letters only
        self.people = People()
        self.ready = threading.Event()

    def handle(self, batch: list[Message]) -> None:
        decoded: list[tuple[Message, str, Envelope]] = []
        for msg in batch:
            try:
                schema, ev = self.codec.decode(msg.value() or b"", msg.topic())
                if not is_event(ev):
                    raise DecodeError(f"{schema} is not an event (no store_id/event_id/customer_key)")
            except DecodeError as exc:
                dead_letter(self.producer, self.codec, self.settings, msg, stage="scheduler", reason="undecodable",
                            error=str(exc))
                continue
            metrics.events_consumed.labels("scheduler", msg.topic(), str(ev.get("store_id", ""))).inc()
            decoded.append((msg, schema, ev))
        try:
            links = self._record(decoded)
        except Exception as exc:
            if unavailable(exc):
                raise  # PostgreSQL went away, not an event's fault: the batch is read again
            # An event the batch could not take: again, each event in a savepoint of its own.
            links = self._record_one_by_one(decoded)
        for link in links:  # only once their transaction committed
            self.people.linked(link)

    def _record(self, decoded: list[tuple[Message, str, Envelope]]) -> list[Link | None]:
        """The whole batch in one transaction, without a savepoint per event (two round trips
        each: the cost of most events, which are one insert)."""
        links = []
        with self.engine.begin() as conn:
            self.people.prepare(conn, [(schema, ev) for _, schema, ev in decoded])
            for _, schema, ev in decoded:
                person, link = self.people.person(conn, schema, ev)
                record_event(conn, schema, person, self.stores)
                links.append(link)
        return links

    def _record_one_by_one(self, decoded: list[tuple[Message, str, Envelope]]) -> list[Link | None]:
        links = []
        with self.engine.begin() as conn:
            self.people.prepare(conn, [(schema, ev) for _, schema, ev in decoded])
            for msg, schema, ev in decoded:
                try:
                    with conn.begin_nested():
                        person, link = self.people.person(conn, schema, ev)
                        record_event(conn, schema, person, self.stores)
                    links.append(link)
                except Exception as exc:  # a poison event must not stall the partition
                    if unavailable(exc) or conn.invalidated:
                        raise  # PostgreSQL went away, not the event's fault: the batch is read again
                    log.exception("could not apply %s", schema)
                    dead_letter(self.producer, self.codec, self.settings, msg, stage="scheduler",
                                reason="apply_error", error=f"{type(exc).__name__}: {exc}",
                                store_id=str(ev.get("store_id", "")))
        return links

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(self.settings, self.settings.scheduler_group,
                                 [self.settings.topic(t) for t in (topics.STOREFRONT, topics.ORDERS, topics.CUSTOMERS)])
        checkpoint = Checkpoint(consumer, self.producer)
        self.ready.set()
        log.info("scheduler activity reader running (group %s)", self.settings.scheduler_group)
        run_batches(consumer, checkpoint, self.handle, stop, batch_size=self.settings.batch_size,
                    timeout=self.settings.batch_timeout_s, on_rewind=self.rewound,
                    stall_after_s=self.settings.stall_refetch_s)

    def rewound(self) -> None:
        """The uncommitted batches are read again (PostgreSQL was away): links remembered
        from them may never have been committed."""
        self.people = People()
