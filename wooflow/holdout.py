"""Holdout groups: a rule's `holdout_percent` of its audience is held out as a control group.

Membership is a pure function of (rule id, customer key) — the first 64 bits of
sha256("holdout|<rule>|<customer>") below percent/100 of 2^64 — so it is the same in every
process, on every replay and across the rule's versions (its id stays; a new percentage
moves only the customers between the old and the new threshold). Held-out customers go
through the rule like everyone else — conditions, frequency limits — and then get no
effect: no command, no delayed step; the rule consumer logs `held_out` for them.

Who entered a holdout rule, and on which side, is recorded the first time it happens
(`holdout_exposures`, primary key (rule, customer)), by whoever decided it: the rule
consumer in its state transaction, the scheduler's scan in the transaction of its trigger
firings. Each exposure also holds what the customer ordered in the store's window after it
(orders not cancelled, net revenue in the store's currency), computed from
`customer_orders` — which the activity reader keeps (scheduler/conversions.py) — by
whichever comes second: the exposure (`save`) or the order (`refresh_people`); the two
can be recorded at the same instant without seeing each other, so the scan also refreshes
the exposures of the last 15 minutes (`refresh_recent`). The analytics API sums them per
rule and side and compares the two (wooflow/lift.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from wooflow.attribution_policy import DEFAULT_WINDOW_DAYS
from wooflow.db.engine import driver_cursor
from wooflow.schemas.types import ExecutionLog

_SCALE = 2 ** 64


def held_out(rule_id: int, customer_key: str, percent: float) -> bool:
    """Whether the customer is in the rule's control group."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"holdout|{rule_id}|{customer_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < percent / 100 * _SCALE


@dataclass(frozen=True, slots=True)
class Exposure:
    """A customer entering a holdout rule: treated (held_out False) or control."""

    store_id: str
    rule_id: int
    customer_key: str
    held_out: bool
    event_id: str
    at: datetime


_SAVE = """
INSERT INTO holdout_exposures (store_id, rule_id, customer_key, held_out, event_id, exposed_at)
SELECT * FROM unnest(%(s)b::text[], %(r)b::bigint[], %(k)b::text[], %(h)b::bool[], %(e)b::text[],
                     %(a)b::timestamptz[])
ORDER BY 2, 3
ON CONFLICT (rule_id, customer_key) DO NOTHING
"""

# What the exposed customers ordered in the window after entering the rule (orders not
# cancelled; revenue net of refunds, in the store's currency), computed again from
# `customer_orders` for the exposures a condition selects. The window is the store's
# `analytics.window_days`.
_WINDOW = ("CASE WHEN s.settings #>> '{analytics,window_days}' ~ '^[0-9]{1,2}$' "
           "THEN (s.settings #>> '{analytics,window_days}')::int ELSE %(default_window)s END")
_REFRESH = """
UPDATE holdout_exposures x SET orders = c.orders, revenue = c.revenue
FROM (
    SELECT e.rule_id, e.customer_key,
           count(o.order_id) FILTER (WHERE NOT o.voided) AS orders,
           coalesce(sum(o.revenue - o.refunded) FILTER (WHERE NOT o.voided AND o.currency = s.currency), 0) AS revenue
    FROM holdout_exposures e
    JOIN stores s ON s.id = e.store_id
    LEFT JOIN customer_orders o ON o.store_id = e.store_id AND o.customer_key = e.customer_key
        AND o.ordered_at > e.exposed_at AND o.ordered_at <= e.exposed_at + make_interval(days => WINDOW)
    WHERE CONDITION
    GROUP BY e.rule_id, e.customer_key
) c
WHERE x.rule_id = c.rule_id AND x.customer_key = c.customer_key AND (x.orders <> c.orders OR x.revenue <> c.revenue)
""".replace("WINDOW", _WINDOW)
_OF_PAIRS = _REFRESH.replace("CONDITION", "(e.rule_id, e.customer_key) IN "
                                          "(SELECT * FROM unnest(%(r)b::bigint[], %(k)b::text[]))")
_OF_PEOPLE = _REFRESH.replace("CONDITION", "e.store_id = %(store)s AND e.customer_key = ANY(%(keys)b::text[])")
_OF_STORE = _REFRESH.replace("CONDITION", "e.store_id = %(store)s")
_RECENT = _REFRESH.replace("CONDITION", "e.recorded_at > now() - make_interval(secs => %(secs)s)")


def _refresh(conn: Connection, query: str, params: dict[str, object]) -> int:
    cur = driver_cursor(conn)
    cur.execute(query, {**params, "default_window": DEFAULT_WINDOW_DAYS})
    return int(cur.rowcount)


def save(conn: Connection, exposures: Sequence[Exposure]) -> None:
    """Record first exposures in the caller's transaction (later ones change nothing), with
    what their customers ordered since, as far as it is recorded yet."""
    if not exposures:
        return
    params = {"s": [x.store_id for x in exposures], "r": [x.rule_id for x in exposures],
              "k": [x.customer_key for x in exposures], "h": [x.held_out for x in exposures],
              "e": [x.event_id for x in exposures], "a": [x.at for x in exposures]}
    driver_cursor(conn).execute(_SAVE, params)
    _refresh(conn, _OF_PAIRS, {"r": params["r"], "k": params["k"]})


def refresh_people(conn: Connection, store_id: str, keys: list[str]) -> int:
    """After one of these customers' orders changed (the activity reader)."""
    return _refresh(conn, _OF_PEOPLE, {"store": store_id, "keys": keys})


def refresh_store(conn: Connection, store_id: str) -> int:
    """After the store's window changed."""
    return _refresh(conn, _OF_STORE, {"store": store_id})


def refresh_recent(conn: Connection, seconds: float = 900.0) -> int:
    """Exposures recorded in the last `seconds`: an order read while its customer's exposure
    was being recorded (two transactions, neither seeing the other) is counted here — the
    scheduler's scan runs this every interval."""
    return _refresh(conn, _RECENT, {"secs": seconds})


def held_out_log(x: Exposure, idempotency_key: str, action_type: str, percent: float,
                 now: datetime) -> ExecutionLog:
    """The execution log of a held-out run (status `held_out`, step 0, no effect)."""
    return {
        "log_id": f"{idempotency_key}:held_out",
        "idempotency_key": idempotency_key,
        "store_id": x.store_id,
        "customer_key": x.customer_key,
        "rule_id": x.rule_id,
        "event_id": x.event_id,
        "step": 0,
        "action_type": action_type,
        "status": "held_out",
        "message": f"held out: in the rule's {percent:g}% control group",
        "attempt": 1,
        "duration_ms": 0.0,
        "executed_at": now,
        "received_at": None,
        "details_json": json.dumps({"holdout_percent": percent}),
        "dry_run": False,
    }
