"""The WooCommerce simulator over real sockets: REST v3 shapes and webhook delivery.

Every test talks HTTP to a SimulatorServer on 127.0.0.1; webhooks go to a small
``http.server`` receiver in a thread that records the raw bytes.  Waits are on
conditions with deadlines (the receiver's Condition, the store's queue).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wooflow.simulator import phpjson
from wooflow.simulator.delivery import sign, wp_specialchars_decode
from wooflow.simulator.phpjson import php_json_encode
from wooflow.simulator.queue import DeliveryQueue
from wooflow.simulator.server import SimulatorServer
from wooflow.simulator.state import ManualClock, SimulatedStore
from wooflow.simulator.traffic import TrafficReport, generate

pytestmark = pytest.mark.unit

ISO_NO_TZ = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
START = int(datetime(2026, 11, 18, 9, 46, 40, tzinfo=timezone.utc).timestamp())  # CET (UTC+1) in Warsaw


# ----------------------------------------------------------------- receiver


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


class Receiver:
    """A webhook endpoint: records each request, answers via ``respond``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.cond = threading.Condition()
        # (status, extra headers, seconds to stall before answering)
        self.respond: Callable[[Received], tuple[int, dict[str, str], float]] = lambda r: (200, {}, 0.0)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body are two writes; don't let Nagle hold the second
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                record = Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                status, extra, stall = receiver.respond(record)
                with receiver.cond:
                    receiver.requests.append(record)
                    receiver.cond.notify_all()
                if stall:
                    receiver.stalled.wait(stall)
                try:
                    self.send_response(status)
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the store gave up (timeout) and closed the socket

            def log_message(self, *args: object) -> None:
                pass

        self.stalled = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/woo"

    def wait_for(self, count: int, timeout: float = 5.0, where: Callable[[Received], bool] = lambda r: True
                 ) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                matching = [r for r in self.requests if where(r)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} requests, got {len(matching)}: "
                                         f"{[(r.path, r.headers.get('x-wc-webhook-topic')) for r in self.requests]}")
                self.cond.wait(remaining)

    def deliveries(self, topic: str | None = None) -> list[Received]:
        with self.cond:
            return [r for r in self.requests if "x-wc-webhook-topic" in r.headers
                    and (topic is None or r.headers["x-wc-webhook-topic"] == topic)]

    def pings(self) -> list[Received]:
        with self.cond:
            return [r for r in self.requests if r.body.startswith(b"webhook_id=")]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    yield rec
    rec.stalled.set()
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatedStore(seed=1)) as server:
        yield server


def client(sim: SimulatorServer) -> httpx.Client:
    return httpx.Client(base_url=sim.api_url, auth=sim.auth, timeout=10)


def make_product(sim: SimulatorServer, name: str = "Kubek – Bolesławiec 1/2 l", price: str = "59.00") -> int:
    return sim.store.create_product(name, price, sku=f"SKU-{name[:3]}-{price}", categories=["Ceramika"]).id


def add_webhook(sim: SimulatorServer, receiver: Receiver, topic: str, secret: str = "s3cret") -> int:
    """Create a webhook through the REST API (pings the receiver) and return its id."""
    with client(sim) as c:
        response = c.post("/webhooks", json={"name": f"hook {topic}", "topic": topic,
                                             "delivery_url": receiver.url, "secret": secret})
    assert response.status_code == 201, response.text
    return response.json()["id"]


# -------------------------------------------------------------- phpjson


def test_php_json_encode_reproduces_php_bytes() -> None:
    assert php_json_encode({"url": "http://x/y", "name": "Łódź 😀", "q": 'a"b\\c\n'}) == (
        b'{"url":"http:\\/\\/x\\/y","name":"\\u0141\\u00f3d\\u017a \\ud83d\\ude00","q":"a\\"b\\\\c\\n"}')
    assert php_json_encode([19.0, 19.99, 0.1, 3.0 / 9, 1e20, 0.0001, 0.00001, -0.0, 7, True, None]) == (
        b"[19,19.99,0.1,0.3333333333333333,1.0e+20,0.0001,1.0e-5,-0,7,true,null]")
    assert php_json_encode({"empty_list": [], "empty_object": {}, "ctl": "\x01\x7f"}) == (
        b'{"empty_list":[],"empty_object":{},"ctl":"\\u0001\x7f"}')
    with pytest.raises(ValueError):
        php_json_encode(float("nan"))


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(' "\\/~\x7f'), max_size=30))
def test_php_json_strings_take_the_fast_path_only_where_it_writes_the_same_bytes(text: str) -> None:
    assert phpjson._encode_str(text) == phpjson._encode_chars(text)


def test_signature_uses_decoded_secret() -> None:
    body = b'{"id":1}'
    expected = base64.b64encode(hmac.new(b"a&b<c", body, hashlib.sha256).digest()).decode()
    assert wp_specialchars_decode("a&amp;b&lt;c") == "a&b<c"
    assert wp_specialchars_decode("&amp;lt;") == "&lt;"  # single pass, like strtr()
    assert sign(body, "a&amp;b&lt;c") == expected


# ------------------------------------------------------------------ REST


def test_order_crud_shapes_and_types(sim: SimulatorServer) -> None:
    product_id = make_product(sim)
    sim.store.create_coupon("witaj10", "10", "percent")
    with client(sim) as c:
        customer = c.post("/customers", json={"email": "zofia@example.pl", "first_name": "Zofia",
                                              "billing": {"country": "PL", "city": "Kraków"}}).json()
        assert customer["role"] == "customer" and customer["username"] == "zofia"
        created = c.post("/orders", json={
            "customer_id": customer["id"], "set_paid": True, "payment_method": "bacs",
            "billing": {"first_name": "Zofia", "email": "zofia@example.pl", "country": "PL"},
            "line_items": [{"product_id": product_id, "quantity": 2}],
            "shipping_lines": [{"method_id": "flat_rate", "method_title": "Kurier", "total": "16.99"}],
            "coupon_lines": [{"code": "WITAJ10"}],
        })
        assert created.status_code == 201
        assert created.headers["content-type"] == "application/json; charset=UTF-8"
        order = created.json()
        assert order["status"] == "processing" and order["created_via"] == "rest-api"
        assert order["number"] == str(order["id"]) and order["customer_id"] == customer["id"]
        assert order["order_key"].startswith("wc_order_")
        for key in ("total", "discount_total", "shipping_total", "cart_tax", "total_tax", "discount_tax"):
            assert isinstance(order[key], str) and re.fullmatch(r"-?\d+\.\d{2}", order[key]), key
        assert (order["total"], order["discount_total"], order["shipping_total"]) == ("123.19", "11.80", "16.99")
        item = order["line_items"][0]
        assert isinstance(item["price"], float) and item["price"] == 53.1  # (118.00 - 11.80) / 2
        assert (item["subtotal"], item["total"], item["quantity"]) == ("118.00", "106.20", 2)
        assert order["coupon_lines"][0]["code"] == "witaj10" and order["coupon_lines"][0]["discount"] == "11.80"
        for key in ("date_created", "date_created_gmt", "date_modified", "date_modified_gmt", "date_paid"):
            assert ISO_NO_TZ.match(order[key]), key
        assert order["date_completed"] is None and order["prices_include_tax"] is False
        assert set(order["billing"]) == {"first_name", "last_name", "company", "address_1", "address_2", "city",
                                         "state", "postcode", "country", "email", "phone"}
        assert "phone" in order["shipping"] and "email" not in order["shipping"]
        assert order["_links"]["customer"][0]["href"].endswith(f"/wc/v3/customers/{customer['id']}")
        # Raw body: PHP escaping of "/" and non-ASCII.
        assert b"\\/wp-json\\/wc\\/v3\\/orders\\/" in created.content and b"Boles\\u0142awiec" in created.content

        order_id = order["id"]
        assert c.get(f"/orders/{order_id}").json()["total"] == "123.19"
        updated = c.put(f"/orders/{order_id}", json={"status": "completed", "customer_note": "Dzięki!"}).json()
        assert updated["status"] == "completed" and ISO_NO_TZ.match(updated["date_completed"])
        assert c.post(f"/orders/{order_id}", json={"customer_note": "POST updates too"}).json()[
            "customer_note"] == "POST updates too"

        note = c.post(f"/orders/{order_id}/notes", json={"note": "Wysłano 📦", "customer_note": True})
        assert note.status_code == 201
        note_body = note.json()
        assert set(note_body) >= {"id", "author", "date_created", "date_created_gmt", "note", "customer_note"}
        assert note_body["customer_note"] is True and note_body["author"] == "WooCommerce"
        notes = c.get(f"/orders/{order_id}/notes").json()
        assert note_body["id"] in [n["id"] for n in notes]
        assert any(n["note"].startswith("Order status changed from") for n in notes)
        assert c.get(f"/orders/{order_id}/notes/{note_body['id']}").json()["note"] == "Wysłano 📦"
        assert c.delete(f"/orders/{order_id}/notes/{note_body['id']}").status_code == 501
        assert c.delete(f"/orders/{order_id}/notes/{note_body['id']}", params={"force": "true"}).status_code == 200
        assert c.get(f"/orders/{order_id}/notes/{note_body['id']}").json()["code"] == "woocommerce_rest_invalid_id"

        trashed = c.delete(f"/orders/{order_id}")
        assert trashed.status_code == 200 and trashed.json()["status"] == "completed"  # pre-delete state
        assert c.get(f"/orders/{order_id}").json()["status"] == "trash"
        assert order_id not in [o["id"] for o in c.get("/orders").json()]
        assert c.delete(f"/orders/{order_id}").status_code == 410
        assert c.delete(f"/orders/{order_id}", params={"force": "true"}).status_code == 200
        assert c.get(f"/orders/{order_id}").status_code == 404


def test_customers_products_coupons_crud(sim: SimulatorServer) -> None:
    with client(sim) as c:
        product = c.post("/products", json={"name": "Młynek ręczny", "regular_price": "249.00",
                                            "sale_price": "199.00", "sku": "MLY-1",
                                            "categories": [{"name": "Akcesoria"}]}).json()
        assert (product["price"], product["regular_price"], product["sale_price"]) == ("199.00", "249.00", "199.00")
        assert product["categories"][0]["name"] == "Akcesoria" and product["on_sale"] is True
        assert product["permalink"] == f"{sim.url}/product/mlynek-reczny/"
        assert isinstance(product["stock_status"], str) and isinstance(product["meta_data"], list)
        changed = c.put(f"/products/{product['id']}", json={"regular_price": "259.00", "sale_price": ""}).json()
        assert (changed["price"], changed["sale_price"]) == ("259.00", "")
        assert c.get("/products", params={"sku": "MLY-1"}).json()[0]["id"] == product["id"]
        assert c.delete(f"/products/{product['id']}").json()["status"] == "publish"
        assert c.get(f"/products/{product['id']}").json()["status"] == "trash"

        customer = c.post("/customers", json={"email": "jurgen@example.de", "first_name": "Jürgen"}).json()
        for key in ("date_created", "date_created_gmt", "date_modified", "date_modified_gmt"):
            assert ISO_NO_TZ.match(customer[key])
        assert customer["is_paying_customer"] is False and customer["avatar_url"].startswith("https://")
        dup = c.post("/customers", json={"email": "jurgen@example.de"})
        assert dup.status_code == 400 and dup.json()["code"] == "registration-error-email-exists"
        assert c.put(f"/customers/{customer['id']}", json={"last_name": "Größer"}).json()["last_name"] == "Größer"
        assert [x["id"] for x in c.get("/customers", params={"email": "jurgen@example.de"}).json()] == [customer["id"]]
        refused = c.delete(f"/customers/{customer['id']}")
        assert refused.status_code == 501 and refused.json()["code"] == "woocommerce_rest_trash_not_supported"
        assert c.delete(f"/customers/{customer['id']}", params={"force": "true"}).json()["email"] == "jurgen@example.de"

        coupon = c.post("/coupons", json={"code": "LATO20", "amount": "20", "discount_type": "fixed_cart",
                                          "email_restrictions": ["vip@example.pl"]}).json()
        assert (coupon["code"], coupon["amount"], coupon["usage_count"]) == ("lato20", "20.00", 0)
        assert coupon["email_restrictions"] == ["vip@example.pl"] and coupon["date_expires"] is None
        c.post("/coupons", json={"code": "other", "amount": "5"})
        found = c.get("/coupons", params={"code": "LATO20"}).json()
        assert [x["id"] for x in found] == [coupon["id"]]
        assert c.put(f"/coupons/{coupon['id']}", json={"amount": "25"}).json()["amount"] == "25.00"
        assert c.post("/coupons", json={"code": "lato20"}).json()["code"] == \
            "woocommerce_rest_coupon_code_already_exists"
        assert c.delete(f"/coupons/{coupon['id']}", params={"force": "true"}).status_code == 200
        assert c.get(f"/coupons/{coupon['id']}").json()["code"] == "woocommerce_rest_shop_coupon_invalid_id"


def test_pagination_headers_over_250_orders(sim: SimulatorServer) -> None:
    product_id = make_product(sim)
    for _ in range(250):
        sim.store.create_order(line_items=[{"product_id": product_id, "quantity": 1}])
    with client(sim) as c:
        pages = [c.get("/orders", params={"per_page": 100, "page": page}) for page in (1, 2, 3, 4)]
        for response in pages:
            assert response.headers["X-WP-Total"] == "250" and response.headers["X-WP-TotalPages"] == "3"
        assert [len(r.json()) for r in pages] == [100, 100, 50, 0]
        ids = [o["id"] for r in pages for o in r.json()]
        assert len(set(ids)) == 250 and ids == sorted(ids, reverse=True)  # date desc, then id desc
        base = f"{sim.api_url}/orders?per_page=100&page="
        assert pages[0].headers["Link"] == f'<{base}2>; rel="next"'
        assert pages[1].headers["Link"] == f'<{base}1>; rel="prev", <{base}3>; rel="next"'
        assert pages[2].headers["Link"] == f'<{base}2>; rel="prev"'
        # Following rel="next" walks the whole collection.
        seen, url = [], f"{sim.api_url}/orders?per_page=100"
        while url:
            response = c.get(url)
            seen += [o["id"] for o in response.json()]
            match = re.search(r'<([^>]+)>; rel="next"', response.headers.get("Link", ""))
            url = match.group(1) if match else ""
        assert sorted(seen) == sorted(ids)
        too_big = c.get("/orders", params={"per_page": 101})
        assert too_big.status_code == 400
        assert too_big.json()["code"] == "rest_invalid_param"
        assert too_big.json()["data"]["params"]["per_page"] == \
            "per_page must be between 1 (inclusive) and 100 (inclusive)"
        assert c.get("/orders", params={"per_page": 10}).headers["X-WP-TotalPages"] == "25"


def test_auth_is_checked_like_woocommerce(sim: SimulatorServer) -> None:
    url = sim.api_url + "/orders"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json() == {"code": "woocommerce_rest_cannot_view", "message": "Sorry, you cannot list resources.",
                              "data": {"status": 401}}
    assert httpx.get(url, auth=("ck_nope", "cs_nope")).json()["code"] == "woocommerce_rest_cannot_view"
    wrong_secret = httpx.get(url, auth=(sim.store.consumer_key, "cs_wrong"))
    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["code"] == "woocommerce_rest_authentication_error"
    assert httpx.post(url, json={}).json()["code"] == "woocommerce_rest_cannot_create"
    assert httpx.get(url + "/12345").json()["code"] == "woocommerce_rest_cannot_view"  # auth before lookup
    via_query = httpx.get(url, params={"consumer_key": sim.store.consumer_key,
                                       "consumer_secret": sim.store.consumer_secret})
    assert via_query.status_code == 200 and via_query.json() == []
    assert httpx.get(url, auth=sim.auth).status_code == 200


def test_unknown_ids_answer_the_resource_specific_error(sim: SimulatorServer) -> None:
    product_id = make_product(sim)
    expected = {
        "/orders/999999": (404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID."),
        f"/orders/{product_id}": (404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID."),  # not an order
        "/products/999999": (404, "woocommerce_rest_product_invalid_id", "Invalid ID."),
        "/coupons/999999": (404, "woocommerce_rest_shop_coupon_invalid_id", "Invalid ID."),
        "/customers/999999": (404, "woocommerce_rest_invalid_id", "Invalid resource ID."),
        "/orders/999999/notes": (404, "woocommerce_rest_order_invalid_id", "Invalid order ID."),
        "/webhooks/999999": (400, "woocommerce_rest_shop_webhook_invalid_id", "ID is invalid."),
    }
    with client(sim) as c:
        for path, (status, code, message) in expected.items():
            response = c.get(path)
            assert response.status_code == status, path
            assert response.json() == {"code": code, "message": message, "data": {"status": status}}, path
        for path in ("/orders/999999", "/products/999999", "/coupons/999999", "/customers/999999"):
            assert c.put(path, json={}).status_code == 400, path  # update_item() says 400
        gone = c.delete("/webhooks/999999", params={"force": "true"})
        assert (gone.status_code, gone.json()["code"]) == (404, "woocommerce_rest_shop_webhook_invalid_id")
        assert c.get("/nothing-here").json()["code"] == "rest_no_route"


def test_date_filters_compare_site_local_unless_dates_are_gmt() -> None:
    clock = ManualClock(START)  # 09:46:40 UTC == 10:46:40 Warsaw
    store = SimulatedStore(clock=clock, timezone="Europe/Warsaw")
    product = store.create_product("Herbata", "20")
    early = store.create_order(line_items=[{"product_id": product.id}])
    clock.advance(3600)
    late = store.create_order(line_items=[{"product_id": product.id}])  # 10:46:40 UTC, 11:46:40 local
    with SimulatorServer(store) as sim, client(sim) as c:
        body = c.get(f"/orders/{late.id}").json()
        assert (body["date_created"], body["date_created_gmt"]) == ("2026-11-18T11:46:40", "2026-11-18T10:46:40")

        def ids(**params: str) -> list[int]:
            return sorted(o["id"] for o in c.get("/orders", params=params).json())

        assert ids(after="2026-11-18T11:00:00") == [late.id]  # local wall clock
        assert ids(after="2026-11-18T11:00:00", dates_are_gmt="true") == []
        assert ids(after="2026-11-18T10:00:00", dates_are_gmt="true") == [late.id]
        assert ids(after="2026-11-18T09:00:00", dates_are_gmt="true") == [early.id, late.id]
        assert ids(before="2026-11-18T11:00:00") == [early.id]
        assert ids(after="2026-11-18T11:46:40") == []  # exclusive
        store.set_order_status(early.id, "completed")  # modified now (11:46:40 local)
        assert ids(modified_after="2026-11-18T11:30:00") == [early.id, late.id]
        clock.advance(60)
        store.set_order_status(early.id, "refunded")
        assert ids(modified_after="2026-11-18T11:47:00") == [early.id]
        # An offset is converted to the *site* wall clock first (WP_Date_Query).
        assert ids(after="2026-11-18T10:00:00+00:00") == [late.id]
        assert c.get("/orders", params={"after": "yesterday"}).json()["code"] == "rest_invalid_param"


# -------------------------------------------------------------- webhooks


def test_webhook_delivery_headers_signature_and_php_bytes(sim: SimulatorServer, receiver: Receiver) -> None:
    secret = "p@ss w0rd!~`{}|<>?/\\'\"%"  # any printable ASCII
    webhook_id = add_webhook(sim, receiver, "order.created", secret)
    ping = receiver.wait_for(1)[0]
    assert ping.body == f"webhook_id={webhook_id}".encode()
    assert ping.headers["content-type"] == "application/x-www-form-urlencoded"
    assert not any(h.startswith("x-wc-webhook") for h in ping.headers)
    assert ping.headers["user-agent"] == "WooCommerce/9.4.0 Hookshot (WordPress/6.7)"
    assert sim.store.webhooks[webhook_id].pending_delivery is False

    product_id = make_product(sim, "Kawa „Kraków” 1/2 kg", "45.50")
    order = sim.store.create_order(
        line_items=[{"product_id": product_id, "quantity": 3}],
        billing={"first_name": "Łukasz", "email": "lukasz@example.pl", "country": "PL"},
        customer_note="Proszę dzwonić – domofon nie działa",
    )
    delivery = receiver.wait_for(1, where=lambda r: "x-wc-webhook-topic" in r.headers)[0]
    headers = delivery.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "WooCommerce/9.4.0 Hookshot (WordPress/6.7)"
    assert headers["x-wc-webhook-source"] == sim.url + "/"
    assert (headers["x-wc-webhook-topic"], headers["x-wc-webhook-resource"], headers["x-wc-webhook-event"]) == (
        "order.created", "order", "created")
    assert headers["x-wc-webhook-id"] == str(webhook_id)
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-wc-webhook-delivery-id"])
    expected = base64.b64encode(hmac.new(secret.encode(), delivery.body, hashlib.sha256).digest()).decode()
    assert headers["x-wc-webhook-signature"] == expected
    # PHP json_encode bytes: escaped slashes, \u escapes, nothing raw outside ASCII.
    assert b"http:\\/\\/127.0.0.1" in delivery.body and b"\\u0141ukasz" in delivery.body
    assert b"\\u201eKrak\\u00f3w\\u201d 1\\/2 kg" in delivery.body
    assert max(delivery.body) < 0x80 and b" " not in delivery.body.split(b'"customer_note"')[0][:20]
    payload = json.loads(delivery.body)
    assert payload["id"] == order.id and payload["line_items"][0]["price"] == 45.5
    assert payload["total"] == "136.50" and payload["billing"]["first_name"] == "Łukasz"
    assert delivery.body == php_json_encode(sim.store.rest_item("order", order.id))

    assert sim.store.wait_idle(5)
    [attempt] = sim.store.deliveries(webhook_id)
    assert (attempt.status_code, attempt.success, attempt.resource_id, attempt.topic) == (
        200, True, order.id, "order.created")
    assert attempt.duration >= 0 and attempt.error is None


def test_rest_order_creation_fires_created_and_updated(sim: SimulatorServer, receiver: Receiver) -> None:
    created_hook = add_webhook(sim, receiver, "order.created")
    updated_hook = add_webhook(sim, receiver, "order.updated")
    action_hook = add_webhook(sim, receiver, "action.woocommerce_checkout_order_processed")
    product_id = make_product(sim)
    with client(sim) as c:
        order = c.post("/orders", json={"line_items": [{"product_id": product_id}], "set_paid": True}).json()
    assert sim.store.wait_idle(5)
    assert [json.loads(r.body)["id"] for r in receiver.deliveries("order.created")] == [order["id"]]
    updates = receiver.deliveries("order.updated")
    assert len(updates) == 1 and json.loads(updates[0].body)["status"] == "processing"
    assert receiver.deliveries("action.woocommerce_checkout_order_processed") == []  # REST is no checkout

    placed = sim.store.checkout(line_items=[{"product_id": product_id}], payment_method="bacs",
                                billing={"email": "guest@example.com", "country": "DE"})
    assert sim.store.wait_idle(5)
    [action] = receiver.deliveries("action.woocommerce_checkout_order_processed")
    assert action.body == php_json_encode({"action": "woocommerce_checkout_order_processed", "arg": placed.id})
    assert (action.headers["x-wc-webhook-resource"], action.headers["x-wc-webhook-event"]) == (
        "action", "woocommerce_checkout_order_processed")
    assert {created_hook, updated_hook, action_hook} == {int(r.headers["x-wc-webhook-id"])
                                                         for r in receiver.deliveries()}


def test_deleted_topic_sends_only_the_id(sim: SimulatorServer, receiver: Receiver) -> None:
    add_webhook(sim, receiver, "order.deleted")
    add_webhook(sim, receiver, "product.deleted")
    product_id = make_product(sim)
    order = sim.store.create_order(line_items=[{"product_id": product_id}])
    with client(sim) as c:
        assert c.delete(f"/orders/{order.id}").status_code == 200
        assert c.delete(f"/products/{product_id}").status_code == 200
    assert sim.store.wait_idle(5)
    bodies = {r.headers["x-wc-webhook-topic"]: r.body for r in receiver.deliveries()}
    assert bodies == {"order.deleted": f'{{"id":{order.id}}}'.encode(),
                      "product.deleted": f'{{"id":{product_id}}}'.encode()}
    # Force deletion runs woocommerce_delete_order, which no topic listens to.
    other = sim.store.create_order(line_items=[{"product_id": product_id}])
    sim.store.delete_order(other.id, force=True)
    assert sim.store.wait_idle(5)
    assert len(receiver.deliveries("order.deleted")) == 1


def test_rapid_updates_collapse_into_one_delivery_with_latest_state(sim: SimulatorServer, receiver: Receiver) -> None:
    webhook_id = add_webhook(sim, receiver, "order.updated")
    product_id = make_product(sim)
    order = sim.store.create_order(line_items=[{"product_id": product_id}], created_via="checkout")
    sim.store.pause_deliveries()
    for n in range(1, 6):
        sim.store.update_order(order.id, customer_note=f"v{n}")
    sim.store.set_order_status(order.id, "completed")
    assert sim.store.queue.pending == 1
    sim.store.resume_deliveries()
    assert sim.store.wait_idle(5)
    [delivery] = receiver.deliveries("order.updated")
    body = json.loads(delivery.body)
    assert (body["customer_note"], body["status"]) == ("v5", "completed")
    assert len(sim.store.deliveries(webhook_id)) == 1
    # Once delivered, the next change queues a new delivery.
    sim.store.update_order(order.id, customer_note="v6")
    assert sim.store.wait_idle(5)
    assert json.loads(receiver.deliveries("order.updated")[-1].body)["customer_note"] == "v6"


def test_payload_is_built_at_delivery_time_and_gone_resources_give_rest_errors(
        sim: SimulatorServer, receiver: Receiver) -> None:
    add_webhook(sim, receiver, "order.created")
    add_webhook(sim, receiver, "order.updated")
    product_id = make_product(sim)
    sim.store.pause_deliveries()
    kept = sim.store.create_order(line_items=[{"product_id": product_id}])
    sim.store.set_order_status(kept.id, "completed")
    doomed = sim.store.create_order(line_items=[{"product_id": product_id}])
    sim.store.delete_order(doomed.id, force=True)
    sim.store.resume_deliveries()
    assert sim.store.wait_idle(5)
    created = {r.body for r in receiver.deliveries("order.created")}
    assert json.loads(next(b for b in created if f'"id":{kept.id},'.encode() in b))["status"] == "completed"
    error = b'{"code":"woocommerce_rest_shop_order_invalid_id","message":"Invalid ID.","data":{"status":404}}'
    assert error in created
    assert error in {r.body for r in receiver.deliveries("order.updated")}


def test_seven_consecutive_failures_disable_the_webhook_without_retries(
        sim: SimulatorServer, receiver: Receiver) -> None:
    webhook_id = add_webhook(sim, receiver, "product.updated")
    receiver.respond = lambda r: (500, {}, 0.0)
    product_id = make_product(sim)
    webhook = sim.store.webhooks[webhook_id]
    for n in range(1, 8):
        sim.store.update_product(product_id, name=f"Produkt {n}")
        assert sim.store.wait_idle(5)
        assert len(receiver.deliveries()) == n  # one attempt per change: no retry
        assert (webhook.failure_count, webhook.status) == ((min(n, 6), "active") if n < 7 else (6, "disabled"))
    with client(sim) as c:
        assert c.get(f"/webhooks/{webhook_id}").json()["status"] == "disabled"
    for n in range(3):
        sim.store.update_product(product_id, name=f"Po wyłączeniu {n}")
    assert sim.store.wait_idle(5)
    assert len(receiver.deliveries()) == 7
    log = sim.store.deliveries(webhook_id)
    assert [a.status_code for a in log] == [500] * 7 and not any(a.success for a in log)
    assert [a.failure_count_after for a in log] == [1, 2, 3, 4, 5, 6, 6]


def test_redirects_count_as_success_and_are_not_followed(sim: SimulatorServer, receiver: Receiver) -> None:
    webhook_id = add_webhook(sim, receiver, "product.updated")
    answers = iter([(500, {}), (500, {}), (301, {"Location": "/moved"}), (500, {}), (302, {"Location": "/tmp"})])

    def respond(r: Received) -> tuple[int, dict[str, str], float]:
        status, headers = next(answers)
        return status, headers, 0.0

    receiver.respond = respond
    product_id = make_product(sim)
    counts = []
    for n in range(5):
        sim.store.update_product(product_id, name=f"P{n}")
        assert sim.store.wait_idle(5)
        counts.append(sim.store.webhooks[webhook_id].failure_count)
    assert counts == [1, 2, 0, 1, 0]
    assert all(r.path == "/hooks/woo" for r in receiver.requests)  # Location never followed
    assert [a.success for a in sim.store.deliveries(webhook_id)] == [False, False, True, False, True]


def test_timeout_is_a_failure_and_not_retried(receiver: Receiver) -> None:
    receiver.respond = lambda r: (200, {}, 3.0) if "x-wc-webhook-topic" in r.headers else (200, {}, 0.0)
    with SimulatorServer(SimulatedStore(seed=2), delivery_timeout=0.3) as sim:
        webhook_id = add_webhook(sim, receiver, "coupon.created")
        sim.store.create_coupon("szybki", "5")
        assert sim.store.wait_idle(5)
        [attempt] = sim.store.deliveries(webhook_id)
        assert attempt.status_code is None and "timed out" in (attempt.error or "")
        assert sim.store.webhooks[webhook_id].failure_count == 1
        assert len(receiver.deliveries()) == 1


def test_delivery_id_is_shared_within_one_second_only(receiver: Receiver) -> None:
    clock = ManualClock(START)
    with SimulatorServer(SimulatedStore(clock=clock, seed=3)) as sim:
        add_webhook(sim, receiver, "customer.created")
        sim.store.create_customer("a@example.com")
        sim.store.create_customer("b@example.com")
        assert sim.store.wait_idle(5)
        clock.advance(1)
        sim.store.create_customer("c@example.com")
        assert sim.store.wait_idle(5)
        ids = [r.headers["x-wc-webhook-delivery-id"] for r in receiver.deliveries()]
        assert len(ids) == 3 and ids[0] == ids[1] != ids[2]


def test_customer_topics_and_roles(sim: SimulatorServer, receiver: Receiver) -> None:
    add_webhook(sim, receiver, "customer.created")
    add_webhook(sim, receiver, "customer.deleted")
    add_webhook(sim, receiver, "customer.updated")
    editor = sim.store.create_customer("editor@example.com", role="editor")
    buyer = sim.store.create_customer("buyer@example.com")
    product_id = make_product(sim)
    sim.store.create_order(customer_id=buyer.id, line_items=[{"product_id": product_id}], set_paid=True)
    assert sim.store.wait_idle(5)
    created = sorted(json.loads(r.body)["id"] for r in receiver.deliveries("customer.created"))
    assert created == sorted([editor.id, buyer.id])  # user_register fires for any role
    # The first paid order flips is_paying_customer: WC_Customer::save() -> customer.updated.
    [updated] = receiver.deliveries("customer.updated")
    assert json.loads(updated.body)["is_paying_customer"] is True
    sim.store.delete_customer(editor.id)
    sim.store.delete_customer(buyer.id)
    assert sim.store.wait_idle(5)
    # delete_user only delivers for users with the customer role.
    assert [r.body for r in receiver.deliveries("customer.deleted")] == [f'{{"id":{buyer.id}}}'.encode()]


def test_webhook_rest_crud_and_default_secret(sim: SimulatorServer, receiver: Receiver) -> None:
    receiver.respond = lambda r: (202, {}, 0.0)  # ping needs exactly 200
    with client(sim) as c:
        made = c.post("/webhooks", json={"topic": "order.updated", "delivery_url": receiver.url, "status": "paused"})
        assert made.status_code == 201
        body = made.json()
        assert body["status"] == "active"  # REST creation always activates
        assert body["hooks"] == ["woocommerce_update_order", "woocommerce_order_refunded",
                                 "woocommerce_delete_order_refund"]
        assert (body["resource"], body["event"]) == ("order", "updated") and "secret" not in body
        assert body["name"].startswith("Webhook created on ")
        secret = sim.store.webhooks[body["id"]].secret
        assert len(secret) == 50 and all(32 <= ord(ch) < 127 for ch in secret)
        [ping] = sim.store.deliveries(body["id"], "ping")
        assert (ping.status_code, ping.success) == (202, False)
        assert sim.store.webhooks[body["id"]].pending_delivery is True
        assert c.put(f"/webhooks/{body['id']}", json={"status": "paused"}).json()["status"] == "paused"
        assert [w["id"] for w in c.get("/webhooks", params={"status": "paused"}).json()] == [body["id"]]
        bad = c.post("/webhooks", json={"topic": "order.exploded", "delivery_url": receiver.url})
        assert (bad.status_code, bad.json()["code"]) == (400, "woocommerce_rest_shop_webhook_invalid_topic")
        assert c.delete(f"/webhooks/{body['id']}").status_code == 501
        assert c.delete(f"/webhooks/{body['id']}", params={"force": "true"}).status_code == 200
        sim_view = httpx.get(f"{sim.url}/__sim__/state").json()
        assert sim_view["webhooks"] == 0


def test_refund_fires_order_updated(sim: SimulatorServer, receiver: Receiver) -> None:
    add_webhook(sim, receiver, "order.updated")
    product_id = make_product(sim, price="100.00")
    order = sim.store.create_order(line_items=[{"product_id": product_id}], set_paid=True, created_via="checkout")
    assert sim.store.wait_idle(5)
    with client(sim) as c:
        refund = c.post(f"/orders/{order.id}/refunds", json={"amount": "30.00", "reason": "Uszkodzony"})
        assert refund.status_code == 201 and refund.json()["amount"] == "30.00"
    assert sim.store.wait_idle(5)
    last = json.loads(receiver.deliveries("order.updated")[-1].body)
    assert last["refunds"][0]["total"] == "-30.00" and last["status"] == "processing"
    sim.store.refund_order(order.id)
    assert sim.store.wait_idle(5)
    assert json.loads(receiver.deliveries("order.updated")[-1].body)["status"] == "refunded"


# --------------------------------------------------------------- traffic


def test_traffic_is_seeded_and_realistic() -> None:
    def run() -> tuple[SimulatedStore, TrafficReport]:
        store = SimulatedStore(clock=ManualClock(START), seed=11, url="http://shop.test")
        return store, generate(store, 80, seed=5)

    store_a, report_a = run()
    store_b, report_b = run()
    assert [store_a.rest_item("order", i) for i in report_a.orders] == \
           [store_b.rest_item("order", i) for i in report_b.orders]
    assert store_a.abandoned_carts == store_b.abandoned_carts

    report = report_a
    assert len(report.orders) == 80
    assert report.repeat_orders > 0 and report.guest_orders > 0 and report.customers_created
    assert {"PL", "DE"} <= set(report.countries) and len(report.countries) >= 4
    assert report.final_statuses["completed"] > 40
    assert report.final_statuses["cancelled"] + report.final_statuses["refunded"] > 0
    assert any(t > Decimal(100) for t in report.totals) and any(t < Decimal(100) for t in report.totals)
    assert report.abandoned_carts == len(store_a.abandoned_carts) > 0
    cart = store_a.abandoned_carts[0]
    assert {"items", "subtotal", "currency", "email", "customer_id", "created_at"} <= set(cart)
    orders = [store_a.rest_item("order", i) for i in report.orders]
    assert all(o["created_via"] == "checkout" for o in orders)
    assert {o["payment_method"] for o in orders} >= {"stripe", "paypal"}
    assert len({o["date_created"] for o in orders}) > 70  # the clock moved between sessions
    products = [store_a.rest_item("product", p) for p in store_a.products]
    assert all(p["categories"] for p in products)


def test_jittered_queue_reorders_deterministically() -> None:
    def order_of(seed: int) -> list[int]:
        now = [0.0]
        queue = DeliveryQueue(jitter=5.0, seed=seed, monotonic=lambda: now[0])
        for n in range(12):
            queue.enqueue(1, n, "woocommerce_update_order")
        now[0] = 100.0
        popped = []
        while (job := queue.pop_due()) is not None:
            popped.append(job.arg)
            queue.task_done(job)
        return popped

    first = order_of(9)
    assert sorted(first) == list(range(12)) and first != list(range(12))
    assert order_of(9) == first and order_of(10) != first
    # Without lateness simulation the queue is FIFO.
    plain = DeliveryQueue()
    for n in range(5):
        plain.enqueue(1, n, "h")
    assert [plain.pop_due().arg for _ in range(5)] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]


def test_jittered_deliveries_arrive_late(receiver: Receiver) -> None:
    store = SimulatedStore(seed=4, delivery_delay=0.2, delivery_jitter=0.3)
    with SimulatorServer(store) as sim:
        add_webhook(sim, receiver, "coupon.created")
        started = time.monotonic()
        for n in range(6):
            store.create_coupon(f"k{n}", "1")
        assert store.queue.pending == 6 and receiver.deliveries() == []
        assert store.wait_idle(5)
        assert time.monotonic() - started >= 0.2
        assert sorted(json.loads(r.body)["code"] for r in receiver.deliveries()) == [f"k{n}" for n in range(6)]


def test_cli_exposes_run() -> None:
    from typer.testing import CliRunner

    from wooflow.simulator.cli import app

    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for option in ("--orders-per-second", "--webhook-url", "--webhook-secret", "--consumer-key", "--seed"):
        assert option in result.output
