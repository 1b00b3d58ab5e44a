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
from confluent_kafka.admin import AdminClient

from wooflow.kafka.admin import admin_client
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.lag import PartitionLag, role_subscription
from wooflow.settings import Settings

ROLES = ("rules", "workers", "sink", "scheduler")  # the roles that consume (the bridge and the API produce)


class OffsetsError(RuntimeError):
    pass


@dataclass(frozen=True)
class ResetPlan:
    topic: str
    partition: int
    current: int | None
    target: int


def group_topics(admin: AdminClient, group: str, timeout: float = 10.0) -> list[TopicPartition]:
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)
    return list(fut[group].result(timeout).topic_partitions or [])


def lag(s: Settings, group: str, topics: list[str] | None = None, timeout: float = 10.0,
        missing_ok: bool = False) -> list[PartitionLag]:
    """Each partition's lag for `group` (of `topics`, else of those it committed on); a
    topic that does not exist is an error, or left out with `missing_ok`."""
    admin = admin_client(s)
    committed = {(tp.topic, tp.partition): tp.offset for tp in group_topics(admin, group, timeout)}
    wanted = set(topics) if topics else {t for t, _ in committed}
    reader = make_reader(s, "wooflow-ops-reader")
    try:
        out = []
        md = reader.list_topics(timeout=timeout)
        for topic in sorted(wanted):
            if topic not in md.topics and missing_ok:
                continue
            if topic not in md.topics:
                raise OffsetsError(f"topic {topic!r} does not exist")
            for p in sorted(md.topics[topic].partitions):
                low, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                c = committed.get((topic, p))
                out.append(PartitionLag(topic, p, c if c is not None and c >= 0 else None, high, low))
        return out
    finally:
        reader.close()


@dataclass(frozen=True)
class RoleLag:
    """How far one role's consumer group is behind on the topics it reads."""

    role: str
    group: str
    partitions: list[PartitionLag]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)


def role_lags(s: Settings, roles: tuple[str, ...] = ROLES, timeout: float = 10.0) -> list[RoleLag]:
    """The lag of every consuming role's group on its own topics (wooflow/kafka/lag.py names
    them); topics not created yet are left out."""
    out = []
    for role in roles:
        sub = role_subscription(role, s)
        if sub is not None:
            out.append(RoleLag(role, sub.group, lag(s, sub.group, list(sub.topics), timeout, missing_ok=True)))
    return out


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
