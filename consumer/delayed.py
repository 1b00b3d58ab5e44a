"""Delayed steps written by the rule consumer in one statement per batch.

Same rows and the same idempotency as `wooflow.scheduler.steps.store_delayed` (insert,
nothing on a known idempotency key), but one `unnest` statement on the raw psycopg
cursor with arrays as binary parameters: SQLAlchemy's per-row parameter processing
(and a JSON dumps → loads → dumps round trip of every command) cost more than the
database did at thousands of steps a batch.
The scheduler reads these rows back with `scheduler.steps.command_of`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from wooflow.consumer.commands import to_json

_INSERT = """
INSERT INTO scheduled_steps (idempotency_key, store_id, customer_key, rule_id, event_id, step, due_at, command)
SELECT k, s, ck, r, e, st, d, CAST(c AS jsonb)
FROM unnest(CAST(%(k)b AS text[]), CAST(%(s)b AS text[]), CAST(%(ck)b AS text[]), CAST(%(r)b AS bigint[]),
            CAST(%(e)b AS text[]), CAST(%(st)b AS int[]), CAST(%(d)b AS timestamptz[]), CAST(%(c)b AS text[]))
     AS u(k, s, ck, r, e, st, d, c)
ON CONFLICT (idempotency_key) DO NOTHING
"""


def save_delayed(conn: Connection, commands: list[dict[str, Any]]) -> None:
    """Insert delayed commands inside the caller's (state) transaction; idempotent."""
    if not commands:
        return
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cur.execute(_INSERT, {
        "k": [c["idempotency_key"] for c in commands], "s": [c["store_id"] for c in commands],
        "ck": [c["customer_key"] for c in commands], "r": [c["rule_id"] for c in commands],
        "e": [c["event_id"] for c in commands], "st": [c["step"] for c in commands],
        "d": [c["not_before"] for c in commands], "c": [to_json(c) for c in commands],
    })
