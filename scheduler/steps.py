"""Delayed workflow steps: the rule consumer stores them, the scheduler emits them when due.

A step whose command has `not_before` in the future is NOT produced to
automation.commands by the rule consumer; it calls `store_delayed()` inside the same
database transaction as its customer-state update (before committing Kafka offsets).
The insert is idempotent on the command's idempotency key, so a re-processed batch or a
replay stores nothing twice. `wooflow scheduler` later claims due rows (SKIP LOCKED) and
produces them as ordinary commands with the same idempotency key.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert

from wooflow.consumer.commands import to_json
from wooflow.db.tables import scheduled_steps


def is_delayed(command: dict[str, Any], now: datetime) -> bool:
    nb = command.get("not_before")
    return nb is not None and nb > now


def store_delayed(conn: Connection, commands: list[dict[str, Any]]) -> int:
    """Insert delayed commands (idempotent). Returns how many rows were new."""
    if not commands:
        return 0
    rows = [{
        "idempotency_key": c["idempotency_key"], "store_id": c["store_id"], "customer_key": c["customer_key"],
        "rule_id": c["rule_id"], "event_id": c["event_id"], "step": c["step"], "due_at": c["not_before"],
        "command": json.loads(to_json(c)),
    } for c in commands]
    result = conn.execute(insert(scheduled_steps).on_conflict_do_nothing(index_elements=["idempotency_key"]), rows)
    return int(result.rowcount or 0)


def command_of(row_command: dict[str, Any]) -> dict[str, Any]:
    """A stored command back into an ActionCommand record (timestamps as datetimes)."""
    cmd = dict(row_command)
    for key in ("created_at", "not_before", "received_at"):
        if cmd.get(key):
            cmd[key] = datetime.fromisoformat(cmd[key])
    return cmd
