"""Consumer lag per partition (high watermark − committed offset) as a Prometheus gauge.

A daemon thread in each consuming role reads its group's committed offsets and the
partitions' watermarks every `lag_interval_s` and sets `wooflow_consumer_lag`.

It uses a consumer of its own with the role's group id that never subscribes (so it
never joins the group): the role's consumer is not thread-safe to share while it is
being closed, and a lag reading must keep coming while the role is busy in a long batch —
that is exactly when autoscaling needs it. Every replica reports every partition of its
topics; the values agree, so dashboards and alerts aggregate with `max by (group, topic,
partition)`. Lag stays visible for partitions nobody owns (e.g. all consumers crashed).

A partition without a committed offset counts everything retained (high − low): the
groups start from `earliest`, so all of it is still to be read.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from wooflow import metrics
from wooflow.kafka import topics as topic_names
from wooflow.kafka.config import consumer_config
from wooflow.settings import Settings

log = logging.getLogger(__name__)

OFFSET_INVALID = -1001


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here (lag counts from the low watermark)
    high: int
    low: int

    @property
    def lag(self) -> int:
        start = self.committed if self.committed is not None else self.low
        return max(0, self.high - start)


@dataclass(frozen=True)
class Subscription:
    group: str
    topics: tuple[str, ...]


def role_subscription(role: str, s: Settings) -> Subscription | None:
    """The consumer group and topics a role reads; None for roles that consume nothing."""
    if role == "rules":
        return Subscription(s.rules_group, tuple(s.topic(t) for t in topic_names.EVENT_TOPICS))
    if role == "workers":
        return Subscription(s.workers_group, (s.topic(topic_names.COMMANDS),))
    if role == "sink":
        return Subscription(s.sink_group, (s.topic(topic_names.LOGS),))
    if role == "scheduler" and getattr(s, "scheduler_group", None):
        # its activity reader (scheduler/activity.py): storefront, orders, customers
        return Subscription(s.scheduler_group, tuple(s.topic(t) for t in (
            topic_names.STOREFRONT, topic_names.ORDERS, topic_names.CUSTOMERS)))
    return None


class LagReporter:
    def __init__(self, settings: Settings, subscription: Subscription, *, interval_s: float | None = None,
                 timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.sub = subscription
        self.interval_s = interval_s if interval_s is not None else settings.lag_interval_s
        self.timeout_s = timeout_s
        self.last_success: float | None = None  # time.monotonic() of the last complete reading
        self._consumer: Consumer | None = None
        self._reported: set[tuple[str, str]] = set()
        self._last_warning = 0.0

    # --- one reading ------------------------------------------------------------------
    def _client(self) -> Consumer:
        if self._consumer is None:
            conf = consumer_config(self.settings, self.sub.group) | {"client.id": "wooflow-lag"}
            self._consumer = Consumer(conf)
        return self._consumer

    def read(self) -> dict[tuple[str, int], int]:
        """Lag of every partition of the subscribed topics; raises KafkaException on failure."""
        c = self._client()
        parts: list[TopicPartition] = []
        for topic in self.sub.topics:
            md = c.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
            if md is None or md.error is not None:
                continue  # not created yet: nothing to be behind on
            parts.extend(TopicPartition(topic, p) for p in sorted(md.partitions))
        if not parts:
            return {}
        committed = {(tp.topic, tp.partition): tp.offset for tp in c.committed(parts, timeout=self.timeout_s)}
        lags: dict[tuple[str, int], int] = {}
        for tp in parts:
            low, high = c.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)
            if high < 0:
                continue
            done = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
            lags[(tp.topic, tp.partition)] = PartitionLag(tp.topic, tp.partition, done if done >= 0 else None,
                                                          high, max(low, 0)).lag
        return lags

    def report_once(self) -> dict[tuple[str, int], int]:
        lags = self.read()
        seen: set[tuple[str, str]] = set()
        for (topic, partition), lag in lags.items():
            metrics.consumer_lag.labels(self.sub.group, topic, str(partition)).set(lag)
            seen.add((topic, str(partition)))
        for gone_topic, gone_partition in self._reported - seen:  # partitions that disappeared
            try:
                metrics.consumer_lag.remove(self.sub.group, gone_topic, gone_partition)
            except KeyError:
                pass
        self._reported = seen
        self.last_success = time.monotonic()
        metrics.consumer_lag_updated.labels(self.sub.group).set_to_current_time()
        return lags

    # --- the thread -------------------------------------------------------------------
    def healthy(self) -> bool:
        """Kafka answered recently (used by /readyz). Generous: three intervals, at least 30 s."""
        if self.last_success is None:
            return False
        return time.monotonic() - self.last_success < max(3 * self.interval_s, 30.0)

    def _loop(self, stop: threading.Event) -> None:
        try:
            while True:
                try:
                    self.report_once()
                except (KafkaException, RuntimeError) as exc:
                    now = time.monotonic()
                    if now - self._last_warning > 60:  # a broker outage must not flood the log
                        log.warning("could not read consumer lag of %s: %s", self.sub.group, exc)
                        self._last_warning = now
                if stop.wait(self.interval_s):
                    return
        finally:
            if self._consumer is not None:
                self._consumer.close()

    def start(self, stop: threading.Event) -> LagReporter:
        threading.Thread(target=self._loop, args=(stop,), name=f"lag-{self.sub.group}", daemon=True).start()
        return self


def start_lag_reporter(role: str, s: Settings, stop: threading.Event) -> LagReporter | None:
    sub = role_subscription(role, s)
    return LagReporter(s, sub).start(stop) if sub is not None else None
