"""Consumer groups' committed offsets against the partitions' high watermarks: the lag
`wooflow lag` prints and the API's operations route serves (a Kafka client concern, so it
lives here; wooflow/ops/offsets.py adds resets for operators)."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from wooflow.kafka.admin import admin_client
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.lag import PartitionLag, role_subscription
from wooflow.settings import Settings

ROLES = ("rules", "workers", "sink", "scheduler")  # the roles that consume (the bridge and the API produce)


class OffsetsError(RuntimeError):
    pass


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
