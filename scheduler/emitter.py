"""Due steps → automation.commands, safely with any number of schedulers.

One round is one PostgreSQL transaction:
1. claim up to N due rows with `SELECT … FOR UPDATE SKIP LOCKED`: the row locks are the
   claim. Another scheduler's claim skips them, so two schedulers never hold the same row;
2. check the goals and exit conditions of each run's own version (scheduler/exits.py,
   scheduler/flow.py); a run that stops has its remaining pending steps locked too, and
   each gets an execution log with status `goal_reached` or `exited`;
3. decide the control rows of staged workflows (a run's start, a branch) and store the
   steps they lead to (scheduler/flow.py) — rows of this same transaction;
4. produce the commands (same idempotency key as stored, `not_before` cleared: the step is
   released now; an A/B step with the variant chosen now) and the exit logs, and wait for
   Kafka's acknowledgement (acks=all);
5. only then mark the rows emitted / exited / done, and commit.

A crash anywhere before the commit (SIGKILL, lost connection, a failed produce) rolls the
transaction back: the rows are pending again and the locks gone at once, so the next round
— of this scheduler after a restart, or of another one — re-emits them with the same
idempotency keys. The workers claim each key once in `action_executions`, so the effect
happens once: at-least-once emission + idempotent execution = exactly-once effect. Nothing
is lost either: a row leaves `pending` only in the transaction that saw its output
acknowledged. A claim cannot outlive `scheduler_lease_s`: the Kafka flush gives up
before, and PostgreSQL ends a session idle in its transaction for that long (a hung
scheduler), releasing the rows to the others.

One tuple write per step (the mark) keeps the table's write load low: no separate
"claimed" update, no lease to expire before a crashed scheduler's rows move again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, RowMapping, text

from wooflow import metrics
from wooflow.clock import Clock
from wooflow.consumer.commands import WORKFLOW_BRANCH
from wooflow.consumer.exits import ExitCondition
from wooflow.consumer.rules import RuleCache
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.scheduler import exits
from wooflow.scheduler.flow import FAILED, Decision, Flows, Version, is_control, pair_of, program_keys
from wooflow.scheduler.steps import StepRow, command_of
from wooflow.schemas.codec import Codec
from wooflow.schemas.types import ActionCommand, ExecutionLog
from wooflow.settings import Settings
from wooflow.stores import StoreCache

log = logging.getLogger(__name__)

_COLUMNS = ("idempotency_key, store_id, customer_key, rule_id, event_id, step, due_at, "
            "command::text AS command")  # text: orjson parses it several times faster than psycopg's json

_CLAIM = text(f"""
SELECT {_COLUMNS} FROM scheduled_steps
WHERE status = 'pending' AND due_at <= :now
  AND (CAST(:stores AS text[]) IS NULL OR store_id = ANY(CAST(:stores AS text[])))
ORDER BY due_at
LIMIT :limit
FOR UPDATE SKIP LOCKED
""")

# The remaining steps of runs that exit now (they are closed at once, not when they come due).
_CLAIM_SIBLINGS = text("""
SELECT s.idempotency_key, s.store_id, s.customer_key, s.rule_id, s.event_id, s.step, s.due_at,
       s.command::text AS command
FROM scheduled_steps s
JOIN unnest(CAST(:stores AS text[]), CAST(:rules AS bigint[]), CAST(:events AS text[]))
     AS r(store_id, rule_id, event_id)
  ON s.store_id = r.store_id AND s.rule_id = r.rule_id AND s.event_id = r.event_id
WHERE s.status = 'pending' AND NOT (s.idempotency_key = ANY(CAST(:claimed AS text[])))
FOR UPDATE OF s SKIP LOCKED
""")

# Safety net: a step of a run that already exited (its sibling was locked by another
# scheduler at the moment the run exited) exits too.
_EXITED_RUNS = text("""
SELECT DISTINCT ON (s.store_id, s.rule_id, s.event_id) s.store_id, s.rule_id, s.event_id, s.exit_reason
FROM scheduled_steps s
JOIN unnest(CAST(:stores AS text[]), CAST(:rules AS bigint[]), CAST(:events AS text[]))
     AS r(store_id, rule_id, event_id)
  ON s.store_id = r.store_id AND s.rule_id = r.rule_id AND s.event_id = r.event_id
WHERE s.status = 'exited'
ORDER BY s.store_id, s.rule_id, s.event_id, s.step
""")

_MARK_EMITTED = text("""
UPDATE scheduled_steps SET status = 'emitted', emitted_at = :now, claimed_by = :me
WHERE idempotency_key = ANY(CAST(:keys AS text[])) AND status = 'pending'
""")

_MARK_VARIANTS = text("""
UPDATE scheduled_steps s SET status = 'emitted', emitted_at = :now, claimed_by = :me, variant = t.v
FROM unnest(CAST(:keys AS text[]), CAST(:variants AS text[])) AS t(k, v)
WHERE s.idempotency_key = t.k AND s.status = 'pending'
""")

_MARK_EXITED = text("""
UPDATE scheduled_steps s SET status = 'exited', exit_reason = t.reason, exit_kind = t.kind, claimed_by = :me
FROM unnest(CAST(:keys AS text[]), CAST(:reasons AS text[]), CAST(:kinds AS text[])) AS t(k, reason, kind)
WHERE s.idempotency_key = t.k AND s.status = 'pending'
""")

# A control row decided: its decision (start / yes / no) and why, in exit_reason.
_MARK_DONE = text("""
UPDATE scheduled_steps s SET status = 'done', decision = t.d, exit_reason = t.reason, emitted_at = :now,
       claimed_by = :me
FROM unnest(CAST(:keys AS text[]), CAST(:decisions AS text[]), CAST(:reasons AS text[])) AS t(k, d, reason)
WHERE s.idempotency_key = t.k AND s.status = 'pending'
""")


def _decoded(rows: Iterable[RowMapping]) -> list[StepRow]:
    return [{"idempotency_key": r["idempotency_key"], "store_id": r["store_id"], "customer_key": r["customer_key"],
             "rule_id": r["rule_id"], "event_id": r["event_id"], "step": r["step"], "due_at": r["due_at"],
             "command": orjson.loads(r["command"])} for r in rows]


def store_scope(settings: Settings) -> list[str] | None:
    """The stores this scheduler serves (WOOFLOW_SCHEDULER_STORES), None for all."""
    ids = [s.strip() for s in (settings.scheduler_stores or "").split(",") if s.strip()]
    return ids or None


def owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _runs(rows: list[StepRow]) -> dict[str, list[Any]]:
    runs = sorted({(r["store_id"], int(r["rule_id"]), r["event_id"]) for r in rows})
    return {"stores": [a for a, _, _ in runs], "rules": [b for _, b, _ in runs], "events": [c for _, _, c in runs]}


def exit_log(row: StepRow, kind: str, reason: str, now: datetime, *, here: bool = True) -> ExecutionLog:
    """The execution log of a step that will not run: status `goal_reached` for the step at
    which the run reached a goal (its conversion, logged once), else `exited` — the run's
    later steps closed with it (`here` False) included."""
    cmd = row["command"]
    key = row["idempotency_key"]
    status = "goal_reached" if kind == "goal" and here else "exited"
    return {
        "log_id": f"{key}:1:{status}",
        "idempotency_key": key,
        "store_id": row["store_id"],
        "customer_key": row["customer_key"],
        "rule_id": int(row["rule_id"]),
        "event_id": row["event_id"],
        "step": int(row["step"]),
        "action_type": str(cmd.get("action_type", "")),
        "status": status,
        "message": reason,
        "attempt": 1,
        "duration_ms": 0.0,
        "executed_at": now,
        "received_at": None,
        "details_json": json.dumps({"exit": kind, "reason": reason, "due_at": row["due_at"].isoformat(),
                                    "trigger": cmd.get("trigger")}),
        "dry_run": False,
    }


class Emitter:
    def __init__(self, settings: Settings, engine: Engine, producer: Producer, codec: Codec, clock: Clock,
                 rules: RuleCache, owner: str | None = None, stores: StoreCache | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.producer = producer
        self.codec = codec
        self.clock = clock
        self.rules = rules
        self.owner = owner or owner_id()
        self.commands_topic = settings.topic(topics.COMMANDS)
        self.logs_topic = settings.topic(topics.LOGS)
        self.flows = Flows(engine, rules, stores or StoreCache(engine, settings.store_cache_ttl_s))
        self.stores = store_scope(settings)
        # a hung scheduler's claim ends after this (PostgreSQL closes its session)
        self._idle_ms = max(1000, int(settings.scheduler_lease_s * 1000))
        self.more = False  # the last round stored steps that are already due: no pause before the next

    # --- one round -----------------------------------------------------------------
    def run_once(self) -> int:
        """Claim and process one batch of due steps; returns how many rows were claimed."""
        now = self.clock.now()
        self.more = False
        with self.engine.connect() as conn, conn.begin():
            conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {self._idle_ms}"))
            rows = _decoded(conn.execute(_CLAIM, {"now": now, "limit": self.settings.scheduler_batch_size,
                                                  "stores": self.stores}).mappings())
            if not rows:
                return 0
            self.rules.refresh()
            if any(self.rules.get(int(r["rule_id"])) is None and self.rules.when_disabled(int(r["rule_id"])) is None
                   for r in rows):
                self.rules.refresh(force=True)  # a rule created a moment ago may not be in the cache yet
            versions = self.flows.versions.load(conn, rows)
            exited = self._check(conn, rows, versions, now)
            siblings = self._close_runs(conn, rows, exited) if exited else []
            live = [r for r in rows if r["idempotency_key"] not in exited]
            decided = self.flows.resolve(conn, [r for r in live if is_control(r)], versions, now)
            for key in [k for k, d in decided.items() if d.decision == FAILED]:
                exited[key] = ("error", decided.pop(key).reason)
            self.more = any(c["not_before"] is not None and c["not_before"] <= now
                            for d in decided.values() for c in d.stored)
            variants = self.flows.variant_params([r for r in live if not is_control(r)], versions, now)
            emitted, exit_rows, done_at = self._produce(rows, siblings, exited, variants, now)
            self._mark(conn, emitted, exit_rows, exited, decided, variants, done_at)
        self._count(rows, exit_rows, exited, decided, done_at)
        return len(rows)

    def _check(self, conn: Connection, rows: list[StepRow], versions: dict[str, Version | None],
               now: datetime) -> dict[str, tuple[str, str]]:
        """idempotency key → (exit kind, reason) for the claimed steps that must not run."""
        exited: dict[str, tuple[str, str]] = {}
        for r in rows:
            stop = self._stopped(r, versions[r["idempotency_key"]])
            if stop is not None:
                exited[r["idempotency_key"]] = stop
        # Only runs whose version has goals or exit conditions can have stopped: the others skip the checks.
        guarded = [r for r in rows if (v := versions[r["idempotency_key"]]) is not None and v.guarded
                   and r["idempotency_key"] not in exited]
        if not guarded:
            return exited
        done = {(x["store_id"], int(x["rule_id"]), x["event_id"]): x["exit_reason"]
                for x in conn.execute(_EXITED_RUNS, _runs(guarded)).mappings()}
        for r in guarded:
            prior = done.get((r["store_id"], int(r["rule_id"]), r["event_id"]))
            if prior:
                exited[r["idempotency_key"]] = ("sequence_exited", f"sequence already exited: {prior}")
        conditions: dict[tuple[int, int], list[ExitCondition]] = {}
        todo = []
        for r in guarded:
            if r["idempotency_key"] in exited:
                continue
            ver = versions[r["idempotency_key"]]
            assert ver is not None
            pair = pair_of(r)  # the row's own version: what the exit checks key by (StepView.version)
            if pair not in conditions:
                conditions[pair] = ver.goals + ver.exits
            clicks = any(c.type == "clicked" for c in conditions[pair])
            todo.append(exits.view_of(r, tuple(program_keys(ver.rule_id, r["event_id"], ver.program)) if clicks
                                      else ()))
        exited.update(exits.check(conn, todo, conditions, now))
        return exited

    def _stopped(self, row: StepRow, version: Version | None) -> tuple[str, str] | None:
        """Why a run stops whatever its conditions say: its rule deleted (or its version no
        longer valid), disabled with `when_disabled: exit`, or a branch its version lacks."""
        rule_id = int(row["rule_id"])
        if version is None:
            return "rule_disabled", "rule deleted or invalid"
        if self.rules.get(rule_id) is None:
            policy = self.rules.when_disabled(rule_id)
            if policy is None:
                return "rule_disabled", "rule deleted or invalid"
            if policy == "exit":
                return "rule_disabled", "rule disabled: its runs exit"
        step = int(row["step"])
        if row["command"].get("action_type") == WORKFLOW_BRANCH and not (
                0 <= step < len(version.program.nodes) and version.program.nodes[step].branch is not None):
            return "rule_disabled", f"step {step} is not a branch of version {version.version}"
        return None

    def _close_runs(self, conn: Connection, rows: list[StepRow],
                    exited: dict[str, tuple[str, str]]) -> list[StepRow]:
        """Lock the remaining steps of every run that exits now; they exit with it."""
        reason_of_run: dict[tuple[str, int, str], tuple[tuple[str, str], int]] = {}
        for r in rows:
            if r["idempotency_key"] in exited:
                reason_of_run.setdefault((r["store_id"], int(r["rule_id"]), r["event_id"]),
                                         (exited[r["idempotency_key"]], int(r["step"])))
        closing = [r for r in rows if r["idempotency_key"] in exited]
        sibs = _decoded(conn.execute(_CLAIM_SIBLINGS, _runs(closing) | {
            "claimed": [r["idempotency_key"] for r in rows]}).mappings())
        for s in sibs:
            (kind, reason), step = reason_of_run[(s["store_id"], int(s["rule_id"]), s["event_id"])]
            exited[s["idempotency_key"]] = (kind, f"sequence stopped at step {step}: {reason}")
        return sibs

    def _produce(self, rows: list[StepRow], siblings: list[StepRow], exited: dict[str, tuple[str, str]],
                 variants: dict[str, tuple[str, str]], now: datetime) -> tuple[list[str], list[StepRow], datetime]:
        """Produce and wait for the acknowledgement (raises if any delivery failed)."""
        emitted: list[str] = []
        for r in rows:
            key = r["idempotency_key"]
            if key in exited or is_control(r):
                continue
            cmd: ActionCommand = {**command_of(r["command"]), "not_before": None}  # released now: workers run it
            chosen = variants.get(key)
            if chosen is not None:  # an A/B step: the variant's params
                cmd = {**cmd, "params_json": chosen[1]}
            self.producer.produce(self.commands_topic, self.codec.encode("ActionCommand", cmd, self.commands_topic),
                                  key=f"{r['store_id']}:{r['customer_key']}")
            emitted.append(key)
        exit_rows = [r for r in rows + siblings if r["idempotency_key"] in exited]
        closed = {r["idempotency_key"] for r in siblings}
        for r in exit_rows:
            kind, reason = exited[r["idempotency_key"]]
            rec = exit_log(r, kind, reason, now, here=r["idempotency_key"] not in closed)
            self.producer.produce(self.logs_topic, self.codec.encode("ExecutionLog", rec, self.logs_topic),
                                  key=f"{r['store_id']}:{r['customer_key']}")
        self.producer.flush(max(1.0, self.settings.scheduler_lease_s * 0.8))
        return emitted, exit_rows, self.clock.now()

    def _mark(self, conn: Connection, emitted: list[str], exit_rows: list[StepRow],
              exited: dict[str, tuple[str, str]], decided: dict[str, Decision],
              variants: dict[str, tuple[str, str]], done_at: datetime) -> None:
        """After Kafka acknowledged: the rows leave `pending` (committed with the claim)."""
        plain = [k for k in emitted if k not in variants]
        if plain:
            conn.execute(_MARK_EMITTED, {"keys": plain, "me": self.owner, "now": done_at})
        tested = [k for k in emitted if k in variants]
        if tested:
            conn.execute(_MARK_VARIANTS, {"keys": tested, "variants": [variants[k][0] for k in tested],
                                          "me": self.owner, "now": done_at})
        if exit_rows:
            keys = [r["idempotency_key"] for r in exit_rows]
            conn.execute(_MARK_EXITED, {"keys": keys, "reasons": [exited[k][1] for k in keys],
                                        "kinds": [exited[k][0] for k in keys], "me": self.owner})
        if decided:
            keys = list(decided)
            conn.execute(_MARK_DONE, {"keys": keys, "decisions": [decided[k].decision for k in keys],
                                      "reasons": [decided[k].reason for k in keys], "me": self.owner, "now": done_at})

    def _count(self, rows: list[StepRow], exit_rows: list[StepRow], exited: dict[str, tuple[str, str]],
               decided: dict[str, Decision], done_at: datetime) -> None:
        emitted: Counter[str] = Counter()
        for r in rows:
            if r["idempotency_key"] not in exited and r["idempotency_key"] not in decided:
                metrics.scheduler_lateness_seconds.observe(max(0.0, (done_at - r["due_at"]).total_seconds()))
                emitted[r["store_id"]] += 1
        for store, n in emitted.items():  # labelled children per store, not per step
            metrics.scheduler_steps.labels(store, "emitted").inc(n)
            metrics.events_out.labels("scheduler", self.commands_topic, store).inc(n)
        for store, n in Counter(r["store_id"] for r in exit_rows).items():
            metrics.scheduler_steps.labels(store, "exited").inc(n)
            metrics.events_out.labels("scheduler", self.logs_topic, store).inc(n)
        stored: Counter[str] = Counter()
        for r in rows:
            d = decided.get(r["idempotency_key"])
            if d is not None:
                stored[r["store_id"]] += len(d.stored)
        for store, n in stored.items():
            metrics.scheduler_steps.labels(store, "stored").inc(n)

    # --- the loop ------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                n = self.run_once()
                backoff = 0.5
            except Exception:
                log.exception("scheduler round failed (its steps stay pending); retrying in %.1fs", backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if n < self.settings.scheduler_batch_size and not self.more:
                stop.wait(self.settings.scheduler_poll_s)
