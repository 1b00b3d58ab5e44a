"""`wooflow dlq list | show | redrive`: triage of automation.dlq.

Redrive puts the original bytes back on their source topic, keyed as before, after
the cause was fixed. Each dead letter is redriven once: its dlq_redrives row is the claim,
inserted before the message is produced and committed after Kafka acknowledged it, so two
redrives of one letter at once (a double click in the console, two operators) produce it
once — the second waits on the first's row and then finds it taken — and a failed produce
gives the claim back. Idempotency keys make the re-processing itself safe. A dead-lettered command also
has its execution claim reopened, because a finished claim would otherwise (rightly)
stop the worker from running it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import TopicPartition
from sqlalchemy import Engine, func, select, text
from sqlalchemy.dialects.postgresql import insert

from wooflow.db.tables import dlq_redrives
from wooflow.kafka import topics
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import DecodeError, get_codec
from wooflow.schemas.types import ACTION_COMMAND, DEAD_LETTER, DeadLetterOf
from wooflow.settings import Settings


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
