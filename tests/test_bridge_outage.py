"""A Kafka outage: the bridge keeps answering 2xx from its PostgreSQL outbox and, once
the broker is back, drains it in order — exactly one event per webhook, per-customer
order intact. Runs on a broker of its own (the session broker is shared: never stopped)."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from tests.harness import BridgeThread, webhook_headers
from tests.support import free_port, make_store, read_topic, unique, wait_for, wait_until_bridge_idle
from wooflow.kafka import topics
from wooflow.kafka.admin import create_topics
from wooflow.settings import Settings

CUSTOMERS, PER_CUSTOMER = 50, 20  # 1,000 webhooks


def order_body(customer: int, seq: int) -> bytes:
    order = {"id": customer * 1000 + seq, "number": f"{customer}-{seq}", "status": "processing", "currency": "EUR",
             "total": f"{seq}.50", "customer_id": customer, "billing": {"email": f"c{customer}@example.com"},
             "date_created_gmt": "2026-11-25T10:00:00",
             "date_modified_gmt": f"2026-11-25T10:{seq // 60:02d}:{seq % 60:02d}",
             "meta_data": [{"id": 1, "key": "seq", "value": seq}]}
    return json.dumps(order).encode()


async def deliver_all(url: str, secret: str) -> list[int]:
    """Each customer's webhooks in order (one after another), customers concurrently."""
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=60) as client:
        async def customer(c: int) -> None:
            for seq in range(PER_CUSTOMER):
                body = order_body(c, seq)
                r = await client.post(url, content=body,
                                      headers=webhook_headers(secret, body) | {"X-WC-Webhook-Delivery-ID": "x"})
                statuses.append(r.status_code)

        await asyncio.gather(*(customer(c) for c in range(1, CUSTOMERS + 1)))
    return statuses


@pytest.mark.e2e
def test_kafka_outage_answers_2xx_and_delivers_exactly_once_in_order(own_broker, migrated, engine) -> None:  # type: ignore[no-untyped-def]
    bootstrap, stop_broker, start_broker = own_broker
    tag = unique("t")
    s = Settings(kafka_bootstrap_servers=bootstrap, database_url=migrated, topic_prefix=f"{tag}.", topic_partitions=4,
                 state_dir=Path("/nonexistent"), delivery_timeout_s=10.0)
    create_topics(s)
    store = make_store(engine)
    try:
        with BridgeThread(s) as bridge:
            stop_broker()
            statuses = asyncio.run(deliver_all(bridge.hook_url(store.id), store.webhook_secret))
            assert statuses.count(200) == CUSTOMERS * PER_CUSTOMER, sorted(set(statuses))
            with engine.connect() as conn:
                queued = conn.execute(text("SELECT count(*) FROM bridge_outbox WHERE store_id = :s"),
                                      {"s": store.id}).scalar_one()
            assert queued == CUSTOMERS * PER_CUSTOMER  # every 2xx came from a committed outbox row
            assert (REGISTRY.get_sample_value("wooflow_outbox_depth") or 0) >= queued
            start_broker()

            def drained() -> bool:
                with engine.connect() as conn:
                    return conn.execute(text("SELECT count(*) FROM bridge_outbox WHERE store_id = :s"),
                                        {"s": store.id}).scalar_one() == 0

            wait_for(drained, 90, 0.5, "outbox drained")
            wait_for(lambda: REGISTRY.get_sample_value("wooflow_bridge_kafka_available") == 1, 30, 0.2,
                     "breaker closed")
            # after the outage: straight to Kafka again
            r = bridge.webhook(store, "order.created", order_body(CUSTOMERS + 1, 0))
            assert r.status_code == 200 and r.json()["accepted"] == 1
        events = read_topic(s, topics.ORDERS, timeout=30)
        assert len(events) == CUSTOMERS * PER_CUSTOMER + 1
        assert len({ev["event_id"] for _, ev in events}) == len(events)
        seqs: dict[str, list[int]] = defaultdict(list)
        for _, ev in events:
            seqs[ev["customer_key"]].append(int(ev["order"]["meta"]["seq"]))
        for c in range(1, CUSTOMERS + 1):
            assert seqs[f"c{c}"] == list(range(PER_CUSTOMER)), (c, seqs[f"c{c}"])
    finally:
        with engine.begin() as conn:  # never leave rows for another test's bridge to drain
            conn.execute(text("DELETE FROM bridge_outbox WHERE store_id = :s"), {"s": store.id})


@pytest.mark.integration
def test_the_outbox_is_bounded_503_beyond(migrated, engine) -> None:  # type: ignore[no-untyped-def]
    """No broker at all (nothing listens on the port): the outbox takes `outbox_max_rows`
    events, then the bridge answers 503 and counts them, instead of growing without bound."""
    s = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", database_url=migrated,
                 topic_prefix=f"{unique('t')}.", state_dir=Path("/nonexistent"), outbox_max_rows=5)
    store = make_store(engine)
    rejected = REGISTRY.get_sample_value("wooflow_outbox_rejected_total") or 0
    try:
        with BridgeThread(s) as bridge:
            codes = []
            for seq in range(8):
                r = bridge.webhook(store, "order.created", order_body(1, seq), timeout=30)
                codes.append((r.status_code, r.json().get("error")))
        assert codes == [(200, None)] * 5 + [(503, "outbox_full")] * 3, codes
        assert (REGISTRY.get_sample_value("wooflow_outbox_rejected_total") or 0) == rejected + 3
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM bridge_outbox WHERE store_id = :s"),
                                {"s": store.id}).scalar_one() == 5
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM bridge_outbox WHERE store_id = :s"), {"s": store.id})


@pytest.mark.e2e
def test_the_poller_queues_behind_the_outbox_so_a_later_state_never_overtakes_an_earlier_one(  # type: ignore[no-untyped-def]
        own_broker, migrated, engine) -> None:
    """A webhook of an order still processing went into the outbox (Kafka down); the order was
    completed and that webhook lost (the bridge was gone). When Kafka is back the poller reads
    the completed order before the outbox drained: it must queue behind the outbox, or the
    rule consumer sees `completed` first, takes `processing` for stale, and no status change
    ever fires."""
    from wooflow.producers.poller import poll_store
    from wooflow.producers.sync_ingest import SyncIngest
    from wooflow.schemas.codec import get_codec
    from wooflow.simulator.server import SimulatorServer

    bootstrap, stop_broker, start_broker = own_broker
    s = Settings(kafka_bootstrap_servers=bootstrap, database_url=migrated, topic_prefix=f"{unique('t')}.",
                 topic_partitions=4, state_dir=Path("/nonexistent"), delivery_timeout_s=5.0)
    create_topics(s)
    with SimulatorServer(seed=5) as sim:
        store = make_store(engine, sim.url, consumer_key=sim.auth[0], consumer_secret=sim.auth[1])
        try:
            with BridgeThread(s) as bridge:
                stop_broker()
                hook = sim.store.create_webhook("order.created", f"{bridge.url}/webhooks/woocommerce/{store.id}",
                                                secret=store.webhook_secret)
                product = sim.store.create_product("Cup", "10.00")
                order = sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                               billing={"email": "p@example.com"}, status="processing")
                wait_for(lambda: [d.success for d in sim.store.deliveries(hook.id)] == [True], 30, 0.1,
                         "the webhook answered 2xx (from the outbox)")
            sim.store.set_order_status(order.id, "completed")  # nobody hears of it: no webhook for updates
            start_broker()
            ingest = SyncIngest(s, engine, get_codec(None))
            try:
                produced = poll_store(store, s, engine, ingest)
            finally:
                ingest.close()
            assert produced["orders"] == 1
            assert read_topic(s, topics.ORDERS, timeout=30) == []  # nothing overtook the outbox
            with BridgeThread(s):  # a bridge drains the outbox, in order
                wait_until_bridge_idle(engine, store.id, timeout=60)
            statuses = [ev["order"]["status"] for _, ev in read_topic(s, topics.ORDERS, timeout=30)]
            assert statuses == ["processing", "completed"]
        finally:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM bridge_outbox WHERE store_id = :s"), {"s": store.id})
