"""The Kafka edge on the real broker: events from every source carry the `store`/`schema`
headers the readers skip by, and a full local producer queue is waited out, not an error."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from confluent_kafka import Producer as RawProducer
from confluent_kafka import TopicPartition

from tests.support import make_store
from wooflow.kafka import topics
from wooflow.kafka.config import producer_config
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.headers import read_hint
from wooflow.kafka.producer import produce_when_room
from wooflow.producers.normalise import StoreInfo, normalise_rest
from wooflow.producers.sync_ingest import SyncIngest
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings
from wooflow.simulator.state import SimulatedStore

pytestmark = pytest.mark.integration


def _hints(s: Settings, base_topic: str) -> list[tuple[str | None, str | None]]:
    topic = s.topic(base_topic)
    reader = make_reader(s, "test-edge-reader")
    try:
        parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        reader.assign([TopicPartition(topic, p, 0) for p in parts])
        hints, left = [], sum(ends.values())
        while left > 0:
            for m in reader.consume(100, 1.0):
                if m.error() is None:
                    hints.append(read_hint(m))
                    left -= 1
        return hints
    finally:
        reader.close()


def test_backfill_and_poller_events_carry_the_store_and_schema_headers(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    sim = SimulatedStore()
    product = sim.create_product("Mug", "12.50")
    info = StoreInfo(store.id, store.timezone, store.currency)
    event = normalise_rest(info, "product", sim.rest_item("product", product.id), source="rest",
                           received_at=datetime.now(timezone.utc))
    ingest = SyncIngest(settings, engine, get_codec(None))
    try:
        assert ingest.submit([event]) == (1, 0)
    finally:
        ingest.close()
    assert _hints(settings, topics.PRODUCTS) == [(store.id, "ProductEvent")]


def test_a_full_local_queue_is_waited_out(settings: Settings) -> None:
    topic = settings.topic(topics.LOGS)
    raw = RawProducer(producer_config(settings) | {"queue.buffering.max.messages": 5, "linger.ms": 50})
    acknowledged: list[bool] = []
    for i in range(40):  # eight times what the local queue holds
        produce_when_room(raw, topic, b"x", key=str(i), on_delivery=lambda err, _m: acknowledged.append(err is None))
    assert raw.flush(30) == 0
    assert acknowledged == [True] * 40
