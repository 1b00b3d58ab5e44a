"""Idempotency claims in PostgreSQL: each key's effect happens at most once.

A worker claims a key by inserting its row (status `running`, with a lease) before the
effect, and finishes it after. On redelivery the row tells what to do:
- finished (succeeded/skipped/failed/dead_lettered) → `done`: do nothing again;
- running with a live lease → `busy`: another worker is on it right now;
- running with an expired lease → `recover`: the previous worker died mid-action; the
  action's `already_applied` check decides whether the effect happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

FINAL = ("succeeded", "skipped", "failed", "dead_lettered")


@dataclass(frozen=True)
class Claim:
    key: str
    outcome: str  # claimed | recover | busy | done
    status: str = "running"
    claimed_at: datetime | None = None


_INSERT = text("""
INSERT INTO action_executions (idempotency_key, store_id, rule_id, event_id, step, action_type, status, attempts,
                               lease_until)
SELECT k, s, r, e, st, a, 'running', 1, now() + make_interval(secs => :lease)
FROM unnest(CAST(:keys AS text[]), CAST(:stores AS text[]), CAST(:rules AS bigint[]), CAST(:events AS text[]),
            CAST(:steps AS int[]), CAST(:actions AS text[])) AS t(k, s, r, e, st, a)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, created_at
""")

_TAKE_OVER = text("""
UPDATE action_executions SET lease_until = now() + make_interval(secs => :lease), attempts = attempts + 1
WHERE idempotency_key = ANY(CAST(:keys AS text[])) AND status = 'running' AND lease_until < now()
RETURNING idempotency_key, created_at
""")

_EXISTING = text("""
SELECT idempotency_key, status FROM action_executions WHERE idempotency_key = ANY(CAST(:keys AS text[]))
""")

_FINISH = text("""
UPDATE action_executions SET status = :status, result = CAST(:result AS jsonb), error = :error, finished_at = now(),
       lease_until = NULL
WHERE idempotency_key = :key
""")


def claim_batch(engine: Engine, commands: list[dict[str, Any]], lease_s: float) -> dict[str, Claim]:
    if not commands:
        return {}
    unique = {c["idempotency_key"]: c for c in commands}
    cmds = list(unique.values())
    params = {
        "lease": lease_s,
        "keys": [c["idempotency_key"] for c in cmds],
        "stores": [c["store_id"] for c in cmds],
        "rules": [c["rule_id"] for c in cmds],
        "events": [c["event_id"] for c in cmds],
        "steps": [c["step"] for c in cmds],
        "actions": [c["action_type"] for c in cmds],
    }
    out: dict[str, Claim] = {}
    with engine.begin() as conn:
        for key, created in conn.execute(_INSERT, params):
            out[key] = Claim(key, "claimed", claimed_at=created)
        rest = [k for k in params["keys"] if k not in out]
        if rest:
            for key, created in conn.execute(_TAKE_OVER, {"lease": lease_s, "keys": rest}):
                out[key] = Claim(key, "recover", claimed_at=created)
            rest = [k for k in rest if k not in out]
        if rest:
            for key, status in conn.execute(_EXISTING, {"keys": rest}):
                out[key] = Claim(key, "done" if status in FINAL else "busy", status=status)
    return out


def finish(engine: Engine, results: list[tuple[str, str, dict[str, Any], str | None]]) -> None:
    """Record outcomes: (key, status, result, error)."""
    if not results:
        return
    with engine.begin() as conn:
        conn.execute(_FINISH, [{"key": k, "status": s, "result": json.dumps(r, default=str), "error": e}
                               for k, s, r, e in results])


def recheck(engine: Engine, key: str, lease_s: float) -> Claim:
    """Re-check one busy key: its holder may have finished, or died and left the lease to expire."""
    with engine.begin() as conn:
        row = conn.execute(_TAKE_OVER, {"lease": lease_s, "keys": [key]}).first()
        if row:
            return Claim(key, "recover", claimed_at=row[1])
        row = conn.execute(_EXISTING, {"keys": [key]}).first()
    if row is None:
        return Claim(key, "busy")
    return Claim(key, "done" if row[1] in FINAL else "busy", status=row[1])
