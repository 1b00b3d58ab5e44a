"""GET /v1/search: a store's real orders and customers by order number, customer id or email
address — how the console's dry run picks what to simulate on, instead of typed ids.

Only what wooflow already keeps in PostgreSQL, through indexed lookups, and only the
caller's store:
- orders: `order_state` (the rule consumer's, for stores whose rules read order state) and
  `customer_orders` (the activity reader's purchases), by order id or by customer key, or
  the newest by number when the query is empty;
- customers: `customer_state` by key — `c<id>` for a number, and for an email address the
  guest key (`g<hash>` of the address, producers/keys.py) and the account the bridge
  linked to it (`customer_identities`, keyed by the same hash).

Names are not searched: wooflow keeps no customer names. Addresses match whole (the index
holds their hashes), case and surrounding spaces aside.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, TextClause, text

from wooflow.api.auth import CurrentStore
from wooflow.producers.keys import email_hash

router = APIRouter(prefix="/v1", tags=["search"])
LIMIT = 10
MAX_ID = 2**63 - 1
_NUMBER = re.compile(r"#?\s*(\d{1,19})")
_KEY = re.compile(r"[cg][0-9a-f]{1,40}")


class OrderHit(BaseModel):
    order_id: int
    customer_key: str
    email: str | None = Field(description="The customer's, as wooflow last saw it")
    status: str = Field(description="'' when only the purchase is known (its status is not kept)")
    total: Decimal | None
    currency: str
    created_at: datetime | None


class CustomerHit(BaseModel):
    customer_key: str = Field(description="c<id> (registered) or g<hash> (a guest, by email)")
    customer_id: int | None = Field(description="Registered customers only: what a dry run on a customer takes")
    email: str | None
    order_count: int
    last_order_at: datetime | None


class Found(BaseModel):
    query: str
    orders: list[OrderHit] = Field(description="Newest first")
    customers: list[CustomerHit]


# order_state (with the customer's email) and customer_orders (a purchase appears under the
# order's key and its billing email's guest key: the order's own key first), one row per order
_ORDERS = """
SELECT DISTINCT ON (order_id) * FROM (
    SELECT o.order_id, o.customer_key, cs.email, o.status, o.total, o.currency,
           CASE WHEN o.created_ms > 0 THEN to_timestamp(o.created_ms / 1000.0) END AS created_at, 0 AS pref
    FROM order_state o
    LEFT JOIN customer_state cs ON cs.store_id = o.store_id AND cs.customer_key = o.customer_key
    WHERE o.store_id = :store AND {where_state}
    UNION ALL
    SELECT co.order_id, co.customer_key, cs.email, '' AS status, co.revenue, co.currency, co.ordered_at,
           CASE WHEN co.customer_key LIKE 'g%' THEN 2 ELSE 1 END
    FROM customer_orders co
    LEFT JOIN customer_state cs ON cs.store_id = co.store_id AND cs.customer_key = co.customer_key
    WHERE co.store_id = :store AND {where_orders}
) AS found
ORDER BY order_id DESC, pref
"""
_RECENT = text(_ORDERS.format(
    where_state="o.order_id IN (SELECT order_id FROM order_state WHERE store_id = :store ORDER BY order_id DESC "
                "LIMIT :limit)",
    where_orders="co.order_id IN (SELECT order_id FROM customer_orders WHERE store_id = :store "
                 "ORDER BY order_id DESC LIMIT :limit)") + " LIMIT :limit")
_BY_NUMBER = text(_ORDERS.format(where_state="o.order_id = :number", where_orders="co.order_id = :number"))
_BY_KEYS = text(_ORDERS.format(where_state="o.customer_key = ANY(CAST(:keys AS text[]))",
                               where_orders="co.customer_key = ANY(CAST(:keys AS text[]))") + " LIMIT :limit")

_CUSTOMERS = text("""
SELECT customer_key, customer_id, email, order_count, last_order_at FROM customer_state
WHERE store_id = :store AND customer_key = ANY(CAST(:keys AS text[])) AND merged_into IS NULL
ORDER BY customer_key
""")
_LINKED = text("SELECT customer_id FROM customer_identities WHERE store_id = :store AND email_hash = :hash")


def _orders(conn: Connection, stmt: TextClause, params: dict[str, object]) -> list[OrderHit]:
    rows = conn.execute(stmt, {"limit": LIMIT, **params}).mappings().all()
    hits = [OrderHit(order_id=r["order_id"], customer_key=r["customer_key"], email=r["email"], status=r["status"],
                     total=r["total"], currency=r["currency"], created_at=r["created_at"]) for r in rows]
    return sorted(hits, key=lambda o: o.order_id, reverse=True)[:LIMIT]


def _customers(conn: Connection, store: str, keys: list[str]) -> dict[str, CustomerHit]:
    return {r.customer_key: CustomerHit(customer_key=r.customer_key, customer_id=r.customer_id, email=r.email,
                                        order_count=r.order_count, last_order_at=r.last_order_at)
            for r in conn.execute(_CUSTOMERS, {"store": store, "keys": keys})}


def _by_email(conn: Connection, store: str, q: str) -> Found:
    digest = email_hash(q)
    linked = [int(r.customer_id) for r in conn.execute(_LINKED, {"store": store, "hash": digest})]
    keys = [*(f"c{cid}" for cid in linked), f"g{digest}"]
    found = _customers(conn, store, keys)
    for cid in linked:  # an account the bridge knows by this address, not (yet) in the rule engine's state
        found.setdefault(f"c{cid}", CustomerHit(customer_key=f"c{cid}", customer_id=cid, email=q.lower(),
                                                order_count=0, last_order_at=None))
    orders = _orders(conn, _BY_KEYS, {"store": store, "keys": keys})
    for o in orders:  # the address searched is the one behind these keys, whatever the state kept
        o.email = o.email or q.lower()
    return Found(query=q, orders=orders, customers=[found[k] for k in keys if k in found])


def search_store(conn: Connection, store: str, query: str) -> Found:
    """What the store has under `query` (see the module's docstring)."""
    q = query.strip()
    number = _NUMBER.fullmatch(q)
    if not q:
        return Found(query=q, orders=_orders(conn, _RECENT, {"store": store}), customers=[])
    if "@" in q:
        return _by_email(conn, store, q)
    key = f"c{int(number.group(1))}" if number and int(number.group(1)) <= MAX_ID else q if _KEY.fullmatch(q) else ""
    if not key:
        return Found(query=q, orders=[], customers=[])
    orders = _orders(conn, _BY_NUMBER, {"store": store, "number": int(key[1:])}) if number else []
    orders += [o for o in _orders(conn, _BY_KEYS, {"store": store, "keys": [key]}) if o not in orders]
    return Found(query=q, orders=orders[:LIMIT], customers=list(_customers(conn, store, [key]).values()))


@router.get("/search", response_model=Found, summary="Find the store's orders and customers (dry-run subjects)")
def search(request: Request, who: CurrentStore,
           q: Annotated[str, Query(max_length=320, description="An order number, a customer id (42 or c42) or a "
                                                               "whole email address; empty: the newest orders")] = "",
           ) -> Found:
    engine: Engine = request.app.state.engine
    with engine.connect() as conn:
        return search_store(conn, who.store_id, q)
