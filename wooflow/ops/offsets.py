"""Consumer-group offsets for operators: lag, and reset to a point in time.

`reset_to_datetime` works like `kafka-consumer-groups --reset-offsets --to-datetime`: it
computes the plan first (dry run by default) and applies it only when asked, and only
while the group has no active members — moving offsets under running consumers would be
overwritten by their next commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition

from wooflow.kafka.admin import admin_client
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.groups import OffsetsError, lag
from wooflow.settings import Settings

__all__ = ["OffsetsError", "ResetPlan", "apply_reset", "plan_reset"]  # OffsetsError: raised by the resets too

@dataclass(frozen=True)
class ResetPlan:
    topic: str
    partition: int
    current: int | None
    target: int


def plan_reset(s: Settings, group: str, topics: list[str], when: datetime, timeout: float = 10.0) -> list[ResetPlan]:
    if when.tzinfo is None:
        raise OffsetsError("the datetime needs a timezone (e.g. 2026-11-25T00:00:00Z)")
    ms = int(when.timestamp() * 1000)
    current = {(p.topic, p.partition): p.committed for p in lag(s, group, topics, timeout)}
    reader = make_reader(s, "wooflow-ops-reader")
    try:
        md = reader.list_topics(timeout=timeout)
        query = [TopicPartition(t, p, ms) for t in topics for p in sorted(md.topics[t].partitions)]
        found = reader.offsets_for_times(query, timeout=timeout)
        plan = []
        for tp in found:
            target = tp.offset
            if target < 0:  # no message at/after that time: the end of the partition
                target = reader.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)[1]
            plan.append(ResetPlan(tp.topic, tp.partition, current.get((tp.topic, tp.partition)), target))
        return plan
    finally:
        reader.close()


def apply_reset(s: Settings, group: str, plan: list[ResetPlan], timeout: float = 10.0) -> None:
    admin = admin_client(s)
    desc = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(timeout)
    idle = (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD, ConsumerGroupState.UNKNOWN)
    if desc.members or desc.state not in idle:
        raise OffsetsError(f"group {group!r} is {desc.state.name.lower()} with {len(desc.members)} member(s): "
                           "stop its consumers before resetting offsets")
    parts = [TopicPartition(p.topic, p.partition, p.target) for p in plan]
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)],
                                       request_timeout=timeout)[group].result(timeout)
