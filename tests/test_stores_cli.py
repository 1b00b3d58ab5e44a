"""`wooflow stores add` run again for a registered store rotates its webhook secret: the
webhooks in WooCommerce are updated in place (no second set), the ones deleted there
meanwhile are recreated, leftovers of a topic are removed, the row gets the new secret,
and the running bridge accepts the new signature from the first delivery — even with a
store cache TTL far longer than the test."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from tests.harness import BridgeThread, webhook_headers
from tests.support import env_of, read_topic, unique, wait_for, wooflow_cli
from wooflow.db.tables import store_webhooks
from wooflow.kafka import topics
from wooflow.simulator.server import SimulatorServer
from wooflow.stores import StoreCache

pytestmark = pytest.mark.e2e

TOPICS = ("order.created", "order.updated", "customer.created")


def _add(settings, store_id: str, sim_url: str, bridge_url: str, *extra: str) -> str:  # type: ignore[no-untyped-def]
    run = wooflow_cli("stores", "add", store_id, "--url", sim_url, "--bridge-url", bridge_url,
                      "--topics", ",".join(TOPICS), *extra, env=env_of(settings, COLUMNS="250"))
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stderr


def test_stores_add_again_rotates_the_secret_in_place(settings, engine) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"store_cache_ttl_s": 600.0})
    store_id = unique("shop")
    with SimulatorServer(seed=23) as sim, BridgeThread(settings) as bridge:
        st = sim.store
        hook_url = bridge.hook_url(store_id)

        def ours() -> list:  # type: ignore[type-arg]
            return sorted((w for w in st.webhooks.values() if w.delivery_url == hook_url), key=lambda w: w.id)

        def recorded() -> set[int]:
            with engine.connect() as conn:
                return set(conn.execute(select(store_webhooks.c.webhook_id)
                                        .where(store_webhooks.c.store_id == store_id)).scalars())

        def row():  # type: ignore[no-untyped-def]
            found = StoreCache(engine, ttl=0).get(store_id)
            assert found is not None
            return found

        out = _add(settings, store_id, sim.url, bridge.url, "--consumer-key", sim.auth[0], "--consumer-secret",
                   sim.auth[1], "--timezone", "Europe/Warsaw", "--currency", "PLN")
        assert "0 updated in place, 3 created" in out, out
        first = {w.topic: w.id for w in ours()}
        old_secret = row().webhook_secret
        assert set(first) == set(TOPICS) and len(ours()) == 3 and recorded() == set(first.values())
        assert {w.secret for w in ours()} == {old_secret}

        mug = st.create_product("Mug", "9.00")
        before = st.create_order(line_items=[{"product_id": mug.id}], billing={"email": "a@example.com"})
        wait_for(lambda: [a for a in st.deliveries(first["order.created"]) if a.resource_id == before.id
                          and a.status_code == 200], 30, 0.05, "the delivery signed with the first secret")
        # the bridge now holds the store, old secret included, for the next 600 s

        # Meanwhile in WooCommerce: one webhook deleted, one disabled after failures, and
        # a second webhook of a topic (what running `stores add` again used to leave).
        st.delete_webhook(first["customer.created"])
        st.update_webhook(first["order.updated"], status="disabled")
        extra = st.create_webhook("order.created", hook_url, secret=old_secret, ping=False)

        out = _add(settings, store_id, sim.url, bridge.url, "--rotate-secret")
        assert "2 updated in place, 1 created, 1 duplicates deleted" in out, out
        new_secret = row().webhook_secret
        assert new_secret != old_secret
        assert (row().timezone, row().currency, row().consumer_key) == ("Europe/Warsaw", "PLN", sim.auth[0])
        now = {w.topic: w.id for w in ours()}
        assert len(ours()) == 3 and set(now) == set(TOPICS), [(w.id, w.topic) for w in ours()]
        assert now["order.created"] == first["order.created"] and now["order.updated"] == first["order.updated"]
        assert now["customer.created"] != first["customer.created"] and extra.id not in {w.id for w in ours()}
        assert {w.secret for w in ours()} == {new_secret} and {w.status for w in ours()} == {"active"}
        assert recorded() == set(now.values())

        # WooCommerce signs with the new secret; the bridge accepts it at once
        after = st.create_order(line_items=[{"product_id": mug.id}], billing={"email": "b@example.com"})
        delivery = wait_for(lambda: [a for a in st.deliveries(now["order.created"]) if a.resource_id == after.id],
                            30, 0.05, "the delivery signed with the new secret")[0]
        assert delivery.status_code == 200, delivery.response_body
        wait_for(lambda: after.id in {ev["order_id"] for _, ev in read_topic(settings, topics.ORDERS)}, 30, 0.2,
                 "the order produced")
        # and refuses the old one
        body = json.dumps(st.rest_item("order", after.id)).encode()
        stale = httpx.post(hook_url, content=body, headers=webhook_headers(old_secret, body, "order.updated"))
        assert stale.status_code == 401, stale.text

        # run once more with nothing changed: the same three webhooks, updated in place
        out = _add(settings, store_id, sim.url, bridge.url)
        assert "3 updated in place, 0 created" in out and "duplicates" not in out, out
        assert {w.topic: w.id for w in ours()} == now and row().webhook_secret == new_secret
        assert len(st.webhooks) == 3
