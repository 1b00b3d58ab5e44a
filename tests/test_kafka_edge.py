"""The Kafka edge on the real broker: events from every source carry the `store`/`schema`
headers the readers skip by, a full local producer queue is waited out, not an error, and
a caught-up consumer hands a lone message on at once instead of waiting for its batch to fill."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Producer as RawProducer

from tests.support import make_store, read_topic, wait_for
from wooflow.checkpointing import Checkpoint, run_batches
from wooflow.kafka import topics
from wooflow.kafka.config import producer_config
from wooflow.kafka.consumer import consume_batch, make_consumer, make_reader
from wooflow.kafka.headers import read_hint
from wooflow.kafka.producer import Producer, produce_when_room
from wooflow.producers.normalise import StoreInfo, normalise_rest
from wooflow.producers.sync_ingest import SyncIngest
from wooflow.schemas.codec import get_codec
from wooflow.schemas.types import ActionCommand
from wooflow.settings import Settings
from wooflow.simulator.state import SimulatedStore
from wooflow.workers.testing import WorkerThread, command, produce

pytestmark = pytest.mark.integration


# what a partition answers while its leadership moves after a broker restart
MOVING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TRANSPORT,
          KafkaError._TIMED_OUT, KafkaError.UNKNOWN_TOPIC_OR_PART}


def _hints(s: Settings, base_topic: str) -> list[tuple[str | None, str | None]]:
    topic = s.topic(base_topic)
    reader = make_reader(s, "test-edge-reader")

    def ends_now() -> dict[int, int] | None:
        """Each partition's end; None while a partition's leadership moves (a broker restarted
        by an earlier test answers "Not leader for partition" for a moment)."""
        try:
            parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
            return {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        except KafkaException as exc:  # NOT_LEADER_FOR_PARTITION is not flagged retriable here
            if exc.args[0].code() not in MOVING:
                raise
            return None

    try:
        ends = wait_for(ends_now, 60, 0.5, f"the ends of {topic}")
        parts = list(ends)
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


# A batch timeout far longer than any wait below: librdkafka's consume(n, timeout) holds
# what it has until n messages arrived or the timeout passed, so a consumer that waits
# for its batch to fill misses every deadline here.
LONG = 30.0


def _send(s: Settings, topic: str, n: int = 1) -> None:
    p = Producer(s)
    for i in range(n):
        p.produce(topic, b"x", key=str(i))
    p.flush(30)
    p.close()


def test_a_caught_up_consumer_takes_a_lone_message_at_once(settings: Settings) -> None:
    topic = settings.topic(topics.LOGS)
    consumer = make_consumer(settings, settings.sink_group, [topic])
    try:
        wait_for(lambda: consume_batch(consumer, 10, 0.2) == [] and consumer.assignment(), 30, 0, "assignment")
        _send(settings, topic)
        started = time.monotonic()
        msgs = consume_batch(consumer, 2000, LONG)
        assert [m.value() for m in msgs] == [b"x"]
        assert time.monotonic() - started < LONG / 2, "waited for a batch that was never coming"
        _send(settings, topic, 5)
        wait_for(lambda: msgs.extend(consume_batch(consumer, 2000, 0.5)) or len(msgs) == 6, 30, 0, "five more")
    finally:
        consumer.close()


def test_the_batch_loop_handles_a_lone_message_without_waiting_to_fill_the_batch(settings: Settings) -> None:
    topic = settings.topic(topics.LOGS)
    consumer = make_consumer(settings, settings.sink_group, [topic])
    handled: list[bytes | None] = []
    stop = threading.Event()
    checkpoint = Checkpoint(consumer, None, asynchronous=True)
    loop = threading.Thread(target=run_batches, args=(consumer, checkpoint,
                                                      lambda batch: handled.extend(m.value() for m in batch), stop),
                            kwargs={"batch_size": 2000, "timeout": LONG})
    loop.start()
    try:
        _send(settings, topic)
        wait_for(lambda: handled == [b"x"], LONG / 2, 0.05, "the lone message handled")
        # its offset was sent without waiting for the coordinator, and the coordinator took it
        reader = make_reader(settings, settings.sink_group)
        try:
            wait_for(lambda: sum(max(0, tp.offset) for tp in reader.committed(
                [TopicPartition(topic, p) for p in range(settings.topic_partitions)], timeout=10)) == 1,
                LONG / 2, 0.1, "the offset committed")
        finally:
            reader.close()
    finally:
        stop.set()
        _send(settings, topic)  # wakes the loop from its wait, so it sees `stop`
        loop.join(LONG + 10)
    assert not loop.is_alive()


def test_a_worker_runs_a_lone_command_without_waiting_to_fill_a_batch(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    s = settings.model_copy(update={"batch_timeout_s": LONG})
    store = make_store(engine)

    def points(key: str) -> list[ActionCommand]:
        return [command(store_id=store.id, action_type="add_points", params={"points": 1}, customer_key=key)]

    worker = WorkerThread(s)
    with worker:
        cmd = points("lone")
        produce(s, cmd)
        wait_for(lambda: any(r["idempotency_key"] == cmd[0]["idempotency_key"] and r["status"] == "succeeded"
                             for _, r in read_topic(s, topics.LOGS)), LONG / 2, 0.2, "the lone command's log")
        worker.stop_event.set()
        produce(s, points("wake-up"))  # wakes the worker from its wait, so it sees the stop
