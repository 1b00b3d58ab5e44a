"""Hostile webhook deliveries at volume against the real bridge process, on the real broker.

Hypothesis builds deliveries that vary everything a sender controls: the store id in the
path, the topic/resource/event headers, the content type, the body's JSON shape (real
WooCommerce resources with fields replaced by arbitrary JSON, or arbitrary JSON outright),
its encoding (UTF-8, UTF-16, Latin-1, a BOM, invalid bytes, gzip), its size (up to and past
`WOOFLOW_MAX_BODY_BYTES`, sent whole or chunked) and the signature (valid for the store,
valid for another store, of another body, garbage, missing). Properties:

- no delivery gets a 5xx;
- every event in the event topics came from a delivery signed with its store's secret
  (the test computes validity itself), and every event such a delivery was answered with
  is there exactly once;
- the bridge's resident memory stays flat over the run (measured after a warm-up).

`FUZZ_DELIVERIES` sets the count (the long profile in docs/reliability.md runs 10,000);
the suite runs 1,000.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.harness import BridgeThread, webhook_headers
from tests.support import RoleProcess, free_port, make_store, read_topic, ready, wait_for, wait_until_bridge_idle
from wooflow.kafka import topics
from wooflow.producers.signature import sign

DELIVERIES = int(os.environ.get("FUZZ_DELIVERIES", "1000"))
MAX_BODY = 256 * 1024  # the bridge under test refuses bodies above this (413): big bodies stay cheap to send
RSS_GROWTH_MAX = 24 * 1024 * 1024  # bytes the bridge may grow over the measured run (allocator noise)

RESOURCE_TOPICS = ("order", "customer", "product", "coupon")
EVENTS = ("created", "updated", "deleted", "restored")
ACTION_HOOKS = ("woocommerce_checkout_order_processed", "woocommerce_order_status_processing_to_completed",
                "woocommerce_order_status_completed", "woocommerce_new_customer", "wc_unknown_hook")

# --- bodies -------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e309", "NaN", "9999-12-31T23:59:59", "0000-00-00T00:00:00",
                     "2026-13-45T25:61:61", "2026-03-01T10:00:00+14:00", "1970-01-01T00:00:00",
                     "12.345678901234567890", "-0.00", "1" * 40, "\u0000", "\ud7ff\ue000", "żółć 🛒"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def _dates(i: int) -> dict[str, str]:
    return {"date_created_gmt": "2026-03-01T10:00:00",
            "date_modified_gmt": f"2026-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}",
            "date_created": "2026-03-01T11:00:00", "date_modified": "2026-03-01T11:00:05"}


def resource_body(resource: str, i: int) -> dict[str, Any]:
    """A WooCommerce REST v3 resource as a webhook carries it (the fields the bridge reads)."""
    if resource == "order":
        return {"id": i, "number": str(i), "status": "processing", "currency": "PLN", "total": "43.00",
                "total_tax": "0.00", "shipping_total": "10.00", "discount_total": "0.00", "customer_id": i % 7,
                "billing": {"first_name": "Zofia", "email": f"c{i % 11}@example.com", "country": "PL"},
                "shipping": {"city": "Kraków"}, "payment_method": "cod", "created_via": "checkout",
                "line_items": [{"id": 1, "name": "Kubek", "product_id": 42, "quantity": 2, "total": "33.00",
                                "sku": "MUG", "price": 16.5, "meta_data": []}],
                "coupon_lines": [{"code": "welcome10"}], "meta_data": [{"id": 3, "key": "_k", "value": "v"}],
                **_dates(i)}
    if resource == "customer":
        return {"id": i, "email": f"c{i}@example.com", "first_name": "Ala", "last_name": "Nowak", "role": "customer",
                "username": f"ala{i}", "billing": {"email": f"c{i}@example.com", "phone": "+48 600"},
                "is_paying_customer": False, "meta_data": [], **_dates(i)}
    if resource == "product":
        return {"id": i, "name": "Kubek", "slug": "kubek", "type": "simple", "status": "publish", "sku": f"S{i}",
                "price": "19.90", "regular_price": "21.50", "sale_price": "19.90", "stock_status": "instock",
                "stock_quantity": 5, "categories": [{"id": 1, "name": "Mugs", "slug": "mugs"}], "tags": [], **_dates(i)}
    return {"id": i, "code": f"code{i}", "amount": "10", "discount_type": "percent", "usage_count": 0,
            "date_expires_gmt": None, "email_restrictions": [], **_dates(i)}


@st.composite
def bodies(draw: Any, resource: str, hostile: bool) -> Any:
    """A JSON document: a resource, a deletion or an action hook as WooCommerce sends them;
    hostile: a resource with fields replaced by arbitrary JSON, a REST error, anything."""
    i = draw(st.integers(min_value=1, max_value=10**7))
    if not hostile:
        shape = draw(st.sampled_from(["resource"] * 6 + ["deleted", "action"]))
        if shape == "deleted":
            return {"id": i}
        if shape == "action":
            return {"action": draw(st.sampled_from(ACTION_HOOKS)), "arg": i}
        return resource_body(resource, i)
    shape = draw(st.sampled_from(["mutated", "mutated", "mutated", "deleted", "action", "rest_error", "any"]))
    if shape == "any":
        return draw(json_values)
    if shape == "deleted":
        return {"id": draw(json_values)}
    if shape == "action":
        return {"action": draw(st.one_of(st.sampled_from(ACTION_HOOKS), json_values)), "arg": draw(json_values)}
    if shape == "rest_error":
        return {"code": "woocommerce_rest_shop_order_invalid_id", "message": "Invalid ID.", "data": {"status": 404}}
    doc = resource_body(resource, draw(st.integers(min_value=-5, max_value=10**7)))
    for key, value in draw(st.lists(st.tuples(st.sampled_from([*doc, "extra"]), json_values), min_size=1, max_size=4)):
        target = doc
        if key in ("billing", "line_items") and draw(st.booleans()):  # one level down
            inner = doc.get(key)
            target = inner if isinstance(inner, dict) else (inner[0] if isinstance(inner, list) and inner
                                                            and isinstance(inner[0], dict) else doc)
            key = draw(st.sampled_from([*target, "email", "total", "quantity"]))
        if value is None and draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = value
    return doc


# --- deliveries ---------------------------------------------------------------------------

@dataclass
class Delivery:
    path_store: str  # as it appears in the URL path
    store: str | None  # the registered store that path names ("a" / "b"), None for any other
    headers: dict[str, str]
    body: bytes
    signer: str  # own | other | other_body | garbage | empty | none
    chunked: bool = False
    notes: list[str] = field(default_factory=list)  # the hostile dimensions, the encoding

    @property
    def validly_signed(self) -> bool:
        return self.store is not None and self.signer == "own"


DIMENSIONS = ("store", "topic", "content_type", "encoding", "signature", "size", "shape", "transport")


def encode(draw: Any, doc: Any, hostile: bool) -> tuple[bytes, str]:
    if not hostile:
        how = draw(st.sampled_from(["utf8", "ascii_escaped", "php_slashes"]))
    else:
        how = draw(st.sampled_from(["utf16", "latin1", "bom", "invalid_utf8", "gzip", "truncated", "trailing_garbage",
                                    "form_ping", "empty", "lone_surrogate"]))
    text = json.dumps(doc, ensure_ascii=False)
    raw = text.encode("utf-8", "surrogatepass")
    encoded = {
        "utf8": lambda: raw,
        "ascii_escaped": lambda: json.dumps(doc).encode(),
        "php_slashes": lambda: json.dumps(doc).replace("/", "\\/").encode(),  # WooCommerce's json_encode
        "utf16": lambda: text.encode("utf-16", "surrogatepass"),
        "latin1": lambda: text.encode("latin-1", "replace"),
        "bom": lambda: b"\xef\xbb\xbf" + raw,
        "invalid_utf8": lambda: raw + b"\xff\xfe\xc3",
        "gzip": lambda: gzip.compress(raw),
        "truncated": lambda: raw[: max(0, len(raw) - 1 - len(raw) // 3)],
        "trailing_garbage": lambda: raw + b"}{]",
        "form_ping": lambda: f"webhook_id={draw(st.integers(0, 10**6))}".encode(),
        "empty": lambda: b"",
        "lone_surrogate": lambda: json.dumps({"x": doc, "s": "\ud800"}).encode(),
    }
    return encoded[how](), how


def pad(draw: Any, doc: Any, hostile: bool) -> Any:
    """Big documents: near the bridge's body limit (fine), past it (413)."""
    sizes = [1_000, 65_000, 70_000, MAX_BODY - 2_000] if not hostile else [MAX_BODY + 1, 3 * MAX_BODY]
    if isinstance(doc, dict):
        doc = {**doc, "customer_note": "x" * draw(st.sampled_from(sizes))}
    return doc


def topic_headers(draw: Any, resource: str, body: Any, hostile: bool) -> dict[str, str]:
    action = isinstance(body, dict) and "action" in body
    event = draw(st.sampled_from(EVENTS))
    if not hostile:
        kind = "action" if action else draw(st.sampled_from(["plain", "plain", "odd_case"]))
    else:
        kind = draw(st.sampled_from(["action", "mismatch", "unknown", "missing", "plain"]))
    if kind == "action":
        topic = f"action.{body['action'] if action and not hostile else draw(st.sampled_from(ACTION_HOOKS))}"
    elif kind == "unknown":
        topic = draw(st.sampled_from(["", "order", "order.", ".created", "order.created.x", "refund.created",
                                      "action.", "action.evil hook", "action.woocommerce_../../x", "order.creäted"]))
    elif kind == "odd_case":
        topic = f"{resource.upper()}.{event.title()}"
    elif kind == "plain" and hostile:  # a topic of another resource than the body's
        topic = f"{draw(st.sampled_from(RESOURCE_TOPICS))}.{event}"
    else:
        topic = f"{resource}.{event}"
    headers: dict[str, str] = {} if kind == "missing" else {"X-WC-Webhook-Topic": topic}
    r, _, e = topic.strip().lower().partition(".")
    if kind == "mismatch":
        headers["X-WC-Webhook-Resource"] = draw(st.sampled_from(RESOURCE_TOPICS))
        headers["X-WC-Webhook-Event"] = draw(st.sampled_from(EVENTS))
    elif draw(st.booleans()):
        headers["X-WC-Webhook-Resource"], headers["X-WC-Webhook-Event"] = r, e
    if draw(st.booleans()):
        headers["X-WC-Webhook-ID"] = draw(st.sampled_from(["7", "", "-1", "9" * 80, "x' OR 1=1 --"]))
        headers["X-WC-Webhook-Delivery-ID"] = str(draw(st.integers(0, 10**9)))
    return headers


SECRETS = {"a": "fuzz-secret-a", "b": "fuzz&amp;secret<b>"}  # b: the entity form WooCommerce decodes


def signature(draw: Any, store: str | None, body: bytes, hostile: bool) -> tuple[str, str | None]:
    signer = "own" if not hostile else draw(st.sampled_from(["other", "other_body", "garbage", "empty", "none"]))
    mine = SECRETS.get(store or "", "no-such-store")
    other = SECRETS["b" if store == "a" else "a"]
    if signer == "own":
        return signer, sign(body, mine)
    if signer == "other":
        return signer, sign(body, other)
    if signer == "other_body":
        return signer, sign(body + b" ", mine)
    if signer == "garbage":
        return signer, draw(st.sampled_from([base64.b64encode(os.urandom(32)).decode(), "sha256=abc", "ÿÿÿ",
                                             "A" * 5000, sign(body, mine)[:-2], sign(body, mine).lower()]))
    if signer == "empty":
        return signer, ""
    return signer, None


def store_path(draw: Any, ids: dict[str, str], hostile: bool) -> tuple[str | None, str]:
    if not hostile:
        store = draw(st.sampled_from(["a", "a", "a", "b"]))
        return store, ids[store]
    if draw(st.booleans()):
        return None, "s" + draw(st.text("abcdefghij0123456789_-", min_size=1, max_size=30))
    return None, draw(st.sampled_from(["%2e%2e", "..", "a%2Fb", "zażółć", "x" * 3000, "%00", "🛒", "a b",
                                       ids["a"].upper(), ids["a"] + " ", ids["a"] + "%20", ids["a"] + "%00"]))


@st.composite
def deliveries(draw: Any, ids: dict[str, str]) -> Delivery:
    """Most deliveries are hostile in one to three ways, the rest well-formed (they are what
    the accounting of produced events counts)."""
    k = draw(st.sampled_from([0, 0, 0, 1, 1, 1, 2, 3]))
    hostile = set(draw(st.permutations(DIMENSIONS))[:k])
    store, path_store = store_path(draw, ids, "store" in hostile)
    resource = draw(st.sampled_from(RESOURCE_TOPICS))
    doc = draw(bodies(resource, "shape" in hostile))
    if "size" in hostile or draw(st.integers(0, 9)) == 0:
        doc = pad(draw, doc, "size" in hostile)
    body, encoding = encode(draw, doc, "encoding" in hostile)
    headers = topic_headers(draw, resource, doc, "topic" in hostile)
    if "content_type" not in hostile:
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "application/json; charset=utf-8",
                                                        "APPLICATION/JSON"]))
    else:
        ctype = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx",
                                      "multipart/form-data; boundary=x", "application/json;;", "json"]))
        if ctype:
            headers["Content-Type"] = ctype
    signer, sig = signature(draw, store, body, "signature" in hostile)
    if sig is not None:
        headers[draw(st.sampled_from(["X-WC-Webhook-Signature", "x-wc-webhook-signature"]))] = sig
    chunked = False
    if "transport" in hostile:
        chunked = draw(st.booleans())
        if not chunked:
            headers["Content-Encoding"] = "gzip"
    return Delivery(path_store, store, headers, body, signer, chunked, [*sorted(hostile), encoding])


# --- the run ------------------------------------------------------------------------------

@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    signed_ids: dict[str, set[str]] = field(default_factory=dict)  # store id → event ids answered to signed deliveries
    accepted: int = 0  # events answered as new (not duplicate)
    unsigned_accepted: int = 0
    sent: int = 0


def send(client: httpx.Client, base: str, d: Delivery) -> httpx.Response:
    url = f"{base}/webhooks/woocommerce/{d.path_store}"
    headers = [(k.encode(), v.encode()) for k, v in d.headers.items()]  # non-ASCII values go as raw UTF-8
    if d.chunked:
        chunks = [d.body[i:i + 8192] for i in range(0, len(d.body), 8192)] or [b""]
        return client.post(url, content=iter(chunks), headers=headers)
    return client.post(url, content=d.body, headers=headers)


@pytest.fixture
def bridge_process(settings, engine, logs_dir):  # type: ignore[no-untyped-def]
    stores = {name: make_store(engine, secret=secret) for name, secret in SECRETS.items()}
    port = free_port()
    role = RoleProcess("bridge", settings, logs_dir, "--host", "127.0.0.1", "--port", str(port),
                       WOOFLOW_MAX_BODY_BYTES=str(MAX_BODY), WOOFLOW_LOG_LEVEL="WARNING")
    role.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(base, 1), 120, 0.1, "bridge /readyz")
        yield base, role, stores
    finally:
        role.stop()


def rss(role: RoleProcess) -> int:
    assert role.proc is not None
    return int(psutil.Process(role.proc.pid).memory_info().rss)


def run_deliveries(client: httpx.Client, base: str, role: RoleProcess, ids: dict[str, str], n: int,
                   tally: Tally) -> None:
    @given(deliveries(ids))
    @hsettings(max_examples=n, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
               suppress_health_check=list(HealthCheck))
    def deliver(d: Delivery) -> None:
        resp = send(client, base, d)
        tally.sent += 1
        tally.statuses[resp.status_code] += 1
        assert resp.status_code < 500, (resp.status_code, resp.text[:500], d.signer, d.notes, d.headers,
                                        d.body[:300], role.log_text()[-3000:])
        if resp.status_code != 200 or not resp.content.startswith(b"{\"accepted\""):
            return
        answer = resp.json()
        if not d.validly_signed:
            tally.unsigned_accepted += answer["accepted"]
            return
        assert d.store is not None
        if answer["accepted"]:
            tally.accepted += answer["accepted"]
            tally.signed_ids.setdefault(ids[d.store], set()).update(answer["event_ids"])

    deliver()


@pytest.mark.e2e
def test_hostile_deliveries_get_no_5xx_produce_only_signed_events_and_keep_memory_flat(  # type: ignore[no-untyped-def]
        settings, engine, bridge_process) -> None:
    base, role, stores = bridge_process
    ids = {name: s.id for name, s in stores.items()}
    tally = Tally()
    with httpx.Client(timeout=30) as client:
        run_deliveries(client, base, role, ids, max(50, DELIVERIES // 10), tally)  # warm-up: imports, caches, pools
        before = rss(role)
        run_deliveries(client, base, role, ids, DELIVERIES, tally)
        after = rss(role)
    for store in stores.values():
        wait_until_bridge_idle(engine, store.id)

    produced: Counter[tuple[str, str]] = Counter()
    for base_topic in (topics.ORDERS, topics.CUSTOMERS, topics.PRODUCTS, topics.COUPONS):
        for _, ev in read_topic(settings, base_topic, timeout=60):
            produced[(ev["store_id"], ev["event_id"])] += 1
    signed = {(store, eid) for store, eids in tally.signed_ids.items() for eid in eids}
    unsigned_produced = [k for k in produced if k not in signed]
    print(f"\nhostile webhooks: {tally.sent} deliveries, statuses {dict(sorted(tally.statuses.items()))}, "
          f"{tally.accepted} events accepted from signed deliveries, {sum(produced.values())} produced, "
          f"{len(unsigned_produced)} produced without a valid signature, RSS {before / 2**20:.1f} → "
          f"{after / 2**20:.1f} MiB")
    assert not [s for s in tally.statuses if s >= 500], tally.statuses
    assert tally.unsigned_accepted == 0
    assert not unsigned_produced, unsigned_produced[:10]
    assert set(produced) == signed, "an event answered as accepted is missing from the topics"
    assert all(c == 1 for c in produced.values()), [k for k, c in produced.items() if c > 1][:10]
    # the property is not vacuous: a good share of the deliveries were signed and let in
    assert tally.accepted >= tally.sent // 20, tally
    assert after - before <= RSS_GROWTH_MAX, f"bridge RSS grew {(after - before) / 2**20:.1f} MiB"


# --- defects the fuzzing found --------------------------------------------------------------

@pytest.mark.integration
def test_nul_byte_store_id_is_a_404_not_a_500(settings, engine) -> None:  # type: ignore[no-untyped-def]
    """`/webhooks/woocommerce/%00` reached PostgreSQL, which refuses NUL in text with an error (500)."""
    store = make_store(engine, secret="s")
    body = b'{"id": 1}'
    headers = webhook_headers("s", body, "order.deleted")
    with BridgeThread(settings) as bridge, httpx.Client(base_url=bridge.url) as client:
        for path_store in ("%00", f"{store.id}%00", "a" * 65, "zażółć"):
            r = client.post(f"/webhooks/woocommerce/{path_store}", content=body, headers=headers)
            assert r.status_code == 404 and r.json()["error"] == "unknown_store", (path_store, r.text)
            r = client.post(f"/storefront/{path_store}/events", json={"key": "k", "events": []})
            assert r.status_code == 404, (path_store, r.text)
