"""Idempotency claims in PostgreSQL: each key's effect happens at most once.

A worker claims a key by inserting its row (status `running`, with a lease) before the
effect, and finishes it after. On redelivery the row tells what to do:
- finished (succeeded/skipped/failed/dead_lettered) → `done`: do nothing again (the
  execution log is re-emitted with the same log id, so a log lost in a crash reappears
  and a log already written is not written twice);
- running with a live lease → `busy`: another worker is on it right now;
- running with an expired lease → `recover`: the previous worker stopped mid-action
  (a live worker renews its leases, workers/leases.py); the action's `already_applied`
  check decides whether the effect happened, and `interrupted` counts such recoveries
  (the executor repeats an effect that cannot be looked up at most once);
- `retry_wait` (a transient failure scheduled a later attempt) → `recover` for the
  command carrying that later attempt (a timeout may still have had its effect), and
  `stale` for a redelivered copy of an earlier attempt.

Every function takes a whole batch: the executor coalesces concurrent commands into one
round trip (workers/batching.py). Joins with `unnest(...)` also filter on `= ANY(keys)`,
so a stale row estimate cannot make PostgreSQL hash-join a scan of the whole table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, text

from wooflow.jsontypes import JSONObject
from wooflow.schemas.types import ActionCommand

FINAL = ("succeeded", "skipped", "failed", "dead_lettered")


@dataclass(frozen=True)
class Claim:
    key: str
    outcome: str  # claimed | recover | busy | done | stale
    status: str = "running"
    claimed_at: datetime | None = None
    attempts: int = 1
    message: str = ""
    result: JSONObject = field(default_factory=dict)
    lease_until: datetime | None = None
    interrupted: int = 0  # attempts of this key whose worker stopped mid-action


@dataclass(frozen=True)
class Finish:
    key: str
    status: str
    result: JSONObject
    message: str
    error: str | None
    attempt: int


_INSERT = text("""
INSERT INTO action_executions (idempotency_key, store_id, rule_id, event_id, step, action_type, status, attempts,
                               lease_until, owner)
SELECT k, s, r, e, st, a, 'running', att, now() + make_interval(secs => :lease), :owner
FROM unnest(CAST(:keys AS text[]), CAST(:stores AS text[]), CAST(:rules AS bigint[]), CAST(:events AS text[]),
            CAST(:steps AS int[]), CAST(:actions AS text[]), CAST(:atts AS int[])) AS t(k, s, r, e, st, a, att)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, created_at
""")

# An expired `running` row is an interrupted attempt, unless it was finished before and
# reopened (a DLQ redrive, wooflow/dlq.py): an operator's "try again" starts afresh.
_TAKE_OVER = text("""
UPDATE action_executions a
SET status = 'running', lease_until = now() + make_interval(secs => :lease), owner = :owner,
    attempts = GREATEST(a.attempts, t.att), finished_at = NULL,
    interrupted = CASE WHEN a.status <> 'running' THEN a.interrupted
                       WHEN a.finished_at IS NOT NULL THEN 0
                       ELSE a.interrupted + 1 END
FROM unnest(CAST(:keys AS text[]), CAST(:atts AS int[])) AS t(k, att)
WHERE a.idempotency_key = t.k AND a.idempotency_key = ANY(CAST(:keys AS text[]))
  AND ((a.status = 'running' AND a.lease_until < now()) OR (a.status = 'retry_wait' AND a.attempts < t.att))
RETURNING a.idempotency_key, a.created_at, a.interrupted
""")

# Renewal extends only this worker's own running rows, and names the rows another worker
# owns by now (lost). The CTE's UPDATE runs whether or not the SELECT reads from it.
_RENEW = text("""
WITH renewed AS (
    UPDATE action_executions SET lease_until = now() + make_interval(secs => :lease)
    WHERE idempotency_key = ANY(CAST(:keys AS text[])) AND owner = :owner AND status = 'running'
)
SELECT idempotency_key FROM action_executions
WHERE idempotency_key = ANY(CAST(:keys AS text[])) AND owner IS DISTINCT FROM :owner
""")

_EXISTING = text("""
SELECT idempotency_key, status, attempts, message, error, result, lease_until
FROM action_executions WHERE idempotency_key = ANY(CAST(:keys AS text[]))
""")

_FINISH = text("""
UPDATE action_executions a
SET status = t.s, result = CAST(t.r AS jsonb), error = t.e, message = t.m, attempts = t.att, finished_at = now(),
    lease_until = NULL
FROM unnest(CAST(:keys AS text[]), CAST(:sts AS text[]), CAST(:res AS text[]), CAST(:errs AS text[]),
            CAST(:msgs AS text[]), CAST(:atts AS int[])) AS t(k, s, r, e, m, att)
WHERE a.idempotency_key = t.k AND a.idempotency_key = ANY(CAST(:keys AS text[]))
""")

_RETRY_WAIT = text("""
UPDATE action_executions a
SET status = 'retry_wait', attempts = t.att, error = t.e, message = t.e, lease_until = NULL
FROM unnest(CAST(:keys AS text[]), CAST(:atts AS int[]), CAST(:errs AS text[])) AS t(k, att, e)
WHERE a.idempotency_key = t.k AND a.idempotency_key = ANY(CAST(:keys AS text[])) AND a.status = 'running'
""")

_STEPS = text("""
SELECT idempotency_key, step, status, result FROM action_executions
WHERE idempotency_key = ANY(CAST(:keys AS text[]))
""")


def claim_batch(engine: Engine, commands: list[ActionCommand], lease_s: float,
                owner: str | None = None) -> dict[str, Claim]:
    """Claim each command's key for `owner` (a worker instance) for `lease_s` seconds."""
    if not commands:
        return {}
    unique = {c["idempotency_key"]: c for c in commands}
    cmds = list(unique.values())
    keys = [c["idempotency_key"] for c in cmds]
    atts = [int(c.get("attempt") or 1) for c in cmds]
    params = {
        "lease": lease_s,
        "owner": owner,
        "keys": keys,
        "stores": [c["store_id"] for c in cmds],
        "rules": [c["rule_id"] for c in cmds],
        "events": [c["event_id"] for c in cmds],
        "steps": [c["step"] for c in cmds],
        "actions": [c["action_type"] for c in cmds],
        "atts": atts,
    }
    attempt_of = dict(zip(keys, atts, strict=True))
    out: dict[str, Claim] = {}
    with engine.begin() as conn:
        for key, created in conn.execute(_INSERT, params):
            out[key] = Claim(key, "claimed", claimed_at=created, attempts=attempt_of[key])
        rest = [k for k in keys if k not in out]
        if rest:
            rows = conn.execute(_TAKE_OVER, {"lease": lease_s, "owner": owner, "keys": rest,
                                             "atts": [attempt_of[k] for k in rest]})
            for key, created, interrupted in rows:
                out[key] = Claim(key, "recover", claimed_at=created, attempts=attempt_of[key],
                                 interrupted=interrupted)
            rest = [k for k in rest if k not in out]
        if rest:
            for key, status, attempts, message, error, result, lease_until in conn.execute(_EXISTING, {"keys": rest}):
                if status in FINAL:
                    outcome = "done"
                elif status == "retry_wait":
                    outcome = "stale"
                else:
                    outcome = "busy"
                out[key] = Claim(key, outcome, status=status, attempts=attempts, message=message or error or "",
                                 result=result or {}, lease_until=lease_until)
    return out


def renew(engine: Engine, keys: list[str], owner: str, lease_s: float) -> set[str]:
    """Extend the leases of `owner`'s running claims among `keys`; returns the keys another
    worker owns by now (the others are renewed, or finished)."""
    with engine.begin() as conn:
        return set(conn.execute(_RENEW, {"keys": keys, "owner": owner, "lease": lease_s}).scalars())


_INSERT_FINAL = text("""
INSERT INTO action_executions (idempotency_key, store_id, rule_id, event_id, step, action_type, status, attempts,
                               finished_at)
SELECT k, s, r, e, st, a, 'succeeded', att, now()
FROM unnest(CAST(:keys AS text[]), CAST(:stores AS text[]), CAST(:rules AS bigint[]), CAST(:events AS text[]),
            CAST(:steps AS int[]), CAST(:actions AS text[]), CAST(:atts AS int[])) AS t(k, s, r, e, st, a, att)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key
""")

# A local-state action's `running` row comes only from its failure path (the effect was
# rolled back), so an expired one is taken over like a retry.
_TAKE_OVER_FINAL = text("""
UPDATE action_executions a
SET status = 'succeeded', attempts = t.att, finished_at = now(), lease_until = NULL, error = NULL
FROM unnest(CAST(:keys AS text[]), CAST(:atts AS int[])) AS t(k, att)
WHERE a.idempotency_key = t.k AND a.idempotency_key = ANY(CAST(:keys AS text[]))
  AND ((a.status = 'retry_wait' AND a.attempts < t.att) OR (a.status = 'running' AND a.lease_until < now()))
RETURNING a.idempotency_key
""")

_DELETE = text("DELETE FROM action_executions WHERE idempotency_key = ANY(CAST(:keys AS text[]))")


def claim_final(conn: Connection, commands: list[ActionCommand]) -> tuple[set[str], dict[str, Claim]]:
    """Local-state actions: claim AND record as succeeded in the caller's transaction, which
    also applies the effect — so the row and the effect commit together or not at all, and no
    lease is needed. Returns (keys to apply now, claims of keys seen before)."""
    if not commands:
        return set(), {}
    atts = [int(c.get("attempt") or 1) for c in commands]
    keys = [c["idempotency_key"] for c in commands]
    fresh = set(conn.execute(_INSERT_FINAL, {
        "keys": keys, "stores": [c["store_id"] for c in commands], "rules": [c["rule_id"] for c in commands],
        "events": [c["event_id"] for c in commands], "steps": [c["step"] for c in commands],
        "actions": [c["action_type"] for c in commands], "atts": atts}).scalars())
    rest = [(k, a) for k, a in zip(keys, atts, strict=True) if k not in fresh]
    if rest:
        fresh |= set(conn.execute(_TAKE_OVER_FINAL, {"keys": [k for k, _ in rest],
                                                     "atts": [a for _, a in rest]}).scalars())
        rest = [(k, a) for k, a in rest if k not in fresh]
    seen: dict[str, Claim] = {}
    if rest:
        for key, status, attempts, message, error, result, lease_until in conn.execute(
                _EXISTING, {"keys": [k for k, _ in rest]}):
            outcome = "done" if status in FINAL else ("stale" if status == "retry_wait" else "busy")
            seen[key] = Claim(key, outcome, status=status, attempts=attempts, message=message or error or "",
                              result=result or {}, lease_until=lease_until)
    return fresh, seen


def unclaim(conn: Connection, keys: list[str]) -> None:
    """Undo claim_final for commands whose effect failed: they go through the normal failure path."""
    if keys:
        conn.execute(_DELETE, {"keys": keys})


def finish_rows(conn: Connection, rows: list[Finish]) -> None:
    if not rows:
        return
    conn.execute(_FINISH, {
        "keys": [r.key for r in rows], "sts": [r.status for r in rows],
        "res": [json.dumps(r.result, default=str) for r in rows], "errs": [r.error for r in rows],
        "msgs": [r.message[:2000] for r in rows], "atts": [r.attempt for r in rows],
    })


def finish_batch(engine: Engine, rows: list[Finish]) -> list[None]:
    with engine.begin() as conn:
        finish_rows(conn, rows)
    return [None] * len(rows)


def mark_retry_wait(conn: Connection, rows: list[tuple[str, int, str]]) -> None:
    """(key, attempt that failed, error): the key waits for a later attempt (workers/deferred.py)."""
    if rows:
        conn.execute(_RETRY_WAIT, {"keys": [r[0] for r in rows], "atts": [r[1] for r in rows],
                                   "errs": [r[2][:2000] for r in rows]})


def step_rows(engine: Engine, keys: list[str]) -> dict[str, tuple[int, str, JSONObject]]:
    """key → (step, status, result) for the keys that have a row."""
    if not keys:
        return {}
    with engine.connect() as conn:
        return {k: (step, status, result or {}) for k, step, status, result in conn.execute(_STEPS, {"keys": keys})}
