"""Consumers: a role's group consumer (cooperative-sticky rebalancing, explicit commits
through wooflow/checkpointing.py; it keeps what the coordinator refused of its
asynchronous commits, for the checkpoint to commit again), a reader that never joins a
group or commits, and `consume_batch`, how the consuming roles take their next batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from wooflow.kafka.config import consumer_config, reader_config
from wooflow.settings import Settings

log = logging.getLogger(__name__)

RebalanceHook = Callable[[Consumer, list[TopicPartition]], None]


class GroupConsumer(Consumer):
    """A role's group consumer (`make_consumer`). An asynchronous commit has no caller to
    tell of a refusal: its answer, served inside `consume()`, keeps each refused offset with
    the error here until `take_refused` (wooflow/checkpointing.py decides what to retry)."""

    refused: list[tuple[TopicPartition, KafkaError]]
    # monotonic time the group took this member's partitions away (session lost), None while a member
    out_of_group_since: float | None

    def take_refused(self) -> list[tuple[TopicPartition, KafkaError]]:
        out, self.refused = self.refused, []
        return out


def make_consumer(
    s: Settings,
    group_id: str,
    topics: Iterable[str],
    *,
    on_assign: RebalanceHook | None = None,
    on_revoke: RebalanceHook | None = None,
    on_lost: RebalanceHook | None = None,
    instance_id: str | None = None,
) -> GroupConsumer:
    """`instance_id`: static group membership (a restarted instance keeps its partitions)."""
    consumer: GroupConsumer

    def committed(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The coordinator's answer to an offset commit: a refusal is logged and kept."""
        failed = [(p, p.error if p.error is not None else err) for p in partitions
                  if p.error is not None or err is not None]
        if failed:
            log.info("offset commit not accepted (%s): %s", err.str() if err is not None else "per partition",
                     [(p.topic, p.partition, e.str() if e is not None else "") for p, e in failed])
            consumer.refused += [(p, e) for p, e in failed if e is not None]

    conf: dict[str, Any] = {**consumer_config(s, group_id, instance_id=instance_id), "on_commit": committed}
    consumer = GroupConsumer(conf)
    consumer.refused = []
    consumer.out_of_group_since = None

    def assigned(c: Consumer, parts: list[TopicPartition]) -> None:
        log.info("assigned %s", [(p.topic, p.partition) for p in parts])
        consumer.out_of_group_since = None  # a member again (an empty assignment too)
        if on_assign:
            on_assign(c, parts)

    def revoked(c: Consumer, parts: list[TopicPartition]) -> None:
        log.info("revoked %s", [(p.topic, p.partition) for p in parts])
        if on_revoke:
            on_revoke(c, parts)

    def lost(c: Consumer, parts: list[TopicPartition]) -> None:
        log.warning("lost %s", [(p.topic, p.partition) for p in parts])
        if consumer.out_of_group_since is None:
            consumer.out_of_group_since = time.monotonic()
        if on_lost:
            on_lost(c, parts)

    consumer.subscribe(list(topics), on_assign=assigned, on_revoke=revoked, on_lost=lost)
    return consumer


def make_reader(s: Settings, name: str, *, logger: logging.Logger | None = None) -> Consumer:
    """A consumer for assigned partitions, metadata and watermarks (ops tools, the demo).
    `logger`: where librdkafka's own messages go (default: stderr)."""
    if logger is None:
        return Consumer(reader_config(s, name))
    return Consumer({**reader_config(s, name), "logger": logger})


def consume_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """The next batch: what the client has already fetched, up to `max_messages`, without
    waiting; when it has nothing, wait up to `timeout` for the first message and take it
    with whatever arrived alongside.

    librdkafka's `consume(n, timeout)` returns only once it holds `n` messages or the
    timeout passed, so a caught-up consumer held a lone event for the whole timeout (a
    measured 1,000 ms for `consume(2000, 1.0)` with one message queued, 0.3 ms this way).
    Under a backlog the fetched queue is full and batches still reach `max_messages`."""
    msgs = consumer.consume(max_messages, 0)
    if msgs:
        return msgs
    msgs = consumer.consume(1, timeout)
    if msgs and max_messages > 1:
        msgs += consumer.consume(max_messages - 1, 0)
    return msgs
