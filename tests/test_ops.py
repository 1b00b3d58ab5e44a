"""Operator tooling on the real broker: DLQ triage and redrive, lag, offset resets."""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import pytest

from tests.pipeline import BIG_ORDER_RULE, Pipeline
from tests.support import unique, wait_for, wait_until_pipeline_idle
from wooflow import dlq
from wooflow.kafka import topics
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.producer import Producer
from wooflow.ops import offsets
from wooflow.stores import upsert_store


@pytest.mark.e2e
def test_poison_command_lands_in_dlq_with_reason_and_redrive_after_fix_runs_once(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    # Stores are read afresh for every command (no cache TTL to wait out after the fix below).
    settings = settings.model_copy(update={"store_cache_ttl_s": 0.0})
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

        # the fix: the right secret
        upsert_store(engine, good_store)
        assert dlq.redrive(settings, engine, letters) == (1, 0)
        wait_for(lambda: p.wooflow_notes(order.id), 60, 0.5, "the note after redrive")
        # a second redrive of the same letter does nothing
        assert dlq.redrive(settings, engine, letters) == (0, 1)
        wait_for(lambda: [r for r in p.log_rows() if r["status"] == "succeeded"], 30, 0.5, "success log")
        wait_until_pipeline_idle(settings)  # a second note would be there by now
        assert p.wooflow_notes(order.id) == [f"wooflow: big order {order.id}"]


@pytest.mark.integration
def test_lag_and_offset_reset_to_a_point_in_time(settings) -> None:  # type: ignore[no-untyped-def]

    topic = settings.topic(topics.ORDERS)
    producer = Producer(settings)
    for i in range(10):
        producer.produce(topic, b"x", key=f"k{i}")
    producer.flush()
    # A point in time strictly after every timestamp of the first ten (milliseconds, the
    # producer's clock) that the next six are stamped at or after.
    boundary_ms = int(time.time() * 1000) + 1
    middle = datetime.fromtimestamp((boundary_ms + 0.5) / 1000, timezone.utc)
    wait_for(lambda: time.time() * 1000 >= boundary_ms + 1, 5, 0.001, "the clock to pass the boundary")
    for i in range(6):
        producer.produce(topic, b"y", key=f"k{i}")
    producer.flush()

    group = unique("g")
    c = make_reader(settings, group)
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
