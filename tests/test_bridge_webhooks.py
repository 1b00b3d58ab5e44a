"""The bridge against the simulated store, over real HTTP, Kafka and PostgreSQL: every
webhook topic becomes the right event, re-sends dedupe by content (never by Delivery-ID),
bad input gets a clear 4xx, produces nothing and is counted."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from tests.harness import webhook_headers
from tests.support import make_sim_store, make_store, read_topic, wait_for, wait_until_bridge_idle
from wooflow.kafka import topics
from wooflow.producers.signature import sign
from wooflow.simulator.server import SimulatorServer

pytestmark = pytest.mark.integration

ALL_TOPICS = (
    "order.created", "order.updated", "order.deleted", "order.restored",
    "customer.created", "customer.updated", "customer.deleted",
    "product.created", "product.updated", "product.deleted", "product.restored",
    "coupon.created", "coupon.updated", "coupon.deleted", "coupon.restored",
    "action.woocommerce_checkout_order_processed", "action.woocommerce_order_status_processing_to_completed",
)


@pytest.fixture
def sim():  # type: ignore[no-untyped-def]
    with SimulatorServer(seed=11) as server:
        yield server


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def actions(events: list[tuple[str, dict]], id_field: str) -> list[tuple[int, str]]:
    return [(ev[id_field], ev["action"]) for _, ev in events]


def test_every_topic_becomes_the_right_event(settings, engine, bridge, sim) -> None:  # type: ignore[no-untyped-def]
    store = make_sim_store(engine, sim)
    hook = bridge.hook_url(store.id)
    for t in ALL_TOPICS:
        sim.store.create_webhook(t, hook, secret=store.webhook_secret)
    assert all(a.status_code == 200 for a in sim.store.deliveries(kind="ping"))  # pings answered 200
    st = sim.store
    alice = st.create_customer("alice@example.com", first_name="Alice")
    st.update_customer(alice.id, last_name="Nowak")
    mug = st.create_product("Kubek", "19.90", sku="MUG")
    st.update_product(mug.id, regular_price="21.50")
    st.delete_product(mug.id)
    st.restore_product(mug.id)
    coupon = st.create_coupon("welcome10", "10", "percent")
    st.update_coupon(coupon.id, amount="15")
    st.delete_coupon(coupon.id)
    st.restore_coupon(coupon.id)
    assert st.wait_idle(30)
    order = st.checkout(line_items=[{"product_id": mug.id, "quantity": 2}], customer_id=alice.id,
                        billing={"email": "alice@example.com", "first_name": "Alice", "country": "PL"},
                        payment_method="cod")
    assert st.wait_idle(30)
    st.set_order_status(order.id, "completed")
    assert st.wait_idle(30)
    st.delete_order(order.id)
    assert st.wait_idle(30)
    st.restore_order(order.id)
    assert st.wait_idle(30)
    st.delete_customer(alice.id)
    assert st.wait_idle(30)
    failed = [a for a in st.deliveries() if not a.success]
    assert not failed, [(a.topic, a.status_code, a.response_body[:200]) for a in failed]

    orders = read_topic(settings, topics.ORDERS)
    got = Counter(ev["action"] for _, ev in orders)
    assert got["created"] == 1 and got["deleted"] == 1 and got["restored"] == 1, got
    assert got["checkout"] == 1 and got["status_changed"] == 1 and got["updated"] >= 2, got
    checkout = next(ev for _, ev in orders if ev["action"] == "checkout")
    assert checkout["order"]["id"] == order.id and checkout["customer_key"] == f"c{alice.id}"
    assert str(checkout["order"]["total"]) == "43.0000" and checkout["order"]["currency"] == "PLN"
    changed = next(ev for _, ev in orders if ev["action"] == "status_changed")
    assert (changed["previous_status"], changed["order"]["status"]) == ("processing", "completed")
    deleted = next(ev for _, ev in orders if ev["action"] == "deleted")
    assert deleted["order_id"] == order.id and deleted["order"] is None
    assert all(ev["store_id"] == store.id and ev["source"] == "webhook" and ev["store_timezone"] == "Europe/Warsaw"
               for _, ev in orders)
    assert len({ev["event_id"] for _, ev in orders}) == len(orders)

    customers = read_topic(settings, topics.CUSTOMERS)
    assert {a for _, a in actions(customers, "customer_id")} == {"created", "updated", "deleted"}
    assert all(ev["customer_key"] == f"c{alice.id}" for _, ev in customers)

    products = read_topic(settings, topics.PRODUCTS)
    assert Counter(a for _, a in actions(products, "product_id")) == Counter(
        {"created": 1, "updated": 1, "deleted": 1, "restored": 1}), actions(products, "product_id")
    updated = next(ev for _, ev in products if ev["action"] == "updated")
    assert str(updated["product"]["price"]) == "21.5000" and updated["currency"] == "PLN"

    coupons = read_topic(settings, topics.COUPONS)
    assert Counter(a for _, a in actions(coupons, "coupon_id")) == Counter(
        {"created": 1, "updated": 1, "deleted": 1, "restored": 1}), actions(coupons, "coupon_id")
    name, cev = coupons[0]
    assert name == "CouponEvent" and cev["coupon"]["code"] == "welcome10" and cev["customer_key"] == f"cp{coupon.id}"


def test_a_redelivered_delivery_produces_one_event(settings, engine, bridge, sim) -> None:  # type: ignore[no-untyped-def]
    store = make_sim_store(engine, sim)
    sim.store.create_webhook("customer.created", bridge.hook_url(store.id), secret=store.webhook_secret)
    sim.store.create_customer("bob@example.com")
    assert sim.store.wait_idle(30)
    (first,) = sim.store.deliveries()
    assert first.success
    for n in range(3):  # network-level re-sends: same bytes, a new Delivery-ID each second
        h = dict(first.request_headers) | {"X-WC-Webhook-Delivery-ID": f"resend-{n}"}
        r = httpx.post(first.url, content=first.request_body, headers=h)
        assert r.status_code == 200 and r.json()["duplicate"] is True, r.text
    events = read_topic(settings, topics.CUSTOMERS)
    assert len(events) == 1
    assert counter("wooflow_events_duplicate_total", source="webhook") >= 3


def test_two_changes_sharing_a_delivery_id_and_second_both_count(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    """Delivery-ID = hash(webhook id + second): two different changes can share it."""
    store = make_store(engine)
    base = {"id": 77, "status": "processing", "currency": "PLN", "total": "10.00", "customer_id": 3,
            "date_created_gmt": "2026-11-25T10:00:00", "date_modified_gmt": "2026-11-25T10:00:09"}
    for status in ("processing", "completed"):
        r = bridge.webhook(store, "order.updated", base | {"status": status},
                           headers={"X-WC-Webhook-Delivery-ID": "same-second"})
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert [ev["order"]["status"] for _, ev in read_topic(settings, topics.ORDERS)] == ["processing", "completed"]


def test_resource_gone_is_answered_2xx_recorded_and_counted(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    body = json.dumps({"code": "woocommerce_rest_shop_order_invalid_id", "message": "Invalid ID.",
                       "data": {"status": 404}}).encode()
    before = counter("wooflow_webhooks_accepted_total", outcome="resource_gone")
    r = bridge.webhook(store, "order.updated", body)
    assert r.status_code == 200 and r.json()["accepted"] == 0
    assert counter("wooflow_webhooks_accepted_total", outcome="resource_gone") == before + 1
    with engine.connect() as conn:
        code = conn.execute(text("SELECT code FROM bridge_gone_deliveries WHERE store_id = :s"),
                            {"s": store.id}).scalar_one()
    assert code == "woocommerce_rest_shop_order_invalid_id"
    wait_until_bridge_idle(engine, store.id)
    assert read_topic(settings, topics.ORDERS) == []


def test_bad_input_is_a_counted_4xx_and_produces_nothing(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    url = bridge.hook_url(store.id)
    order = {"id": 9, "status": "pending", "total": "1.00", "date_created_gmt": "2026-11-25T10:00:00",
             "date_modified_gmt": "2026-11-25T10:00:00"}
    body = json.dumps(order).encode()

    def h(b: bytes, topic: str = "order.created", **extra: str) -> dict[str, str]:
        return webhook_headers(store.webhook_secret, b, topic) | extra

    truncated = body[:-7]
    cases = [
        ("truncated json", url, truncated, h(truncated), 400, "malformed_json"),
        ("wrong content type", url, body, h(body) | {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ("too large", url, b"{" + b" " * settings.max_body_bytes + b"}", h(body), 413, "body_too_large"),
        ("unknown topic", url, body, h(body, "order.exploded"), 400, "unknown_topic"),
        ("resource header disagrees", url, body, h(body, **{"X-WC-Webhook-Resource": "product"}), 400,
         "topic_mismatch"),
        ("unknown store", bridge.hook_url(f"x{store.id}"), body, h(body), 404, "unknown_store"),
        ("bad signature", url, body, h(body) | {"X-WC-Webhook-Signature": sign(body, "nope")}, 401,
         "invalid_signature"),
        ("missing signature", url, body, {"Content-Type": "application/json", "X-WC-Webhook-Topic": "order.created"},
         401, "invalid_signature"),
        ("not a resource", url, b'{"id": "x"}', h(b'{"id": "x"}'), 400, "invalid_resource"),
    ]
    for name, u, b, hdrs, status, reason in cases:
        before = counter("wooflow_webhooks_rejected_total", reason=reason)
        r = httpx.post(u, content=b, headers=hdrs)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        assert r.json()["error"] == reason and r.json()["message"], name
        assert counter("wooflow_webhooks_rejected_total", reason=reason) == before + 1, name
    # a replayed delivery (same content, new Delivery-ID): 200, flagged, nothing new
    for n in range(2):
        r = httpx.post(url, content=body, headers=h(body, **{"X-WC-Webhook-Delivery-ID": f"d{n}"}))
        assert r.status_code == 200 and r.json()["duplicate"] is (n == 1), r.text
    wait_until_bridge_idle(engine, store.id)
    assert len(read_topic(settings, topics.ORDERS)) == 1
    for t in (topics.CUSTOMERS, topics.PRODUCTS, topics.COUPONS, topics.STOREFRONT):
        assert read_topic(settings, t) == [], t
    wait_for(lambda: httpx.get(f"{bridge.url}/metrics").status_code == 200, 5, 0.1, "metrics")
    assert "wooflow_webhooks_rejected_total" in httpx.get(f"{bridge.url}/metrics").text


def test_an_event_kafka_refuses_goes_to_the_dlq_and_does_not_stall(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    """A 1.2 MB order fits the webhook size limit but not Kafka's message size: answered 2xx
    from the outbox, dead-lettered with its reason, and the next webhook goes straight through."""
    store = make_store(engine)

    def post(order: dict) -> httpx.Response:
        return bridge.webhook(store, "order.updated", order, timeout=30)

    base = {"id": 5, "status": "processing", "total": "1.00", "customer_id": 2,
            "date_created_gmt": "2026-11-25T10:00:00", "date_modified_gmt": "2026-11-25T10:00:01"}
    r = post(base | {"customer_note": "x" * 1_200_000})
    assert r.status_code == 200, r.text

    def dead_letters() -> list[dict]:
        return [ev for _, ev in read_topic(settings, topics.DLQ) if ev["store_id"] == store.id]

    (dl,) = wait_for(dead_letters, 60, 0.5, "dead letter")
    assert dl["stage"] == "bridge" and dl["reason"] == "message_too_large" and dl["value"] is None
    wait_for(lambda: REGISTRY.get_sample_value("wooflow_outbox_depth") == 0, 30, 0.2, "outbox empty")
    r = post(base | {"date_modified_gmt": "2026-11-25T10:00:02"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    # (it may still pass through the outbox while the drainer notices the outbox is empty)
    wait_for(lambda: [ev["order"]["date_modified"].second for _, ev in read_topic(settings, topics.ORDERS)] == [2],
             30, 0.5, "the next event in Kafka")
    wait_for(lambda: REGISTRY.get_sample_value("wooflow_bridge_kafka_available") == 1, 10, 0.2, "breaker closed")
