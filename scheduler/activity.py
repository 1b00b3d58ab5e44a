"""The scheduler's activity reader: what the cart, behaviour and time triggers look at.

It consumes woo.storefront, woo.orders and woo.customers in its own consumer group
(`WOOFLOW_SCHEDULER_GROUP`) and keeps, idempotently (a re-read batch changes nothing):
- `carts`: one per storefront session (cart_updated / checkout_started / email_captured /
  login). Guests become reachable once an email is captured (customer key g<email hash>);
- `storefront_activity`: product views, category views and searches;
- `customer_calendar`: first/last order, birthday, subscription renewal and card expiry
  (from customer meta, see `meta_dates`);
- cart recovery and attribution: an order by the cart's customer (or carrying the cart
  token in order meta `_wooflow_cart`) marks the cart recovered — or `ordered`, if it was
  never abandoned — and every workflow that reached the customer within the store's
  attribution window (store settings `attribution_days`, default 14) gets an
  `attributions` row with the order's revenue;
- `consents`: the marketing-consent answers events carry (the store's checkout meta key,
  a storefront `email_captured` with `marketing_consent`), once per event
  (wooflow/consent_policy.py).

One person per shopper (`People`): a guest key whose email belongs to a registered
customer (the bridge's `customer_identities`) is applied as that customer's; and the first
time a registered customer's order or customer event carries an email, what its guest key
collected before — carts, storefront activity, calendar (folded: earliest first order,
latest last order), scheduler trigger firings, attributions — moves to the customer.

Each message is applied in its own savepoint: one that cannot be applied goes to the DLQ
with the reason and the batch continues.
"""

from __future__ import annotations

import calendar as _calendar
import json
import logging
import re
import secrets
import threading
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from confluent_kafka import Message
from sqlalchemy import Connection, Engine, text

from wooflow import consent_policy, metrics
from wooflow.checkpointing import Checkpoint, run_batches
from wooflow.dlq import dead_letter
from wooflow.kafka import topics
from wooflow.kafka.config import BATCH
from wooflow.kafka.consumer import make_consumer
from wooflow.kafka.producer import Producer
from wooflow.consumer.merge import email_of, guest_key
from wooflow.producers.keys import email_hash
from wooflow.schemas.codec import DecodeError, get_codec
from wooflow.settings import Settings
from wooflow.stores import Store, StoreCache

log = logging.getLogger(__name__)

CART_EVENTS = ("cart_updated", "checkout_started")
LINK_EVENTS = ("email_captured", "login")
ACTIVITY_EVENTS = ("product_viewed", "category_viewed", "search")
NOT_PURCHASES = frozenset({"failed", "cancelled", "checkout-draft", "trash", "refunded", "draft", "auto-draft"})
DEFAULT_ATTRIBUTION_DAYS = 14

_REACHABLE = re.compile(r"^(c\d+|g[0-9a-f]{8,})$")
_CUSTOMER = re.compile(r"^c\d+$")

DEFAULT_META_KEYS = {
    "birthday": ("birthday", "birth_date", "date_of_birth", "billing_birthday", "billing_birth_date", "dob",
                 "_wooflow_birthday"),
    "renewal": ("wooflow_next_renewal", "next_payment_date", "_schedule_next_payment", "subscription_next_payment"),
    "card_expiry": ("wooflow_card_expiry", "card_expiry", "_card_expiry", "payment_card_expiry"),
}


# --- small parsers ---------------------------------------------------------------------------

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
    if _CUSTOMER.match(str(fallback or "")):
        return str(fallback)
    if email and str(email).strip() and "@" in str(email):
        return f"g{email_hash(str(email))}"
    fb = str(fallback or "")
    return fb if _REACHABLE.match(fb) else None


def _meta_value(meta: dict[str, str], names: tuple[str, ...] | list[str]) -> Any:
    for name in names:
        if name in meta:
            raw = meta[name]
            try:
                return json.loads(raw)
            except (TypeError, ValueError):
                return raw
    return None


def parse_birthday(v: Any) -> tuple[int, int] | None:
    """(month, day) from '1990-05-17', '05-17', '--05-17', '17.05.1990', '17/05/1990' or a dict."""
    if isinstance(v, dict):
        try:
            return _valid_md(int(v.get("month")), int(v.get("day")))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    s = str(v or "").strip()
    if not s:
        return None
    m = re.match(r"^(?:\d{4}-|--)?(\d{1,2})-(\d{1,2})(?:[T ].*)?$", s)
    if m:
        return _valid_md(int(m.group(1)), int(m.group(2)))
    m = re.match(r"^(\d{1,2})[./](\d{1,2})(?:[./]\d{2,4})?$", s)
    if m:  # day first, as European stores write it
        return _valid_md(int(m.group(2)), int(m.group(1)))
    return None


def _valid_md(month: int, day: int) -> tuple[int, int] | None:
    if 1 <= month <= 12 and 1 <= day <= _calendar.monthrange(2000, month)[1]:  # 2000: Feb 29 is valid
        return month, day
    return None


def parse_instant(v: Any) -> datetime | None:
    """WooCommerce dates: '2026-05-01 10:00:00' (GMT for _schedule_* meta), ISO, or a unix time."""
    if v in (None, "", 0, "0"):
        return None
    if isinstance(v, (int, float)) or (isinstance(v, str) and v.strip().isdigit()):
        return datetime.fromtimestamp(float(v), timezone.utc)
    try:
        d = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def parse_card_expiry(v: Any) -> date | None:
    """Last day of the expiry month from 'MM/YY', 'MM/YYYY', 'YYYY-MM' or {"month","year"}."""
    month = year = None
    if isinstance(v, dict):
        month, year = v.get("month") or v.get("expiry_month"), v.get("year") or v.get("expiry_year")
    else:
        s = str(v or "").strip()
        m = re.match(r"^(\d{1,2})\s*/\s*(\d{2}|\d{4})$", s)
        if m:
            month, year = m.group(1), m.group(2)
        else:
            m = re.match(r"^(\d{4})-(\d{1,2})(?:-\d{1,2})?$", s)
            if m:
                year, month = m.group(1), m.group(2)
    try:
        mo, yr = int(month), int(year)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if yr < 100:
        yr += 2000
    if not 1 <= mo <= 12:
        return None
    return date(yr, mo, _calendar.monthrange(yr, mo)[1])


def meta_dates(meta: dict[str, str], keys: dict[str, Any] | None = None) -> dict[str, Any]:
    """Birthday, renewal and card expiry from customer meta (store settings `meta_keys`
    may name the keys, e.g. {"birthday": "my_birthday_field"})."""
    given = keys or {}
    names = {k: ([given[k]] if isinstance(given.get(k), str) else list(given.get(k) or v))
             for k, v in DEFAULT_META_KEYS.items()}
    out: dict[str, Any] = {}
    b = parse_birthday(_meta_value(meta, names["birthday"]))
    if b:
        out["birth_month"], out["birth_day"] = b
    r = parse_instant(_meta_value(meta, names["renewal"]))
    if r:
        out["renewal_at"] = r
    c = parse_card_expiry(_meta_value(meta, names["card_expiry"]))
    if c:
        out["card_expiry"] = c
    return out


def _items(cart: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for it in cart or []:
        pid, qty = int(it.get("product_id") or 0), int(it.get("quantity") or 0)
        if pid and qty > 0:
            price = it.get("price")
            out.append({"product_id": pid, "variation_id": int(it.get("variation_id") or 0), "quantity": qty,
                        "name": str(it.get("name") or ""), "price": str(price) if price is not None else None})
    return out


# --- SQL ---------------------------------------------------------------------------------------

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

# Carts this order converts: the customer's (or the one whose token the order carries)
# with activity no later than the order.
_CONVERT_CARTS = text("""
UPDATE carts SET
    status = CASE WHEN status = 'abandoned' THEN 'recovered' ELSE 'ordered' END,
    recovered_at = :at, recovered_order_id = :order_id, updated_at = now()
WHERE store_id = :store AND status IN ('active', 'abandoned')
  AND (customer_key = :ckey OR (CAST(:token AS text) IS NOT NULL AND token = :token))
  AND last_activity_at <= :at
RETURNING session_id, status, abandon_event_id
""")

# Workflows that reached the customer (or the guest they were, by the order's billing
# email) within the attribution window before the order.
_TOUCHES = text("""
SELECT DISTINCT ON (rule_id) rule_id, event_id, emitted_at
FROM scheduled_steps
WHERE store_id = :store AND customer_key = ANY(CAST(:keys AS text[])) AND status = 'emitted'
  AND emitted_at <= :at AND emitted_at >= :since
ORDER BY rule_id, emitted_at DESC
""")

_ATTRIBUTE = text("""
INSERT INTO attributions (store_id, rule_id, order_id, customer_key, event_id, revenue, currency, kind, cart_session,
                          ordered_at)
VALUES (:store, :rule_id, :order_id, :ckey, :event_id, :revenue, :currency, :kind, :cart_session, :at)
ON CONFLICT (store_id, rule_id, order_id) DO NOTHING
""")


# A guest's activity becomes the customer's (People.link).
_LINK_GUEST = [text(q) for q in ("""
UPDATE carts SET customer_key = :ckey, customer_id = COALESCE(customer_id, :cid), updated_at = now()
WHERE store_id = :store AND customer_key = :gkey
""", """
UPDATE storefront_activity SET customer_key = :ckey WHERE store_id = :store AND customer_key = :gkey
""", """
UPDATE attributions SET customer_key = :ckey WHERE store_id = :store AND customer_key = :gkey
""", """
UPDATE trigger_firings t SET customer_key = :ckey
WHERE store_id = :store AND customer_key = :gkey AND NOT EXISTS (
    SELECT 1 FROM trigger_firings x WHERE x.rule_id = t.rule_id AND x.customer_key = :ckey AND x.period = t.period)
""", """
INSERT INTO customer_calendar AS k (store_id, customer_key, customer_id, email, first_name, last_name, first_order_at,
                                   last_order_at, last_order_id, birth_month, birth_day, renewal_at, card_expiry)
SELECT store_id, :ckey, :cid, email, first_name, last_name, first_order_at, last_order_at, last_order_id,
       birth_month, birth_day, renewal_at, card_expiry
FROM customer_calendar WHERE store_id = :store AND customer_key = :gkey
ON CONFLICT (store_id, customer_key) DO UPDATE SET
    customer_id = COALESCE(k.customer_id, EXCLUDED.customer_id),
    email = CASE WHEN k.email <> '' THEN k.email ELSE EXCLUDED.email END,
    first_name = CASE WHEN k.first_name <> '' THEN k.first_name ELSE EXCLUDED.first_name END,
    last_name = CASE WHEN k.last_name <> '' THEN k.last_name ELSE EXCLUDED.last_name END,
    first_order_at = LEAST(k.first_order_at, EXCLUDED.first_order_at),
    last_order_id = CASE WHEN k.last_order_at IS NULL OR EXCLUDED.last_order_at > k.last_order_at
                         THEN EXCLUDED.last_order_id ELSE k.last_order_id END,
    last_order_at = GREATEST(k.last_order_at, EXCLUDED.last_order_at),
    birth_month = COALESCE(k.birth_month, EXCLUDED.birth_month),
    birth_day = COALESCE(k.birth_day, EXCLUDED.birth_day),
    renewal_at = COALESCE(k.renewal_at, EXCLUDED.renewal_at),
    card_expiry = COALESCE(k.card_expiry, EXCLUDED.card_expiry),
    updated_at = now()
""", """
DELETE FROM customer_calendar WHERE store_id = :store AND customer_key = :gkey
""")]

_IDENTITIES = text("""
SELECT ci.store_id, ci.email_hash, ci.customer_id FROM customer_identities ci
JOIN unnest(CAST(:stores AS text[]), CAST(:hashes AS text[])) AS u(s, h) ON ci.store_id = u.s AND ci.email_hash = u.h
""")


class People:
    """One person per shopper for the activity tables: guest keys of registered customers,
    and the moves when a customer's guest past shows up. Per process: the customers known
    for guest emails (the bridge's identity map; positive answers only) and the links
    already moved (moving again changes nothing, so a restart only repeats them once)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._owner: dict[tuple[str, str], int] = {}  # (store, email hash) → customer id
        self._linked: set[tuple[str, str, str]] = set()  # (store, guest key, customer key)

    def prepare(self, conn: Connection, events: list[tuple[str, dict[str, Any]]]) -> None:
        """One query for the batch: the customers of its guest keys and of its customers' emails."""
        need: set[tuple[str, str]] = set()
        for schema, ev in events:
            store, key = str(ev.get("store_id") or ""), str(ev.get("customer_key") or "")
            gk = key if key[:1] == "g" else self._unlinked(schema, ev, store, key)
            if gk is not None and (store, gk[1:]) not in self._owner:
                need.add((store, gk[1:]))
        if not need:
            return
        if len(self._owner) + len(need) > self.max_entries:
            self._owner.clear()
        pairs = sorted(need)
        for store, h, cid in conn.execute(_IDENTITIES, {"stores": [p[0] for p in pairs],
                                                        "hashes": [p[1] for p in pairs]}):
            self._owner[(store, h)] = int(cid)

    def _unlinked(self, schema: str, ev: dict[str, Any], store: str, key: str) -> str | None:
        """The guest key of a registered customer's email, if its past was not moved yet."""
        if not _CUSTOMER.match(key):
            return None
        email = email_of(schema, ev)
        gk = guest_key(email) if email else None
        return gk if gk is not None and (store, gk, key) not in self._linked else None

    def person(self, conn: Connection, schema: str, ev: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The event as the person's: a guest key of a known customer becomes `c<id>`; a
        customer's first event with an email moves that email's guest past over first.
        Also returns the link to pass to `linked` once the caller's savepoint held."""
        store, key = str(ev.get("store_id") or ""), str(ev.get("customer_key") or "")
        if key[:1] == "g":
            cid = self._owner.get((store, key[1:]))
            return (ev if cid is None else {**ev, "customer_key": f"c{cid}"}), None
        gk = self._unlinked(schema, ev, store, key)
        if gk is None:
            return ev, None
        owner = self._owner.get((store, gk[1:]))
        if owner is None or f"c{owner}" == key:  # an email another account owns stays theirs
            params = {"store": store, "gkey": gk, "ckey": key, "cid": int(key[1:])}
            for q in _LINK_GUEST:
                conn.execute(q, params)
        return ev, (store, gk, key)

    def linked(self, link: Any) -> None:
        if link is not None:
            if len(self._linked) > self.max_entries:
                self._linked.clear()
            self._linked.add(link)


# --- applying events --------------------------------------------------------------------------

def apply_storefront(conn: Connection, ev: dict[str, Any]) -> None:
    store, session = ev["store_id"], str(ev.get("session_id") or "")
    kind = str(ev.get("event_type") or "")
    at = ev["occurred_at"]
    email = (ev.get("email") or "").strip() or None
    ckey = reachable_key(ev.get("customer_id"), email, ev.get("customer_key"))
    cid = int(ev["customer_id"]) if ev.get("customer_id") else None
    props = ev.get("properties") or {}
    first_name = str(props.get("first_name") or "")
    if kind in CART_EVENTS:
        if not session:
            raise ValueError(f"{kind} without a session_id")
        items = _items(ev.get("cart"))
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


def _order_token(order: dict[str, Any]) -> str | None:
    raw = (order.get("meta") or {}).get("_wooflow_cart")
    if raw is None:
        return None
    try:
        v = json.loads(raw)
    except (TypeError, ValueError):
        v = raw
    return str(v) if v else None


def apply_order(conn: Connection, ev: dict[str, Any], attribution_days: int = DEFAULT_ATTRIBUTION_DAYS) -> None:
    order = ev.get("order")
    if not order or ev.get("action") == "deleted":
        return
    status = str(order.get("status") or "").removeprefix("wc-")
    if status in NOT_PURCHASES:
        return
    store, ckey = ev["store_id"], ev["customer_key"]
    at = order["date_created"]
    billing = order.get("billing") or {}
    conn.execute(_CALENDAR_ORDER, {
        "store": store, "ckey": ckey, "cid": int(order.get("customer_id") or 0) or None,
        "email": str(billing.get("email") or ""), "first_name": str(billing.get("first_name") or ""),
        "last_name": str(billing.get("last_name") or ""), "at": at, "order_id": int(order["id"])})
    carts = [dict(r) for r in conn.execute(_CONVERT_CARTS, {"store": store, "ckey": ckey, "at": at,
                                                            "order_id": int(order["id"]),
                                                            "token": _order_token(order)}).mappings()]
    for c in carts:
        metrics.carts_total.labels(store, c["status"]).inc()
    recovered = {c["abandon_event_id"]: c["session_id"] for c in carts if c["status"] == "recovered"}
    since = at - timedelta(days=attribution_days)
    keys = [ckey]
    if ckey.startswith("c") and billing.get("email"):
        keys.append(guest_key(str(billing["email"])))
    for t in conn.execute(_TOUCHES, {"store": store, "keys": keys, "at": at, "since": since}).mappings():
        cart_session = recovered.get(t["event_id"])
        kind = "cart_recovery" if cart_session else "conversion"
        res = conn.execute(_ATTRIBUTE, {"store": store, "rule_id": int(t["rule_id"]), "order_id": int(order["id"]),
                                        "ckey": ckey, "event_id": t["event_id"], "revenue": order.get("total") or 0,
                                        "currency": str(order.get("currency") or ""), "kind": kind,
                                        "cart_session": cart_session, "at": at})
        if res.rowcount:
            metrics.attributed_orders.labels(store, kind).inc()


def apply_customer(conn: Connection, ev: dict[str, Any], meta_keys: dict[str, Any] | None = None) -> None:
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


def apply_event(conn: Connection, schema: str, ev: dict[str, Any], stores: StoreCache | None = None) -> None:
    settings: dict[str, Any] = {}
    store = None
    if stores is not None:
        store = stores.get(ev["store_id"])
        settings = dict(store.settings) if store else {}
    record_consent(conn, schema, ev, store)
    if schema == "StorefrontEvent":
        apply_storefront(conn, ev)
    elif schema == "OrderEvent":
        apply_order(conn, ev, int(settings.get("attribution_days") or DEFAULT_ATTRIBUTION_DAYS))
    elif schema == "CustomerEvent":
        apply_customer(conn, ev, settings.get("meta_keys"))


def record_consent(conn: Connection, schema: str, ev: dict[str, Any], store: Store | None) -> None:
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
        decoded: list[tuple[Message, str, dict[str, Any]]] = []
        for msg in batch:
            try:
                schema, ev = self.codec.decode(msg.value() or b"", msg.topic())
            except DecodeError as exc:
                dead_letter(self.producer, self.codec, self.settings, msg, stage="scheduler", reason="undecodable",
                            error=str(exc))
                continue
            metrics.events_consumed.labels("scheduler", msg.topic(), str(ev.get("store_id", ""))).inc()
            decoded.append((msg, schema, ev))
        with self.engine.begin() as conn:
            self.people.prepare(conn, [(schema, ev) for _, schema, ev in decoded])
            for msg, schema, ev in decoded:
                try:
                    with conn.begin_nested():
                        person, link = self.people.person(conn, schema, ev)
                        apply_event(conn, schema, person, self.stores)
                    self.people.linked(link)
                except Exception as exc:  # a poison event must not stall the partition
                    log.exception("could not apply %s", schema)
                    dead_letter(self.producer, self.codec, self.settings, msg, stage="scheduler",
                                reason="apply_error", error=f"{type(exc).__name__}: {exc}",
                                store_id=str(ev.get("store_id", "")))

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(self.settings, self.settings.scheduler_group,
                                 [self.settings.topic(t) for t in (topics.STOREFRONT, topics.ORDERS, topics.CUSTOMERS)])
        checkpoint = Checkpoint(consumer, self.producer)
        self.ready.set()
        log.info("scheduler activity reader running (group %s)", self.settings.scheduler_group)
        run_batches(consumer, checkpoint, self.handle, stop, batch_size=self.settings.batch_size,
                    timeout=self.settings.batch_timeout_s)
