"""The batch loop (`run_batches`) never leaves lag behind for good:

- offsets whose commit a rebalance or a coordinator blip put off are committed while the
  loop is idle, not only with the next message (the long chaos run ended with the rule
  consumers' lag above 0 when traffic stopped right after a rebalance) — also when the
  refusal is the later answer to an asynchronous commit, which never moves a partition
  back behind a commit sent after it;
- a partition that stopped fetching while messages wait behind it is fetched again
  (`wooflow/kafka/stall.py`; librdkafka can leave one waiting on a leader-epoch validation
  after broker restarts — here a partition is paused behind the loop's back instead);
- a member kept out of its group while the brokers answer stops the loop, so the role is
  restarted (the stuck coordinator connection cannot be made here: the membership the
  `lost` callback records is set by hand, against a real broker and a real dead address)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from prometheus_client import REGISTRY

from tests.support import wait_for
from wooflow.checkpointing import Checkpoint, run_batches
from wooflow.kafka import topics
from wooflow.kafka.consumer import GroupConsumer, make_consumer
from wooflow.kafka.lag import LagReporter, Subscription
from wooflow.kafka.producer import Producer
from wooflow.kafka.stall import GroupLost, StallGuard
from wooflow.settings import Settings

pytestmark = pytest.mark.integration


def produce(s: Settings, n: int, tag: str) -> None:
    producer = Producer(s)
    for i in range(n):
        producer.produce(s.topic(topics.ORDERS), f"{tag}-{i}".encode(), key=f"{tag}-{i}")
    producer.flush(30)
    producer.close()


def lag(s: Settings, group: str) -> int:
    """The group's lag, read by a client of its own (the loop's consumer is busy in its thread)."""
    return sum(LagReporter(s, Subscription(group, (s.topic(topics.ORDERS),))).read().values())


@contextmanager
def loop(consumer: Consumer, checkpoint: Checkpoint, handle: object, stall_after_s: float) -> Iterator[None]:
    stop = threading.Event()
    t = threading.Thread(target=run_batches, args=(consumer, checkpoint, handle, stop),
                         kwargs={"batch_size": 100, "timeout": 0.2, "stall_after_s": stall_after_s}, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(30)  # run_batches closes the consumer


def handled(s: Settings, group: str) -> tuple[GroupConsumer, dict[tuple[str, int], int]]:
    """Ten messages produced and consumed by a new member of `group`: its consumer, and each
    partition's offset past them (where committing the batch moves the group)."""
    produce(s, 10, "a")
    consumer = make_consumer(s, group, [s.topic(topics.ORDERS)])
    got: list[Message] = []
    wait_for(lambda: got.extend(m for m in consumer.consume(10, 0.2) if not m.error()) or len(got) == 10, 60,
             0.0, "the messages")
    after: dict[tuple[str, int], int] = {}
    for m in got:
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        assert topic is not None and partition is not None and offset is not None
        after[(topic, partition)] = offset + 1
    return consumer, after


def test_offsets_whose_commit_was_put_off_are_committed_while_the_loop_is_idle(settings: Settings) -> None:
    group = f"{settings.topic_prefix}deferred"
    consumer, after = handled(settings, group)
    checkpoint = Checkpoint(consumer, None)
    for (topic, partition), offset in after.items():  # their commit put off (what a deferral leaves)
        checkpoint.track(topic, partition, offset - 1)
    assert lag(settings, group) == 10
    with loop(consumer, checkpoint, lambda batch: None, 0):  # no message will come
        wait_for(lambda: lag(settings, group) == 0, 30, 0.2, "the put-off offsets committed while idle")


def test_a_partition_whose_fetch_stalled_is_fetched_again(settings: Settings) -> None:
    consumer = make_consumer(settings, f"{settings.topic_prefix}stall", [settings.topic(topics.ORDERS)])
    seen: list[bytes] = []
    stalled = threading.Event()

    def handle(batch: list[Message]) -> None:
        seen.extend(m.value() or b"" for m in batch)
        if not stalled.is_set():  # from now on no partition fetches (as a stuck validation)
            consumer.pause(consumer.assignment())
            stalled.set()

    before = REGISTRY.get_sample_value("wooflow_consumer_refetches_total",
                                       {"topic": settings.topic(topics.ORDERS)}) or 0.0
    with loop(consumer, Checkpoint(consumer, None), handle, 1.0):
        produce(settings, 1, "first")
        wait_for(stalled.is_set, 60, 0.1, "the first message")
        produce(settings, 20, "later")
        wait_for(lambda: sum(v.startswith(b"later") for v in seen) == 20, 60, 0.2,
                 "the messages behind the stalled fetch")
    after = REGISTRY.get_sample_value("wooflow_consumer_refetches_total", {"topic": settings.topic(topics.ORDERS)})
    assert after is not None and after > before


def test_an_asynchronous_commit_the_coordinator_refused_is_committed_while_the_loop_is_idle(
        settings: Settings) -> None:
    group = f"{settings.topic_prefix}refused"
    consumer, after = handled(settings, group)
    checkpoint = Checkpoint(consumer, None, asynchronous=True)
    # what a refused asynchronous commit leaves: its offsets sent, and the coordinator's
    # answer (a rebalance in progress) kept by the consumer until the checkpoint takes it
    checkpoint._sent.update(after)
    consumer.refused += [(TopicPartition(t, p, o), KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
                         for (t, p), o in after.items()]
    assert lag(settings, group) == 10
    with loop(consumer, checkpoint, lambda batch: None, 0):  # no message will come
        wait_for(lambda: lag(settings, group) == 0, 30, 0.2, "the refused offsets committed while idle")


def test_a_refused_asynchronous_commit_never_moves_a_partition_back(settings: Settings) -> None:
    group = f"{settings.topic_prefix}superseded"
    consumer, after = handled(settings, group)
    checkpoint = Checkpoint(consumer, None, asynchronous=True)
    for (topic, partition), offset in after.items():
        checkpoint.track(topic, partition, offset - 1)
    try:
        checkpoint.commit()  # sent without waiting, and taken
        wait_for(lambda: lag(settings, group) == 0, 30, 0.2, "the batch committed")
        # an earlier commit's refusal, answered late: a later commit of the partition went out since
        consumer.refused += [(TopicPartition(t, p, 0), KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
                             for t, p in after]
        checkpoint.retry_deferred()  # what the loop does while idle
        assert not consumer.refused
        # asked after whatever the retry sent (the coordinator answers one connection in order)
        committed = consumer.committed([TopicPartition(t, p) for t, p in after], timeout=10)
        assert {(tp.topic, tp.partition): tp.offset for tp in committed} == after
    finally:
        consumer.close()


def test_a_member_its_group_kept_out_while_the_brokers_answer_stops_the_role(settings: Settings) -> None:
    """librdkafka can leave a member whose session was lost with its coordinator requests
    queued for good (the log sink in a short chaos run: five minutes out of its group while
    the broker answered): the loop raises `GroupLost`, so the role is restarted."""
    consumer, _ = handled(settings, f"{settings.topic_prefix}kept-out")
    assert consumer.out_of_group_since is None  # a member: partitions assigned
    consumer.out_of_group_since = time.monotonic() - 600  # what the `lost` callback records
    failed: list[BaseException] = []
    started = time.monotonic()

    def run() -> None:
        try:
            run_batches(consumer, Checkpoint(consumer, None), lambda batch: None, threading.Event(), batch_size=100,
                        timeout=0.2, stall_after_s=1.0)
        except BaseException as exc:
            failed.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive() and len(failed) == 1 and isinstance(failed[0], GroupLost), failed
    assert "broker(s) answer" in str(failed[0])
    # counted from the first answer the loop saw (2 × stall_after_s), not from the loss 600 s ago
    assert time.monotonic() - started >= 2.0
    consumer.close()


def test_a_member_out_of_its_group_during_an_outage_waits_for_the_cluster(settings: Settings) -> None:
    """No broker answers: an outage the client rides out by itself, not a reason to restart."""
    away = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    consumer = make_consumer(away, f"{settings.topic_prefix}outage", [settings.topic(topics.ORDERS)])
    consumer.out_of_group_since = time.monotonic() - 600
    guard = StallGuard(consumer, 1.0, timeout_s=1.0, rejoin_s=0.0)
    guard._next_check = 0.0  # due now
    assert guard.check() == []  # with the brokers answering, a zero rejoin_s would have raised
    consumer.close()


def test_a_member_back_in_its_group_is_left_alone(settings: Settings) -> None:
    """The broker restarted, the session was lost, the member rejoined: nothing to do, even
    long after the loss (an assignment, empty or not, ends it)."""
    consumer, _ = handled(settings, f"{settings.topic_prefix}rejoined")
    guard = StallGuard(consumer, 1.0, rejoin_s=0.0)
    guard._next_check = 0.0
    assert guard.check() == []
    consumer.close()
