"""Storefront events → `carts` (one per session: cart_updated / checkout_started /
email_captured / login) and `storefront_activity` (product views, category views,
searches), what the cart and behaviour triggers look at. Guests become reachable once an
email is captured (customer key g<email hash>).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import Connection, text

from wooflow.producers.keys import email_hash
from wooflow.scheduler.guests import CUSTOMER_KEY
from wooflow.schemas.types import CartItem, StorefrontEvent

CART_EVENTS = ("cart_updated", "checkout_started")
LINK_EVENTS = ("email_captured", "login")
ACTIVITY_EVENTS = ("product_viewed", "category_viewed", "search")

_REACHABLE = re.compile(r"^(c\d+|g[0-9a-f]{8,})$")


def reachable_key(customer_id: Any, email: Any, fallback: Any = None) -> str | None:
    """The customer key a workflow can address: c<id>, or g<email hash> for guests — unless
    the event is a registered customer's already (`fallback` c<id>: the bridge found the
    account of the email)."""
    try:
        cid = int(customer_id or 0)
    except (TypeError, ValueError):
        cid = 0
    if cid > 0:
        return f"c{cid}"
    if CUSTOMER_KEY.match(str(fallback or "")):
        return str(fallback)
    if email and str(email).strip() and "@" in str(email):
        return f"g{email_hash(str(email))}"
    fb = str(fallback or "")
    return fb if _REACHABLE.match(fb) else None


class StoredItem(TypedDict):
    """A cart line as `abandoned_carts.items` keeps it (JSON: the price as text)."""

    product_id: int
    variation_id: int
    quantity: int
    name: str
    price: str | None


def _items(cart: Sequence[CartItem]) -> list[StoredItem]:
    out: list[StoredItem] = []
    for it in cart:
        pid, qty = int(it.get("product_id") or 0), int(it.get("quantity") or 0)
        if pid and qty > 0:
            price = it.get("price")
            out.append({"product_id": pid, "variation_id": int(it.get("variation_id") or 0), "quantity": qty,
                        "name": str(it.get("name") or ""), "price": str(price) if price is not None else None})
    return out


# A session's events can arrive out of order (before an email is captured they are keyed
# by session, after it by the customer, so they may sit on different partitions): the
# items come from the newest cart event (`items_at`), and activity after an abandoned or
# ordered cart starts a new episode, whose abandonment fires a new sequence.
_UPSERT_CART = text("""
INSERT INTO carts AS c (store_id, session_id, customer_key, customer_id, email, first_name, items, total, currency,
                        status, last_activity_at, items_at, token)
VALUES (:store, :session, :ckey, :cid, :email, :first_name, CAST(:items AS jsonb), :total, :currency,
        CASE WHEN jsonb_array_length(CAST(:items AS jsonb)) = 0 THEN 'emptied' ELSE 'active' END, :at, :at, :token)
ON CONFLICT (store_id, session_id) DO UPDATE SET
    customer_key = COALESCE(EXCLUDED.customer_key, c.customer_key),
    customer_id = COALESCE(EXCLUDED.customer_id, c.customer_id),
    email = COALESCE(EXCLUDED.email, c.email),
    first_name = CASE WHEN EXCLUDED.first_name <> '' THEN EXCLUDED.first_name ELSE c.first_name END,
    items = CASE WHEN c.items_at IS NULL OR EXCLUDED.items_at >= c.items_at THEN EXCLUDED.items ELSE c.items END,
    total = CASE WHEN c.items_at IS NULL OR EXCLUDED.items_at >= c.items_at THEN EXCLUDED.total ELSE c.total END,
    currency = CASE WHEN c.items_at IS NULL OR EXCLUDED.items_at >= c.items_at THEN EXCLUDED.currency
                    ELSE c.currency END,
    status = CASE
        WHEN c.status NOT IN ('active', 'emptied') AND EXCLUDED.last_activity_at > c.last_activity_at
            THEN EXCLUDED.status
        WHEN c.status IN ('active', 'emptied') AND (c.items_at IS NULL OR EXCLUDED.items_at >= c.items_at)
            THEN EXCLUDED.status
        ELSE c.status END,
    abandoned_at = CASE WHEN c.status NOT IN ('active', 'emptied') AND EXCLUDED.last_activity_at > c.last_activity_at
                        THEN NULL ELSE c.abandoned_at END,
    abandon_event_id = CASE WHEN c.status NOT IN ('active', 'emptied')
                                 AND EXCLUDED.last_activity_at > c.last_activity_at
                            THEN NULL ELSE c.abandon_event_id END,
    items_at = GREATEST(c.items_at, EXCLUDED.items_at),
    last_activity_at = GREATEST(c.last_activity_at, EXCLUDED.last_activity_at),
    updated_at = now()
""")

_LINK_CART = text("""
INSERT INTO carts AS c (store_id, session_id, customer_key, customer_id, email, first_name, items, status,
                        last_activity_at, token)
VALUES (:store, :session, :ckey, :cid, :email, :first_name, '[]'::jsonb, 'active', :at, :token)
ON CONFLICT (store_id, session_id) DO UPDATE SET
    customer_key = COALESCE(EXCLUDED.customer_key, c.customer_key),
    customer_id = COALESCE(EXCLUDED.customer_id, c.customer_id),
    email = COALESCE(EXCLUDED.email, c.email),
    first_name = CASE WHEN EXCLUDED.first_name <> '' THEN EXCLUDED.first_name ELSE c.first_name END,
    -- typing an email at checkout is activity on an open cart (not a new episode of a closed one)
    last_activity_at = CASE WHEN c.status = 'active' THEN GREATEST(c.last_activity_at, EXCLUDED.last_activity_at)
                            ELSE c.last_activity_at END,
    updated_at = now()
""")

_LINK_ACTIVITY = text("""
UPDATE storefront_activity SET customer_key = :ckey
WHERE store_id = :store AND session_id = :session AND customer_key <> :ckey
""")

_ACTIVITY = text("""
INSERT INTO storefront_activity (event_id, store_id, customer_key, session_id, kind, subject, category, occurred_at)
VALUES (:event_id, :store, :ckey, :session, :kind, :subject, :category, :at)
ON CONFLICT (event_id) DO NOTHING
""")


def record_storefront(conn: Connection, ev: StorefrontEvent) -> None:
    store, session = ev["store_id"], str(ev.get("session_id") or "")
    kind = str(ev.get("event_type") or "")
    at = ev["occurred_at"]
    email = (ev.get("email") or "").strip() or None
    ckey = reachable_key(ev.get("customer_id"), email, ev.get("customer_key"))
    cid = ev.get("customer_id") or None
    props = ev.get("properties") or {}
    first_name = str(props.get("first_name") or "")
    if kind in CART_EVENTS:
        if not session:
            raise ValueError(f"{kind} without a session_id")
        items = _items(ev.get("cart") or [])
        total = ev.get("cart_total")
        if total is None:
            total = sum((Decimal(i["price"] or 0) * i["quantity"] for i in items), Decimal(0))
        conn.execute(_UPSERT_CART, {"store": store, "session": session, "ckey": ckey, "cid": cid, "email": email,
                                    "first_name": first_name, "items": json.dumps(items), "total": total,
                                    "currency": str(ev.get("currency") or ""), "at": at,
                                    "token": secrets.token_urlsafe(16)})
    elif kind in LINK_EVENTS:
        if not session or not ckey:
            return
        conn.execute(_LINK_CART, {"store": store, "session": session, "ckey": ckey, "cid": cid, "email": email,
                                  "first_name": first_name, "at": at, "token": secrets.token_urlsafe(16)})
        conn.execute(_LINK_ACTIVITY, {"store": store, "session": session, "ckey": ckey})
    if ckey is not None and session and kind in CART_EVENTS:
        conn.execute(_LINK_ACTIVITY, {"store": store, "session": session, "ckey": ckey})
    if kind in ACTIVITY_EVENTS:
        if kind == "search":
            subject = str(ev.get("query") or "").strip()[:200]
            if not subject:
                return
        elif kind == "product_viewed":
            if ev.get("product_id") is None:
                return
            subject = str(ev["product_id"])
        else:
            if ev.get("category_id") is None:
                return
            subject = str(ev["category_id"])
        category = str(ev["category_id"]) if ev.get("category_id") is not None else ""
        conn.execute(_ACTIVITY, {"event_id": ev["event_id"], "store": store,
                                 "ckey": ckey or f"s:{session}", "session": session, "kind": kind,
                                 "subject": subject, "category": category, "at": at})
