"""Conversions: the scheduler's activity reader on the real broker and PostgreSQL credits an
order to the last message the customer engaged with inside the store's window, keeps the
credit up to the order's refunds and cancellation, and a replay of the topic changes
nothing. The opens, clicks and sends are the rows the tracker and the email action write."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.rules_kit import T0, EventProducer, order_event
from tests.support import make_store, unique, wait_until_consumed
from wooflow.api.funnel import rebuild
from wooflow.consumer.merge import guest_key
from wooflow.kafka import topics
from wooflow.scheduler.activity import ActivityReader
from wooflow.settings import Settings
from wooflow.stores import Store, upsert_store
from wooflow.workers.testing import RoleThread

pytestmark = pytest.mark.integration
H = timedelta(hours=1)
D = timedelta(days=1)


def with_analytics(engine: Engine, store: Store, **analytics: Any) -> Store:
    store = Store(**{**store.__dict__, "settings": {"analytics": analytics}})
    upsert_store(engine, store)
    return store


def message(engine: Engine, store: str, ckey: str, rule: int, step: int, sent: datetime,
            hits: tuple[tuple[str, datetime, bool], ...] = ()) -> str:
    """A sent message and its opens/clicks ((kind, at, machine)), as the email action and
    the tracker write them."""
    mid = unique("msg")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO messages (message_id, store_id, rule_id, step, customer_key, event_id, sent_at) "
                          "VALUES (:m, :s, :r, :p, :k, 'e', :at)"),
                     {"m": mid, "s": store, "r": rule, "p": step, "k": ckey, "at": sent})
        for i, (kind, at, machine) in enumerate(hits):
            conn.execute(text("INSERT INTO engagements (message_id, kind, link, machine, store_id, rule_id, step, "
                              "customer_key, at) VALUES (:m, :kind, :l, :mc, :s, :r, :p, :k, :at)"),
                         {"m": mid, "kind": kind, "l": -1 if kind == "open" else i, "mc": machine, "s": store,
                          "r": rule, "p": step, "k": ckey, "at": at})
    return mid


def credits(engine: Engine, store: str) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM message_conversions WHERE store_id = :s"), {"s": store}).mappings()
        return {int(r["order_id"]): {k: v for k, v in r.items() if k != "created_at"} for r in rows}


def refunded(event: dict[str, Any], amount: str, modified: datetime, status: str = "processing") -> dict[str, Any]:
    """The order after a refund, as its order.updated webhook normalises."""
    order = {**event["order"], "total_refunded": Decimal(amount), "date_modified": modified, "status": status}
    return {**event, "event_id": unique("ev"), "order": order, "occurred_at": modified, "topic": "order.updated",
            "action": "updated"}


def test_orders_are_credited_to_the_last_touch_in_the_window_refunds_reduce_replays_change_nothing(
        settings: Settings, engine: Engine) -> None:
    shop = with_analytics(engine, make_store(engine), window_days=7)
    by_send = with_analytics(engine, make_store(engine), window_days=2, touch="send")
    s = settings.model_copy(update={"scheduler_group": f"{settings.topic_prefix}scheduler"})
    # c1: an opened message, then a clicked one; the click is the last touch
    message(engine, shop.id, "c1", 11, 0, T0, (("open", T0 + H, False),))
    clicked = message(engine, shop.id, "c1", 12, 1, T0 + 2 * H, (("click", T0 + 3 * H, False),))
    # the guest c2 was before registering clicked a message; c3 was only opened by a mail scanner
    as_guest = message(engine, shop.id, guest_key("Two@Example.com"), 13, 0, T0, (("click", T0 + H, False),))
    message(engine, shop.id, "c3", 11, 0, T0, (("open", T0 + H, True),))
    # c5 got a message and never opened it; in the send-based store that is enough
    message(engine, shop.id, "c5", 11, 0, T0)
    sent = message(engine, by_send.id, "c5", 21, 0, T0)

    first = order_event(shop.id, 101, customer_id=1, total="50.00", created=T0 + D)
    events = [
        first,
        order_event(shop.id, 102, customer_id=1, total="70.00", created=T0 + 8 * D),  # 7 days after the click: out
        order_event(shop.id, 103, customer_id=2, email="two@example.com", total="30.00", created=T0 + 2 * H),
        order_event(shop.id, 104, customer_id=3, total="40.00", created=T0 + 2 * H),  # a machine's open only
        order_event(shop.id, 105, customer_id=5, total="45.00", created=T0 + D),  # never opened
        order_event(by_send.id, 201, customer_id=5, total="60.00", currency="EUR", created=T0 + D),
        order_event(shop.id, 106, customer_id=1, total="20.00", created=T0 + 2 * D),
        order_event(shop.id, 107, customer_id=1, total="99.00", created=T0 + D, status="pending"),
    ]
    events += [
        refunded(first, "12.50", T0 + 3 * D),  # a partial refund
        refunded(first, "5.00", T0 + 2 * D),  # an older state of the order, arriving late: changes nothing
        refunded(events[6], "0", T0 + 3 * D, status="cancelled"),  # cancelled after it was credited
        refunded(events[7], "0", T0 + 3 * D, status="failed"),  # a pending order that failed
    ]
    producer = EventProducer(s)
    for ev in events:
        producer.send("OrderEvent", ev)
    producer.flush()
    with RoleThread(ActivityReader(s, engine), "activity"):
        wait_until_consumed(s, s.scheduler_group, [topics.ORDERS])
    got = credits(engine, shop.id)
    assert {o: (c["message_id"], c["rule_id"], c["step"], c["touch"]) for o, c in got.items()} == {
        101: (clicked, 12, 1, "click"), 103: (as_guest, 13, 0, "click"), 106: (clicked, 12, 1, "click"),
        107: (clicked, 12, 1, "click")}
    assert (got[101]["revenue"], got[101]["refunded"], got[101]["voided"]) == (Decimal(50), Decimal("12.5"), False)
    assert got[101]["touched_at"] == T0 + 3 * H and got[101]["ordered_at"] == T0 + D
    assert got[103]["customer_key"] == "c2"
    assert got[106]["voided"] and got[107]["voided"]
    assert {o: (c["message_id"], c["touch"], c["currency"]) for o, c in credits(engine, by_send.id).items()} == {
        201: (sent, "send", "EUR")}

    # a replay of the whole topic (a new group reading it from the start) changes nothing
    replay = s.model_copy(update={"scheduler_group": f"{settings.topic_prefix}replay"})
    with RoleThread(ActivityReader(replay, engine), "replay"):
        wait_until_consumed(replay, replay.scheduler_group, [topics.ORDERS])
    assert credits(engine, shop.id) == got
    # the daily sums the triggers kept through inserts, refunds and cancellations are the rows' sums
    daily = text("SELECT * FROM conversion_daily WHERE store_id = :s ORDER BY rule_id, day, step, currency")
    with engine.connect() as conn:
        kept = [tuple(r) for r in conn.execute(daily, {"s": shop.id})]
    with engine.connect() as conn, conn.begin() as tx:
        rebuild(conn, shop.id)
        assert [tuple(r) for r in conn.execute(daily, {"s": shop.id})] == kept
        tx.rollback()
    assert sum(r[5] for r in kept) == 2 and sum(r[6] for r in kept) == Decimal("67.5")  # 101 and 103, net
