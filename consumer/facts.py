"""The facts conditions are evaluated against: fields of the event plus customer state."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from wooflow.consumer.conditions import geo_scopes

Facts = dict[str, Any]


def order_facts(order: dict[str, Any]) -> Facts:
    billing = order.get("billing") or {}
    shipping = order.get("shipping") or {}
    billing_country = billing.get("country") or ""
    shipping_country = shipping.get("country") or billing_country
    items = order.get("line_items") or []
    product_ids: list[int] = []
    categories: list[str] = []
    for li in items:
        product_ids.append(li["product_id"])
        if li.get("variation_id"):
            product_ids.append(li["variation_id"])
        categories.extend(str(c) for c in li.get("category_ids") or [])
        categories.extend(li.get("category_slugs") or [])
    return {
        "order_total": order.get("total"),
        "order_status": order.get("status"),
        "item_count": sum(int(li.get("quantity") or 0) for li in items),
        "billing_country": billing_country,
        "shipping_country": shipping_country,
        "geo_scope": geo_scopes(shipping_country),
        "customer_email": billing.get("email") or "",
        "payment_method": order.get("payment_method") or "",
        "shipping_method": list(order.get("shipping_methods") or []),
        "product_id": product_ids,
        "category": categories,
        "currency": order.get("currency") or "",
        "coupon_code": list(order.get("coupon_codes") or []),
    }


def state_facts(state: dict[str, Any], currency: str = "", now: datetime | None = None) -> Facts:
    if not state:
        return {"order_count": 0, "total_spent": Decimal(0), "average_order_value": Decimal(0), "points": 0,
                "tags": [], "tier": ""}
    now = now or datetime.now(timezone.utc)
    totals = state.get("totals") or {}
    spent = Decimal(str(totals.get(currency, 0))) if currency else sum(
        (Decimal(str(v)) for v in totals.values()), Decimal(0))
    count = int(state.get("order_count") or 0)
    last = state.get("last_order_at")
    first = state.get("first_order_at")
    return {
        "order_count": count,
        "total_spent": spent,
        "average_order_value": (spent / count) if count else Decimal(0),
        "tier": state.get("tier") or "",
        "points": int(state.get("points") or 0),
        "tags": list(state.get("tags") or []),
        "days_since_last_order": (now - last).days if isinstance(last, datetime) else None,
        "first_order_date": first.date().isoformat() if isinstance(first, datetime) else None,
    }


def event_facts(schema: str, event: dict[str, Any], state: dict[str, Any]) -> Facts:
    facts: Facts = {}
    currency = ""
    if schema == "OrderEvent" and event.get("order"):
        facts.update(order_facts(event["order"]))
        currency = event["order"].get("currency") or ""
        facts["previous_status"] = event.get("previous_status")
    elif schema == "CustomerEvent" and event.get("customer"):
        c = event["customer"]
        facts.update({"customer_email": c.get("email"), "customer_role": c.get("role"),
                      "billing_country": c["billing"].get("country"),
                      "shipping_country": c["shipping"].get("country") or c["billing"].get("country"),
                      "geo_scope": geo_scopes(c["shipping"].get("country") or c["billing"].get("country"))})
    facts.update(state_facts(state, currency))
    return facts
