"""An order converts carts and is attributed to workflows.

An order by the cart's customer (or carrying the cart token in order meta `_wooflow_cart`)
marks the cart recovered — or `ordered`, if it was never abandoned — and every workflow
that reached the customer within the store's attribution window (store settings
`attribution_days`, default 14) gets an `attributions` row with the order's revenue.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import Connection, text

from wooflow import metrics
from wooflow.consumer.merge import guest_key
from wooflow.schemas.types import Order

DEFAULT_ATTRIBUTION_DAYS = 14

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


def _order_token(order: Order) -> str | None:
    raw = (order.get("meta") or {}).get("_wooflow_cart")
    if raw is None:
        return None
    try:
        v = json.loads(raw)
    except (TypeError, ValueError):
        v = raw
    return str(v) if v else None


def person_keys(ckey: str, order: Order) -> list[str]:
    """The order's customer and, for a registered customer, the guest they were (by the
    billing email): whose touches an order can be credited to."""
    email = (order.get("billing") or {}).get("email")
    return [ckey, guest_key(str(email))] if ckey.startswith("c") and email else [ckey]


def record_conversion(conn: Connection, store: str, ckey: str, order: Order, at: datetime,
                      attribution_days: int = DEFAULT_ATTRIBUTION_DAYS) -> None:
    """A purchase: the carts it converts, and its revenue attributed to the workflows that
    reached the customer (or the guest they were, by the billing email) in the window."""
    carts = [dict(r) for r in conn.execute(_CONVERT_CARTS, {"store": store, "ckey": ckey, "at": at,
                                                            "order_id": int(order["id"]),
                                                            "token": _order_token(order)}).mappings()]
    for c in carts:
        metrics.carts_total.labels(store, c["status"]).inc()
    recovered = {c["abandon_event_id"]: c["session_id"] for c in carts if c["status"] == "recovered"}
    since = at - timedelta(days=attribution_days)
    keys = person_keys(ckey, order)
    for t in conn.execute(_TOUCHES, {"store": store, "keys": keys, "at": at, "since": since}).mappings():
        cart_session = recovered.get(t["event_id"])
        kind = "cart_recovery" if cart_session else "conversion"
        res = conn.execute(_ATTRIBUTE, {"store": store, "rule_id": int(t["rule_id"]), "order_id": int(order["id"]),
                                        "ckey": ckey, "event_id": t["event_id"], "revenue": order.get("total") or 0,
                                        "currency": str(order.get("currency") or ""), "kind": kind,
                                        "cart_session": cart_session, "at": at})
        if res.rowcount:
            metrics.attributed_orders.labels(store, kind).inc()
