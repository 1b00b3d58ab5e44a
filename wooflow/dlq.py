"""automation.dlq: anything that cannot be processed goes here with its reason, so that
the partition it came from keeps moving and the good messages around it are not lost."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Message

from wooflow import metrics
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import Codec
from wooflow.settings import Settings

log = logging.getLogger(__name__)


def dead_letter(producer: Producer, codec: Codec, settings: Settings, msg: Message, *, stage: str, reason: str,
                error: str, store_id: str | None = None, attempts: int = 1) -> None:
    record = dead_letter_record(msg, stage=stage, reason=reason, error=error, store_id=store_id, attempts=attempts)
    topic = settings.topic(topics.DLQ)
    producer.produce(topic, codec.encode("DeadLetter", record, topic), key=msg.key())
    metrics.dlq.labels(stage, reason).inc()
    log.warning("dead-lettered %s:%s:%s (%s): %s", msg.topic(), msg.partition(), msg.offset(), reason, error[:200])


def _header_pairs(msg: Message) -> list[tuple[str, Any]]:
    hs = msg.headers() or []
    return list(hs.items()) if isinstance(hs, dict) else list(hs)


def dead_letter_record(msg: Message, *, stage: str, reason: str, error: str, store_id: str | None = None,
                       attempts: int = 1) -> dict:
    """The DeadLetter record for `msg` (for roles that produce it with their own delivery tracking)."""
    headers = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
               for k, v in _header_pairs(msg)}
    source = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
    return {
        "dlq_id": hashlib.sha256(f"{stage}|{source}".encode()).hexdigest()[:32],
        "stage": stage,
        "reason": reason,
        "error": error[:4000],
        "store_id": store_id,
        "source_topic": msg.topic(),
        "source_partition": msg.partition(),
        "source_offset": msg.offset(),
        "key": msg.key(),
        "value": msg.value(),
        "headers_json": json.dumps(headers),
        "failed_at": datetime.now(timezone.utc),
        "attempts": attempts,
    }
