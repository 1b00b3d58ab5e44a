"""The purchase-history, order, subscription and line-item condition fields, and the order
triggers, against a plain reference (hypothesis): random customers' order histories —
status paths, payments, refunds, products, dates a year apart — applied one event at a
time as the rule consumer applies them (`apply_order` at `Keep.HISTORY`), and every field
the rule engine computes compared with what the reference computes from the events seen
so far; random condition trees over those fields compared with the reference evaluator
(tests/test_conditions_properties.py) on the reference's facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.rules_kit import customer_event, order_event
from tests.support import Discards
from tests.test_conditions_properties import PRODUCTS, as_group, catalog_of, compiled, ref_terms, ref_tree, trees_over
from wooflow.consumer.apply import apply_customer, apply_order, apply_subscription
from wooflow.consumer.conditions import TODAY
from wooflow.consumer.engine import RuleEngine, unit_id
from wooflow.consumer.facts import ItemFacts, LazyFacts
from wooflow.consumer.rules import RuleCache, compile_rule
from wooflow.consumer.state import StateBatch
from wooflow.consumer.tiers import Loyalty
from wooflow.consumer.triggers import TRIGGERS, Keep, TriggerContext

pytestmark = pytest.mark.unit

STORE = "s"
T0 = datetime(2025, 1, 1, 9, 0, tzinfo=timezone.utc)
PAID = ("processing", "completed")
# status paths as WooCommerce walks them (each step one order.updated)
PATHS = [("pending", "processing", "completed"), ("on-hold", "completed"), ("processing", "refunded"),
         ("pending", "cancelled"), ("processing",), ("pending",), ("on-hold", "processing", "cancelled"),
         ("completed",), ("pending", "failed", "processing")]
ORDERABLE = [1, 2, 3, 4, 9, 30, 31]  # tests/test_conditions_properties.py's catalog: 9 is unknown


@dataclass
class Placed:
    """One order of the generated history."""

    order_id: int
    path: tuple[str, ...]
    items: list[tuple[int, int, int]]  # (product id, quantity, variation id)
    total: Decimal
    created: datetime
    step_days: int  # days between two of its events
    refunds: list[str] = field(default_factory=list)  # partial refunds after its last step
    coupons: tuple[str, ...] = ()
    via: str = "checkout"


def _items(ordered: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    # a variation is ordered as WooCommerce records it: its parent in product_id
    return [(PRODUCTS[p][2], q, p) if p in PRODUCTS and PRODUCTS[p][2] else (p, q, 0) for p, q in ordered]


placed_st = st.builds(
    Placed, order_id=st.just(0), path=st.sampled_from(PATHS),
    items=st.lists(st.tuples(st.sampled_from(ORDERABLE), st.integers(1, 4)), min_size=1, max_size=3).map(_items),
    total=st.decimals("1", "500", places=2),
    # a year apart to the day, often: the 365-day window's edges
    created=st.one_of(st.sampled_from([0, 1, 365, 366, 730]), st.integers(0, 700)).map(
        lambda d: T0 + timedelta(days=d)),
    step_days=st.one_of(st.sampled_from([0, 365]), st.integers(0, 40)),
    refunds=st.lists(st.sampled_from(["1.00", "2.50"]), max_size=2),
    coupons=st.lists(st.sampled_from(["VIP", "spring"]), max_size=2, unique=True).map(tuple),
    via=st.sampled_from(["checkout", "admin", "subscription"]))


def events_of(p: Placed, guest: bool) -> list[dict[str, Any]]:
    """The order's events in WooCommerce's order: created, one per status step (date_paid set
    from the first paid step on), then the partial refunds of a paid order."""
    out, paid = [], None
    for n, status in enumerate(p.path):
        at = p.created + timedelta(days=n * p.step_days, minutes=n)
        if status in PAID and paid is None:
            paid = at
        out.append(order_event(STORE, p.order_id, customer_id=0 if guest else 7, email="ala@example.com",
                               status=status, total=str(p.total), items=list(p.items), coupons=p.coupons,
                               created=p.created, modified=at, action="created" if n == 0 else "updated",
                               paid=paid, created_via=p.via))
    if paid is not None and p.path[-1] in PAID:
        last = out[-1]["occurred_at"]
        for k in range(1, len(p.refunds) + 1):
            out.append(order_event(STORE, p.order_id, customer_id=0 if guest else 7, email="ala@example.com",
                                   status=p.path[-1], total=str(p.total), items=list(p.items), coupons=p.coupons,
                                   created=p.created, modified=last + timedelta(hours=k), action="updated",
                                   paid=paid, created_via=p.via, refunds=tuple(reversed(p.refunds[:k]))))
    return out


# --- the reference: what the fields mean, from the events seen so far -------------------------

@dataclass
class Seen:
    status: str
    paid: datetime | None
    total: Decimal
    products: list[int]
    refunded: Decimal
    paid_fired: bool = False


def ref_facts(seen: dict[int, Seen], ev: dict[str, Any], role: str | None) -> dict[str, Any]:
    order = ev["order"]
    counted = {oid: s for oid, s in seen.items() if s.status in PAID}
    now = ev["occurred_at"]
    paid_at = [s.paid or datetime.min.replace(tzinfo=timezone.utc) for s in counted.values()]
    year = [s for s in counted.values() if now - timedelta(days=365) < (s.paid or now) <= now]
    products = sorted({p for s in counted.values() for p in s.products})
    guest = ev["customer_key"].startswith("g")
    return {
        "purchased_products_all_time": products,
        "purchased_categories_all_time": ref_terms([(p, 1, 0) for p in products], 0),
        "first_paid_order_date": min(paid_at).date().isoformat() if paid_at else None,
        "last_paid_order_date": max(paid_at).date().isoformat() if paid_at else None,
        "order_count_last_365_days": len(year),
        "total_spent_last_365_days": sum((s.total for s in year), Decimal(0)),
        "order_is_customers_first": "yes" if not (set(counted) - {ev["order_id"]}) else "no",
        "customer_is_guest": "yes" if guest else "no",
        "customer_role": role if role else ("guest" if guest else None),
        "order_coupons": list(order["coupon_codes"]),
        "order_created_via": order["created_via"],
        "order_item_quantity": [li["quantity"] for li in order["line_items"]],
        TODAY: now.date().isoformat(),
    }


HISTORY_FIELDS = ["purchased_products_all_time", "purchased_categories_all_time", "first_paid_order_date",
                  "last_paid_order_date", "order_count_last_365_days", "total_spent_last_365_days",
                  "order_is_customers_first", "customer_is_guest", "customer_role", "order_coupons",
                  "order_created_via", "order_item_quantity"]
history_trees = trees_over(HISTORY_FIELDS, max_leaves=3)


def _fired(name: str, ctx: TriggerContext) -> bool:
    return TRIGGERS[name].fires(ctx)


def assert_facts(facts: LazyFacts, reference: dict[str, Any], names: list[str]) -> None:
    """The engine's value of each field is the reference's: a multi-valued one holds the same
    values (an `Incomplete` where the reference's is), a single one is equal."""
    for name in names:
        got, want = facts.get(name), reference[name]
        if isinstance(want, list):
            assert sorted(set(map(str, got or []))) == sorted(set(map(str, want))), (name, got, want)
            assert type(got).__name__ == type(want).__name__, (name, got, want)
        else:
            assert got == want, (name, got, want)


def test_history_fields_and_order_triggers_agree_with_the_reference() -> None:
    tally = Discards("history fields vs the reference")
    catalog = catalog_of(STORE)

    @settings(max_examples=150, deadline=None)
    @given(orders=st.lists(placed_st, min_size=1, max_size=5), guest=st.booleans(),
           role=st.sampled_from([None, "customer", "subscriber"]), tree=history_trees)
    def agree(orders: list[Placed], guest: bool, role: str | None, tree: dict[str, Any]) -> None:
        for n, p in enumerate(orders):
            p.order_id = 100 + n
        tree = as_group(tree)
        predicate = compiled(tree, tally)
        evs = sorted((ev for p in orders for ev in events_of(p, guest)),
                     key=lambda e: (e["occurred_at"], e["order_id"]))
        state, lo = StateBatch(), Loyalty()
        if role and not guest:  # the account's role, from its customer event
            apply_customer(customer_event(STORE, 7, email="ala@example.com", role=role), state, lo)
        seen: dict[int, Seen] = {}
        for ev in evs:
            ctx = apply_order(ev, state, lo, Keep.HISTORY)
            o = ev["order"]
            before = seen.get(ev["order_id"])
            refunded = -sum((r["total"] for r in o["refunds"]), Decimal(0))
            now = seen[ev["order_id"]] = Seen(o["status"], o["date_paid"], o["total"],
                                              sorted({i for li in o["line_items"]
                                                      for i in (li["product_id"], li["variation_id"]) if i}),
                                              refunded, before.paid_fired if before else False)
            # the order triggers, from the reference's view of the order
            first_paid = o["date_paid"] is not None and not now.paid_fired
            assert _fired("order_paid", ctx) == first_paid
            now.paid_fired = now.paid_fired or first_paid
            grew = (before is not None and refunded > before.refunded) or (before is None and refunded > 0)
            assert _fired("order_partially_refunded", ctx) == (grew and o["status"] != "refunded")
            for status in ("pending", "on-hold", "cancelled", "refunded"):
                trigger = "order_refunded" if status == "refunded" else f"order_{status.replace('-', '_')}"
                became = o["status"] == status and (before is None or before.status != status)
                assert _fired(trigger, ctx) == became, (trigger, o["status"], before)
            facts = LazyFacts(ctx, catalog)
            reference = ref_facts(seen, ev, role if not guest else None)
            assert_facts(facts, reference, HISTORY_FIELDS)
            if predicate is not None:
                assert predicate(facts) == ref_tree(tree, reference)

    agree()
    tally.check()


# --- subscriptions ----------------------------------------------------------------------------

SUB_STATUSES = ["pending", "active", "on-hold", "cancelled", "pending-cancel", "expired"]


def subscription_event(sid: int, status: str, at: datetime, products: list[int], period: str,
                       next_payment: datetime | None) -> dict[str, Any]:
    sub = {"id": sid, "parent_id": 0, "status": status, "currency": "PLN", "total": Decimal("10"), "customer_id": 7,
           "billing": {"email": "ala@example.com"}, "payment_method": "card", "billing_period": period,
           "billing_interval": 1, "trial_period": "", "suspension_count": 0, "requires_manual_renewal": False,
           "line_items": [{"id": i, "product_id": p, "variation_id": 0, "name": "", "sku": "", "quantity": 1,
                           "price": Decimal(1), "total": Decimal(1), "category_ids": []}
                          for i, p in enumerate(products)],
           "start_date": at, "trial_end_date": None, "next_payment_date": next_payment, "last_payment_date": None,
           "cancelled_date": None, "end_date": None, "date_created": T0, "date_modified": at, "meta": {}}
    return {"event_id": f"sub{sid}-{at.isoformat()}-{status}", "store_id": STORE, "customer_key": "c7",
            "occurred_at": at, "received_at": at, "source": "webhook", "schema_version": 1,
            "topic": "subscription.updated", "store_timezone": "UTC", "subscription_id": sid, "action": "updated",
            "subscription": sub, "raw_json": None}


SUBSCRIPTION_FIELDS = ["has_active_subscription", "active_subscription_products", "subscription_status",
                       "subscription_products", "subscription_billing_period", "subscription_next_payment_date"]
subscription_trees = trees_over(SUBSCRIPTION_FIELDS, max_leaves=3)
change_st = st.tuples(st.sampled_from([1, 2]), st.sampled_from(SUB_STATUSES),
                      st.lists(st.sampled_from([1, 2, 3, 40]), min_size=1, max_size=2, unique=True),
                      st.sampled_from(["month", "year"]), st.one_of(st.none(), st.integers(0, 400)))


def test_subscription_fields_and_triggers_agree_with_the_reference() -> None:
    tally = Discards("subscription fields vs the reference")

    @settings(max_examples=150, deadline=None)
    @given(changes=st.lists(change_st, min_size=1, max_size=6), tree=subscription_trees)
    def agree(changes: list[tuple[int, str, list[int], str, int | None]], tree: dict[str, Any]) -> None:
        tree = as_group(tree)
        predicate = compiled(tree, tally)
        state, lo = StateBatch(), Loyalty()
        state.subs_of[(STORE, "c7")] = {}  # as the batch loads a customer whose subscriptions a rule reads
        current: dict[int, tuple[str, list[int]]] = {}
        for n, (sid, status, products, period, days) in enumerate(changes):
            at = T0 + timedelta(hours=n)
            nxt = None if days is None else T0 + timedelta(days=days)
            ev = subscription_event(sid, status, at, products, period, nxt)
            ctx = apply_subscription(ev, state, lo)
            ctx.customer_subscriptions = state.subs_of[(STORE, "c7")]
            before = current.get(sid)
            current[sid] = (status, products)
            assert _fired("subscription_created", ctx) == (before is None)
            assert _fired("subscription_status_changed", ctx) == (before is not None and before[0] != status)
            active = [p for st_, ps in current.values() if st_ == "active" for p in ps]
            reference = {"has_active_subscription": "yes" if any(s == "active" for s, _ in current.values()) else "no",
                         "active_subscription_products": active, "subscription_status": status,
                         "subscription_products": products, "subscription_billing_period": period,
                         "subscription_next_payment_date": nxt.date().isoformat() if nxt else None,
                         TODAY: at.date().isoformat()}
            facts = LazyFacts(ctx)
            assert_facts(facts, reference, SUBSCRIPTION_FIELDS)
            if predicate is not None:
                assert predicate(facts) == ref_tree(tree, reference)

    agree()
    tally.check()


# --- line items ---------------------------------------------------------------------------------

ITEM_FIELDS = ["item.product_id", "item.category", "item.product_tag", "item.quantity", "item.total", "item.name"]
item_trees = trees_over([*ITEM_FIELDS, "order_total", "category"], max_leaves=3)


def ref_item(li: dict[str, Any]) -> dict[str, Any]:
    item = (li["product_id"], li["quantity"], li["variation_id"])
    return {"item.product_id": [i for i in (li["product_id"], li["variation_id"]) if i],
            "item.category": ref_terms([item], 0), "item.product_tag": ref_terms([item], 1),
            "item.quantity": li["quantity"], "item.total": li["total"], "item.name": li["name"]}


def engine_with(tree: dict[str, Any]) -> RuleEngine:
    """A rule engine holding one per-line-item rule (no database: the cache is filled directly)."""
    rule = compile_rule({"id": 1, "store_id": STORE, "version": 1, "name": "r", "trigger": "new_order_each_line_item",
                         "trigger_options": {}, "conditions": tree, "priority": 1, "enabled": True,
                         "group_label": "", "frequency": {}, "exit_conditions": [],
                         "actions": [{"type": "add_order_note", "params": {"note": "x"}}]})
    cache = RuleCache(None)  # never asked to load: _swap fills it
    cache._swap({STORE: [rule]})
    return RuleEngine(cache, catalog_of(STORE))


def test_line_item_fields_and_matches_agree_with_the_reference() -> None:
    tally = Discards("line-item fields vs the reference")

    @settings(max_examples=200, deadline=None)
    @given(ordered=st.lists(st.tuples(st.sampled_from(ORDERABLE), st.integers(1, 4)), min_size=1, max_size=4),
           tree=item_trees)
    def agree(ordered: list[tuple[int, int]], tree: dict[str, Any]) -> None:
        tree = as_group(tree)
        predicate = compiled(tree, tally)
        if predicate is None:
            return
        items = _items(ordered)
        ev = order_event(STORE, 5, customer_id=7, total="77.00", items=items)
        ctx = apply_order(ev, StateBatch(), Loyalty(), Keep.SEEN)
        order_facts = LazyFacts(ctx, catalog_of(STORE))
        order_ref = order_facts.materialise() | {"category": ref_terms(items, 0)}
        want = []
        for li in ev["order"]["line_items"]:
            reference = order_ref | ref_item(li)
            facts = ItemFacts(order_facts, li)
            assert_facts(facts, reference, ITEM_FIELDS)
            if ref_tree(tree, reference):
                want.append(li["id"])
        # the engine: one match per line item the conditions hold for, each its own unit of work
        matches = engine_with(tree).matches(ctx)
        assert [m.item["id"] for m in matches if m.item is not None] == want
        assert [m.event_id for m in matches] == [unit_id(ev["event_id"], m.item) for m in matches]
        assert len({m.event_id for m in matches}) == len(matches)
        # the same event again (a replay) matches the same items with the same ids
        again = engine_with(tree).matches(ctx)
        assert [m.event_id for m in again] == [m.event_id for m in matches]

    agree()
    tally.check()


def test_date_windows_count_days_up_to_the_events_day() -> None:
    facts = {"last_paid_order_date": "2025-07-01", TODAY: "2025-07-31"}

    def holds(op: str, value: Any) -> bool:
        predicate = compiled(as_group({"field": "last_paid_order_date", "operator": op, "value": value}),
                             Discards("unused"))
        assert predicate is not None
        return predicate(facts)

    assert holds("within_last_days", 30) and not holds("within_last_days", 29)
    assert holds("not_within_last_days", 29) and not holds("not_within_last_days", "30")
    assert holds("before", "2025-07-02") and holds("after", "2025-06-30") and not holds("after", "2025-07-01")
    assert date.fromisoformat(facts[TODAY]) - date.fromisoformat(facts["last_paid_order_date"]) == timedelta(days=30)


def test_exit_conditions_read_the_stored_role_and_purchase_history() -> None:
    """Outside the consumer (the scheduler's exit conditions), the same fields come from the
    customer's stored row."""
    from wooflow.consumer.facts import state_facts
    from wooflow.consumer.history import History, Paid

    h = History((Paid(1, int((T0 - timedelta(days=400)).timestamp() * 1000), Decimal("30"), "PLN", (11,)),
                 Paid(2, int((T0 - timedelta(days=10)).timestamp() * 1000), Decimal("12.5"), "PLN", (12, 13))))
    facts = state_facts({"role": "subscriber", "history": h.to_json(), "order_count": 2}, "PLN", now=T0)
    assert facts["customer_role"] == "subscriber" and facts[TODAY] == T0.date().isoformat()
    assert facts["purchased_products_all_time"] == [11, 12, 13]
    assert (facts["first_paid_order_date"], facts["last_paid_order_date"]) == ("2023-11-28", "2024-12-22")
    assert (facts["order_count_last_365_days"], facts["total_spent_last_365_days"]) == (1, Decimal("12.5"))
    assert "purchased_products_all_time" not in state_facts({"order_count": 1}, now=T0)  # no history kept
