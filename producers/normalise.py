"""WooCommerce REST v3 resources (as sent by webhooks or read by backfill) → Avro events.

Money becomes exact decimals (with the currency alongside), timestamps become UTC (the
store's timezone travels with the event), and every event gets a stable id derived from
its content (see keys.py), so the same change seen twice — several hooks, a re-send, a
backfill page, the poller — carries the same id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from wooflow.jsontypes import JSONObject, JSONValue, as_array, as_object
from wooflow.kafka import topics
from wooflow.producers.keys import body_hash, customer_key, event_id, kafka_key
from wooflow.schemas.codec import money, narrow
from wooflow.schemas.registry import catalog
from wooflow.schemas.types import (
    CUSTOMER_EVENT,
    ORDER_EVENT,
    Address,
    Coupon,
    CouponEvent,
    Customer,
    CustomerEvent,
    LineItem,
    Order,
    OrderEvent,
    OrderNote,
    Product,
    ProductEvent,
    Refund,
    Source,
    StorefrontEvent,
    Subscription,
    SubscriptionEvent,
)

# WooCommerce resource → (Kafka topic, Avro schema)
RESOURCE_TOPICS = {
    "order": (topics.ORDERS, "OrderEvent"),
    "customer": (topics.CUSTOMERS, "CustomerEvent"),
    "product": (topics.PRODUCTS, "ProductEvent"),
    "coupon": (topics.COUPONS, "CouponEvent"),
    # WooCommerce Subscriptions adds this resource (its own webhook topics and REST route)
    "subscription": (topics.SUBSCRIPTIONS, "SubscriptionEvent"),
}
RESOURCES = frozenset(RESOURCE_TOPICS)
# The events WooCommerce (and WooCommerce Subscriptions) defines for each resource.
RESOURCE_EVENTS = {r: frozenset({"created", "updated", "deleted", "restored"}) for r in RESOURCE_TOPICS}
RESOURCE_EVENTS["subscription"] = frozenset({"created", "updated", "deleted", "switched"})


class NormaliseError(ValueError):
    """The payload is not a resource of the announced type (reason in the text)."""


@dataclass(frozen=True)
class StoreInfo:
    id: str
    timezone: str = "UTC"
    currency: str = ""


# what the bridge produces
EventRecord = OrderEvent | CustomerEvent | ProductEvent | CouponEvent | StorefrontEvent | SubscriptionEvent


@dataclass(frozen=True)
class Event:
    topic: str  # base topic name, without prefix
    key: str
    schema: str
    record: EventRecord

    @property
    def event_id(self) -> str:
        return self.record["event_id"]

    def order_event(self) -> OrderEvent | None:
        return narrow(self.schema, self.record, ORDER_EVENT)

    def customer_event(self) -> CustomerEvent | None:
        return narrow(self.schema, self.record, CUSTOMER_EVENT)


@lru_cache(maxsize=16)
def schema_version(schema: str) -> int:
    return catalog().latest(schema).version


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_time(value: JSONValue, tz: tzinfo, gmt_value: JSONValue = None) -> datetime | None:
    """WooCommerce sends `...` (site-local) and `..._gmt` (UTC), both without an offset."""
    if gmt_value:
        try:
            parsed = datetime.fromisoformat(str(gmt_value))
            return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
        except ValueError:
            pass
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise NormaliseError(f"bad date {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(timezone.utc)


def _address(value: JSONValue) -> Address:
    a = as_object(value)

    def f(k: str) -> str:
        return str(a.get(k) or "")

    return {"first_name": f("first_name"), "last_name": f("last_name"), "company": f("company"),
            "address_1": f("address_1"), "address_2": f("address_2"), "city": f("city"), "state": f("state"),
            "postcode": f("postcode"), "country": f("country"), "email": f("email"), "phone": f("phone")}


def _meta(items: JSONValue) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in as_array(items):
        if isinstance(m, dict) and "key" in m:
            out[str(m["key"])] = json.dumps(m.get("value"), separators=(",", ":"), default=str)
    return out


def _int(v: JSONValue) -> int:
    x = v or 0
    try:
        if isinstance(x, (int, float, str)):
            return int(x)
    except ValueError as exc:
        raise NormaliseError(f"expected an integer, got {v!r}") from exc
    raise NormaliseError(f"expected an integer, got {v!r}")


def _opt_int(v: JSONValue) -> int | None:
    return None if v is None or v == "" else _int(v)


def _ints(v: JSONValue) -> list[int]:
    return [_int(x) for x in v] if isinstance(v, list) else []


def _money(v: JSONValue) -> Decimal:
    try:
        return money(v)
    except (ArithmeticError, ValueError) as exc:
        raise NormaliseError(f"expected an amount, got {v!r}") from exc


def _date(r: JSONObject, name: str, tz: tzinfo) -> datetime | None:
    """A resource's date field: `name_gmt` when given, else `name` in the site's zone."""
    return parse_time(r.get(name), tz, r.get(name + "_gmt"))


def _created_modified(r: JSONObject, tz: tzinfo, kind: str) -> tuple[datetime, datetime]:
    """date_created (required) and date_modified (date_created when absent)."""
    created = _date(r, "date_created", tz)
    modified = _date(r, "date_modified", tz) or created
    if created is None or modified is None:
        raise NormaliseError(f"{kind} without date_created")
    return created, modified


# The records below are alike only in shape (a dict of converted fields): each one lists
# the fields of its own Avro schema.
def _objects(v: JSONValue) -> list[JSONObject]:
    """The objects of a JSON array (anything else in it, or anything but an array: none)."""
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _strs(v: JSONValue) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def _refunded(refunds: JSONValue) -> Decimal | None:
    """The order's refunds as one positive amount (REST v3 lists each with a negative
    `total`); None when the body has no `refunds` (it is not a REST v3 order)."""
    if refunds is None:
        return None
    return sum((abs(_money(r.get("total"))) for r in _objects(refunds)), money(0))


def _line_items(o: JSONObject) -> tuple[list[LineItem], Decimal]:
    """An order's (or a subscription's) line items, and the sum of their subtotals."""
    items: list[LineItem] = []
    subtotal = money(0)
    lines = o.get("line_items") or []
    for li in lines if isinstance(lines, list) else [lines]:
        if not isinstance(li, dict):
            raise NormaliseError("line_items must be objects")
        line_subtotal = _money(li.get("subtotal"))
        subtotal += line_subtotal
        items.append({
            "id": _int(li.get("id")),
            "product_id": _int(li.get("product_id")),
            "variation_id": _int(li.get("variation_id")),
            "name": str(li.get("name") or ""),
            "sku": str(li.get("sku") or ""),
            "quantity": _int(li.get("quantity")),
            "price": _money(li.get("price")),
            "total": _money(li.get("total")),
            # WooCommerce's line items carry no categories: conditions read them from the
            # store's product catalog (consumer/catalog.py); the field stays for old events
            "category_ids": [],
        })
    return items, subtotal


def _refunds(v: JSONValue) -> list[Refund]:
    """REST v3 `refunds`: `{"id", "reason", "total": "-5.00"}` per refund, newest first."""
    return [{"id": _int(r.get("id")), "reason": str(r.get("reason") or ""), "total": _money(r.get("total"))}
            for r in _objects(v)]


def order_record(o: JSONObject, tz: tzinfo) -> Order:
    created, modified = _created_modified(o, tz, "order")
    items, subtotal = _line_items(o)
    return {
        "id": _int(o.get("id")),
        "number": str(o.get("number") or o.get("id")),
        "status": str(o.get("status") or ""),
        "currency": str(o.get("currency") or ""),
        "total": _money(o.get("total")),
        "subtotal": subtotal,
        "total_tax": _money(o.get("total_tax")),
        "shipping_total": _money(o.get("shipping_total")),
        "discount_total": _money(o.get("discount_total")),
        "total_refunded": _refunded(o.get("refunds")),
        "customer_id": _int(o.get("customer_id")),
        "billing": _address(o.get("billing")),
        "shipping": _address(o.get("shipping")),
        "payment_method": str(o.get("payment_method") or ""),
        "payment_method_title": str(o.get("payment_method_title") or ""),
        "shipping_methods": [str(s.get("method_id") or "") for s in _objects(o.get("shipping_lines"))],
        "line_items": items,
        "coupon_codes": [str(c.get("code") or "") for c in _objects(o.get("coupon_lines"))],
        "created_via": str(o.get("created_via") or ""),
        "customer_note": str(o.get("customer_note") or ""),
        "date_created": created,
        "date_modified": modified,
        "date_paid": _date(o, "date_paid", tz),
        "date_completed": _date(o, "date_completed", tz),
        "meta": _meta(o.get("meta_data")),
        "refunds": _refunds(o.get("refunds")),
    }


def subscription_record(r: JSONObject, tz: tzinfo) -> Subscription:
    """WooCommerce Subscriptions' REST v3 subscription: an order's fields plus its billing
    schedule; its own dates come as `<type>_date_gmt` only ("" when unset)."""
    created, modified = _created_modified(r, tz, "subscription")
    items, _ = _line_items(r)

    def gmt(name: str) -> datetime | None:
        return parse_time(None, timezone.utc, r.get(f"{name}_date_gmt"))

    return {
        "id": _int(r.get("id")),
        "parent_id": _int(r.get("parent_id")),
        "status": str(r.get("status") or "").removeprefix("wc-"),
        "currency": str(r.get("currency") or ""),
        "total": _money(r.get("total")),
        "customer_id": _int(r.get("customer_id")),
        "billing": _address(r.get("billing")),
        "payment_method": str(r.get("payment_method") or ""),
        "billing_period": str(r.get("billing_period") or ""),
        "billing_interval": _int(r.get("billing_interval") or 1),
        "trial_period": str(r.get("trial_period") or ""),
        "suspension_count": _int(r.get("suspension_count")),
        "requires_manual_renewal": bool(r.get("requires_manual_renewal")),
        "line_items": items,
        "start_date": gmt("start"),
        "trial_end_date": gmt("trial_end"),
        "next_payment_date": gmt("next_payment"),
        "last_payment_date": gmt("last_payment"),
        "cancelled_date": gmt("cancelled"),
        "end_date": gmt("end"),
        "date_created": created,
        "date_modified": modified,
        "meta": _meta(r.get("meta_data")),
    }


def note_record(n: JSONObject, tz: tzinfo) -> OrderNote:
    """REST v3 `GET /orders/{id}/notes/{note}`: id, author ("WooCommerce" for the system's
    notes, else the user's name), date_created, note, customer_note."""
    created = _date(n, "date_created", tz)
    if created is None:
        raise NormaliseError("order note without date_created")
    author = str(n.get("author") or "")
    return {"id": _int(n.get("id")), "note": str(n.get("note") or ""), "customer_note": bool(n.get("customer_note")),
            "added_by": "system" if author in ("", "WooCommerce", "system") else author, "date_created": created}


def customer_record(c: JSONObject, tz: tzinfo) -> Customer:
    created, modified = _created_modified(c, tz, "customer")
    return {
        "id": _int(c.get("id")),
        "email": str(c.get("email") or ""),
        "first_name": str(c.get("first_name") or ""),
        "last_name": str(c.get("last_name") or ""),
        "username": str(c.get("username") or ""),
        "role": str(c.get("role") or ""),
        "billing": _address(c.get("billing")),
        "shipping": _address(c.get("shipping")),
        "is_paying_customer": bool(c.get("is_paying_customer")),
        "date_created": created,
        "date_modified": modified,
        "meta": _meta(c.get("meta_data")),
    }


def product_record(p: JSONObject, tz: tzinfo) -> Product:
    modified = _date(p, "date_modified", tz) or _date(p, "date_created", tz)
    if modified is None:
        raise NormaliseError("product without dates")
    price = p.get("price")
    return {
        "id": _int(p.get("id")),
        "name": str(p.get("name") or ""),
        "sku": str(p.get("sku") or ""),
        "type": str(p.get("type") or "simple"),
        "parent_id": _int(p.get("parent_id")),
        "status": str(p.get("status") or ""),
        "price": _money(price) if price is not None and price != "" else None,
        "categories": [{"id": _int(c.get("id")), "name": str(c.get("name") or ""), "slug": str(c.get("slug") or "")}
                       for c in _objects(p.get("categories"))],
        "tags": [str(t.get("name") or t.get("slug") or "") for t in _objects(p.get("tags"))],
        "tag_ids": [_int(t.get("id")) for t in _objects(p.get("tags"))],
        "stock_status": str(p.get("stock_status") or ""),
        "permalink": str(p.get("permalink") or ""),
        "date_modified": modified,
    }


def coupon_record(c: JSONObject, tz: tzinfo) -> Coupon:
    created, modified = _created_modified(c, tz, "coupon")
    return {
        "id": _int(c.get("id")),
        "code": str(c.get("code") or ""),
        "amount": _money(c.get("amount")),
        "discount_type": str(c.get("discount_type") or "fixed_cart"),
        "status": str(c.get("status") or ""),
        "description": str(c.get("description") or ""),
        "date_created": created,
        "date_modified": modified,
        "date_expires": _date(c, "date_expires", tz),
        "usage_count": _int(c.get("usage_count")),
        "usage_limit": _opt_int(c.get("usage_limit")),
        "usage_limit_per_user": _opt_int(c.get("usage_limit_per_user")),
        "individual_use": bool(c.get("individual_use")),
        "free_shipping": bool(c.get("free_shipping")),
        "product_ids": _ints(c.get("product_ids")),
        "excluded_product_ids": _ints(c.get("excluded_product_ids")),
        "product_categories": _ints(c.get("product_categories")),
        "excluded_product_categories": _ints(c.get("excluded_product_categories")),
        "minimum_amount": _money(c.get("minimum_amount")),
        "maximum_amount": _money(c.get("maximum_amount")),
        "email_restrictions": _strs(c.get("email_restrictions")),
        "used_by": _strs(c.get("used_by")),
        "meta": _meta(c.get("meta_data")),
    }


def rest_kind(payload: JSONObject) -> str:
    """What a REST read (backfill/poller) can tell about a change: created when the
    resource was never modified after creation, else updated. Matches the kind a
    webhook of the same state carries in the common cases, so both dedupe."""
    created = payload.get("date_created_gmt") or payload.get("date_created")
    modified = payload.get("date_modified_gmt") or payload.get("date_modified")
    return "created" if created and created == modified else "updated"


def version_of(kind: str, payload: JSONObject) -> str:
    """What makes this change unique: kind, modification second and content.

    `date_modified_gmt` has one-second resolution, so two real changes in one second
    differ only by content: the body hash keeps them apart. The kind keeps
    `order.created` from being swallowed by an identical `order.updated` of the same
    save that happened to arrive first (WooCommerce fires both for one REST create).
    """
    modified = payload.get("date_modified_gmt") or payload.get("date_modified") or payload.get("date_created_gmt") or ""
    return f"{kind}|{modified}|{body_hash(payload)}"


class _Common(TypedDict):
    """The fields every bridge event starts with."""

    event_id: str
    store_id: str
    customer_key: str
    occurred_at: datetime
    received_at: datetime
    source: Source
    schema_version: int
    topic: str
    store_timezone: str
    action: str
    raw_json: str | None


def _key_of_state(resource: str, rid: int, state: JSONObject) -> str | None:
    """The customer key a content-less order (or subscription) event falls back to when the
    bridge never saw it (identity.py): the one of its REST state (a trashed order is still
    readable)."""
    if resource not in ("order", "subscription") or not state:
        return None
    try:
        cid = _int(state.get("customer_id"))
    except NormaliseError:
        cid = 0
    email = as_object(state.get("billing")).get("email")
    return customer_key(cid, str(email) if email else None, fallback=f"{resource[0]}{rid}")


def build_event(store: StoreInfo, resource: str, kind: str, rid: int, payload: JSONObject | None, version: str, *,
                source: Source, received_at: datetime, wc_topic: str, raw: str | None = None,
                occurred: datetime | None = None, previous_status: str | None = None,
                ckey: str | None = None, status: str | None = None, note: OrderNote | None = None) -> Event:
    """The event of `resource` `rid` in the state `payload` (None: a content-less event, e.g.
    a deletion); `status`: the order status the event describes (a status-change hook);
    `note`: the order note an order note added event is about."""
    topic, schema = RESOURCE_TOPICS[resource]
    tz = _zone(store.timezone)

    def common(key: str, modified: datetime | None) -> _Common:
        return {"event_id": event_id(store.id, resource, rid, version), "store_id": store.id, "customer_key": key,
                "occurred_at": occurred or modified or received_at, "received_at": received_at, "source": source,
                "schema_version": schema_version(schema), "topic": wc_topic, "store_timezone": store.timezone,
                "action": kind, "raw_json": raw}

    record: EventRecord
    if resource == "order":
        order = order_record(payload, tz) if payload is not None else None
        if order is not None and status:
            order = {**order, "status": status}  # the event describes this transition, even if the order moved on
        key = ckey or customer_key(order["customer_id"] if order else None,
                                   order["billing"]["email"] if order else None, fallback=f"o{rid}")
        record = {**common(key, order["date_modified"] if order else None), "order_id": rid, "order": order,
                  "previous_status": previous_status, "note": note}
    elif resource == "customer":
        customer = customer_record(payload, tz) if payload is not None else None
        key = ckey or customer_key(rid, None)
        record = {**common(key, customer["date_modified"] if customer else None), "customer_id": rid,
                  "customer": customer}
    elif resource == "product":
        product = product_record(payload, tz) if payload is not None else None
        key = ckey or f"p{rid}"
        record = {**common(key, product["date_modified"] if product else None), "product_id": rid,
                  "product": product, "currency": store.currency}
    elif resource == "subscription":
        sub = subscription_record(payload, tz) if payload is not None else None
        key = ckey or customer_key(sub["customer_id"] if sub else None, sub["billing"]["email"] if sub else None,
                                   fallback=f"s{rid}")
        record = {**common(key, sub["date_modified"] if sub else None), "subscription_id": rid, "subscription": sub}
    else:
        coupon = coupon_record(payload, tz) if payload is not None else None
        key = ckey or f"cp{rid}"
        record = {**common(key, coupon["date_modified"] if coupon else None), "coupon_id": rid, "coupon": coupon,
                  "currency": store.currency}
    return Event(topic, kafka_key(store.id, key), schema, record)


def normalise(store: StoreInfo, wc_topic: str, payload: JSONObject, *, source: Source, received_at: datetime,
              raw: str | None = None, deleted_state: JSONObject | None = None) -> list[Event]:
    """One `<resource>.<event>` topic + resource JSON → the events to produce.

    `deleted_state` is the resource as REST shows it after a `*.deleted` delivery (a
    trashed order/product/coupon is still readable): its modification time tells a
    re-send of one deletion apart from a second deletion after a restore.
    """
    resource, _, kind = wc_topic.partition(".")
    if kind not in RESOURCE_EVENTS.get(resource, ()):
        return []
    rid = _int(payload.get("id"))
    if rid <= 0:
        raise NormaliseError(f"{wc_topic} payload without an id")
    tz = _zone(store.timezone)
    if kind == "deleted":
        state = deleted_state or {}
        version = f"deleted|{state.get('date_modified_gmt') or ''}"
        occurred = parse_time(state.get("date_modified"), tz, state.get("date_modified_gmt"))
        return [build_event(store, resource, kind, rid, None, version, source=source, received_at=received_at,
                            wc_topic=wc_topic, raw=raw, occurred=occurred, ckey=_key_of_state(resource, rid, state))]
    return [build_event(store, resource, kind, rid, payload, version_of(kind, payload), source=source,
                        received_at=received_at, wc_topic=wc_topic, raw=raw)]


def normalise_rest(store: StoreInfo, resource: str, payload: JSONObject, *, source: Source,
                   received_at: datetime) -> Event:
    """A resource read through REST (backfill, poller) → the event a webhook of that state gives."""
    kind = rest_kind(payload)
    events = normalise(store, f"{resource}.{kind}", payload, source=source, received_at=received_at)
    return events[0]


# --- action.* topics ------------------------------------------------------------------------
# `{"action": hook, "arg": …}`: WooCommerce passes the hook's first argument only.

_STATUS_TRANSITION = re.compile(r"^woocommerce_order_status_(.+?)_to_(.+)$")
_STATUS = re.compile(r"^woocommerce_order_status_(?!changed$)(.+)$")
# Hooks that fire once per resource: their event id needs no modification time.
ONCE_HOOKS = frozenset({
    "woocommerce_checkout_order_processed", "woocommerce_checkout_order_created", "woocommerce_payment_complete",
    "woocommerce_new_order", "woocommerce_created_customer", "woocommerce_new_customer", "woocommerce_new_product",
    "woocommerce_new_coupon", "woocommerce_thankyou",
})
_NAMED_ACTIONS = {
    "woocommerce_checkout_order_processed": "checkout",
    "woocommerce_checkout_order_created": "checkout",
    "woocommerce_payment_complete": "payment_complete",
    "woocommerce_order_refunded": "refunded",
    "woocommerce_order_status_changed": "status_changed",
}


# Order notes: WooCommerce fires `woocommerce_order_note_added` with the note's id (the
# order is its second argument, which a webhook does not carry) and, for a note to the
# customer, `woocommerce_new_customer_note` with {"order_id", "customer_note"}.
NOTE_ADDED = "woocommerce_order_note_added"
CUSTOMER_NOTE = "woocommerce_new_customer_note"


@dataclass(frozen=True)
class ActionPlan:
    """What an action hook is about: which resource to fetch and how to label the event.
    A note plan names the note (`note_id`, or its text for a customer note) and, when the
    payload says, its order (`resource_id`; 0: to be found, see producers/notes.py)."""

    hook: str
    resource: str
    resource_id: int
    action: str
    previous_status: str | None = None
    status: str | None = None
    note_id: int = 0
    note_text: str | None = None


def _positive(v: Any) -> int:
    if isinstance(v, bool):
        return 0
    if isinstance(v, int):
        return max(v, 0)
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return 0


def _plan_note(hook: str, arg: Any) -> ActionPlan | None:
    if hook == NOTE_ADDED:
        if isinstance(arg, dict):  # a store that adds the order to the payload (docs/triggers.md)
            nid, oid = _positive(arg.get("id") or arg.get("note_id")), _positive(arg.get("order_id"))
        else:
            nid, oid = _positive(arg), 0
        return ActionPlan(hook, "order", oid, "note_added", note_id=nid) if nid else None
    if isinstance(arg, dict) and _positive(arg.get("order_id")) and isinstance(arg.get("customer_note"), str):
        return ActionPlan(hook, "order", _positive(arg.get("order_id")), "note_added",
                          note_text=str(arg["customer_note"]))
    return None


def plan_action(hook: str, arg: Any) -> ActionPlan | None:
    """Map an action hook to an event, or None when wooflow has no use for it."""
    if hook in (NOTE_ADDED, CUSTOMER_NOTE):
        return _plan_note(hook, arg)
    rid = arg if isinstance(arg, int) and not isinstance(arg, bool) else None
    if rid is None and isinstance(arg, str) and arg.isdigit():
        rid = int(arg)
    if rid is None and isinstance(arg, dict) and isinstance(arg.get("id"), int):
        rid = arg["id"]
    if not rid or rid <= 0:
        return None
    name = hook.removeprefix("woocommerce_").removeprefix("wc_")
    if m := _STATUS_TRANSITION.match(hook):
        return ActionPlan(hook, "order", rid, "status_changed", previous_status=m.group(1), status=m.group(2))
    if hook in _NAMED_ACTIONS:
        return ActionPlan(hook, "order", rid, _NAMED_ACTIONS[hook])
    if m := _STATUS.match(hook):
        return ActionPlan(hook, "order", rid, "status_changed", status=m.group(1))
    for resource in ("order", "customer", "product", "coupon"):
        if resource in name:
            return ActionPlan(hook, resource, rid, name)
    return None


def normalise_note(store: StoreInfo, order_id: int, note: JSONObject, order: JSONObject | None, *, source: Source,
                   received_at: datetime, wc_topic: str, raw: str | None = None) -> Event:
    """An order note added: the order as REST shows it now, with the note. One event per
    note whichever hook or poll found it (the version is the note's id)."""
    record = note_record(note, _zone(store.timezone))
    return build_event(store, "order", "note_added", order_id, order, f"note:{record['id']}", source=source,
                       received_at=received_at, wc_topic=wc_topic, raw=raw, occurred=record["date_created"],
                       note=record)


def normalise_action(store: StoreInfo, plan: ActionPlan, fetched: JSONObject | None, *, source: Source,
                     received_at: datetime, raw: str | None = None) -> Event:
    """The event of an action hook; `fetched` is the resource read through REST (None:
    a light event carrying only the id)."""
    stamp = "" if plan.hook in ONCE_HOOKS else str((fetched or {}).get("date_modified_gmt") or "")
    version = f"action:{plan.hook}|{stamp}"
    return build_event(store, plan.resource, plan.action, plan.resource_id, fetched or None, version, source=source,
                       received_at=received_at, wc_topic=f"action.{plan.hook}", raw=raw,
                       occurred=None if fetched else received_at,
                       previous_status=plan.previous_status.removeprefix("wc-") if plan.previous_status else None,
                       status=plan.status.removeprefix("wc-") if plan.status and plan.resource == "order" else None)
