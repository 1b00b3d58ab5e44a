"""librdkafka configuration of every Kafka client wooflow builds, in one place.

- Producers share one base (acks=all + idempotence) and differ by role only in a
  `ProducerProfile`: how long a message may wait for its acknowledgement, how long to
  linger, transactions, reconnect back-off.
- Group consumers (`consumer_config`): manual commits through wooflow/checkpointing.py,
  cooperative-sticky, read_committed; static membership when the instance has an id.
- Readers (`reader_config`): a consumer that is assigned partitions or asks for
  metadata and watermarks, never joins its group and never commits (ops tools, the demo).
- Admin clients (`admin_config`), and the launcher's probe of a broker it started
  (`probe_config`, no Settings yet).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from wooflow.settings import Settings

# librdkafka properties: scalar values (CONFIGURATION.md of librdkafka)
Config = dict[str, str | int | float | bool]


def common(s: Settings) -> Config:
    return {"bootstrap.servers": s.kafka_bootstrap_servers, "client.id": "wooflow"}


@dataclass(frozen=True)
class ProducerProfile:
    """What a role's producer does differently from the base configuration."""
    message_timeout_s: float | None = None  # None: WOOFLOW_DELIVERY_TIMEOUT_S
    linger_ms: int = 5
    transaction_timeout_s: float | None = None
    reconnect_backoff_ms: tuple[int, int] | None = None  # (first, max) retry of a lost broker connection


# Backfill, poller, dead-letter redrive, replay: wait as long as the settings say.
DEFAULT = ProducerProfile()
# Batch roles (rules, sink, the scheduler's activity reader) wait out a short broker
# outage: their offsets do not move meanwhile, and giving up would only re-process the batch.
BATCH = ProducerProfile(message_timeout_s=300)
# The rule consumer in transactional mode: the transaction, not the batch, is what waits.
TRANSACTIONAL = ProducerProfile(message_timeout_s=30, transaction_timeout_s=30)
# Workers: logs and dead letters; a little more lingering batches the many small logs.
WORKERS = ProducerProfile(message_timeout_s=300, linger_ms=10)
# Workers re-producing deferred commands: a failed release is retried on the next round.
RELEASE = ProducerProfile(message_timeout_s=60)
# The bridge answers each webhook from its own acknowledgement: no lingering, and a broker
# that is back is noticed within a second (librdkafka's default back-off grows to 10 s).
BRIDGE = ProducerProfile(linger_ms=1, reconnect_backoff_ms=(100, 1000))


def scheduler_profile(s: Settings) -> ProducerProfile:
    """The scheduler holds its steps' row locks while their commands wait for acks: give up
    well within the lease (`WOOFLOW_SCHEDULER_LEASE_S`)."""
    return ProducerProfile(message_timeout_s=max(5.0, s.scheduler_lease_s / 2))


def producer_config(s: Settings, profile: ProducerProfile = DEFAULT, *,
                    transactional_id: str | None = None) -> Config:
    timeout = profile.message_timeout_s if profile.message_timeout_s is not None else s.delivery_timeout_s
    conf = common(s) | {
        # acks=all + idempotence: an acknowledged event survives a broker failure and a
        # producer retry never writes it twice.
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": profile.linger_ms,
        "compression.type": "lz4",
        "message.timeout.ms": int(timeout * 1000),
    }
    if profile.transaction_timeout_s is not None:
        conf["transaction.timeout.ms"] = int(profile.transaction_timeout_s * 1000)
    if profile.reconnect_backoff_ms is not None:
        conf["reconnect.backoff.ms"], conf["reconnect.backoff.max.ms"] = profile.reconnect_backoff_ms
    if transactional_id:
        conf["transactional.id"] = transactional_id
    return conf


def consumer_config(s: Settings, group_id: str, *, instance_id: str | None = None) -> Config:
    conf = common(s) | {
        "group.id": group_id,
        # Offsets are committed explicitly by wooflow.checkpointing, never in the background.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # Never see commands of an aborted transaction (transactional mode of the rule consumer).
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
    }
    if instance_id:
        # Static membership: a restarted instance takes its partitions back without waiting
        # for the session timeout of the one that died.
        conf["group.instance.id"] = instance_id
    return conf


def reader_config(s: Settings, name: str) -> Config:
    """A consumer for reading assigned partitions, metadata and watermarks. librdkafka wants
    a group id even so; `name` (e.g. "wooflow-dlq-reader") says who reads. Never commits."""
    return common(s) | {
        "group.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }


def admin_config(s: Settings) -> Config:
    return common(s)


def probe_config(bootstrap_servers: str, logger: logging.Logger) -> dict[str, Any]:
    """An admin client asking a broker the local launcher just started whether it answers."""
    # Typed loosely: the client stubs only admit scalar values, but "logger" takes a Logger.
    return {"bootstrap.servers": bootstrap_servers, "logger": logger}
