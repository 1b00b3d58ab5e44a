"""automation.dlq: anything that cannot be processed goes here with its reason, so that
the partition it came from keeps moving and the good messages around it are not lost.

Every dead letter is built, encoded and counted here, whoever produces it: the batch
roles with `dead_letter` (flushed with their batch), the workers with their own delivery
tracking (`record_of` + `encode`, then `counted`), the bridge for an outbox row Kafka will
never take (`record_of_unsent`). A dead letter's id is derived from where it came from,
so producing it twice (a re-processed batch) is recognisable downstream.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Message

from wooflow import metrics
from wooflow.kafka import topics
from wooflow.kafka.delivery import PERMANENT_REASONS
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import Codec
from wooflow.schemas.types import DeadLetter
from wooflow.settings import Settings

log = logging.getLogger(__name__)

# A value Kafka refused for its size would be refused again inside the dead letter.
MAX_VALUE = 900_000

# The reasons each stage dead-letters with (tests/test_metrics_first_increase.py reads them off the code).
# A role exports its stage's counters at 0 from its start (`expose`): a labelled counter
# otherwise appears with its first increment, and Prometheus sees no increase() in a
# series' first sample — the first dead letter after a start would reach neither the DLQ
# alert nor the dashboards.
REASONS: dict[str, tuple[str, ...]] = {
    "bridge": PERMANENT_REASONS,
    "rules": ("undecodable", "evaluation_error"),
    "workers": ("undecodable", "unknown_action", "action_error", "max_attempts", "interrupted", "internal_error"),
    "sink": ("undecodable",),
    "scheduler": ("undecodable", "apply_error"),
}


def expose(stage: str) -> None:
    """Export `wooflow_dlq_total` at 0 for every reason of `stage` (a role calls it once, at start)."""
    for reason in REASONS.get(stage, ()):
        metrics.dlq.labels(stage, reason)


def dead_letter(producer: Producer, codec: Codec, settings: Settings, msg: Message, *, stage: str, reason: str,
                error: str, store_id: str | None = None, attempts: int = 1) -> None:
    """Dead-letter a consumed message through a batch role's producer (acknowledged with its flush)."""
    record = record_of(msg, stage=stage, reason=reason, error=error, store_id=store_id, attempts=attempts)
    topic, value = encode(codec, settings, record)
    producer.produce(topic, value, key=msg.key())
    counted(stage, reason, where(msg), error)


def where(msg: Message) -> str:
    return f"{msg.topic()}:{msg.partition()}:{msg.offset()}"


def encode(codec: Codec, settings: Settings, record: DeadLetter) -> tuple[str, bytes]:
    """(the DLQ topic, the encoded DeadLetter)."""
    topic = settings.topic(topics.DLQ)
    return topic, codec.encode("DeadLetter", record, topic)


def counted(stage: str, reason: str, what: str, error: str, level: int = logging.WARNING) -> None:
    metrics.dlq.labels(stage, reason).inc()
    log.log(level, "dead-lettered %s (%s): %s", what, reason, error[:200])


def _header_pairs(msg: Message) -> list[tuple[str, Any]]:
    hs = msg.headers() or []
    return list(hs.items()) if isinstance(hs, dict) else list(hs)


def record_of(msg: Message, *, stage: str, reason: str, error: str, store_id: str | None = None,
              attempts: int = 1) -> DeadLetter:
    """The DeadLetter record of a consumed message."""
    headers = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
               for k, v in _header_pairs(msg)}
    return _record(where(msg), stage=stage, reason=reason, error=error, store_id=store_id,
                   source=(msg.topic(), msg.partition(), msg.offset()), key=msg.key(), value=msg.value(),
                   headers=headers, attempts=attempts)


def record_of_unsent(*, stage: str, reason: str, error: str, store_id: str, topic: str, key: str, value: bytes,
                     event_id: str, seq: int) -> DeadLetter:
    """The DeadLetter record of an event Kafka never took (no partition: -1; the outbox
    sequence as its offset; identified by its event id)."""
    return _record(event_id, stage=stage, reason=reason, error=error, store_id=store_id, source=(topic, -1, seq),
                   key=key.encode(), value=value if len(value) < MAX_VALUE else None,
                   headers={"event_id": event_id}, attempts=1)


def _record(identity: str, *, stage: str, reason: str, error: str, store_id: str | None,
            source: tuple[str | None, int | None, int | None], key: bytes | None, value: bytes | None,
            headers: dict[str, str], attempts: int) -> DeadLetter:
    topic, partition, offset = source  # None only for messages that are not consumed ones
    return {
        "dlq_id": hashlib.sha256(f"{stage}|{identity}".encode()).hexdigest()[:32],
        "stage": stage,
        "reason": reason,
        "error": error[:4000],
        "store_id": store_id,
        "source_topic": topic or "",
        "source_partition": -1 if partition is None else partition,
        "source_offset": -1 if offset is None else offset,
        "key": key,
        "value": value,
        "headers_json": json.dumps(headers),
        "failed_at": datetime.now(timezone.utc),
        "attempts": attempts,
    }
