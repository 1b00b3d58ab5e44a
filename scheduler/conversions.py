"""An order's credit to the last message the customer engaged with inside the window, and
the orders holdout groups are compared on.

Called by the activity reader for every order event (scheduler/activity.py), in the event's
savepoint:
- a purchase (not cancelled, failed, refunded, a draft) is credited once per order id
  (`message_conversions`, primary key (store, order)): the message with the latest touch —
  a person's click or open (`engagements`; machine ones only if the store counts them), or
  its send when the store's `analytics.touch` is `send` — within `window_days` before the
  order was created, and strictly before it: a touch recorded after the order was first
  read is never before its creation, so a replay credits what the first reading did;
- a purchase is kept under each key of its customer (`customer_orders`), and the holdout
  exposures of the customer are brought up to their orders in the window
  (wooflow/holdout.py: whichever of the exposure and the order is recorded second counts
  the order);
- every order event then brings both up to the order as it is now — its
  total, its refunds (`order.total_refunded`), whether it was cancelled, failed or fully
  refunded (`voided`) — unless it is older than what they hold (`order_modified`): an
  older event arriving late changes nothing, a redelivery or a replay of the topic (the
  same states in the same order) ends where it was.

The customer is the order's key and, for a registered customer's order, the guest they were
(by the billing email), as for cart attribution.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Connection, text

from wooflow import holdout, metrics
from wooflow.attribution_policy import AttributionPolicy
from wooflow.schemas.types import Order

VOID = frozenset({"cancelled", "failed", "refunded", "trash"})

# One round trip per order event (the activity reader reads every order event; each
# statement is a trip through a busy box's run queue). In one snapshot:
# - `touch`: the last touch inside the window, strictly before the order — a click beats an
#   open beats a send at the same instant; `credit`: the order credited to it, first sight only;
# - `own`: a purchase under each key of its customer;
# - `mc`/`co`: the rows already there brought up to this state of the order, unless the
#   event is older than what they hold (WooCommerce's modification times have whole
#   seconds: a refund in the same second as the order's creation is no older; one
#   customer's events arrive in order, so the later wins). Rows the inserts above write are
#   not seen here: they are written with this state already;
# and whether the customer entered a holdout rule (then their exposures are refreshed,
# one more statement that sees the order rows this one wrote).
_RECORD = text("""
WITH touch AS (
    SELECT message_id, rule_id, step, touch, touched_at FROM (
        SELECT e.message_id, e.rule_id, e.step, e.kind AS touch, e.at AS touched_at
        FROM engagements e
        WHERE e.store_id = :store AND e.customer_key = ANY(CAST(:keys AS text[])) AND e.at < :at
          AND e.at >= :since AND (:machine OR NOT e.machine)
        UNION ALL
        SELECT m.message_id, m.rule_id, m.step, 'send', m.sent_at
        FROM messages m
        WHERE :by_send AND m.store_id = :store AND m.customer_key = ANY(CAST(:keys AS text[]))
          AND m.sent_at < :at AND m.sent_at >= :since
    ) t
    WHERE :purchase
    ORDER BY touched_at DESC, CASE touch WHEN 'click' THEN 0 WHEN 'open' THEN 1 ELSE 2 END, message_id
    LIMIT 1
), credit AS (
    INSERT INTO message_conversions (store_id, order_id, message_id, rule_id, step, customer_key, touch, touched_at,
                                     ordered_at, currency, revenue, refunded, voided, order_modified)
    SELECT :store, :order_id, message_id, rule_id, step, :ckey, touch, touched_at, :at, :currency, :total,
           :refunded, false, :modified
    FROM touch
    ON CONFLICT (store_id, order_id) DO NOTHING
    RETURNING touch
), own AS (
    INSERT INTO customer_orders (store_id, customer_key, order_id, ordered_at, currency, revenue, refunded, voided,
                                 order_modified)
    SELECT :store, k, :order_id, :at, :currency, :total, :refunded, false, :modified
    FROM unnest(CAST(:keys AS text[])) AS k WHERE :purchase
    ON CONFLICT (store_id, customer_key, order_id) DO NOTHING
), mc AS (
    UPDATE message_conversions SET revenue = :total, refunded = :refunded, voided = :voided, order_modified = :modified
    WHERE store_id = :store AND order_id = :order_id AND order_modified <= :modified
), co AS (
    UPDATE customer_orders SET revenue = :total, refunded = :refunded, voided = :voided, order_modified = :modified
    WHERE store_id = :store AND order_id = :order_id AND order_modified <= :modified
)
SELECT (SELECT touch FROM credit) AS credited,
       EXISTS (SELECT 1 FROM holdout_exposures
               WHERE store_id = :store AND customer_key = ANY(CAST(:keys AS text[]))) AS exposed
""")


def record_order_credit(conn: Connection, store: str, keys: list[str], order: Order,
                        policy: AttributionPolicy) -> None:
    """Credit a purchase (first sight) and bring credited rows up to this state of the order."""
    status = str(order.get("status") or "").removeprefix("wc-")
    at = order["date_created"]
    total = Decimal(order.get("total") or 0)
    refunded = min(Decimal(order.get("total_refunded") or 0), total)
    currency = str(order.get("currency") or "")
    row = conn.execute(_RECORD, {
        "store": store, "keys": keys, "ckey": keys[0], "order_id": int(order["id"]), "at": at,
        "since": at - timedelta(days=policy.window_days), "currency": currency, "total": total,
        "refunded": refunded, "modified": order.get("date_modified") or at,
        "voided": status in VOID or (total > 0 and refunded >= total),
        "purchase": status not in VOID and not status.endswith("draft"),
        "machine": policy.count_machine, "by_send": policy.touch == "send"}).one()
    if row.credited is not None:
        metrics.conversions_total.labels(store, row.credited).inc()
        metrics.attributed_revenue.labels(store, _currency_label(currency)).inc(float(total))
    if row.exposed:
        holdout.refresh_people(conn, store, keys)


def _currency_label(currency: str) -> str:
    """ISO 4217 codes only: the label's values stay a fixed set."""
    return currency.upper() if len(currency) == 3 and currency.isalpha() else "other"
