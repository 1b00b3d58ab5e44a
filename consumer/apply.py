"""Applying one event to the batch's state, producing the TriggerContext triggers read.

Every function here is replay-safe: applying an event a second time (a batch consumed
again after a crash, a topic replay) changes no state and yields the same context as
the first time, so the same triggers fire and the same commands (same idempotency keys)
come out. What makes that possible is stored with the order: the event that first saw
it, the last few status transitions by event id, and the customer's aggregates just
before the event that (un)counted it. Events older than what was applied (late,
out-of-order deliveries) change nothing: `date_modified` orders an order's changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import cast

from wooflow.consumer.history import History, Paid
from wooflow.consumer.state import Aggregates, Order, StateBatch, Sub
from wooflow.consumer.tiers import Loyalty
from wooflow.consumer.triggers import Keep, TriggerContext
from wooflow.consumer.values import (
    CustomerEventIn,
    OrderEventIn,
    OrderIn,
    ProductEventIn,
    StorefrontEventIn,
    SubscriptionEventIn,
    SubscriptionIn,
    money,
    ms,
)
from wooflow.jsontypes import JSONValue
from wooflow.schemas.codec import Record

TRANSITIONS_KEPT = 8
PAID_STATUSES = frozenset({"processing", "completed"})  # WooCommerce's wc_get_is_paid_statuses()


def paid_of(oid: int, o: OrderIn | None, total: Decimal, currency: str, created_ms: int) -> Paid:
    """An order as the purchase history keeps it (history.py)."""
    paid = o.get("date_paid") if o is not None else None
    pids: list[int] = []
    for li in (o.get("line_items") or ()) if o is not None else ():
        pids.extend(i for i in (li["product_id"], li.get("variation_id") or 0) if i)
    return Paid(oid, ms(paid) if paid else created_ms, total, currency, tuple(dict.fromkeys(pids)))


def combine(before: Aggregates, total: Decimal, currency: str, created_ms: int, sign: int,
            lo: Loyalty, paid: Paid | None = None) -> Aggregates:
    """The customer's aggregates after an order starts (sign=+1) or stops (-1) counting;
    its history too, where the store keeps one (`paid`: the order, see `paid_of`)."""
    t = dict(before.totals)
    t[currency] = t.get(currency, Decimal(0)) + sign * total
    f, last = before.first_order_ms, before.last_order_ms
    if sign > 0:
        f = created_ms if f is None else min(f, created_ms)
        last = created_ms if last is None else max(last, created_ms)
    history = before.history
    if history is not None and paid is not None:
        history = history.counted(paid) if sign > 0 else history.uncounted(paid.order_id)
    after = Aggregates(max(0, before.order_count + sign), t, before.points + sign * lo.earned(total), f, last,
                       before.tier, history)
    if lo.levels:
        reached = lo.tier_for(lo.metric_of(after, currency))
        if lo.rank(reached) > lo.rank(after.tier):  # tiers only go up on their own
            after.tier = reached  # `after` is new: nobody holds it yet
    return after


def apply_order(ev: OrderEventIn, state: StateBatch, lo: Loyalty, keep: Keep = Keep.CUSTOMERS) -> TriggerContext:
    if keep < Keep.CUSTOMERS:
        return _order_only(ev, state, lo, keep)
    store, ckey, eid = ev["store_id"], ev["customer_key"], ev["event_id"]
    o = ev.get("order")
    oid = int(ev["order_id"])
    cust = state.customer(store, ckey)
    if keep >= Keep.HISTORY and cust.agg.history is None:
        cust.agg = replace(cust.agg, history=History())  # kept from now on (needs.py); `agg` is a value
    row = state.orders.get((store, oid))
    stored = row.status if row is not None else None  # the status wooflow had before this event
    ctx = TriggerContext("OrderEvent", ev, lo, customer=cust)
    if o is None:  # order.deleted: only {"id": N}; it stops counting like a trashed order
        if row is None:
            ctx.before = ctx.after = cust.agg
            return ctx
        status, mod, total, currency, created = "trash", max(ms(ev["occurred_at"]), row.modified_ms), row.total, \
            row.currency, row.created_ms
    else:
        status = str(o["status"]).removeprefix("wc-")
        mod, total, currency, created = ms(o["date_modified"]), money(o["total"]), str(o["currency"]), \
            ms(o["date_created"])
        if o.get("customer_id") and cust.customer_id != o["customer_id"]:
            cust.customer_id, cust.dirty = int(o["customer_id"]), True
        email = (o.get("billing") or {}).get("email") or None
        if email and cust.email != email:
            cust.email, cust.dirty = email, True
    ctx.status, ctx.currency, ctx.order_total = status, currency, total

    replay = False
    if row is None:
        row = Order(store, oid, ckey, eid, status, mod, [], total, currency, created, dirty=True, marks=new_marks())
        state.orders[(store, oid)] = row
        ctx.first_seen = True
        prev = ev.get("previous_status")
        if prev and prev != status:  # a bridge that knew the previous status (e.g. a status-change hook)
            row.transitions.append([eid, prev, status])
            ctx.previous_status = prev
    else:
        ctx.first_seen = row.first_event_id == eid
        seen = next((t for t in row.transitions if t[0] == eid), None)
        if seen is not None:  # this event changed the status before: the same change again
            ctx.previous_status, ctx.status = seen[1], seen[2]
            replay = True
        elif mod < row.modified_ms or (mod == row.modified_ms and status == row.status):
            ctx.stale = mod < row.modified_ms
        else:
            if status != row.status:
                if row.status:  # "" while the store kept no status: no transition from it
                    ctx.previous_status = row.status
                    row.transitions = [*row.transitions, [eid, row.status, status]][-TRANSITIONS_KEPT:]
                row.status = status
            if row.counted and o is not None and (total != row.total or currency != row.currency):
                # an edited paid order: totals follow, no trigger
                a = cust.agg
                t = dict(a.totals)
                t[row.currency] = t.get(row.currency, Decimal(0)) - row.total
                t[currency] = t.get(currency, Decimal(0)) + total
                h = a.history.counted(paid_of(oid, o, total, currency, row.created_ms)) if a.history else a.history
                cust.agg = Aggregates(a.order_count, t, a.points, a.first_order_ms, a.last_order_ms, a.tier, h)
                cust.dirty = True
            row.modified_ms, row.total, row.currency, row.dirty = mod, total, currency, True
            if row.customer_key != ckey:
                row.customer_key = ckey

    mark(ctx, row, o, eid, stored)
    if row.count_event_id == eid and row.before is not None:
        # replay of the event that last (un)counted this order: same before/after as then
        sign = 1 if row.counted else -1
        before = Aggregates.from_json(row.before)
        ctx.count_change, ctx.before, ctx.counted = sign, before, sign > 0
        ctx.after = combine(before, row.total, row.currency, row.created_ms, sign, lo,
                            paid_of(oid, o, row.total, row.currency, row.created_ms) if before.history is not None
                            else None)
        return ctx
    counts = status in lo.counted_statuses
    if replay or ctx.stale or counts == row.counted:
        ctx.before = ctx.after = cust.agg
        ctx.counted = row.counted
        return ctx
    sign = 1 if counts else -1
    before = cust.agg
    after = combine(before, row.total, row.currency, row.created_ms, sign, lo,
                    paid_of(oid, o, row.total, row.currency, row.created_ms) if before.history is not None else None)
    cust.agg, cust.dirty = after, True
    cust.points_delta += after.points - before.points
    if after.tier != before.tier:
        cust.tier_raised = True
    row.counted, row.count_event_id, row.before, row.dirty = counts, eid, before.to_json(), True
    ctx.count_change, ctx.before, ctx.after, ctx.counted = sign, before, after, counts
    return ctx


def new_marks() -> dict[str, JSONValue]:
    """The marks of an order first seen now: refunds tracked from zero ("rf"), so a later
    refund is told apart from one made before wooflow kept marks (rows older than them)."""
    return {"rf": "0"}


def mark(ctx: TriggerContext, row: Order, o: OrderIn | None, eid: str, stored: str | None) -> None:
    """What this event decides once per order, replay-safe (by event id, in `row.marks`):
    - paid (`ctx.paid`): the first event that carries `date_paid`, whatever the status path
      (pending → processing, on-hold → completed, straight to completed). An order stored
      in a paid status before wooflow kept marks was paid before: marked "", no trigger.
    - refunds (`ctx.refund`): the order's refunded total grew (REST `refunds`; WooCommerce
      sends order.updated on a refund, often with the same date_modified). Rows older than
      the marks record their refunds without a trigger."""
    marks = row.marks
    paid = marks.get("paid")
    if paid == eid:
        ctx.paid = True
    elif paid is None and o is not None and not ctx.stale and o.get("date_paid"):
        before_marks = stored is not None and "rf" not in marks and stored in PAID_STATUSES
        marks["paid"] = "" if before_marks else eid
        ctx.paid, row.dirty = not before_marks, True
    transitions = marks.get("rt")
    done = transitions if isinstance(transitions, list) else []
    if done:
        seen = next((t for t in done if isinstance(t, list) and t and t[0] == eid), None)
        if seen is not None:
            before, after = Decimal(str(seen[1])), Decimal(str(seen[2]))
            ctx.refund = (before, after) if after > before else None
            return
    if o is None or ctx.stale:
        return
    refunds = o.get("refunds")
    known = marks.get("rf")
    if not refunds and (known is None or known == "0"):  # the common case: nothing refunded, then or now
        return
    refunded = -sum((money(r["total"]) for r in refunds or ()), Decimal(0))
    before = Decimal(str(known)) if known is not None else Decimal(0)
    if refunded == before:
        return
    marks["rf"], row.dirty = str(refunded), True
    marks["rt"] = [*done, [eid, str(before), str(refunded)]][-TRANSITIONS_KEPT:]
    if refunded > before and known is not None:
        ctx.refund = (before, refunded)


def _order_only(ev: OrderEventIn, state: StateBatch, lo: Loyalty, keep: Keep) -> TriggerContext:
    """`apply_order` for a store that keeps less than everything: no customer row, no
    counting; the order row written at its first sight (`Keep.SEEN`, status unknown: "")
    and, from `Keep.ORDERS`, again only when its status changes (what `order_status_changed`
    and `previous_status` read; a newer event with the same status decides nothing new)."""
    store, eid = ev["store_id"], ev["event_id"]
    o = ev.get("order")
    oid = int(ev["order_id"])
    row = state.orders.get((store, oid)) if keep else None
    ctx = TriggerContext("OrderEvent", ev, lo)
    if o is None:
        status, mod = "trash", ms(ev["occurred_at"])
        total, currency, created = (row.total, row.currency, row.created_ms) if row is not None else (None, "", 0)
    else:
        status = str(o["status"]).removeprefix("wc-")
        mod, total, currency, created = ms(o["date_modified"]), money(o["total"]), str(o["currency"]), \
            ms(o["date_created"])
    ctx.status, ctx.currency, ctx.order_total = status, currency, total
    if not keep:
        return ctx
    tracked = keep >= Keep.ORDERS
    if row is None:
        row = Order(store, oid, ev["customer_key"], eid, status if tracked else "", mod if tracked else 0, [],
                    total if total is not None else Decimal(0), currency, created, dirty=True,
                    first_sight_only=not tracked, marks=new_marks() if tracked else {})
        state.orders[(store, oid)] = row
        ctx.first_seen = True
        prev = ev.get("previous_status")
        if tracked and prev and prev != status:
            row.transitions.append([eid, prev, status])
            ctx.previous_status = prev
        if tracked:
            mark(ctx, row, o, eid, None)
        return ctx
    ctx.first_seen = row.first_event_id == eid
    if not tracked:
        return ctx
    stored = row.status
    seen = next((t for t in row.transitions if t[0] == eid), None)
    if seen is not None:  # this event changed the status before: the same change again
        ctx.previous_status, ctx.status = seen[1], seen[2]
    elif mod < row.modified_ms or (mod == row.modified_ms and status == row.status):
        ctx.stale = mod < row.modified_ms
    elif status != row.status:
        if row.status:
            ctx.previous_status = row.status
            row.transitions = [*row.transitions, [eid, row.status, status]][-TRANSITIONS_KEPT:]
        row.status, row.modified_ms, row.dirty = status, max(mod, row.modified_ms), True
    mark(ctx, row, o, eid, stored)
    return ctx


def apply_customer(ev: CustomerEventIn, state: StateBatch, lo: Loyalty, keep: Keep = Keep.CUSTOMERS) -> TriggerContext:
    if keep < Keep.CUSTOMERS:
        return TriggerContext("CustomerEvent", ev, lo)
    cust = state.customer(ev["store_id"], ev["customer_key"])
    c = ev.get("customer")
    ctx = TriggerContext("CustomerEvent", ev, lo, customer=cust, before=cust.agg, after=cust.agg)
    if c is None:
        return ctx
    if ev.get("action") == "created":
        created = cust.engine.get("created_event")
        if created is None:
            cust.engine["created_event"] = ev["event_id"]
            cust.dirty = True
            ctx.first_seen = True
        elif created == ev["event_id"]:
            ctx.first_seen = True
    if c.get("id") and cust.customer_id != c["id"]:
        cust.customer_id, cust.dirty = int(c["id"]), True
    role = c.get("role")
    if role and cust.role != role:
        cust.role, cust.dirty = str(role), True
    if c.get("email") and cust.email != c["email"]:
        cust.email, cust.dirty = c["email"], True
    return ctx


def apply_subscription(ev: SubscriptionEventIn, state: StateBatch, lo: Loyalty,
                       keep: Keep = Keep.CUSTOMERS) -> TriggerContext:
    """A subscription's state, kept for every store (subscriptions are few): status and its
    transitions by event id (like an order's), products, schedule. `subscription.deleted`
    carries only the id: the subscription is `trash` from then on."""
    store, eid = ev["store_id"], ev["event_id"]
    sid = int(ev["subscription_id"])
    x = ev.get("subscription")
    row = state.subscriptions.get((store, sid))
    ctx = TriggerContext("SubscriptionEvent", ev, lo)
    if keep >= Keep.CUSTOMERS:
        ctx.customer = state.customer(store, ev["customer_key"])
        ctx.before = ctx.after = ctx.customer.agg
    status = str(x["status"]).removeprefix("wc-") if x is not None else "trash"
    mod = ms(x["date_modified"]) if x is not None else max(ms(ev["occurred_at"]), row.modified_ms if row else 0)
    ctx.status = status
    if row is None:
        row = state.subscriptions[(store, sid)] = Sub(store, sid, ev["customer_key"], eid, status, mod, dirty=True)
        ctx.first_seen = True
        _schedule(row, x)
    else:
        ctx.first_seen = row.first_event_id == eid
        seen = next((t for t in row.transitions if t[0] == eid), None)
        if seen is not None:  # this event changed the status before: the same change again
            ctx.previous_status, ctx.status = seen[1], seen[2]
        elif mod < row.modified_ms:
            ctx.stale = True
        else:
            if status != row.status:
                ctx.previous_status = row.status
                row.transitions = [*row.transitions, [eid, row.status, status]][-TRANSITIONS_KEPT:]
                row.status = status
            _schedule(row, x)
            row.modified_ms, row.customer_key, row.dirty = mod, ev["customer_key"], True
    state.index_subscription(row)
    return ctx


def _schedule(row: Sub, x: SubscriptionIn | None) -> None:
    if x is None:
        return
    pids: list[int] = []
    for li in x.get("line_items") or ():
        pids.extend(i for i in (li["product_id"], li.get("variation_id") or 0) if i)
    nxt, trial, end = x.get("next_payment_date"), x.get("trial_end_date"), x.get("end_date")
    row.product_ids = list(dict.fromkeys(pids))
    row.email = str((x.get("billing") or {}).get("email") or "")
    row.billing_period, row.billing_interval = str(x.get("billing_period") or ""), int(x.get("billing_interval") or 1)
    row.total, row.currency = money(x.get("total")), str(x.get("currency") or "")
    row.next_payment_ms = ms(nxt) if nxt else None
    row.trial_end_ms = ms(trial) if trial else None
    row.end_ms = ms(end) if end else None


def apply_storefront(ev: StorefrontEventIn, state: StateBatch, lo: Loyalty,
                     keep: Keep = Keep.CUSTOMERS) -> TriggerContext:
    """Storefront events change no state of the rule engine (the scheduler keeps carts and
    browsing); a store keeping customers gives a storefront trigger its customer's state.
    (`customer_state.view_counts`, which no rule, condition or other reader ever read, is
    no longer written.)"""
    if keep < Keep.CUSTOMERS:
        return TriggerContext("StorefrontEvent", ev, lo)
    cust = state.customer(ev["store_id"], ev["customer_key"])
    return TriggerContext("StorefrontEvent", ev, lo, customer=cust, before=cust.agg, after=cust.agg)


def apply_product(ev: ProductEventIn, state: StateBatch, lo: Loyalty, keep: Keep = Keep.CUSTOMERS) -> TriggerContext:
    """Products keep no state: the event as it is."""
    return TriggerContext("ProductEvent", ev, lo, first_seen=True)


Applier = Callable[[Record, StateBatch, Loyalty, Keep], TriggerContext]


def no_state(schema: str) -> Applier:
    """Events of a schema without state of their own (coupons): as they are."""
    def apply(ev: Record, state: StateBatch, lo: Loyalty, keep: Keep = Keep.CUSTOMERS) -> TriggerContext:
        return TriggerContext(schema, ev, lo, first_seen=True)
    return apply


# Keyed by the schema each event was decoded with, so each applier gets the records its
# own type describes (schemas/types.py; the decoder is held to them in the tests).
APPLIERS: dict[str, Applier] = {
    "OrderEvent": cast(Applier, apply_order), "CustomerEvent": cast(Applier, apply_customer),
    "StorefrontEvent": cast(Applier, apply_storefront), "ProductEvent": cast(Applier, apply_product),
    "SubscriptionEvent": cast(Applier, apply_subscription)}
STATEFUL = frozenset({"OrderEvent", "CustomerEvent", "StorefrontEvent", "SubscriptionEvent"})
# The least a store must keep for an event of the schema to change its state: below it the
# event decides nothing but its own triggers, and is not even decoded when none listens.
# Subscriptions are kept for every store (the scheduler's renewal and trial scans read them).
CHANGES_STATE: dict[str, Keep] = {"OrderEvent": Keep.SEEN, "CustomerEvent": Keep.CUSTOMERS,
                                  "SubscriptionEvent": Keep.NOTHING}
# ... and to read it (a storefront event's triggers see its customer's state)
READS_STATE: dict[str, Keep] = {**CHANGES_STATE, "StorefrontEvent": Keep.CUSTOMERS}


def changes_state(schema: str, keep: Keep) -> bool:
    need = CHANGES_STATE.get(schema)
    return need is not None and keep >= need


def reads_state(schema: str, keep: Keep) -> bool:
    need = READS_STATE.get(schema)
    return need is not None and keep >= need
