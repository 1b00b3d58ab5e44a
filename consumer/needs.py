"""Which state a store's rules need the rule consumer to keep (`Keep`), derived from the
compiled rules, so a store pays only for the state its rules read.

A rule needs the most of:
- its trigger's `keeps` (triggers.py): `new_order` (and `new_order_each_line_item`) the order's
  first sight; `order_status_changed`, `order_paid`, `order_pending`/`_on_hold`/`_cancelled`,
  `order_refunded`, `order_partially_refunded`, `subscription_renewal_payment_failed` and their
  per-line-item variants the order's status and marks (paid, refunds); the purchase,
  milestone and tier triggers and `new_customer` the customer aggregates; `product_saved`,
  `order_note_added` and the subscription triggers nothing (subscriptions are kept for every
  store, see apply.py); a trigger that does not say (plugins, the scheduler's) the customer
  aggregates;
- its conditions: a customer-state field (order count, totals, tier, points, tags, days since
  the last order, first order date, role, `order_is_customers_first`) needs the customer
  aggregates, a purchase-history field (purchased products and categories, first and last
  paid order dates, the last 365 days' orders and spend) the customer's counted orders
  (`Keep.HISTORY`), `previous_status` the order's status; the subscription fields need no
  level (subscriptions are kept anyway; the batch loads a customer's when a rule reads them);
- a frequency limit: the customer rows (its firings are written with them, see state.py);
- exit conditions and goals that are condition trees or `tag_added`, and branches on a
  condition (the scheduler reads `customer_state`);
- its actions (on every side of every branch, every A/B variant): a template that names
  `customer_state`, the `webhook` action (it posts the context, customer state included)
  and any action type this module does not know (a plugin may read its context) need the
  customer aggregates.

A store with loyalty settings (`stores.settings.loyalty`: points, tiers) keeps everything.

Raising a store's level starts keeping the new state from that moment: from the first
batch the consumer processes with the new rules (the store's `state_levels` row records
the level and since when; the rules API's dry run shows it). Orders and purchases the
consumer saw before then are not in it: a `first_purchase` rule added later sees a
customer's first paid order *since* then; `wooflow replay` of an earlier range rebuilds
what the range shows in memory, as always.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

from sqlalchemy import Connection, select

from wooflow.consumer.conditions import FIELDS
from wooflow.consumer.model import RuleSpec
from wooflow.consumer.triggers import TRIGGERS, Keep
from wooflow.consumer.workflow import compile_program
from wooflow.db.tables import state_levels

# Built-in actions that never read the customer state of their command's context except
# through a template naming it (tests/test_state_needs.py holds this to the workers' registry).
CONTEXT_FREE_ACTIONS = frozenset({
    "send_email", "send_sms", "apply_coupon", "add_customer_tag", "remove_customer_tag", "change_customer_role",
    "set_customer_meta", "change_order_status", "add_order_note", "set_order_meta", "resend_order_email",
    "trigger_order_action", "change_tier", "add_points", "create_admin_task"})
STATE_IN_TEMPLATES = "customer_state"


def _fields(tree: Any) -> Iterable[str]:
    if isinstance(tree, dict):
        if "field" in tree:
            yield str(tree["field"])
        for child in tree.get("conditions") or ():
            yield from _fields(child)
    elif isinstance(tree, list):
        for child in tree:
            yield from _fields(child)


def _mentions(value: Any, text: str) -> bool:
    if isinstance(value, str):
        return text in value
    if isinstance(value, dict):
        return any(_mentions(v, text) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, text) for v in value)
    return False


SCOPE_KEEPS = {"customer": Keep.CUSTOMERS, "history": Keep.HISTORY}


def conditions_keep(tree: Any) -> Keep:
    keep = Keep.NOTHING
    for name in _fields(tree):
        spec = FIELDS.get(name)
        if spec is not None:
            keep = max(keep, SCOPE_KEEPS.get(spec.scope, Keep.NOTHING))
        if name == "previous_status":
            keep = max(keep, Keep.ORDERS)
    return keep


def rule_keep(spec: RuleSpec) -> Keep:
    """The state one rule reads (see the module docstring)."""
    trigger = TRIGGERS.get(spec.trigger)
    keep = max(trigger.keeps if trigger is not None else Keep.CUSTOMERS, conditions_keep(spec.conditions))
    if keep >= Keep.CUSTOMERS:
        return keep
    if spec.frequency.limited:
        return Keep.CUSTOMERS
    if any(isinstance(e, dict) and e.get("type", "condition") in ("condition", "conditions")
           for e in spec.exit_conditions or ()):
        return Keep.CUSTOMERS
    if any(isinstance(g, dict) and g.get("type", "condition") in ("condition", "conditions", "tag_added")
           for g in spec.goals or ()):
        return Keep.CUSTOMERS
    for node in compile_program(spec.actions).nodes:
        if node.branch is not None and node.branch.condition.type == "condition":
            return Keep.CUSTOMERS  # asked of the customer's state when the run reaches it
        action = node.action
        if action is None:
            continue
        params = [action.params, *(v.params for v in action.variants or ())]
        if action.type not in CONTEXT_FREE_ACTIONS or any(_mentions(p, STATE_IN_TEMPLATES) for p in params):
            return Keep.CUSTOMERS
    return keep


def store_keep(rules: Iterable[RuleSpec], loyalty_configured: bool = False) -> Keep:
    if loyalty_configured:
        return Keep.CUSTOMERS
    return max((rule_keep(r) for r in rules), default=Keep.NOTHING)


def describe(keep: Keep) -> str:
    return {Keep.NOTHING: "no per-order or per-customer state",
            Keep.SEEN: "each order's first sight",
            Keep.ORDERS: "each order's first sight and status",
            Keep.CUSTOMERS: "orders, their status and counting, and customer aggregates",
            Keep.HISTORY: "orders, their status and counting, customer aggregates and each customer's paid "
                          "orders (purchase history)"}[keep]


class StateView(TypedDict):
    """What a dry run says about the state a rule reads."""

    rule_needs: str
    store_keeps: str
    kept_since: str | None  # ISO time: kept at least since then (None: not kept yet)
    note: str


def state_view(conn: Connection, store_id: str, need: Keep) -> StateView:
    """The rule's need against what the consumer recorded keeping for the store."""
    row = conn.execute(select(state_levels.c.keeps, state_levels.c.since)
                       .where(state_levels.c.store_id == store_id)).first()
    kept = Keep(row[0]) if row is not None else Keep.NOTHING
    if need == Keep.NOTHING:
        note = "the rule reads no stored state: it decides from the event alone"
    elif kept >= need and row is not None:
        note = (f"kept since {row[1].isoformat()}: what the consumer saw before then is not in it "
                "(orders first seen, statuses and purchases counted from then on)")
    else:
        note = ("not kept yet for this store: the rule consumer keeps it from the first event it processes with "
                "this rule; orders and purchases before then are not in it")
    return {"rule_needs": describe(need), "store_keeps": describe(kept),
            "kept_since": row[1].isoformat() if row is not None and kept >= need and need else None, "note": note}
