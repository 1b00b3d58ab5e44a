"""One person per shopper, end to end: signed webhooks from the simulated store through
the bridge, the real broker and PostgreSQL, a running rule consumer and workers.

- A guest orders twice, registers with that email and orders again: one first purchase,
  two repeat purchases, three orders on the customer; a registered customer's guest
  checkout with the account's email counts on the customer; a guest event still in
  flight after the merge is re-routed to the customer's partition.
- `order.deleted` (`{"id": N}`) and an action whose REST read-back failed land on the
  partition of the order's customer.
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from confluent_kafka import TopicPartition
from sqlalchemy import text

from tests.harness import BridgeThread
from tests.pipeline import Pipeline
from tests.support import make_store, unique, wait_for
from wooflow.kafka import topics
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.groups import lag
from wooflow.kafka.producer import Producer
from wooflow.producers.keys import email_hash
from wooflow.producers.normalise import StoreInfo, normalise, normalise_rest
from wooflow.producers.sync_ingest import SyncIngest
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings

RULES = tuple({"name": name, "trigger": trigger, **extra,
               "actions": [{"type": "add_order_note", "params": {"note": f"wooflow: {name} {{{{ order.number }}}}"}}]}
              for name, trigger, extra in (("first", "first_purchase", {}), ("repeat", "repeat_purchase", {}),
                                           ("once", "new_order", {"frequency": {"once_per_customer": True}})))


def g(email: str) -> str:
    return f"g{email_hash(email)}"


def read_keyed(s: Settings, base_topic: str, timeout: float = 20.0) -> list[tuple[str, int, dict[str, Any]]]:
    """(Kafka key, partition, event) of everything in a topic up to its current end."""
    topic = s.topic(base_topic)
    consumer = make_reader(s, unique("keyed"))
    codec = get_codec(s.schema_registry_url)
    try:
        parts = [TopicPartition(topic, p, 0) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        consumer.assign(parts)
        out: list[tuple[str, int, dict[str, Any]]] = []
        seen: Counter[int] = Counter()

        def done() -> bool:
            for m in consumer.consume(500, 0.2):
                if m.error() is None:
                    out.append(((m.key() or b"").decode(), int(m.partition() or 0), codec.decode(m.value())[1]))
                    seen[int(m.partition() or 0)] += 1
            return all(seen[p] >= n for p, n in ends.items())

        wait_for(done, timeout, 0.0, f"{topic} read to its end")
        return out
    finally:
        consumer.close()


def caught_up(s: Settings, group: str, base_topics: list[str]) -> bool:
    """The group committed every partition of these topics up to its end."""
    return sum(p.lag for p in lag(s, group, [s.topic(t) for t in base_topics])) == 0


@pytest.mark.e2e
def test_a_guest_who_registers_and_a_customer_who_checks_out_as_a_guest_are_one_person(  # type: ignore[no-untyped-def]
        settings, engine, logs_dir) -> None:
    with ExitStack() as stack:
        p = Pipeline(settings, engine, logs_dir, stack, rules=RULES,
                     webhook_topics=("order.created", "order.updated", "customer.created"))
        st = p.sim.store
        mug = st.create_product("Mug", "30.00")

        def checkout(email: str, customer_id: int = 0) -> int:
            return st.checkout(line_items=[{"product_id": mug.id, "quantity": 1}], customer_id=customer_id,
                               billing={"email": email, "first_name": "Ala", "country": "PL"},
                               payment_method="cod").id

        def state(key: str) -> dict[str, Any]:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT * FROM customer_state WHERE store_id = :s AND customer_key = :k"),
                                   {"s": p.store.id, "k": key}).mappings().first()
            return dict(row) if row else {}

        try:
            # a guest orders twice, then registers with the same email and orders again
            ala_email = "ala@example.com"
            o1, o2 = checkout(ala_email), checkout(ala_email)
            wait_for(lambda: state(g(ala_email)).get("order_count") == 2, 60, 0.3, "the guest's two orders")
            ala = st.create_customer(ala_email, first_name="Ala")
            o3 = checkout(ala_email, ala.id)
            wait_for(lambda: state(f"c{ala.id}").get("order_count") == 3, 60, 0.3, "three orders on the customer")
            assert state(g(ala_email))["merged_into"] == f"c{ala.id}"

            # a registered customer checks out as a guest with the account's email
            bob_email = "bob@example.com"
            bob = st.create_customer(bob_email, first_name="Bob")
            assert st.wait_idle(30)
            o4 = checkout(bob_email, bob.id)
            o5 = checkout(bob_email)  # customer_id 0
            wait_for(lambda: state(f"c{bob.id}").get("order_count") == 2, 60, 0.3, "the guest checkout on Bob")

            # a guest event produced before the link and met after it: the bridge never
            # delivers this order, the event reaches Kafka keyed as the guest it was
            st.pause_deliveries()
            o6 = st.checkout(line_items=[{"product_id": mug.id, "quantity": 1}],
                             billing={"email": ala_email, "first_name": "Ala", "country": "PL"}).id
            late = normalise(StoreInfo(p.store.id, p.store.timezone, p.store.currency), "order.created",
                             st.rest_item("order", o6), source="webhook", received_at=datetime.now(timezone.utc))[0]
            assert late.record["customer_key"] == g(ala_email)
            producer = Producer(settings)
            topic = settings.topic(topics.ORDERS)
            producer.produce(topic, get_codec(None).encode(late.schema, late.record, topic), key=late.key)
            producer.flush(10)
            wait_for(lambda: state(f"c{ala.id}").get("order_count") == 4, 60, 0.3, "the late guest order counted")

            notes = {"first": [o1, o4], "repeat": [o2, o3, o5, o6], "once": [o1, o4]}
            wanted = sum(len(v) for v in notes.values())
            wait_for(lambda: len([r for r in p.log_rows() if r["status"] == "succeeded"]) >= wanted, 60, 0.3,
                     "the notes' execution logs")
            # nothing more can come: every event and command was consumed and committed
            wait_for(lambda: caught_up(settings, settings.rules_group, list(topics.EVENT_TOPICS))
                     and caught_up(settings, settings.workers_group, [topics.COMMANDS]), 60, 0.5, "idle pipeline")
        except AssertionError:
            print(p.role_logs())
            raise
        got: dict[str, list[int]] = {name: [] for name in notes}
        for o in (o1, o2, o3, o4, o5, o6):
            for n in p.wooflow_notes(o):
                got[n.split()[1]].append(o)
        assert got == notes
        assert state(f"c{bob.id}")["order_count"] == 2 and state(g(bob_email)).get("order_count", 0) == 0
        orders = read_keyed(settings, topics.ORDERS)
        copies = {(k, part) for k, part, ev in orders if ev["event_id"] == late.event_id}
        ala_parts = {part for k, part, _ in orders if k == f"{p.store.id}:c{ala.id}"}
        assert {k for k, _ in copies} == {late.key, f"{p.store.id}:c{ala.id}"}, "re-routed to the customer"
        assert {part for k, part in copies if k.endswith(f":c{ala.id}")} == ala_parts
        assert all(ev["customer_key"] == f"c{ala.id}" for k, _, ev in orders if k.endswith(f":c{ala.id}"))


def post(bridge: BridgeThread, store: Any, topic: str, body: dict[str, Any]) -> httpx.Response:
    r = bridge.webhook(store, topic, body)
    assert r.status_code == 200, r.text
    return r


def order_json(oid: int, cid: int, email: str) -> dict[str, Any]:
    return {"id": oid, "status": "processing", "currency": "PLN", "total": "20.00", "customer_id": cid,
            "billing": {"email": email}, "line_items": [], "date_created_gmt": "2026-03-01T10:00:00",
            "date_modified_gmt": "2026-03-01T10:00:05"}


@pytest.mark.integration
def test_deletions_and_failed_read_backs_land_on_the_customers_partition(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)  # its REST API is unreachable: every read-back fails
    with BridgeThread(settings) as bridge:
        post(bridge, store, "order.created", order_json(501, 0, "guest@example.com"))
        post(bridge, store, "customer.created", {"id": 7, "email": "reg@example.com",
                                                 "date_created_gmt": "2026-03-01T09:00:00"})
        post(bridge, store, "order.created", order_json(502, 0, "reg@example.com"))  # a guest checkout of 7
        post(bridge, store, "order.deleted", {"id": 501})
        post(bridge, store, "action.woocommerce_order_status_completed",
             {"action": "woocommerce_order_status_completed", "arg": 502})
        post(bridge, store, "order.deleted", {"id": 999})  # never seen
        # the storefront: an email typed at checkout finds the account it belongs to
        r = httpx.post(f"{bridge.url}/storefront/{store.id}/events", headers={"Origin": "http://127.0.0.1:1"},
                       json={"key": store.public_key, "session_id": "sess-identity-1",
                             "events": [{"type": "email_captured", "email": "Reg@Example.com", "id": "e1"}]})
        assert r.status_code == 200 and r.json()["customer_key"] == "c7", r.text
    # backfill and the poller key the same way (a new process: nothing cached)
    ingest = SyncIngest(settings, engine, get_codec(None))
    try:
        info = StoreInfo(store.id, store.timezone, store.currency)
        rest_order = order_json(503, 0, "reg@example.com") | {"date_created_gmt": "2026-03-01T10:00:05"}
        produced, _ = ingest.submit([normalise_rest(info, "order", rest_order, source="rest",
                                                    received_at=datetime.now(timezone.utc))])
        assert produced == 1
    finally:
        ingest.close()
    orders = read_keyed(settings, topics.ORDERS)
    by = {(ev["order_id"], ev["action"]): (k, part) for k, part, ev in orders}
    assert by[(501, "created")][0] == f"{store.id}:{g('guest@example.com')}"
    assert by[(502, "created")][0] == f"{store.id}:c7"
    assert by[(501, "deleted")] == by[(501, "created")], "a deletion follows the order's customer"
    assert by[(502, "status_changed")] == by[(502, "created")], "so does a read-back that failed"
    assert by[(999, "deleted")][0] == f"{store.id}:anon-o999"  # the documented fallback
    assert by[(503, "created")] == by[(502, "created")]
    assert all(ev["customer_key"] == k.split(":", 1)[1] for k, _, ev in orders)
