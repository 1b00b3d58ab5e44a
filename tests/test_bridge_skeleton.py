"""The bridge over real HTTP, real Kafka and real PostgreSQL: good deliveries become
events; bad ones get a clear 4xx and produce nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.harness import webhook_headers
from tests.support import make_store, read_topic, wait_until_bridge_idle
from wooflow.kafka import topics
from wooflow.producers.signature import sign

pytestmark = pytest.mark.integration

ORDER = {
    "id": 501, "number": "501", "status": "processing", "currency": "PLN", "total": "149.90",
    "total_tax": "28.03", "shipping_total": "10.00", "discount_total": "0.00", "customer_id": 7,
    "date_created": "2026-11-25T13:00:00", "date_created_gmt": "2026-11-25T12:00:00",
    "date_modified": "2026-11-25T13:00:05", "date_modified_gmt": "2026-11-25T12:00:05",
    "billing": {"first_name": "Zofia", "email": "zofia@example.com", "country": "PL"},
    "shipping": {"country": ""}, "payment_method": "przelewy24", "shipping_lines": [{"method_id": "flat_rate"}],
    "line_items": [{"id": 1, "product_id": 42, "name": "Kubek \u017c\u00f3\u0142ty", "quantity": 2, "price": 69.95,
                    "subtotal": "139.90", "total": "139.90"}],
}


def php_body(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).replace("/", "\\/").encode()


# the rest of what WooCommerce sends with a webhook
MORE = {"X-WC-Webhook-ID": "3", "X-WC-Webhook-Delivery-ID": "abc", "X-WC-Webhook-Source": "http://shop.example/"}


def headers(store_secret: str, body: bytes, topic: str = "order.created") -> dict[str, str]:
    return webhook_headers(store_secret, body, topic) | MORE


def test_signed_order_created_becomes_one_order_event(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    body = php_body(ORDER)
    r = bridge.webhook(store, "order.created", body, headers=MORE)
    assert r.status_code == 200, r.text
    events = read_topic(settings, topics.ORDERS)
    assert len(events) == 1
    name, ev = events[0]
    assert name == "OrderEvent" and ev["store_id"] == store.id and ev["order_id"] == 501
    assert ev["customer_key"] == "c7" and ev["source"] == "webhook" and ev["topic"] == "order.created"
    assert str(ev["order"]["total"]) == "149.9000" and ev["order"]["line_items"][0]["name"] == "Kubek żółty"
    assert ev["occurred_at"].isoformat() == "2026-11-25T12:00:05+00:00"
    assert r.json()["event_ids"] == [ev["event_id"]]


def test_ping_is_answered_200_and_produces_nothing(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    r = httpx.post(bridge.hook_url(store.id), content=b"webhook_id=12",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    wait_until_bridge_idle(engine, store.id)
    assert read_topic(settings, topics.ORDERS) == []


def test_bad_input_gets_a_clear_4xx_and_produces_nothing(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    url = bridge.hook_url(store.id)
    body = php_body(ORDER)
    good = headers(store.webhook_secret, body)
    cases = {
        "bad signature": (url, body, good | {"X-WC-Webhook-Signature": sign(body, "wrong")}, 401),
        "missing signature": (url, body, {k: v for k, v in good.items() if k != "X-WC-Webhook-Signature"}, 401),
        "signature of other bytes": (url, body + b" ", good, 401),
        "malformed json": (url, b'{"id": 5, "status": ', headers(store.webhook_secret, b'{"id": 5, "status": '), 400),
        "json not an object": (url, b"[1,2]", headers(store.webhook_secret, b"[1,2]"), 400),
        "unknown store": (bridge.hook_url(f"nope-{store.id}"), body, good, 404),
        "unknown topic": (url, body, headers(store.webhook_secret, body, "order.exploded"), 400),
        "wrong content type": (url, body, good | {"Content-Type": "text/plain"}, 415),
        "too large": (url, b"{" + b" " * (settings.max_body_bytes + 1) + b"}", good, 413),
    }
    for name, (u, b, h, status) in cases.items():
        r = httpx.post(u, content=b, headers=h)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        assert r.json()["message"], name
    wait_until_bridge_idle(engine, store.id)
    for t in topics.EVENT_TOPICS:
        assert read_topic(settings, t) == [], t
