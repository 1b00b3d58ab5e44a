"""The chaos run's judge (wooflow/ops/chaos/verify.py `compare`): given what the ledger
asked for and what arrived in the store, at the SMTP server and at the webhook receiver,
it counts lost, duplicated, repeated and unexpected effects — each of which a run must be
able to fail on. No pipeline here: the store, the mailbox and the receiver are filled by
hand."""

from __future__ import annotations

import time

import pytest

from wooflow.ops.chaos import traffic as T
from wooflow.ops.chaos.verify import compare
from wooflow.ops.chaos.world import Delivery, Mail, Mailbox, Receiver


def mail(subject: str, message_id: str) -> Mail:
    return Mail(message_id, "x@example.com", subject, time.monotonic())


@pytest.mark.unit
def test_the_judge_counts_lost_duplicated_repeated_and_unexpected_effects() -> None:
    store = T.NotedStore(seed=1)
    product = store.create_product("Cup", "10.00")
    orders = [store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                 billing={"email": f"o{i}@example.com"}, status="processing").id for i in range(3)]
    ledger = T.Ledger()
    for oid in orders:
        ledger.order_placed(oid)
    ledger.expect(T.WELCOME, "chaos:welcome:7", must=True)
    ledger.expect(T.CART, "chaos:cart:s1", must=False)  # a may: fine either way
    ledger.expect(T.COUPON_MAIL, f"chaos:coupon:{orders[0]}", must=True, email="o0@example.com")
    mailbox, receiver = Mailbox("u", "p"), Receiver("secret")

    a, b, c = orders
    for oid in (a, b, c):
        store.add_order_note(oid, f"chaos:new:{oid}")
    store.add_order_note(b, f"chaos:new:{b}")  # a second note: duplicated
    store.add_order_note(a, f"chaos:later:{a}")
    store.add_order_note(b, f"chaos:later:{b}")  # c's later note never came: lost
    store.add_order_note(c, "chaos:new:999")  # nobody asked: unexpected
    for oid in (a, b, c):
        receiver.got.add(Delivery(f"k{oid}", f"order:{oid}", True, 0.0))
    receiver.got.add(Delivery(f"k{a}", f"order:{a}", True, 0.0))  # the same delivery again: repeated
    mailbox.got.add(mail("chaos:welcome:7", "<w1>"))
    mailbox.got.add(mail("chaos:welcome:7", "<w2>"))  # another Message-ID: duplicated
    coupon = store.create_coupon("CHAOS-ABC", "5", "percent", email_restrictions=["o0@example.com"])
    mailbox.got.add(mail(f"chaos:coupon:{a}:{coupon.code}", "<c1>"))

    e = compare(ledger, store, mailbox, receiver)
    assert (e.lost, e.duplicated, e.repeated, e.unexpected, e.repeated_twice) == (1, 2, 1, 1, 0), e.examples
    assert e.by_kind["later_note"]["lost"] == 1 and e.by_kind["note"]["duplicated"] == 1
    assert e.by_kind["welcome_email"]["duplicated"] == 1 and e.by_kind["webhook"]["repeated"] == 1
    assert e.by_kind["coupon"] == {"expected": 1}  # the one coupon the completion asked for

    receiver.got.add(Delivery(f"k{a}", f"order:{a}", True, 0.0))  # and once more: beyond "at most once"
    assert compare(ledger, store, mailbox, receiver).repeated_twice == 1
