"""Operator tooling on the real broker: DLQ triage and redrive, lag, offset resets."""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import pytest

from tests.pipeline import BIG_ORDER_RULE, Pipeline
from tests.support import unique, wait_for
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.ops import dlq, offsets
from wooflow.stores import upsert_store


def test_poison_command_lands_in_dlq_with_reason_and_redrive_after_fix_runs_once(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        p = Pipeline(settings, engine, logs_dir, stack, rules=(BIG_ORDER_RULE,))
        good_store = p.store
        # A wrong REST secret: the store answers 401, a permanent failure.
        upsert_store(engine, dataclasses.replace(good_store, consumer_secret="cs_wrong"))
        product = p.sim.store.create_product("Lamp", "250.00")
        order = p.sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                         billing={"email": "l@example.com", "country": "PL"})
        letters = wait_for(lambda: list(dlq.read_dlq(settings, dlq.Filters(store=good_store.id))), 60, 0.5,
                           "the dead letter")
        assert len(letters) == 1
        letter = letters[0]
        assert letter["stage"] == "workers" and letter["reason"] == "action_error"
        assert "401" in letter["error"]
        assert letter["source_topic"] == settings.topic(topics.COMMANDS)
        assert p.wooflow_notes(order.id) == []

        # the fix: the right secret (the store cache expires within its TTL)
        upsert_store(engine, good_store)
        time.sleep(settings.store_cache_ttl_s)  # the cache TTL is the documented propagation delay
        assert dlq.redrive(settings, engine, letters) == (1, 0)
        wait_for(lambda: p.wooflow_notes(order.id), 60, 0.5, "the note after redrive")
        # a second redrive of the same letter does nothing
        assert dlq.redrive(settings, engine, letters) == (0, 1)
        wait_for(lambda: [r for r in p.log_rows() if r["status"] == "succeeded"], 30, 0.5, "success log")
        assert p.wooflow_notes(order.id) == [f"wooflow: big order {order.id}"]


def test_lag_and_offset_reset_to_a_point_in_time(settings) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import Consumer

    topic = settings.topic(topics.ORDERS)
    producer = Producer(settings)
    for i in range(10):
        producer.produce(topic, b"x", key=f"k{i}")
    producer.flush()
    middle = datetime.now(timezone.utc)
    time.sleep(0.05)
    for i in range(6):
        producer.produce(topic, b"y", key=f"k{i}")
    producer.flush()

    group = unique("g")
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 16 and time.monotonic() < deadline:
        seen += len([m for m in c.consume(100, 0.5) if not m.error()])
    assert seen == 16
    c.commit(asynchronous=False)
    c.close()
    assert sum(p.lag for p in offsets.lag(settings, group)) == 0

    plan = offsets.plan_reset(settings, group, [topic], middle)
    assert sum(p.current - p.target for p in plan) == 6  # the 6 later messages will be re-read
    offsets.apply_reset(settings, group, plan)
    assert sum(p.lag for p in offsets.lag(settings, group)) == 6
    with pytest.raises(offsets.OffsetsError, match="timezone"):
        offsets.plan_reset(settings, group, [topic], middle.replace(tzinfo=None))
    # a future time moves every partition to its end
    plan = offsets.plan_reset(settings, group, [topic], middle + timedelta(days=1))
    offsets.apply_reset(settings, group, plan)
    assert sum(p.lag for p in offsets.lag(settings, group)) == 0
