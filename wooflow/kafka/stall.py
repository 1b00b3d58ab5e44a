"""A partition that stopped fetching is fetched again.

After repeated broker restarts librdkafka can leave an assigned partition that never
fetches again — its fetch state waiting on a leader-epoch validation that never
completes (confluentinc/librdkafka#4492, #5153) — while the group, the coordinator and
every other partition look healthy. The long chaos run met it: after the eighth broker
restart a rule consumer owned 30 partitions for five minutes and read none of the ~240
events behind them; only a restart would have moved them.

The same client can also fail to rejoin its group: after a broker restart the member's
session timed out, its partitions were taken away (`lost`), and its requests to the group
coordinator sat in the client's queue for good — "GroupCoordinator: Timed out 0 in-flight,
0 retry-queued, 1 out-queue" once a minute, for five minutes, while every broker answered
(the log sink in a short chaos run). Nothing in the process can mend that connection, so
a member still out of its group after the cluster has answered for `rejoin_s` raises
`GroupLost` (counted from the first answer seen: after an outage the client first needs the
brokers back to rejoin, which takes it seconds): the
role stops and its orchestrator starts it again, which rejoins at once (the committed
offsets are where the new process starts, so nothing is lost or repeated beyond a batch).

`StallGuard.check`, called by a consuming loop between batches, notices a partition whose
fetch position has not moved for `after_s` while the partition holds messages beyond it,
and fetches it again from that position (`resume` + `seek`, which resets librdkafka's fetch
state for the partition). It reads the partitions' ends only for partitions that did not
move, at most once per `after_s`, in one ListOffsets request (`offsets_for_times` with
LATEST: the last stable offset, what a read_committed consumer can reach). A broker that
does not answer is no stall: the check is skipped.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from wooflow import metrics
from wooflow.kafka.consumer import GroupConsumer

log = logging.getLogger(__name__)

LATEST, EARLIEST = -1, -2  # ListOffsets timestamps: the end and the start of the partition


class GroupLost(RuntimeError):
    """The consumer left its group and could not rejoin while the brokers answer: restart it."""


class StallGuard:
    def __init__(self, consumer: Consumer, after_s: float, *, timeout_s: float = 5.0,
                 rejoin_s: float | None = None) -> None:
        self.consumer = consumer
        self.after_s = after_s
        self.timeout_s = timeout_s
        # long enough for a rejoin after the broker's own restart (seconds), or an outage the
        # cluster has not answered through yet: only a member the answering cluster keeps out
        self.rejoin_s = 2 * after_s if rejoin_s is None else rejoin_s
        self._answering_since: float | None = None  # out of the group, the cluster answering since
        self._since: dict[tuple[str, int], tuple[int, float]] = {}  # partition → (position, unchanged since)
        self._next_check = time.monotonic() + after_s

    def check(self) -> list[TopicPartition]:
        """Fetch again the partitions stuck for `after_s`; returns them (empty when none).
        Raises `GroupLost` for a member kept out of its group (see the module's docstring)."""
        now = time.monotonic()
        if self.after_s <= 0 or now < self._next_check:
            return []
        self._check_membership(now)
        self._next_check = now + self.after_s
        unmoved = self._unmoved(now)
        if not unmoved:
            return []
        try:
            still = self._from_committed(unmoved)
            ends = self.consumer.offsets_for_times([TopicPartition(t, p, LATEST) for t, p, _ in still],
                                                   timeout=self.timeout_s)
        except KafkaException:
            return []  # the broker is away: that is an outage, not a stall
        end_of = {(tp.topic, tp.partition): tp.offset for tp in ends if tp.error is None}
        stuck = [TopicPartition(t, p, pos) for t, p, pos in still if end_of.get((t, p), -1) > pos]
        for tp in stuck:
            log.warning("%s [%d] has not fetched past offset %d for %.0f s while %d messages wait: fetching it again",
                        tp.topic, tp.partition, tp.offset, self.after_s, end_of[(tp.topic, tp.partition)] - tp.offset)
            metrics.consumer_refetches.labels(tp.topic).inc()
            self.consumer.resume([TopicPartition(tp.topic, tp.partition)])
            self.consumer.seek(tp)
            self._since[(tp.topic, tp.partition)] = (tp.offset, now)
        return stuck

    def _check_membership(self, now: float) -> None:
        since = self.consumer.out_of_group_since if isinstance(self.consumer, GroupConsumer) else None
        if since is None:
            self._answering_since = None
            return
        try:
            brokers = self.consumer.list_topics(timeout=self.timeout_s).brokers
        except KafkaException:
            brokers = {}
        if not brokers:  # the cluster is away: an outage, which the client rides out by itself
            self._answering_since = None
            return
        if self._answering_since is None:
            self._answering_since = now
        if now - self._answering_since >= self.rejoin_s:
            raise GroupLost(f"out of its consumer group for {now - since:.0f} s, {now - self._answering_since:.0f} s "
                            f"of them while {len(brokers)} broker(s) answer (a group coordinator connection that "
                            "never came back): restarting the role")

    def _from_committed(self, unmoved: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """Partitions nothing was consumed from since they were assigned have no position:
        they start from the group's committed offset, or where the group starts without one
        (`auto.offset.reset` earliest)."""
        known = [u for u in unmoved if u[2] >= 0]
        unread = [TopicPartition(t, p) for t, p, pos in unmoved if pos < 0]
        if not unread:
            return known
        never: list[TopicPartition] = []
        for tp in self.consumer.committed(unread, timeout=self.timeout_s):
            if tp.offset >= 0:
                known.append((tp.topic, tp.partition, tp.offset))
            else:
                never.append(TopicPartition(tp.topic, tp.partition, EARLIEST))
        if never:
            known += [(tp.topic, tp.partition, tp.offset)
                      for tp in self.consumer.offsets_for_times(never, timeout=self.timeout_s) if tp.offset >= 0]
        return known

    def _unmoved(self, now: float) -> list[tuple[str, int, int]]:
        """Assigned partitions whose position (negative: nothing consumed yet) has not
        changed for `after_s`."""
        assigned = self.consumer.assignment()
        if not assigned:
            self._since.clear()
            return []
        out = []
        seen = set()
        for tp in self.consumer.position(assigned):
            key = (tp.topic, tp.partition)
            seen.add(key)
            pos, since = self._since.get(key, (None, now))
            if pos != tp.offset:
                self._since[key] = (tp.offset, now)
            elif now - since >= self.after_s:
                out.append((tp.topic, tp.partition, tp.offset))
        for gone in set(self._since) - seen:
            del self._since[gone]
        return out
