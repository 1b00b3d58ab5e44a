"""Consumers: a role's group consumer (cooperative-sticky rebalancing, explicit commits
through wooflow/checkpointing.py) and a reader that never joins a group or commits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, TopicPartition

from wooflow.kafka.config import consumer_config, reader_config
from wooflow.settings import Settings

log = logging.getLogger(__name__)

RebalanceHook = Callable[[Consumer, list[TopicPartition]], None]


def make_consumer(
    s: Settings,
    group_id: str,
    topics: Iterable[str],
    *,
    on_assign: RebalanceHook | None = None,
    on_revoke: RebalanceHook | None = None,
    on_lost: RebalanceHook | None = None,
    instance_id: str | None = None,
) -> Consumer:
    """`instance_id`: static group membership (a restarted instance keeps its partitions)."""
    consumer = Consumer(consumer_config(s, group_id, instance_id=instance_id))

    def assigned(c: Consumer, parts: list[TopicPartition]) -> None:
        log.info("assigned %s", [(p.topic, p.partition) for p in parts])
        if on_assign:
            on_assign(c, parts)

    def revoked(c: Consumer, parts: list[TopicPartition]) -> None:
        log.info("revoked %s", [(p.topic, p.partition) for p in parts])
        if on_revoke:
            on_revoke(c, parts)

    def lost(c: Consumer, parts: list[TopicPartition]) -> None:
        log.warning("lost %s", [(p.topic, p.partition) for p in parts])
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
