"""Commands whose time has not come: kept in PostgreSQL, re-produced when due.

Three things make a worker put a command aside instead of executing it now:
- `delayed`: its `not_before` is in the future (a "day 3" step);
- `retry`: a transient failure; the next attempt (attempt + 1) is due after a backoff;
- `busy` / `waiting`: another worker holds the key's lease, or an earlier step of the
  same workflow run is still in progress.

The row is written before the consumed offset is committed, so nothing is lost; then
the partition moves on at once — a retry never blocks the commands behind it. Every
worker runs `release_due`: due rows are locked (SKIP LOCKED: several workers share the
table), produced back to automation.commands with their Kafka key (so a customer's
commands stay on one partition), acknowledged, then deleted. A crash between produce
and delete re-produces a command, which the idempotency claim turns into a no-op.

The copy a release produces can be consumed and put aside again (a step still waiting for
the one before it) before the release has deleted the row it came from: the deferral
then *updates* that row, which waits for the release's lock and, once the release deleted
it, inserts afresh. (Ignoring the conflict — the row was still there — let the release
delete the new deferral with its own: a workflow's later step was never run.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Engine, text

from wooflow.kafka.producer import Producer
from wooflow.workers import claims


@dataclass(frozen=True)
class Deferral:
    topic: str  # where to re-produce it (one database may serve several topic prefixes)
    key: str
    attempt: int
    store_id: str
    due_at: datetime
    reason: str  # delayed | retry | busy | waiting
    kafka_key: bytes | None
    payload: bytes  # the ActionCommand to re-produce, encoded
    failed_attempt_error: str | None = None  # retry: mark the execution retry_wait in the same transaction


_INSERT = text("""
INSERT INTO deferred_commands (topic, idempotency_key, attempt, store_id, due_at, reason, kafka_key, payload)
SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:atts AS int[]), CAST(:stores AS text[]),
                     CAST(:dues AS timestamptz[]), CAST(:reasons AS text[]), CAST(:kkeys AS bytea[]),
                     CAST(:payloads AS bytea[]))
ON CONFLICT (topic, idempotency_key, attempt) DO UPDATE SET
    due_at = EXCLUDED.due_at, reason = EXCLUDED.reason, store_id = EXCLUDED.store_id, kafka_key = EXCLUDED.kafka_key,
    payload = EXCLUDED.payload
""")

_DUE = text("""
SELECT idempotency_key, attempt, kafka_key, payload FROM deferred_commands
WHERE topic = :topic AND due_at <= :now ORDER BY due_at LIMIT :limit FOR UPDATE SKIP LOCKED
""")

_DELETE = text("""
DELETE FROM deferred_commands d
USING unnest(CAST(:keys AS text[]), CAST(:atts AS int[])) AS t(k, att)
WHERE d.topic = :topic AND d.idempotency_key = t.k AND d.attempt = t.att
  AND d.idempotency_key = ANY(CAST(:keys AS text[]))
""")


def defer_batch(engine: Engine, items: list[Deferral]) -> list[None]:
    if not items:
        return []
    with engine.begin() as conn:
        conn.execute(_INSERT, {
            "topics": [d.topic for d in items], "keys": [d.key for d in items], "atts": [d.attempt for d in items],
            "stores": [d.store_id for d in items], "dues": [d.due_at for d in items],
            "reasons": [d.reason for d in items], "kkeys": [d.kafka_key for d in items],
            "payloads": [d.payload for d in items],
        })
        claims.mark_retry_wait(conn, [(d.key, d.attempt - 1, d.failed_attempt_error) for d in items
                                      if d.failed_attempt_error is not None])
    return [None] * len(items)


def release_due(engine: Engine, producer: Producer, topic: str, limit: int = 1000,
                now: datetime | None = None) -> int:
    """Produce due deferred commands back to `topic`; returns how many."""
    now = now or datetime.now(timezone.utc)
    with engine.begin() as conn:
        rows = conn.execute(_DUE, {"topic": topic, "now": now, "limit": limit}).all()
        if not rows:
            return 0
        for _key, _attempt, kafka_key, payload in rows:
            producer.produce(topic, bytes(payload), key=bytes(kafka_key) if kafka_key is not None else None)
        producer.flush(60)  # raises on a failed delivery: the rows stay and are released again later
        conn.execute(_DELETE, {"topic": topic, "keys": [r[0] for r in rows], "atts": [r[1] for r in rows]})
    return len(rows)


def pending(engine: Engine, topic: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM deferred_commands WHERE topic = :t"),
                                {"t": topic}).scalar_one())
