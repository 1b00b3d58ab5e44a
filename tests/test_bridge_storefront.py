"""Storefront events and store registration, over real HTTP, Kafka and PostgreSQL."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from tests.harness import BridgeThread
from tests.support import env_of, make_store, read_topic, wait_for, wait_until_bridge_idle, wooflow_cli
from wooflow.kafka import topics
from wooflow.producers.keys import email_hash
from wooflow.producers.storefront import customer_signature
from wooflow.simulator.server import SimulatorServer

ORIGIN = "https://shop.example"


@pytest.fixture
def bridge(settings):  # type: ignore[no-untyped-def]
    """The bridge with a storefront rate limit a test can reach."""
    with BridgeThread(settings.model_copy(update={"storefront_burst": 30, "storefront_rate_per_s": 0.5})) as server:
        yield server


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("wooflow_storefront_rejected_total", {"reason": reason}) or 0.0


@pytest.mark.integration
def test_storefront_events_link_the_session_to_the_customer(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine, ORIGIN + "/")
    url = f"{bridge.url}/storefront/{store.id}/events"
    h = {"Origin": ORIGIN, "Content-Type": "text/plain"}
    session = "sess-0123456789"

    def post(*events: dict, **extra: object) -> httpx.Response:
        return httpx.post(url, json={"key": store.public_key, "session_id": session, "events": list(events)} | extra,
                          headers=h)

    r = post({"type": "product_viewed", "product_id": 42, "id": "e1"}, {"type": "search", "query": "kubek", "id": "e2"})
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    assert r.json()["customer_key"].startswith("anon-s")
    assert post({"type": "product_viewed", "product_id": 42, "id": "e1"}).json()["accepted"] == 0  # a retried beacon
    r = post({"type": "email_captured", "email": "Guest@Example.com", "id": "e3"})
    assert r.json()["customer_key"] == f"g{email_hash('guest@example.com')}"
    r = post({"type": "cart_updated", "id": "e4", "cart": [{"product_id": 42, "quantity": 2, "price": "19.90"}],
              "cart_total": "39.80"})
    assert r.json()["customer_key"] == f"g{email_hash('guest@example.com')}"
    r = post({"type": "login", "customer_id": 7, "id": "e5"})  # unsigned: not trusted
    assert r.json()["customer_key"].startswith("g")
    sig = customer_signature(store.webhook_secret, store.id, session, 7)
    r = post({"type": "login", "customer_id": 7, "customer_sig": sig, "id": "e6"})
    assert r.json()["customer_key"] == "c7"
    r = post({"type": "checkout_started", "id": "e7", "email": "guest@example.com"})
    assert r.json()["customer_key"] == "c7"  # a registered customer is never downgraded to a guest key

    events = [ev for _, ev in read_topic(settings, topics.STOREFRONT)]
    # keys change as the session is linked, so events sit on several partitions: compare as a set
    assert sorted(e["event_type"] for e in events if e["session_id"] == session) == sorted([
        "product_viewed", "search", "email_captured", "cart_updated", "login", "login", "checkout_started"])
    by_id = {e["event_type"] + str(e["customer_id"]): e for e in events}
    assert str(by_id["cart_updatedNone"]["cart_total"]) == "39.8000" and by_id["cart_updatedNone"]["currency"] == "PLN"
    assert by_id["loginNone"]["properties"] == {"unverified_customer_id": "7"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT customer_key FROM storefront_sessions WHERE store_id = :s"),
                            {"s": store.id}).scalar_one() == "c7"


@pytest.mark.integration
def test_storefront_bad_input_and_the_snippet(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine, ORIGIN)
    url = f"{bridge.url}/storefront/{store.id}/events"
    good = {"key": store.public_key, "session_id": "sess-abcdefgh",
            "events": [{"type": "product_viewed", "product_id": 1}]}
    cases = [
        ("wrong key", url, good | {"key": "pk_nope"}, {"Origin": ORIGIN}, 401, "invalid_key"),
        ("missing key", url, {k: v for k, v in good.items() if k != "key"}, {"Origin": ORIGIN}, 401, "invalid_key"),
        ("wrong origin", url, good, {"Origin": "https://evil.example"}, 403, "bad_origin"),
        ("no origin", url, good, {}, 403, "bad_origin"),
        ("unknown type", url, good | {"events": [{"type": "teleported"}]}, {"Origin": ORIGIN}, 400, "invalid_event"),
        ("unknown store", f"{bridge.url}/storefront/x{store.id}/events", good, {"Origin": ORIGIN}, 404,
         "unknown_store"),
    ]
    for name, u, body, h, status, reason in cases:
        before = rejected(reason)
        r = httpx.post(u, json=body, headers=h)
        assert r.status_code == status and r.json()["error"] == reason, f"{name}: {r.status_code} {r.text}"
        assert rejected(reason) == before + 1, name
    r = httpx.post(url, content=b"{not json", headers={"Origin": ORIGIN, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    wait_until_bridge_idle(engine, store.id)
    assert read_topic(settings, topics.STOREFRONT) == []

    pre = httpx.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == ORIGIN
    js = httpx.get(f"{bridge.url}/storefront/{store.id}/wooflow.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert store.public_key in js.text and f"/storefront/{store.id}/events" in js.text and "sendBeacon" in js.text

    # rate limit: burst 30 per session, 0.5/s refill
    statuses = [httpx.post(url, json=good | {"events": [{"type": "search", "query": f"q{i}"}]},
                           headers={"Origin": ORIGIN}).status_code for i in range(35)]
    assert statuses[:25].count(200) == 25 and 429 in statuses[25:], statuses


@pytest.mark.e2e
def test_stores_add_creates_webhooks_and_remove_deletes_them(settings, engine, bridge) -> None:  # type: ignore[no-untyped-def]
    env = env_of(settings)
    with SimulatorServer(seed=9) as sim:
        store_id = "cli" + bridge.url.rsplit(":", 1)[1]

        def wooflow(*args: str) -> subprocess.CompletedProcess[str]:
            return wooflow_cli(*args, env=env)

        r = wooflow("stores", "add", store_id, "--url", sim.url, "--consumer-key", sim.auth[0], "--consumer-secret",
                    sim.auth[1], "--timezone", "Europe/Warsaw", "--currency", "PLN", "--bridge-url", bridge.url)
        assert r.returncode == 0, r.stderr
        hooks = list(sim.store.webhooks.values())
        assert len(hooks) == 16 and {h.delivery_url for h in hooks} == {bridge.hook_url(store_id)}
        with engine.connect() as conn:
            secret = conn.execute(text("SELECT webhook_secret FROM stores WHERE id = :s"), {"s": store_id}).scalar_one()
        assert {h.secret for h in hooks} == {secret} and secret not in r.stdout + r.stderr
        assert all(p.status_code == 200 for p in sim.store.deliveries(kind="ping"))
        sim.store.create_customer("cli@example.com")
        wait_for(lambda: len(read_topic(settings, topics.CUSTOMERS)) == 1, 30, 0.3,
                 "customer event via created webhook")

        listed = wooflow("stores", "list")
        assert listed.returncode == 0 and store_id in listed.stdout
        assert wooflow("stores", "add", store_id, "--url", "not a url").returncode != 0
        r = wooflow("stores", "remove", store_id)
        assert r.returncode == 0, r.stderr
        assert sim.store.webhooks == {}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM stores WHERE id = :s"), {"s": store_id}).scalar_one() == 0


@pytest.mark.integration
def test_a_retry_of_an_event_that_never_became_durable_is_not_answered_as_a_duplicate(  # type: ignore[no-untyped-def]
        settings, engine) -> None:
    """An attempt claimed an event, then neither Kafka nor PostgreSQL took it and its claim
    could not be given back (both were away): the claim stays `pending`. The sender's retry
    must not be told "duplicate" — nothing is durable — but "not now"; once the claim is
    stale the retry makes the event durable."""
    from wooflow.producers.keys import event_id

    store = make_store(engine, ORIGIN + "/")
    session = "sess-retried-01"
    eid = event_id(store.id, "storefront", session, "cart-1")
    with engine.begin() as conn:  # what the failed attempt left behind
        conn.execute(text("INSERT INTO bridge_seen (event_id, store_id, state) VALUES (:e, :s, 'pending')"),
                     {"e": eid, "s": store.id})
    s = settings.model_copy(update={"claim_stale_s": 3.0})
    body = {"key": store.public_key, "session_id": session,
            "events": [{"type": "cart_updated", "id": "cart-1", "cart": [{"product_id": 1, "quantity": 1}]}]}
    with BridgeThread(s) as bridge:
        url = f"{bridge.url}/storefront/{store.id}/events"
        r = httpx.post(url, json=body, headers={"Origin": ORIGIN})
        assert r.status_code == 503, r.text
        # the claim goes stale: the same retry now makes the event durable
        r = wait_for(lambda: (x := httpx.post(url, json=body, headers={"Origin": ORIGIN})).status_code == 200 and x,
                     30, 0.5, "the retry accepted")
        assert r.json()["accepted"] == 1, r.text
        wait_until_bridge_idle(engine, store.id)
    assert [ev["event_id"] for _, ev in read_topic(settings, topics.STOREFRONT)] == [eid]


@pytest.mark.integration
def test_storefront_answers_503_not_500_while_postgresql_is_away(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from tests.effects_kit import TcpProxy

    store = make_store(engine, ORIGIN + "/")
    url = engine.url
    with TcpProxy(str(url.host), int(url.port or 5432)) as proxy:
        via = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        with BridgeThread(settings.model_copy(update={"database_url": via})) as bridge:
            endpoint = f"{bridge.url}/storefront/{store.id}/events"
            body = {"key": store.public_key, "session_id": "sess-away-0001",
                    "events": [{"type": "email_captured", "email": "away@example.com", "id": "e1"}]}
            assert httpx.post(endpoint, json=body, headers={"Origin": ORIGIN}).status_code == 200
            proxy.cut()
            body["session_id"] = "sess-away-0002"  # a new session: its link needs the database
            r = httpx.post(endpoint, json=body, headers={"Origin": ORIGIN}, timeout=30)
            assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
