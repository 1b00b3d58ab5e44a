"""Execution logs counted per (store, rule, UTC day, step, action, status): what the
analytics API reads instead of the logs themselves (a store's summary over a million logs
would otherwise be a scan of them), and what stays when old logs are deleted.

The sink adds the logs an INSERT actually wrote (its RETURNING: a log already there — a
re-read batch, a re-emitted log — is not counted again) in the same transaction, so the
counts move exactly with the rows. Dry-run logs are not counted. Keys are added in sorted
order: two sinks adding to the same rows lock them in one order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Connection

from wooflow.db.engine import driver_cursor

_ADD = """
INSERT INTO execution_daily AS d (store_id, rule_id, day, step, action_type, status, n)
SELECT * FROM unnest(%(s)b::text[], %(r)b::bigint[], %(d)b::date[], %(p)b::int[], %(a)b::text[], %(st)b::text[],
                     %(n)b::bigint[])
ON CONFLICT (store_id, rule_id, day, step, action_type, status) DO UPDATE SET n = d.n + EXCLUDED.n
"""

Key = tuple[str, int, date, int, str, str]


def day_of(at: datetime) -> date:
    return at.astimezone(timezone.utc).date()


def count(conn: Connection, written: Iterable[Any]) -> None:
    """Add written logs (rows with store_id, rule_id, step, action_type, status,
    executed_at, dry_run) to the daily counts, in the caller's transaction."""
    counts: Counter[Key] = Counter(
        (r.store_id, int(r.rule_id), day_of(r.executed_at), int(r.step), r.action_type, r.status)
        for r in written if not r.dry_run)
    if not counts:
        return
    keys = sorted(counts)
    driver_cursor(conn).execute(_ADD, {
        "s": [k[0] for k in keys], "r": [k[1] for k in keys], "d": [k[2] for k in keys], "p": [k[3] for k in keys],
        "a": [k[4] for k in keys], "st": [k[5] for k in keys], "n": [counts[k] for k in keys]})
