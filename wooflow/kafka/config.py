"""librdkafka configuration for each kind of client, built from Settings in one place."""

from __future__ import annotations

from typing import Any

from wooflow.settings import Settings


def common(s: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": s.kafka_bootstrap_servers, "client.id": "wooflow"}


def producer_config(s: Settings, *, transactional_id: str | None = None) -> dict[str, Any]:
    conf = common(s) | {
        # acks=all + idempotence: an acknowledged event survives a broker failure and a
        # producer retry never writes it twice.
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": int(s.delivery_timeout_s * 1000),
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
    return conf


def consumer_config(s: Settings, group_id: str) -> dict[str, Any]:
    return common(s) | {
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


def admin_config(s: Settings) -> dict[str, Any]:
    return common(s)
