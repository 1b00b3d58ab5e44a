"""The broker going away under a batch role: an offset commit that meets it (no group
coordinator, "Waiting for coordinator", then "Coordinator load in progress" while it
starts) is kept for the next batch instead of taking the role down — the outputs are
durable already, only the offsets wait. Runs on a broker of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Message

from tests.support import unique, wait_for
from wooflow.checkpointing import Checkpoint
from wooflow.kafka import topics
from wooflow.kafka.admin import create_topics
from wooflow.kafka.consumer import make_consumer
from wooflow.kafka.producer import Producer
from wooflow.settings import Settings

pytestmark = pytest.mark.integration


def test_an_offset_commit_that_meets_a_stopped_broker_waits_for_the_next_batch(own_broker) -> None:  # type: ignore[no-untyped-def]
    bootstrap, stop_broker, start_broker = own_broker
    s = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"{unique('t')}.", topic_partitions=2,
                 state_dir=Path("/nonexistent"))
    create_topics(s)
    topic = s.topic(topics.ORDERS)
    producer = Producer(s)
    for i in range(10):
        producer.produce(topic, b"event", key=f"k{i}")
    producer.flush(30)
    producer.close()
    consumer = make_consumer(s, f"{s.topic_prefix}group", [topic])
    got: list[Message] = []
    try:
        wait_for(lambda: got.extend(m for m in consumer.consume(10, 0.2) if not m.error()) or len(got) == 10, 60,
                 0.0, "the batch")
        checkpoint = Checkpoint(consumer, None)
        for m in got:
            checkpoint.track(m.topic(), m.partition(), m.offset())  # type: ignore[arg-type]
        stop_broker()
        checkpoint.commit()  # the coordinator is gone: kept, not raised
        ends: dict[tuple[str, int], int] = {}
        for m in got:
            key = (str(m.topic()), int(m.partition() or 0))
            ends[key] = max(ends.get(key, 0), int(m.offset() or 0) + 1)
        assert checkpoint.pending() == ends
        start_broker()
        # a group consumer goes on: it rejoins and reads on (from the last committed offsets)
        wait_for(lambda: consumer.consume(10, 0.5) is not None and consumer.assignment(), 90, 0.1,
                 "the consumer back in its group")
    finally:
        consumer.close()
