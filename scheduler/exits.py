"""Goals and exit conditions checked before each delayed step; when one holds, the run stops.

What a rule may say is parsed next to the rule model (consumer/exits.py: ordered,
cart_recovered, unsubscribed, clicked, tag_added, or a condition tree over customer
state); a run checks those of its own version (scheduler/flow.py), goals first. The checks
here read current state in bulk (one query per kind per batch of due steps):
`customer_calendar` (orders, kept by the scheduler's activity reader), `carts`,
`consents` (workers), `customer_state` (rule engine) and `engagements` (the open/click
tracker: a click on any message of the run).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Connection, text

from wooflow.consumer.exits import ExitCondition
from wooflow.people import canonical
from wooflow.scheduler.steps import StepRow


@dataclass
class StepView:
    """What the checks need from one claimed step."""
    key: str
    store_id: str
    customer_key: str
    rule_id: int
    event_id: str
    step: int
    trigger_at: datetime
    trigger_order_id: int | None = None
    cart_session: str | None = None
    email: str | None = None
    version: int = 1
    messages: tuple[str, ...] = ()  # idempotency keys of every step the run may have (clicked)


def _dt(v: Any) -> datetime | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    try:
        d = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def view_of(row: StepRow, messages: tuple[str, ...] = ()) -> StepView:
    """A scheduled_steps row → StepView. When did the run's trigger happen?
    - runs the scheduler synthesised carry `trigger_at` in their context;
    - order-triggered runs: the triggering order's creation (store clock, same clock as
      the later order it is compared with), and that order is excluded;
    - otherwise the time the rule matched."""
    cmd = row["command"]
    try:
        ctx = orjson.loads(cmd.get("context_json") or "{}")
    except orjson.JSONDecodeError:
        ctx = {}
    order = ctx.get("order") or {}
    cart = ctx.get("cart") or {}
    customer = ctx.get("customer") or {}
    trigger_at = _dt(ctx.get("trigger_at")) or _dt(order.get("date_created")) or _dt(cmd.get("created_at"))
    billing = order.get("billing") or {}
    return StepView(
        key=row["idempotency_key"], store_id=row["store_id"], customer_key=row["customer_key"],
        rule_id=int(row["rule_id"]), event_id=row["event_id"], step=int(row["step"]),
        trigger_at=trigger_at or datetime.now(timezone.utc),
        trigger_order_id=int(order["id"]) if order.get("id") else None,
        cart_session=cart.get("session_id"),
        email=(customer.get("email") or billing.get("email") or cart.get("email") or None),
        version=int(cmd.get("rule_version") or 1), messages=messages)


_CALENDAR = text("""
SELECT c.store_id, c.customer_key, c.last_order_at, c.last_order_id
FROM customer_calendar c
JOIN unnest(CAST(:stores AS text[]), CAST(:keys AS text[])) AS t(s, k) ON c.store_id = t.s AND c.customer_key = t.k
""")

_CARTS = text("""
SELECT c.store_id, c.session_id, c.status, c.recovered_at, c.recovered_order_id, c.last_activity_at,
       jsonb_array_length(c.items) AS n
FROM carts c
JOIN unnest(CAST(:stores AS text[]), CAST(:sessions AS text[])) AS t(s, k) ON c.store_id = t.s AND c.session_id = t.k
""")

# The newest answer per customer (by key, or by email for guests who never had a key).
_CONSENT = text("""
SELECT t.s AS store_id, t.k AS customer_key, (
    SELECT granted FROM consents c
    WHERE c.store_id = t.s AND c.channel = 'email'
      AND (c.customer_key = t.k OR (t.e <> '' AND c.email = lower(t.e)))  -- stored lowercased
    ORDER BY c.recorded_at DESC, c.granted ASC, c.id DESC LIMIT 1) AS granted  -- a withdrawal wins a tie
FROM unnest(CAST(:stores AS text[]), CAST(:keys AS text[]), CAST(:emails AS text[])) AS t(s, k, e)
""")

_CLICKED = text("""
SELECT DISTINCT message_id FROM engagements
WHERE message_id = ANY(CAST(:keys AS text[])) AND kind = 'click' AND NOT machine
""")

# The columns `state_facts` reads (consumer/facts.py), not the whole row.
_STATE = text("""
SELECT cs.store_id, cs.customer_key, cs.order_count, cs.totals, cs.points, cs.tier, cs.tags, cs.first_order_at,
       cs.last_order_at
FROM customer_state cs
JOIN unnest(CAST(:stores AS text[]), CAST(:keys AS text[])) AS t(s, k) ON cs.store_id = t.s AND cs.customer_key = t.k
""")


def load_state(conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(store, customer) → the customer's state row, for the keys that have one."""
    if not keys:
        return {}
    rows = conn.execute(_STATE, {"stores": [k[0] for k in keys], "keys": [k[1] for k in keys]}).mappings()
    return {(r["store_id"], r["customer_key"]): dict(r) for r in rows}


def facts_of(state: dict[str, Any] | None, now: datetime, memo: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """`state_facts` of a state row; the facts of "no row" are worked out once (`memo`)."""
    from wooflow.consumer.facts import state_facts

    if state:
        return dict(state_facts(state, now=now))
    hit = memo.get(0)
    if hit is None:
        hit = memo[0] = dict(state_facts({}, now=now))
    return hit


@dataclass
class _Facts:
    calendar: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    carts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    consent: dict[tuple[str, str], bool | None] = field(default_factory=dict)
    state: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    clicked: set[str] = field(default_factory=set)
    memo: dict[int, dict[str, Any]] = field(default_factory=dict)


def _load(conn: Connection, views: list[StepView], kinds: set[str]) -> _Facts:
    f = _Facts()
    customers = sorted({(v.store_id, v.customer_key) for v in views})
    stores, keys = [c[0] for c in customers], [c[1] for c in customers]
    if "ordered" in kinds and customers:
        for r in conn.execute(_CALENDAR, {"stores": stores, "keys": keys}).mappings():
            f.calendar[(r["store_id"], r["customer_key"])] = dict(r)
    if "cart_recovered" in kinds:
        carts = sorted({(v.store_id, v.cart_session) for v in views if v.cart_session})
        if carts:
            params = {"stores": [c[0] for c in carts], "sessions": [c[1] for c in carts]}
            for r in conn.execute(_CARTS, params).mappings():
                f.carts[(r["store_id"], r["session_id"])] = dict(r)
    if "unsubscribed" in kinds and customers:
        emails = {(v.store_id, v.customer_key): (v.email or "") for v in views}
        for r in conn.execute(_CONSENT, {"stores": stores, "keys": keys,
                                         "emails": [emails[c] for c in customers]}).mappings():
            f.consent[(r["store_id"], r["customer_key"])] = r["granted"]
    if kinds & {"condition", "tag_added"} and customers:
        f.state = load_state(conn, customers)
    if "clicked" in kinds:
        messages = sorted({k for v in views for k in v.messages})
        if messages:
            f.clicked = {r[0] for r in conn.execute(_CLICKED, {"keys": messages})}
    return f


def _reason(cond: ExitCondition, v: StepView, f: _Facts, now: datetime) -> str | None:
    if cond.type == "ordered":
        cal = f.calendar.get((v.store_id, v.customer_key))
        if cal and cal["last_order_at"] is not None and cal["last_order_at"] >= v.trigger_at \
                and cal["last_order_id"] != v.trigger_order_id:
            return f"customer ordered again (order {cal['last_order_id']})"
        return None
    if cond.type == "cart_recovered":
        if not v.cart_session:
            return None
        cart = f.carts.get((v.store_id, v.cart_session))
        if cart is None:
            return None
        if cart["recovered_order_id"] is not None and \
                (cart["recovered_at"] is None or cart["recovered_at"] >= v.trigger_at):
            return f"cart recovered (order {cart['recovered_order_id']})"
        if cart["n"] == 0:
            return "cart emptied"
        if cart["last_activity_at"] > v.trigger_at:
            # the shopper came back to the cart: if they leave it again, a new sequence starts
            return "cart changed after it was abandoned"
        return None
    if cond.type == "unsubscribed":
        if f.consent.get((v.store_id, v.customer_key)) is False:
            return "customer unsubscribed"
        return None
    if cond.type == "clicked":
        return "a link in a message of this run was clicked" if f.clicked.intersection(v.messages) else None
    if cond.type in ("condition", "tag_added") and cond.predicate is not None and \
            cond.predicate(facts_of(f.state.get((v.store_id, v.customer_key)), now, f.memo)):
        return cond.label
    return None


def check(conn: Connection, views: list[StepView], conditions_of: dict[tuple[int, int], list[ExitCondition]],
          now: datetime) -> dict[str, tuple[str, str]]:
    """idempotency key → (kind, reason) for the steps that must not run: kind `goal` when a
    goal was reached, else the exit condition's type. `conditions_of` holds each (rule,
    version)'s goals then exits. A step of a guest since folded into a registered customer
    is checked against the customer."""
    wanted = [v for v in views if conditions_of.get((v.rule_id, v.version))]
    if not wanted:
        return {}
    moved = canonical(conn, [(v.store_id, v.customer_key) for v in wanted])
    if moved:
        wanted = [replace(v, customer_key=moved.get((v.store_id, v.customer_key), v.customer_key)) for v in wanted]
    kinds = {c.type for v in wanted for c in conditions_of[(v.rule_id, v.version)]}
    facts = _load(conn, wanted, kinds)
    out: dict[str, tuple[str, str]] = {}
    for v in wanted:
        for cond in conditions_of[(v.rule_id, v.version)]:
            reason = _reason(cond, v, facts, now)
            if reason:
                out[v.key] = ("goal", f"goal reached: {reason}") if cond.goal else (cond.type, reason)
                break
    return out
