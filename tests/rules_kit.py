"""Helpers for the rule-engine tests: build events, produce them straight to the topics
with the codec (no bridge), run a rule consumer in-process or as a process, read commands."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from wooflow.kafka import topics
from wooflow.kafka.headers import EventHeaders, event_headers
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings
from wooflow.workers.testing import RoleThread

if TYPE_CHECKING:
    from wooflow.consumer.runner import RuleConsumer

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
ADDRESS_KEYS = ("first_name", "last_name", "company", "address_1", "address_2", "city", "state", "postcode",
                "country", "email", "phone")


def address(country: str = "PL", email: str = "") -> dict[str, str]:
    return {k: "" for k in ADDRESS_KEYS} | {"country": country, "email": email}


def order_event(store: str, order_id: int, *, customer_id: int = 0, email: str = "", status: str = "processing",
                total: str = "100.00", currency: str = "PLN", country: str = "PL", shipping_country: str = "",
                items: list[tuple[int, ...]] | None = None, payment: str = "cod",
                shipping_methods: tuple[str, ...] = ("flat_rate",), coupons: tuple[str, ...] = (),
                created: datetime | None = None, modified: datetime | None = None, action: str = "created",
                previous_status: str | None = None, paid: datetime | None = None, refunds: tuple[str, ...] = (),
                created_via: str = "checkout", note: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OrderEvent as the bridge makes it; `refunds`: the refunds' amounts, newest first
    (WooCommerce writes them negative); `note`: an order note added event's note."""
    created = created or T0
    modified = modified or created
    ckey = f"c{customer_id}" if customer_id else "g" + hashlib.sha256(email.lower().encode()).hexdigest()[:24]
    # items: (product id, quantity[, variation id]); line items as WooCommerce sends them:
    # the product (a variation's parent) and the variation, no categories
    line_items = [{"id": i + 1, "product_id": item[0], "variation_id": item[2] if len(item) > 2 else 0,
                   "name": f"P{item[0]}", "sku": "", "quantity": item[1], "price": Decimal("10.0000"),
                   "total": Decimal(item[1] * 10), "category_ids": []}
                  for i, item in enumerate(items or [(11, 1)])]
    order = {"id": order_id, "number": str(order_id), "status": status, "currency": currency, "total": Decimal(total),
             "subtotal": Decimal(total), "total_tax": Decimal(0), "shipping_total": Decimal(0),
             "discount_total": Decimal(0), "customer_id": customer_id, "billing": address(country, email),
             "shipping": address(shipping_country), "payment_method": payment, "payment_method_title": payment,
             "shipping_methods": list(shipping_methods), "line_items": line_items, "coupon_codes": list(coupons),
             "created_via": created_via, "customer_note": "", "date_created": created, "date_modified": modified,
             "date_paid": paid, "date_completed": None, "meta": {},
             "refunds": [{"id": 900 + i, "reason": "", "total": -Decimal(r)} for i, r in enumerate(refunds)]}
    eid = hashlib.sha256(f"{store}|order|{order_id}|{modified.isoformat()}|{status}|{refunds}|{note}".encode()
                         ).hexdigest()[:32]
    return {"event_id": eid, "store_id": store, "customer_key": ckey, "occurred_at": modified,
            "received_at": datetime.now(timezone.utc), "source": "webhook", "schema_version": 1,
            "topic": f"order.{action}", "store_timezone": "UTC", "order_id": order_id, "action": action,
            "order": order, "previous_status": previous_status, "note": note, "raw_json": None}


def product_event(store: str, product_id: int, *, categories: tuple[int, ...] = (), tags: tuple[int, ...] = (),
                  parent_id: int = 0, type: str = "simple", modified: datetime | None = None,
                  action: str = "updated") -> dict[str, Any]:
    """A ProductEvent as the bridge makes it from a `product.*` webhook (tags named t<id>)."""
    at = modified or T0
    product = {"id": product_id, "name": f"P{product_id}", "sku": "", "type": type, "parent_id": parent_id,
               "status": "publish", "price": Decimal("10.0000"),
               "categories": [{"id": c, "name": f"c{c}", "slug": f"c{c}"} for c in categories],
               "tags": [f"t{t}" for t in tags], "tag_ids": list(tags), "stock_status": "instock", "permalink": "",
               "date_modified": at}
    eid = hashlib.sha256(f"{store}|product|{product_id}|{at.isoformat()}|{action}".encode()).hexdigest()[:32]
    return {"event_id": eid, "store_id": store, "customer_key": f"p{product_id}", "occurred_at": at,
            "received_at": datetime.now(timezone.utc), "source": "webhook", "schema_version": 3,
            "topic": f"product.{action}", "store_timezone": "UTC", "product_id": product_id, "action": action,
            "product": product, "currency": "PLN", "raw_json": None}


def customer_event(store: str, customer_id: int, *, email: str = "", role: str = "customer", action: str = "created",
                   at: datetime | None = None) -> dict[str, Any]:
    at = at or T0
    eid = hashlib.sha256(f"{store}|customer|{customer_id}|{at.isoformat()}|{action}".encode()).hexdigest()[:32]
    customer = {"id": customer_id, "email": email, "first_name": "A", "last_name": "B", "username": "ab", "role": role,
                "billing": address("DE", email), "shipping": address(""), "is_paying_customer": False,
                "date_created": at, "date_modified": at, "meta": {}}
    return {"event_id": eid, "store_id": store, "customer_key": f"c{customer_id}", "occurred_at": at,
            "received_at": datetime.now(timezone.utc), "source": "webhook", "schema_version": 1,
            "topic": f"customer.{action}", "store_timezone": "UTC", "customer_id": customer_id, "action": action,
            "customer": customer, "raw_json": None}


def later(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


SCHEMA_TOPIC = {"OrderEvent": topics.ORDERS, "CustomerEvent": topics.CUSTOMERS, "ProductEvent": topics.PRODUCTS,
                "StorefrontEvent": topics.STOREFRONT}


class EventProducer:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.codec = get_codec(s.schema_registry_url)
        self.p = Producer(s)

    def send(self, schema: str, event: dict[str, Any], *, headers: bool = True) -> None:
        topic = self.s.topic(SCHEMA_TOPIC[schema])
        value = self.codec.encode(schema, event, topic)
        self.raw(topic, value, f"{event['store_id']}:{event['customer_key']}",
                 event_headers(event["store_id"], schema) if headers else None)

    def raw(self, topic: str, value: bytes, key: str, headers: EventHeaders | None = None) -> None:
        self.p.produce(topic, value, key=key, headers=headers)

    def flush(self) -> None:
        self.p.flush(30)  # raises unless every event was acknowledged


class ConsumerThread(RoleThread["RuleConsumer"]):
    """A RuleConsumer in this process, wired like `wooflow rules` (for tests that reach inside)."""

    def __init__(self, s: Settings) -> None:
        from wooflow.consumer.runner import RuleConsumer
        from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - wired like `wooflow rules`
        from wooflow.scheduler.steps import store_delayed

        super().__init__(RuleConsumer(s, store_delayed=store_delayed), "wooflow-rules")

    @property
    def consumer(self) -> RuleConsumer:
        return self.role

    def wait_committed(self) -> None:
        """Until the consumer has committed everything it processed."""
        from tests.support import wait_for

        wait_for(lambda: self.consumer.checkpoint is not None and not self.consumer.checkpoint.pending(), 10, 0.1,
                 "commit")


def rules_over_orders(s: Settings) -> list[dict[str, Any]]:
    """A rule consumer run until it has processed every order event produced so far (and
    stopped: a consumer that failed fails the test); the commands on the topic then."""
    from tests.support import wait_until_consumed

    with ConsumerThread(s):
        wait_until_consumed(s, s.rules_group, [topics.ORDERS])
    return commands(s)


def commands(s: Settings, timeout: float = 15.0) -> list[dict[str, Any]]:
    from tests.support import read_topic

    return [r for schema, r in read_topic(s, topics.COMMANDS, timeout) if schema == "ActionCommand"]


@contextmanager
def isolated_triggers() -> Iterator[None]:
    """Trigger registrations made inside (a poisoned spec, a test-only trigger) are undone
    on the way out. The registry's dicts are changed in place, never rebound: other modules
    hold them by reference (`from wooflow.consumer.triggers import TRIGGERS`)."""
    from wooflow.consumer import triggers

    by_name = dict(triggers.TRIGGERS)
    by_schema = {schema: list(specs) for schema, specs in triggers._BY_SCHEMA.items()}
    try:
        yield
    finally:
        triggers.TRIGGERS.clear()
        triggers.TRIGGERS.update(by_name)
        triggers._BY_SCHEMA.clear()
        triggers._BY_SCHEMA.update(by_schema)
