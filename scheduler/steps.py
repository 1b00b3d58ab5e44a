"""Delayed workflow steps: the rule consumer stores them, the scheduler emits them when due.

A step whose command has `not_before` in the future is NOT produced to
automation.commands by the rule consumer; it calls `store_delayed()` inside the same
database transaction as its customer-state update (before committing Kafka offsets).
The insert is idempotent on the command's idempotency key, so a re-processed batch or a
replay stores nothing twice. `wooflow scheduler` later claims due rows (SKIP LOCKED) and
produces them as ordinary commands with the same idempotency key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypedDict

from sqlalchemy import Connection

from wooflow.consumer.commands import to_json
from wooflow.db.engine import driver_cursor
from wooflow.schemas.types import ActionCommand, ActionCommandOf

# Arrays go to PostgreSQL as binary parameters (%(x)b) on the raw psycopg cursor: in text
# form psycopg escapes every element with regular expressions, which cost ~10x the
# statement itself at thousands of steps per batch.
_INSERT = """
INSERT INTO scheduled_steps (idempotency_key, store_id, customer_key, rule_id, event_id, step, due_at, command,
                             rule_version)
SELECT k, s, ck, r, e, st, d, CAST(c AS jsonb), v
FROM unnest(CAST(%(k)b AS text[]), CAST(%(s)b AS text[]), CAST(%(ck)b AS text[]), CAST(%(r)b AS bigint[]),
            CAST(%(e)b AS text[]), CAST(%(st)b AS int[]), CAST(%(d)b AS timestamptz[]), CAST(%(c)b AS text[]),
            CAST(%(v)b AS int[]))
     AS u(k, s, ck, r, e, st, d, c, v)
ON CONFLICT (idempotency_key) DO NOTHING
"""


def store_delayed(conn: Connection, commands: Sequence[ActionCommand]) -> int:
    """Insert delayed commands (idempotent). Returns how many rows were new.

    One statement for the whole batch: the rule consumer calls this once per Kafka batch,
    inside its state transaction."""
    if not commands:
        return 0
    cur = driver_cursor(conn)
    cur.execute(_INSERT, {
        "k": [c["idempotency_key"] for c in commands], "s": [c["store_id"] for c in commands],
        "ck": [c["customer_key"] for c in commands], "r": [int(c["rule_id"]) for c in commands],
        "e": [c["event_id"] for c in commands], "st": [int(c["step"]) for c in commands],
        "d": [c["not_before"] for c in commands], "c": [to_json(c) for c in commands],
        "v": [int(c["rule_version"]) for c in commands],
    })
    return max(0, cur.rowcount)


def store_steps(conn: Connection, commands: Sequence[ActionCommand], now: datetime) -> int:
    """Every step of a run the scheduler synthesised (time/cart/behaviour triggers), the
    immediate ones included (due now): they all pass the same exit checks and the same
    claim → produce → mark path, and conversions can be attributed to them."""
    due: list[ActionCommand] = [c if c.get("not_before") else {**c, "not_before": now} for c in commands]
    return store_delayed(conn, due)


class StepRow(TypedDict):
    """A claimed `scheduled_steps` row; `command` as `store_delayed` stored it (JSON)."""

    idempotency_key: str
    store_id: str
    customer_key: str
    rule_id: int
    event_id: str
    step: int
    due_at: datetime
    command: ActionCommandOf[str]


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def command_of(stored: ActionCommandOf[str]) -> ActionCommand:
    """A stored command back into an ActionCommand record (timestamps as datetimes)."""
    return {**stored, "created_at": datetime.fromisoformat(stored["created_at"]),
            "not_before": _at(stored["not_before"]), "received_at": _at(stored["received_at"])}
