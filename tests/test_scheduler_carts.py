"""Carts and storefront behaviour, from the events the activity reader applies to the
triggers the scan fires: guests become reachable when an email is captured, an idle cart is
abandoned after the store's setting, its recovery link restores it, the order that follows
recovers it and is attributed to the workflow; views, category browsing and searches
without a purchase fire once per cooldown."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

from tests.harness import ApiThread
from tests.pipeline import add_rule
from tests.support import make_store, unique
from wooflow.clock import FrozenClock
from wooflow.consumer.engine import RuleEngine
from wooflow.consumer.rules import RuleCache
from wooflow.producers.keys import email_hash
from wooflow.scheduler.activity import record_order
from wooflow.scheduler.carts import record_storefront
from wooflow.scheduler.recovery import parse_items_param
from wooflow.scheduler.scan import Scanner
from wooflow.scheduler.synth import Firer
from wooflow.stores import Store, StoreCache, upsert_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, 10, 0, tzinfo=timezone.utc)
ACTIONS = [{"type": "add_points", "params": {"points": 1}, "delay": "hour 1"},
           {"type": "add_points", "params": {"points": 1}, "delay": "hour 24"}]


def sf(store: Store, session: str, kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {"event_id": unique("sf"), "store_id": store.id, "session_id": session, "event_type": kind,
            "occurred_at": at, "customer_key": fields.pop("customer_key", f"anon-s{session}"),
            "cart": fields.pop("cart", []), **fields}


def scanner(settings, engine) -> tuple[Scanner, RuleCache]:  # type: ignore[no-untyped-def]
    rules = RuleCache(engine)
    rules.refresh(force=True)
    return Scanner(settings, engine, rules, Firer(RuleEngine(rules)), FrozenClock(), StoreCache(engine, 0)), rules


def rows(engine, sql: str, **params: Any) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def test_guest_cart_abandoned_recovered_through_the_link_and_attributed(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine, "https://shop.example")
    upsert_store(engine, Store(**{**store.__dict__, "settings": {"abandoned_cart_after": "30m"}}))
    rule_id = add_rule(engine, store.id, {"name": "carts", "trigger": "abandoned_cart", "actions": ACTIONS,
                                          "exit_conditions": [{"type": "cart_recovered"}]})
    sc, _ = scanner(settings, engine)
    sess = unique("sess")
    items = [{"product_id": 42, "quantity": 2, "price": Decimal("19.90"), "name": "Mug"},
             {"product_id": 7, "variation_id": 8, "quantity": 1, "price": Decimal("5.00"), "name": "Spoon"}]
    with engine.begin() as conn:
        record_storefront(conn, sf(store, sess, "cart_updated", T0, cart=items, cart_total=Decimal("44.80")))
    # an anonymous cart cannot be recovered by email: it is not abandoned yet, whatever its age
    assert sc.scan_carts(T0 + timedelta(hours=2), store.id) == 0
    guest = f"g{email_hash('guest@example.com')}"
    with engine.begin() as conn:
        record_storefront(conn, sf(store, sess, "email_captured", T0 + timedelta(minutes=1), email="Guest@example.com"))
    assert sc.scan_carts(T0 + timedelta(minutes=30), store.id) == 0  # idle for 29 minutes: still active
    assert sc.scan_carts(T0 + timedelta(minutes=31), store.id) == 1
    assert sc.scan_carts(T0 + timedelta(minutes=40), store.id) == 0  # once
    cart = rows(engine, "SELECT * FROM carts WHERE store_id = :s", s=store.id)[0]
    assert cart["status"] == "abandoned" and cart["customer_key"] == guest
    steps = rows(engine, "SELECT * FROM scheduled_steps WHERE rule_id = :r ORDER BY step", r=rule_id)
    assert [s["due_at"] - T0 for s in steps] == [timedelta(minutes=31, hours=1), timedelta(minutes=31, hours=24)]
    ctx = steps[0]["command"]["context_json"]
    assert '"recovery_url":"http://localhost:8000/recover/cart/' in ctx and '"subject_type"' not in ctx
    assert steps[0]["command"]["subject_type"] == "cart" and steps[0]["command"]["subject_id"] == sess

    # the link restores the cart: a redirect to the store's cart with the items
    with ApiThread(settings) as api:
        r = httpx.get(f"{api.url}/recover/cart/{cart['token']}", follow_redirects=False)
        assert r.status_code == 302, r.text
        target = urlsplit(r.headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == "https://shop.example/cart/"
        q = parse_qs(target.query)
        assert q["wooflow_cart"] == [cart["token"]]
        assert parse_items_param(q["wooflow_items"][0]) == [
            {"product_id": 42, "variation_id": 0, "quantity": 2}, {"product_id": 7, "variation_id": 8, "quantity": 1}]
        assert httpx.get(f"{api.url}/recover/cart/nope", follow_redirects=False).status_code == 404
    # the first reminder went out (the scheduler marks it emitted), then the guest orders
    with engine.begin() as conn:
        conn.execute(text("UPDATE scheduled_steps SET status = 'emitted', emitted_at = :t "
                          "WHERE rule_id = :r AND step = 0"),
                     {"t": T0 + timedelta(hours=1, minutes=31), "r": rule_id})
        record_order(conn, {"store_id": store.id, "customer_key": guest, "action": "created", "order": {
            "id": 900, "status": "processing", "date_created": T0 + timedelta(hours=3), "customer_id": 0,
            "total": Decimal("44.8000"), "currency": "PLN", "meta": {"_wooflow_cart": f'"{cart["token"]}"'},
            "billing": {"email": "guest@example.com"}}})
    cart = rows(engine, "SELECT * FROM carts WHERE store_id = :s", s=store.id)[0]
    assert cart["status"] == "recovered" and cart["recovered_order_id"] == 900 and cart["clicked_at"] is not None
    att = rows(engine, "SELECT * FROM attributions WHERE store_id = :s", s=store.id)
    assert [(a["rule_id"], a["order_id"], a["revenue"], a["kind"], a["cart_session"]) for a in att] == [
        (rule_id, 900, Decimal("44.8000"), "cart_recovery", sess)]


def test_an_order_before_abandonment_converts_the_cart_and_new_activity_starts_a_new_episode(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    add_rule(engine, store.id, {"name": "carts", "trigger": "abandoned_cart", "actions": ACTIONS})
    sc, _ = scanner(settings, engine)
    sess, ckey = unique("sess"), "c77"
    cart = [{"product_id": 1, "quantity": 1, "price": Decimal("10")}]
    with engine.begin() as conn:
        record_storefront(conn, sf(store, sess, "cart_updated", T0, customer_key=ckey, cart=cart))
        record_order(conn, {"store_id": store.id, "customer_key": ckey, "action": "created", "order": {
            "id": 1, "status": "pending", "date_created": T0 + timedelta(minutes=5), "customer_id": 77, "total": "10",
            "currency": "PLN", "billing": {"email": "c77@example.com"}}})
    assert sc.scan_carts(T0 + timedelta(hours=1), store.id) == 0
    assert rows(engine, "SELECT status FROM carts WHERE store_id = :s", s=store.id)[0]["status"] == "ordered"
    # the same session fills a new cart later: a new episode, abandoned on its own
    with engine.begin() as conn:
        record_storefront(conn, sf(store, sess, "cart_updated", T0 + timedelta(days=1), customer_key=ckey, cart=cart))
    assert sc.scan_carts(T0 + timedelta(days=1, minutes=16), store.id) == 1
    # an empty cart is never abandoned
    with engine.begin() as conn:
        record_storefront(conn, sf(store, unique("s"), "cart_updated", T0, customer_key="c78", cart=[]))
    assert sc.scan_carts(T0 + timedelta(days=2), store.id) == 0


def behaviour(settings, engine, trigger: str, options: dict[str, Any]):  # type: ignore[no-untyped-def]
    store = make_store(engine, timezone="UTC")
    rule_id = add_rule(engine, store.id, {"name": trigger, "trigger": trigger, "trigger_options": options,
                                          "actions": [{"type": "add_points", "params": {"points": 1}}]})
    sc, rules = scanner(settings, engine)

    def scan(now: datetime) -> int:
        return sc.scan_rule(store, rules.get(rule_id), trigger, now)  # type: ignore[arg-type]
    return store, rule_id, scan


def test_product_viewed_n_times_within_a_window(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store, rule_id, scan = behaviour(settings, engine, "product_viewed", {"times": 3, "within": "day 2"})
    sess = unique("sess")
    with engine.begin() as conn:
        for h in (0, 5):
            record_storefront(conn, sf(store, sess, "product_viewed", T0 + timedelta(hours=h), product_id=42))
        record_storefront(conn, sf(store, unique("s"), "product_viewed", T0, product_id=42, customer_key="c9"))
    assert scan(T0 + timedelta(hours=6)) == 0
    with engine.begin() as conn:  # third view: still anonymous, so nobody to write to
        record_storefront(conn, sf(store, sess, "product_viewed", T0 + timedelta(hours=7), product_id=42))
    assert scan(T0 + timedelta(hours=8)) == 0
    with engine.begin() as conn:  # the guest gives an email: the session's views become theirs
        record_storefront(conn, sf(store, sess, "email_captured", T0 + timedelta(hours=8), email="v@example.com"))
    assert scan(T0 + timedelta(hours=9)) == 1
    with engine.begin() as conn:
        record_storefront(conn, sf(store, sess, "product_viewed", T0 + timedelta(hours=10), product_id=42,
                                  customer_key=f"g{email_hash('v@example.com')}"))
    assert scan(T0 + timedelta(hours=11)) == 0  # within the cooldown (= the window)
    row = rows(engine, "SELECT command FROM scheduled_steps WHERE rule_id = :r", r=rule_id)[0]
    ctx = row["command"]["context_json"]
    assert '"product":{"id":42,"views":3}' in ctx


def test_category_browsing_counts_category_and_product_views(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store, rule_id, scan = behaviour(settings, engine, "category_browsing", {"times": 3, "category_id": 15})
    with engine.begin() as conn:
        for i, kind in enumerate(("category_viewed", "product_viewed", "category_viewed")):
            record_storefront(conn, sf(store, "s-cat-1", kind, T0 + timedelta(minutes=i), category_id=15, product_id=3,
                                      customer_key="c10"))
            record_storefront(conn, sf(store, "s-cat-2", "category_viewed", T0, category_id=16, customer_key="c11"))
    assert scan(T0 + timedelta(hours=1)) == 1
    assert rows(engine, "SELECT customer_key FROM scheduled_steps WHERE rule_id = :r", r=rule_id) == [
        {"customer_key": "c10"}]


def test_search_without_purchase(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store, rule_id, scan = behaviour(settings, engine, "search_without_purchase", {"wait": "hour 24"})
    with engine.begin() as conn:
        record_storefront(conn, sf(store, "s-q-1", "search", T0, query="red mug", customer_key="c12"))
        record_storefront(conn, sf(store, "s-q-2", "search", T0, query="blue mug", customer_key="c13"))
        record_order(conn, {"store_id": store.id, "customer_key": "c13", "action": "created", "order": {
            "id": 5, "status": "processing", "date_created": T0 + timedelta(hours=2), "customer_id": 13, "total": "1",
            "currency": "PLN", "billing": {"email": "c13@example.com"}}})
    assert scan(T0 + timedelta(hours=23)) == 0
    assert scan(T0 + timedelta(hours=25)) == 1
    assert scan(T0 + timedelta(hours=30)) == 0
    got = rows(engine, "SELECT customer_key, command FROM scheduled_steps WHERE rule_id = :r", r=rule_id)
    assert [g["customer_key"] for g in got] == ["c12"] and '"last_query":"red mug"' in got[0]["command"]["context_json"]


def test_a_session_s_events_out_of_order_keep_the_newest_items(settings, engine) -> None:  # type: ignore[no-untyped-def]
    """Before the email is captured a guest's events are keyed by session, after it by the
    email hash: they can sit on different partitions and arrive in either order."""
    store = make_store(engine)
    sess = unique("sess")
    old = [{"product_id": 1, "quantity": 1, "price": Decimal("1")}]
    new = [{"product_id": 2, "quantity": 3, "price": Decimal("2")}]
    with engine.begin() as conn:
        record_storefront(conn, sf(store, sess, "email_captured", T0 + timedelta(minutes=2), email="o@example.com"))
        record_storefront(conn, sf(store, sess, "cart_updated", T0 + timedelta(minutes=1), cart=new))
        record_storefront(conn, sf(store, sess, "cart_updated", T0, cart=old))  # the oldest, last
    cart = rows(engine, "SELECT * FROM carts WHERE store_id = :s", s=store.id)[0]
    assert [i["product_id"] for i in cart["items"]] == [2] and cart["status"] == "active"
    assert cart["customer_key"] == f"g{email_hash('o@example.com')}"
    assert cart["last_activity_at"] == T0 + timedelta(minutes=2)


def test_a_recovery_sequence_stops_when_the_cart_changes_and_a_new_abandonment_starts_another(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.consumer.rules import RuleCache as Rules
    from wooflow.kafka.producer import Producer
    from wooflow.scheduler.emitter import Emitter
    from wooflow.schemas.codec import get_codec

    store = make_store(engine)
    rule_id = add_rule(engine, store.id, {"name": "carts", "trigger": "abandoned_cart", "actions": ACTIONS,
                                          "exit_conditions": [{"type": "cart_recovered"}]})
    sc, _ = scanner(settings, engine)
    sess, cart = unique("sess"), [{"product_id": 1, "quantity": 1, "price": Decimal("10")}]
    with engine.begin() as conn:
        record_storefront(conn, sf(store, sess, "cart_updated", T0, customer_key="c90", cart=cart))
    assert sc.scan_carts(T0 + timedelta(minutes=20), store.id) == 1
    with engine.begin() as conn:  # the shopper comes back and adds a second item
        record_storefront(conn, sf(store, sess, "cart_updated", T0 + timedelta(minutes=40), customer_key="c90",
                                  cart=cart * 2))
    s = settings.model_copy(update={"scheduler_stores": store.id})
    em = Emitter(s, engine, Producer(s), get_codec(None), FrozenClock(T0 + timedelta(hours=2)), Rules(engine))
    assert em.run_once() == 1  # the due step exits, and closes the rest of its sequence
    got = rows(engine, "SELECT status, exit_reason FROM scheduled_steps WHERE rule_id = :r ORDER BY step", r=rule_id)
    assert [g["status"] for g in got] == ["exited", "exited"]
    assert got[0]["exit_reason"] == "cart changed after it was abandoned"
    assert sc.scan_carts(T0 + timedelta(minutes=56), store.id) == 1  # abandoned again: a new sequence
    assert len(rows(engine, "SELECT DISTINCT event_id FROM scheduled_steps WHERE rule_id = :r", r=rule_id)) == 2


def test_cart_verdict_is_what_the_next_cart_scan_would_do(settings, engine) -> None:  # type: ignore[no-untyped-def]
    """The dry run's read-only view of a customer's cart (scan.cart_verdict): due, not yet
    due, below the rule's min_total, or none at all."""
    from types import SimpleNamespace

    from wooflow.scheduler.scan import abandoned_after_s, cart_verdict

    store = make_store(engine)
    key = "c4242"  # the store is new: no other cart of this key
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO carts (store_id, session_id, customer_key, items, total, last_activity_at, "
                          "token) "
                          "VALUES (:s, 'sess', :k, CAST(:items AS jsonb), 44.80, :t, :tok)"),
                     {"s": store.id, "k": key, "items": '[{"product_id": 42, "quantity": 2}]', "t": T0,
                      "tok": unique("tok")})
    due = T0 + timedelta(seconds=abandoned_after_s(store))
    with engine.connect() as conn:
        assert cart_verdict(conn, store, key, SimpleNamespace(min_total=None), due)[0] is True
        early, reason = cart_verdict(conn, store, key, SimpleNamespace(min_total=None), due - timedelta(seconds=1))
        assert early is False and "counts as abandoned from" in reason
        cheap, reason = cart_verdict(conn, store, key, SimpleNamespace(min_total=Decimal("50")), due)
        assert cheap is False and "below the trigger's min_total" in reason
        assert cart_verdict(conn, store, "c0", SimpleNamespace(min_total=None), due)[0] is False
