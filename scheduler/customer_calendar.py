"""`customer_calendar`: a customer's first and last order, birthday, subscription renewal
and card expiry (from customer meta, scheduler/dates.py), what the time triggers look at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from wooflow.scheduler.dates import meta_dates
from wooflow.schemas.types import CustomerEvent, Order

_CALENDAR_ORDER = text("""
INSERT INTO customer_calendar AS k (store_id, customer_key, customer_id, email, first_name, last_name,
                                   first_order_at, last_order_at, last_order_id)
VALUES (:store, :ckey, :cid, :email, :first_name, :last_name, :at, :at, :order_id)
ON CONFLICT (store_id, customer_key) DO UPDATE SET
    customer_id = COALESCE(EXCLUDED.customer_id, k.customer_id),
    email = CASE WHEN EXCLUDED.email <> '' THEN EXCLUDED.email ELSE k.email END,
    first_name = CASE WHEN k.first_name = '' THEN EXCLUDED.first_name ELSE k.first_name END,
    last_name = CASE WHEN k.last_name = '' THEN EXCLUDED.last_name ELSE k.last_name END,
    first_order_at = LEAST(k.first_order_at, EXCLUDED.first_order_at),
    last_order_id = CASE WHEN k.last_order_at IS NULL OR EXCLUDED.last_order_at >= k.last_order_at
                         THEN EXCLUDED.last_order_id ELSE k.last_order_id END,
    last_order_at = GREATEST(k.last_order_at, EXCLUDED.last_order_at),
    updated_at = now()
""")

# A newer event's values replace the stored ones; scheduler/guests.py folds a guest's row
# into the customer's the other way round (the customer's own values first).
_CALENDAR_CUSTOMER = text("""
INSERT INTO customer_calendar AS k (store_id, customer_key, customer_id, email, first_name, last_name,
                                   birth_month, birth_day, renewal_at, card_expiry)
VALUES (:store, :ckey, :cid, :email, :first_name, :last_name, :birth_month, :birth_day, :renewal_at, :card_expiry)
ON CONFLICT (store_id, customer_key) DO UPDATE SET
    customer_id = COALESCE(EXCLUDED.customer_id, k.customer_id),
    email = CASE WHEN EXCLUDED.email <> '' THEN EXCLUDED.email ELSE k.email END,
    first_name = CASE WHEN EXCLUDED.first_name <> '' THEN EXCLUDED.first_name ELSE k.first_name END,
    last_name = CASE WHEN EXCLUDED.last_name <> '' THEN EXCLUDED.last_name ELSE k.last_name END,
    birth_month = COALESCE(EXCLUDED.birth_month, k.birth_month),
    birth_day = COALESCE(EXCLUDED.birth_day, k.birth_day),
    renewal_at = COALESCE(EXCLUDED.renewal_at, k.renewal_at),
    card_expiry = COALESCE(EXCLUDED.card_expiry, k.card_expiry),
    updated_at = now()
""")


def record_order_dates(conn: Connection, store: str, ckey: str, order: Order, at: datetime) -> None:
    """A purchase: the customer's first (earliest) and last (latest) order, whatever order
    the events arrive in."""
    billing = order.get("billing") or {}
    conn.execute(_CALENDAR_ORDER, {
        "store": store, "ckey": ckey, "cid": int(order.get("customer_id") or 0) or None,
        "email": str(billing.get("email") or ""), "first_name": str(billing.get("first_name") or ""),
        "last_name": str(billing.get("last_name") or ""), "at": at, "order_id": int(order["id"])})


def record_customer(conn: Connection, ev: CustomerEvent, meta_keys: dict[str, Any] | None = None) -> None:
    c = ev.get("customer")
    if not c or ev.get("action") == "deleted":
        return
    dates = meta_dates(c.get("meta") or {}, meta_keys)
    conn.execute(_CALENDAR_CUSTOMER, {
        "store": ev["store_id"], "ckey": ev["customer_key"], "cid": int(c.get("id") or 0) or None,
        "email": str(c.get("email") or ""), "first_name": str(c.get("first_name") or ""),
        "last_name": str(c.get("last_name") or ""), "birth_month": dates.get("birth_month"),
        "birth_day": dates.get("birth_day"), "renewal_at": dates.get("renewal_at"),
        "card_expiry": dates.get("card_expiry")})
