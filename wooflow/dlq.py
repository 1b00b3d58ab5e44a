"""automation.dlq: anything that cannot be processed goes here with its reason, so that
the partition it came from keeps moving and the good messages around it are not lost.

Every dead letter is built, encoded and counted here, whoever produces it: the batch
roles with `dead_letter` (flushed with their batch), the workers with their own delivery
tracking (`record_of` + `encode`, then `counted`), the bridge for an outbox row Kafka will
never take (`record_of_unsent`). A dead letter's id is derived from where it came from,
so producing it twice (a re-processed batch) is recognisable downstream.

And read back and redriven here, for `wooflow dlq` (wooflow/ops/cli.py) and the API's
dead-letter routes alike (`read_dlq`, `read_at`, `describe_value`, `redrive`). Redrive puts
the original bytes back on their source topic, keyed as before, after the cause was fixed.
Each dead letter is redriven once: its dlq_redrives row is the claim, inserted before the
message is produced and committed after Kafka acknowledged it, so two redrives of one
letter at once (a double click in the console, two operators) produce it once — the second
waits on the first's row and then finds it taken — and a failed produce gives the claim
back. Idempotency keys make the re-processing itself safe; a dead-lettered command also has
its execution claim reopened, because a finished claim would otherwise (rightly) stop the
worker from running it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Message, TopicPartition
from sqlalchemy import Engine, func, select, text
from sqlalchemy.dialects.postgresql import insert

from wooflow import metrics
from wooflow.db.tables import dlq_redrives
from wooflow.kafka import topics
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.delivery import PERMANENT_REASONS
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import Codec, DecodeError, get_codec
from wooflow.schemas.types import ACTION_COMMAND, DEAD_LETTER, DeadLetter, DeadLetterOf
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


# --- reading back and redriving (wooflow dlq, the API's /v1/dlq) ------------------------

class Letter(DeadLetterOf[datetime]):
    """A dead letter as read back, with where it sits in automation.dlq."""

    dlq_offset: str  # "partition:offset"


@dataclass(frozen=True)
class Filters:
    reason: str | None = None
    store: str | None = None
    stage: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    dlq_id: str | None = None

    def match(self, rec: Letter) -> bool:
        return ((self.reason is None or rec["reason"] == self.reason)
                and (self.store is None or rec.get("store_id") == self.store)
                and (self.stage is None or rec["stage"] == self.stage)
                and (self.since is None or rec["failed_at"] >= self.since)
                and (self.until is None or rec["failed_at"] < self.until)
                and (self.dlq_id is None or rec["dlq_id"].startswith(self.dlq_id)))


def read_dlq(s: Settings, filters: Filters, timeout: float = 10.0, newest: int | None = None) -> Iterator[Letter]:
    """Every dead letter matching `filters`, oldest first per partition, up to the current end;
    with `newest`, only among the last `newest` messages of each partition."""
    topic = s.topic(topics.DLQ)
    codec = get_codec(s.schema_registry_url)
    consumer = make_reader(s, "wooflow-dlq-reader")
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise RuntimeError(f"topic {topic} does not exist (run `wooflow topics create`)")
        parts = []
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                start = low
                if filters.since is not None:
                    since_ms = int(filters.since.timestamp() * 1000)
                    found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms)], timeout=timeout)[0].offset
                    start = found if found >= 0 else high
                if newest is not None:
                    start = max(start, high - newest)
                if start < high:
                    parts.append((TopicPartition(topic, p, start), high))
        if not parts:
            return
        consumer.assign([tp for tp, _ in parts])
        ends = {tp.partition: high for tp, high in parts}
        done: set[int] = set()
        deadline = time.monotonic() + max(timeout, 60)
        while len(done) < len(ends) and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error():
                    continue
                p, off = m.partition(), m.offset()
                assert p is not None and off is not None, "not a consumed message"
                if off >= ends[p] - 1:
                    done.add(p)
                if off >= ends[p]:
                    continue
                try:
                    rec: Letter = {**codec.decode_as(m.value(), DEAD_LETTER), "dlq_offset": f"{p}:{off}"}
                except DecodeError:
                    continue
                if filters.match(rec):
                    yield rec
    finally:
        consumer.close()


def read_at(s: Settings, partition: int, offset: int, timeout: float = 10.0) -> Letter | None:
    """The dead letter at `partition:offset` of automation.dlq, None if there is none."""
    topic = s.topic(topics.DLQ)
    consumer = make_reader(s, "wooflow-dlq-reader")
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        if not low <= offset < high:
            return None
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error() or m.offset() != offset:
                continue
            try:
                return {**get_codec(s.schema_registry_url).decode_as(m.value(), DEAD_LETTER),
                        "dlq_offset": f"{partition}:{offset}"}
            except DecodeError:
                return None
        raise TimeoutError(f"{topic} {partition}:{offset} not read within {timeout}s")
    finally:
        consumer.close()


def describe_value(s: Settings, rec: Letter) -> dict[str, object] | str:
    """The dead-lettered message itself, decoded when it is one of ours."""
    value = rec.get("value")
    if value is None:
        return "(no value)"
    try:
        name, decoded = get_codec(s.schema_registry_url).decode(value)
        return {"schema": name, "record": decoded}
    except DecodeError as exc:
        preview = value[:400].decode("utf-8", "replace")
        return f"undecodable ({exc}): {preview!r}"


def already_redriven(engine: Engine, ids: list[str]) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(dlq_redrives.c.dlq_id).where(dlq_redrives.c.dlq_id.in_(ids))).scalars())


_REOPEN = text("""
UPDATE action_executions SET status = 'running', lease_until = now() - interval '1 second'
WHERE idempotency_key = :key AND status IN ('failed', 'dead_lettered')
""")


def redrive(s: Settings, engine: Engine, records: list[Letter], *, force: bool = False) -> tuple[int, int]:
    """Produce each record's original message back to its source topic, once. Returns
    (redriven, skipped): skipped were redriven before (or are being redriven right now),
    or carry no message."""
    rows = [{"dlq_id": r["dlq_id"], "source_topic": r["source_topic"], "source_partition": r["source_partition"],
             "source_offset": r["source_offset"], "reason": r["reason"]} for r in records if r.get("value") is not None]
    if not rows:
        return 0, len(records)
    stmt = insert(dlq_redrives)
    stmt = (stmt.on_conflict_do_update(index_elements=["dlq_id"], set_={"redriven_at": func.now()}) if force
            else stmt.on_conflict_do_nothing(index_elements=["dlq_id"]))
    with engine.begin() as conn:  # the claims hold until the messages are acknowledged
        claimed = set(conn.execute(stmt.returning(dlq_redrives.c.dlq_id), rows).scalars())
        todo = [r for r in records if r["dlq_id"] in claimed]
        if todo:
            _produce(s, engine, todo)
    return len(todo), len(records) - len(todo)


def _produce(s: Settings, engine: Engine, todo: list[Letter]) -> None:
    producer = Producer(s)
    codec = get_codec(s.schema_registry_url)
    for rec in todo:
        value = rec["value"]
        if value is None:  # (never claimed)
            continue
        if rec["source_topic"] == s.topic(topics.COMMANDS):
            # committed before the command is back on its topic: a worker must find it reopened
            try:
                with engine.begin() as reopen:
                    reopen.execute(_REOPEN, {"key": codec.decode_as(value, ACTION_COMMAND)["idempotency_key"]})
            except DecodeError:
                pass
        producer.produce(rec["source_topic"], value, key=rec.get("key"),
                         headers=[("wooflow-redrive", rec["dlq_id"].encode())])
    producer.flush(60)  # raises unless every message was acknowledged: the claims roll back
