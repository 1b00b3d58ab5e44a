"""WooCommerce REST v3 resources (as sent by webhooks or read by backfill) → Avro events.

Money becomes exact decimals, timestamps become UTC (the store's timezone travels with
the event), and every event gets a stable id derived from the resource and its
`date_modified_gmt`, so the same change seen twice — several hooks, a re-send, a backfill
page — carries the same id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from wooflow.kafka import topics
from wooflow.producers.keys import customer_key, event_id, kafka_key
from wooflow.schemas.codec import money

SCHEMA_VERSION = 1

# WooCommerce resource → (Kafka topic, Avro schema)
RESOURCE_TOPICS = {
    "order": (topics.ORDERS, "OrderEvent"),
    "customer": (topics.CUSTOMERS, "CustomerEvent"),
    "product": (topics.PRODUCTS, "ProductEvent"),
}


class NormaliseError(ValueError):
    """The payload is not a resource of the announced type (reason in the text)."""


@dataclass(frozen=True)
class Event:
    topic: str  # base topic name, without prefix
    key: str
    schema: str
    record: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.record["event_id"])


def parse_time(value: Any, tz: ZoneInfo, gmt_value: Any = None) -> datetime | None:
    """WooCommerce sends `...` (site-local) and `..._gmt` (UTC), both without an offset."""
    if gmt_value:
        try:
            return datetime.fromisoformat(str(gmt_value)).replace(tzinfo=timezone.utc)
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


def _address(a: Any) -> dict[str, str]:
    a = a if isinstance(a, dict) else {}
    keys = ("first_name", "last_name", "company", "address_1", "address_2", "city", "state",
            "postcode", "country", "email", "phone")
    return {k: str(a.get(k) or "") for k in keys}


def _meta(items: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in items or []:
        if isinstance(m, dict) and "key" in m:
            out[str(m["key"])] = json.dumps(m.get("value"), separators=(",", ":"), default=str)
    return out


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError) as exc:
        raise NormaliseError(f"expected an integer, got {v!r}") from exc


def _envelope(store_id: str, ckey: str, resource: str, rid: Any, version: str, occurred: datetime | None,
              received: datetime, source: str, topic: str, tz_name: str) -> dict[str, Any]:
    return {
        "event_id": event_id(store_id, resource, rid, version),
        "store_id": store_id,
        "customer_key": ckey,
        "occurred_at": occurred or received,
        "received_at": received,
        "source": source,
        "schema_version": SCHEMA_VERSION,
        "topic": topic,
        "store_timezone": tz_name,
    }


def order_record(o: dict[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    created = parse_time(o.get("date_created"), tz, o.get("date_created_gmt"))
    modified = parse_time(o.get("date_modified"), tz, o.get("date_modified_gmt")) or created
    if created is None:
        raise NormaliseError("order without date_created")
    items = []
    subtotal = money(0)
    for li in o.get("line_items") or []:
        line_subtotal = money(li.get("subtotal"))
        subtotal += line_subtotal
        items.append({
            "id": _int(li.get("id")),
            "product_id": _int(li.get("product_id")),
            "variation_id": _int(li.get("variation_id")),
            "name": str(li.get("name") or ""),
            "sku": str(li.get("sku") or ""),
            "quantity": _int(li.get("quantity")),
            "price": money(li.get("price")),
            "total": money(li.get("total")),
            "category_ids": [int(c) for c in li.get("category_ids", [])] if isinstance(li.get("category_ids"), list) else [],
        })
    return {
        "id": _int(o.get("id")),
        "number": str(o.get("number") or o.get("id")),
        "status": str(o.get("status") or ""),
        "currency": str(o.get("currency") or ""),
        "total": money(o.get("total")),
        "subtotal": subtotal,
        "total_tax": money(o.get("total_tax")),
        "shipping_total": money(o.get("shipping_total")),
        "discount_total": money(o.get("discount_total")),
        "customer_id": _int(o.get("customer_id")),
        "billing": _address(o.get("billing")),
        "shipping": _address(o.get("shipping")),
        "payment_method": str(o.get("payment_method") or ""),
        "payment_method_title": str(o.get("payment_method_title") or ""),
        "shipping_methods": [str(s.get("method_id") or "") for s in o.get("shipping_lines") or [] if isinstance(s, dict)],
        "line_items": items,
        "coupon_codes": [str(c.get("code") or "") for c in o.get("coupon_lines") or [] if isinstance(c, dict)],
        "created_via": str(o.get("created_via") or ""),
        "customer_note": str(o.get("customer_note") or ""),
        "date_created": created,
        "date_modified": modified,
        "date_paid": parse_time(o.get("date_paid"), tz, o.get("date_paid_gmt")),
        "date_completed": parse_time(o.get("date_completed"), tz, o.get("date_completed_gmt")),
        "meta": _meta(o.get("meta_data")),
    }


def customer_record(c: dict[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    created = parse_time(c.get("date_created"), tz, c.get("date_created_gmt"))
    modified = parse_time(c.get("date_modified"), tz, c.get("date_modified_gmt")) or created
    if created is None:
        raise NormaliseError("customer without date_created")
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


def product_record(p: dict[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    modified = parse_time(p.get("date_modified"), tz, p.get("date_modified_gmt")) or parse_time(
        p.get("date_created"), tz, p.get("date_created_gmt"))
    if modified is None:
        raise NormaliseError("product without dates")
    price = p.get("price")
    return {
        "id": _int(p.get("id")),
        "name": str(p.get("name") or ""),
        "sku": str(p.get("sku") or ""),
        "type": str(p.get("type") or "simple"),
        "status": str(p.get("status") or ""),
        "price": money(price) if price not in (None, "") else None,
        "categories": [{"id": _int(c.get("id")), "name": str(c.get("name") or ""), "slug": str(c.get("slug") or "")}
                       for c in p.get("categories") or [] if isinstance(c, dict)],
        "tags": [str(t.get("name") or t.get("slug") or "") for t in p.get("tags") or [] if isinstance(t, dict)],
        "stock_status": str(p.get("stock_status") or ""),
        "permalink": str(p.get("permalink") or ""),
        "date_modified": modified,
    }


def _version(payload: dict[str, Any], event: str) -> str:
    """What makes this change unique: the modification time, or the deletion."""
    if event == "deleted":
        return f"deleted:{payload.get('date_modified_gmt') or ''}"
    return str(payload.get("date_modified_gmt") or payload.get("date_modified") or payload.get("date_created_gmt") or "")


def normalise(store_id: str, tz_name: str, wc_topic: str, payload: dict[str, Any], *, source: str,
              received_at: datetime, raw: str | None = None) -> list[Event]:
    """One WooCommerce topic + resource JSON → the events to produce (may be empty)."""
    resource, _, event = wc_topic.partition(".")
    if resource not in RESOURCE_TOPICS:
        return []
    tz = ZoneInfo(tz_name)
    topic, schema = RESOURCE_TOPICS[resource]
    rid = _int(payload.get("id"))
    if rid <= 0:
        raise NormaliseError(f"{wc_topic} payload without an id")
    deleted = event == "deleted"

    if resource == "order":
        order = None if deleted else order_record(payload, tz)
        ckey = customer_key(order["customer_id"] if order else None,
                            order["billing"]["email"] if order else None, fallback=f"o{rid}")
        occurred = order["date_modified"] if order else received_at
        env = _envelope(store_id, ckey, resource, rid, _version(payload, event), occurred, received_at, source,
                        wc_topic, tz_name)
        record = env | {"order_id": rid, "action": event, "order": order, "previous_status": None, "raw_json": raw}
    elif resource == "customer":
        customer = None if deleted else customer_record(payload, tz)
        ckey = customer_key(rid, None)
        occurred = customer["date_modified"] if customer else received_at
        env = _envelope(store_id, ckey, resource, rid, _version(payload, event), occurred, received_at, source,
                        wc_topic, tz_name)
        record = env | {"customer_id": rid, "action": event, "customer": customer, "raw_json": raw}
    else:
        product = None if deleted else product_record(payload, tz)
        ckey = f"p{rid}"
        occurred = product["date_modified"] if product else received_at
        env = _envelope(store_id, ckey, resource, rid, _version(payload, event), occurred, received_at, source,
                        wc_topic, tz_name)
        record = env | {"product_id": rid, "action": event, "product": product, "raw_json": raw}
    return [Event(topic, kafka_key(store_id, ckey), schema, record)]
