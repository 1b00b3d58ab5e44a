"""Workflows as they run, in the scheduler: pinned versions, segments, branches, A/B variants.

**Versions.** A run is pinned to the rule version that started it (the command's
`rule_version`); `rule_versions` holds every version (a trigger on `rules` writes it), so
a run's steps, branches, exits and goals are those of its version whatever the owner
edits later. `Versions` loads and caches them (a version never changes).

**Segments.** A staged workflow (consumer/workflow.py) starts as a control row
(`WORKFLOW_START`). When the emitter claims it, `Flows.resolve` stores the run's first
segment — its steps up to and including the next branch, each with its due time
(scheduler/timing.py: delay from the trigger, weekday and time, quiet hours) — and marks
the control row `done`; a branch row, when due, is decided (yes/no) and stores the segment
of the side taken. Both happen in the emitter's transaction, with the claim: a crash
before the commit undoes them and the next round decides again, so a branch commits one
decision and a run never stores both sides (their steps have different numbers, hence
different idempotency keys).

**Branches** ask, when the run reaches them: a condition tree over the customer's state
then (`customer_state`), or whether an email step of this run was opened / clicked within
`within` of its due time — an `engagements` row of the open/click tracker whose message id
is that step's idempotency key, at or before the branch's own due time (so the answer does
not depend on how late the scheduler is).

**A/B variants** are chosen when the step is emitted: the test's winner once there is one
(`variant_tests`), else by a hash of (rule, step, customer) over the weights — the same
customer always gets the same variant. A test with `auto_winner` becomes ready when every
variant was sent `min_sends` times, and its winner is picked `wait` later by opens, clicks
or orders (`attributions`) per send; ties go to the variant listed first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, text

from wooflow.consumer.commands import WORKFLOW_BRANCH, WORKFLOW_START, idempotency_key, to_json
from wooflow.consumer.conditions import Predicate, compile_tree
from wooflow.consumer.exits import ExitCondition, parse_exits
from wooflow.consumer.model import Action, RuleSpec, Variant
from wooflow.consumer.rules import RuleCache
from wooflow.consumer.workflow import Node, Program, compile_program
from wooflow.db.engine import unavailable
from wooflow.people import canonical
from wooflow.scheduler import timing
from wooflow.scheduler.exits import facts_of, load_state
from wooflow.scheduler.steps import StepRow, command_of, store_delayed
from wooflow.schemas.types import ActionCommand
from wooflow.stores import StoreCache

log = logging.getLogger(__name__)
ENGAGEMENT_KIND = {"email_opened": "open", "email_clicked": "click"}


@dataclass(frozen=True)
class Version:
    """One version of a rule, as its runs see it."""

    rule_id: int
    version: int
    spec: RuleSpec
    program: Program
    exits: list[ExitCondition]
    goals: list[ExitCondition]

    @property
    def guarded(self) -> bool:
        return bool(self.exits or self.goals)


def compile_version(rule_id: int, version: int, spec: RuleSpec) -> Version:
    return Version(rule_id, version, spec, compile_program(spec.actions), parse_exits(spec.exit_conditions),
                   parse_exits(spec.goals, "goals", goals=True))


_VERSIONS = text("""
SELECT v.rule_id, v.version, v.spec FROM rule_versions v
JOIN unnest(CAST(:rules AS bigint[]), CAST(:versions AS int[])) AS t(r, n) ON v.rule_id = t.r AND v.version = t.n
""")


class Versions:
    """(rule, version) → Version, read from `rule_versions` once (a version never changes)."""

    def __init__(self, rules: RuleCache, limit: int = 10_000) -> None:
        self.rules = rules
        self.limit = limit
        self._cache: dict[tuple[int, int], Version] = {}

    def load(self, conn: Connection, rows: Iterable[StepRow]) -> dict[str, Version | None]:
        """Each row's version (by idempotency key); None for a rule deleted, or a version no
        longer valid. A version without its row (runs stored before versions were kept)
        reads as the rule's current version."""
        pair = {r["idempotency_key"]: pair_of(r) for r in rows}
        wanted = set(pair.values())
        missing = sorted(p for p in wanted if p not in self._cache)
        if missing:
            if len(self._cache) > self.limit:
                self._cache.clear()
            found = conn.execute(_VERSIONS, {"rules": [r for r, _ in missing], "versions": [v for _, v in missing]})
            for rule_id, version, spec in found:
                try:
                    self._cache[(int(rule_id), int(version))] = compile_version(
                        int(rule_id), int(version), RuleSpec.model_validate(spec))
                except (ValidationError, ValueError) as exc:
                    log.error("rule %s version %s is invalid, its runs exit: %s", rule_id, version, exc)
        by_pair: dict[tuple[int, int], Version | None] = {}
        for p in wanted:
            hit = self._cache.get(p)
            if hit is None:
                current = self.rules.get(p[0])
                hit = compile_version(current.id, current.version, current.spec) if current is not None else None
            by_pair[p] = hit
        return {key: by_pair[p] for key, p in pair.items()}


def pair_of(row: StepRow) -> tuple[int, int]:
    cmd = row["command"]
    return int(row["rule_id"]), int(cmd.get("rule_version") or 1)


# --- A/B variants --------------------------------------------------------------------------
def assign(variants: list[Variant], rule_id: int, step: int, customer_key: str) -> str:
    """The variant a customer gets while there is no winner: a hash of (rule, step,
    customer) placed over the weights — always the same for the same customer."""
    total = sum(v.weight for v in variants)
    h = int.from_bytes(hashlib.sha256(f"{rule_id}|{step}|{customer_key}".encode()).digest()[:8], "big")
    point = (h * total) >> 64
    for v in variants:
        if point < v.weight:
            return v.name
        point -= v.weight
    return variants[-1].name  # pragma: no cover - the weights add up to total


_SENDS = text("""
SELECT variant, count(*) FROM scheduled_steps
WHERE rule_id = :rule AND rule_version = :version AND step = :step AND variant IS NOT NULL AND status = 'emitted'
GROUP BY variant
""")

_TEST = text("SELECT ready_at, winner FROM variant_tests WHERE rule_id = :rule AND version = :version AND step = :step")

_READY = text("""
INSERT INTO variant_tests (rule_id, version, step, store_id, metric, ready_at)
VALUES (:rule, :version, :step, :store, :metric, :ready)
ON CONFLICT DO NOTHING
""")

# Per variant of an A/B step: sends, and how many of them were opened, clicked, or followed
# by an order of the run (the API's A/B report runs it for a whole rule).
VARIANT_RESULTS = """
SELECT s.rule_version AS version, s.step, s.variant, count(*) AS sends,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM engagements e WHERE e.message_id = s.idempotency_key
                                      AND e.kind = 'open' AND NOT e.machine)) AS opens,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM engagements e WHERE e.message_id = s.idempotency_key
                                      AND e.kind = 'click' AND NOT e.machine)) AS clicks,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM attributions a WHERE a.store_id = s.store_id
                                      AND a.rule_id = s.rule_id AND a.event_id = s.event_id
                                      AND a.ordered_at >= s.emitted_at)) AS conversions
FROM scheduled_steps s
WHERE s.rule_id = :rule AND s.variant IS NOT NULL AND s.status = 'emitted' {where}
GROUP BY s.rule_version, s.step, s.variant ORDER BY 1, 2, 3
"""

_RESULTS = text(VARIANT_RESULTS.format(where="AND s.rule_version = :version AND s.step = :step"))

_DECIDE = text("""
UPDATE variant_tests SET winner = :winner, decided_at = :now, stats = CAST(:stats AS jsonb)
WHERE rule_id = :rule AND version = :version AND step = :step AND winner IS NULL
""")

METRIC_COLUMN = {"open_rate": "opens", "click_rate": "clicks", "conversion_rate": "conversions"}


def pick_winner(action: Action, results: dict[str, dict[str, int]]) -> tuple[str, dict[str, Any]]:
    """The variant with the best rate of the test's metric (the first listed on a tie), and the figures."""
    assert action.variants is not None and action.auto_winner is not None
    column = METRIC_COLUMN[action.auto_winner.metric]
    stats: dict[str, Any] = {"metric": action.auto_winner.metric, "variants": {}}
    best, best_rate = action.variants[0].name, -1.0
    for v in action.variants:
        r = results.get(v.name, {})
        sends = int(r.get("sends", 0))
        rate = int(r.get(column, 0)) / sends if sends else 0.0
        stats["variants"][v.name] = {**{k: int(x) for k, x in r.items()}, "rate": rate}
        if rate > best_rate:
            best, best_rate = v.name, rate
    stats["winner"] = best
    return best, stats


@dataclass
class Variants:
    """Which variant each claimed step of an A/B test sends."""

    engine: Any  # the emitter's engine: test bookkeeping commits on its own
    winners: dict[tuple[int, int, int], str] = field(default_factory=dict)

    def winner(self, rule_id: int, version: int, step: int, store_id: str, action: Action,
               now: datetime) -> str | None:
        key = (rule_id, version, step)
        if key in self.winners or action.auto_winner is None:
            return self.winners.get(key)
        test = {"rule": rule_id, "version": version, "step": step}
        # Its own short transaction: the test's row is shared by every scheduler and must not
        # wait for (or be undone with) a round's claim.
        with self.engine.begin() as conn:
            row = conn.execute(_TEST, test).first()
            if row is None:
                sends = {str(v): int(n) for v, n in conn.execute(_SENDS, test)}
                if all(sends.get(v.name, 0) >= action.auto_winner.min_sends for v in action.variants or ()):
                    conn.execute(_READY, test | {"store": store_id, "metric": action.auto_winner.metric,
                                                 "ready": now + timedelta(seconds=action.auto_winner.wait_s)})
                    row = conn.execute(_TEST, test).first()
            if row is None:
                return None
            ready_at, won = row
            if won is None and now >= ready_at:
                results = {str(r["variant"]): {k: int(r[k]) for k in ("sends", "opens", "clicks", "conversions")}
                           for r in conn.execute(_RESULTS, test).mappings()}
                best, stats = pick_winner(action, results)
                conn.execute(_DECIDE, test | {"winner": best, "now": now, "stats": to_json(stats)})
                won = conn.execute(_TEST, test).first()[1]  # ours, or another scheduler's a moment before
                log.info("A/B test of rule %s v%s step %s: %s wins (%s)", rule_id, version, step, won, stats)
        if won is not None:
            self.winners[key] = str(won)
        return str(won) if won is not None else None


# --- segments ------------------------------------------------------------------------------
def step_command(template: ActionCommand, rule_id: int, node: Node, due: datetime,
                 params: dict[str, Any] | None = None) -> ActionCommand:
    """One node of a run as a command: the run's start command with the node's step, key,
    action (a branch: a control row) and due time."""
    key = idempotency_key(rule_id, template["event_id"], node.index)
    action = node.action
    return {**template, "command_id": key, "idempotency_key": key, "step": node.index,
            "action_type": action.type if action is not None else WORKFLOW_BRANCH,
            "params_json": to_json(params if params is not None else action.params if action is not None else {}),
            "not_before": due, "attempt": 1}


FAILED = "failed"  # a control row that could not be decided: its run stops there (an exit of kind `error`)


@dataclass
class Decision:
    """What a control row did: `decision` (start / yes / no, or FAILED), why, and the steps it stored."""

    decision: str
    reason: str
    stored: list[ActionCommand]


_ENGAGED = text("""
SELECT t.k FROM unnest(CAST(:keys AS text[]), CAST(:kinds AS text[]), CAST(:until AS timestamptz[])) AS t(k, kind, u)
WHERE EXISTS (SELECT 1 FROM engagements e WHERE e.message_id = t.k AND e.kind = t.kind AND NOT e.machine
              AND e.at <= t.u)
""")

_DUE_OF = text("SELECT idempotency_key, due_at FROM scheduled_steps WHERE idempotency_key = ANY(CAST(:keys AS text[]))")

_TIMEZONES = text("""
SELECT cs.store_id, cs.customer_key, cs.attributes ->> 'timezone' AS tz FROM customer_state cs
JOIN unnest(CAST(:stores AS text[]), CAST(:keys AS text[])) AS t(s, k) ON cs.store_id = t.s AND cs.customer_key = t.k
WHERE cs.attributes ? 'timezone'
""")


class Flows:
    """The emitter's side of staged workflows: decide control rows, choose variants."""

    def __init__(self, engine: Any, rules: RuleCache, stores: StoreCache) -> None:
        self.versions = Versions(rules)
        self.stores = stores
        self.variants = Variants(engine)
        self._predicates: dict[tuple[int, int, int], Predicate] = {}  # (rule, version, step) → the branch's condition

    def _predicate(self, ver: Version, node: Node) -> Predicate:
        assert node.branch is not None and node.branch.condition.conditions is not None
        key = (ver.rule_id, ver.version, node.index)
        hit = self._predicates.get(key)
        if hit is None:
            if len(self._predicates) > 10_000:
                self._predicates.clear()
            hit = self._predicates[key] = compile_tree(node.branch.condition.conditions)
        return hit

    # --- control rows ------------------------------------------------------------------
    def resolve(self, conn: Connection, rows: list[StepRow], versions: dict[str, Version | None],
                now: datetime) -> dict[str, Decision]:
        """Decide every claimed control row and store the steps each leads to (in `conn`)."""
        if not rows:
            return {}
        answers = self._answers(conn, rows, versions, now)
        zones = self._customer_zones(conn, rows, versions)
        out: dict[str, Decision] = {}
        stored: list[ActionCommand] = []
        for r in rows:
            ver = versions[r["idempotency_key"]]
            assert ver is not None  # rows without a version exited before
            try:
                template = command_of(r["command"])
                if template["action_type"] == WORKFLOW_START:
                    start, decision, reason = (0 if ver.program.nodes else None), "start", "the run started"
                else:
                    node = ver.program.nodes[int(r["step"])]
                    yes, reason = answers[r["idempotency_key"]]
                    start, decision = (node.yes, "yes") if yes else (node.no, "no")
                cmds = self._segment(conn, template, ver, start, now, zones.get((r["store_id"], r["customer_key"])))
            except Exception as exc:
                if unavailable(exc):
                    raise  # the whole round again once PostgreSQL answers
                # one run that cannot go on must not hold up the others: it stops here, logged
                log.exception("run %s of rule %s cannot go on", r["event_id"], r["rule_id"])
                out[r["idempotency_key"]] = Decision(FAILED, f"internal error: {type(exc).__name__}: {exc}", [])
                continue
            out[r["idempotency_key"]] = Decision(decision, reason, cmds)
            stored.extend(cmds)
        store_delayed(conn, stored)
        return out

    def _answers(self, conn: Connection, rows: list[StepRow], versions: dict[str, Version | None],
                 now: datetime) -> dict[str, tuple[bool, str]]:
        """Each branch row's answer (yes?) and why."""
        branches: list[tuple[StepRow, Node]] = []
        version_of: dict[str, Version] = {}
        for r in rows:
            ver = versions[r["idempotency_key"]]
            if ver is not None and r["command"]["action_type"] == WORKFLOW_BRANCH:
                branches.append((r, ver.program.nodes[int(r["step"])]))
                version_of[r["idempotency_key"]] = ver
        out: dict[str, tuple[bool, str]] = {}
        asks_state = [(r, n) for r, n in branches if n.branch is not None and n.branch.condition.type == "condition"]
        asks_mail = [(r, n) for r, n in branches if n.branch is not None and n.branch.condition.type != "condition"]
        if asks_state:
            moved = canonical(conn, [(r["store_id"], r["customer_key"]) for r, _ in asks_state])
            keys = [(r["store_id"], moved.get((r["store_id"], r["customer_key"]), r["customer_key"]))
                    for r, _ in asks_state]
            state = load_state(conn, keys)
            memo: dict[int, dict[str, Any]] = {}
            for (r, n), k in zip(asks_state, keys, strict=True):
                yes = bool(self._predicate(version_of[r["idempotency_key"]], n)(facts_of(state.get(k), now, memo)))
                out[r["idempotency_key"]] = (yes, f"the customer's state {'meets' if yes else 'does not meet'} "
                                                  f"the branch's conditions")
        if asks_mail:
            refs = [(r, n, idempotency_key(int(r["rule_id"]), r["event_id"], int(n.ref or 0))) for r, n in asks_mail]
            kinds = [ENGAGEMENT_KIND[n.branch.condition.type] for _, n in asks_mail if n.branch is not None]
            hit = {row[0] for row in conn.execute(_ENGAGED, {"keys": [k for _, _, k in refs], "kinds": kinds,
                                                             "until": [r["due_at"] for r, _, _ in refs]})}
            for (r, n, ref_key), kind in zip(refs, kinds, strict=True):
                yes = ref_key in hit
                verb = "opened" if kind == "open" else "clicked"
                out[r["idempotency_key"]] = (yes, f"the email of step {n.ref} was {'' if yes else 'not '}{verb} "
                                                  f"within {n.branch.condition.within if n.branch else ''}")
        return out

    def _customer_zones(self, conn: Connection, rows: list[StepRow],
                        versions: dict[str, Version | None]) -> dict[tuple[str, str], str]:
        """Customers' own timezones, for runs with a step sent in the customer's timezone."""
        wanted = [r for r in rows if (v := versions[r["idempotency_key"]]) is not None and any(
            n.action is not None and n.action.at is not None and n.action.at.timezone == "customer"
            for n in v.program.nodes)]
        if not wanted:
            return {}
        return {(s, k): str(tz) for s, k, tz in conn.execute(_TIMEZONES, {
            "stores": [r["store_id"] for r in wanted], "keys": [r["customer_key"] for r in wanted]})}

    def _segment(self, conn: Connection, template: ActionCommand, ver: Version, start: int | None, now: datetime,
                 customer_tz: str | None) -> list[ActionCommand]:
        """The commands of the nodes a run reaches from `start`, each with its due time."""
        nodes = ver.program.segment(start)
        if not nodes:
            return []
        store = self.stores.get(template["store_id"])
        store_tz = timing.zone(store.timezone if store is not None else None)
        quiet = timing.quiet_hours(store.settings) if store is not None else None
        trigger_at = template["created_at"]
        planned: dict[int, datetime] = {}
        out: list[ActionCommand] = []
        for node in nodes:
            if node.action is not None:
                a = node.action
                tz = store_tz
                if a.at is not None and a.at.timezone not in ("store", "customer"):
                    tz = timing.zone(a.at.timezone)
                elif a.at is not None and a.at.timezone == "customer" and customer_tz:
                    tz = timing.zone(customer_tz)
                due = timing.due_at(trigger_at, a.delay_s, a.at, tz, quiet=quiet, store_tz=store_tz,
                                    message=a.type in timing.MESSAGE_ACTIONS)
                planned[node.index] = max(due, now)
                out.append(step_command(template, ver.rule_id, node, planned[node.index]))
                continue
            branch = node.branch
            assert branch is not None
            if branch.condition.type == "condition":
                due = trigger_at + timedelta(seconds=branch.delay_s)
            else:
                ref_due = planned.get(node.ref or 0) or self._due_of(conn, ver.rule_id, template, node.ref or 0)
                due = (ref_due or now) + timedelta(seconds=branch.condition.within_s)
            out.append(step_command(template, ver.rule_id, node, max(due, now)))
        return out

    @staticmethod
    def _due_of(conn: Connection, rule_id: int, template: ActionCommand, step: int) -> datetime | None:
        """When a step stored by an earlier segment of the run was due (None: never stored)."""
        key = idempotency_key(rule_id, template["event_id"], step)
        row = conn.execute(_DUE_OF, {"keys": [key]}).first()
        return row[1] if row is not None else None

    # --- variants ----------------------------------------------------------------------
    def variant_params(self, rows: list[StepRow], versions: dict[str, Version | None],
                       now: datetime) -> dict[str, tuple[str, str]]:
        """idempotency key → (variant, params JSON) for the claimed steps of an A/B test."""
        out: dict[str, tuple[str, str]] = {}
        winners: dict[tuple[int, int, int], str | None] = {}  # each test asked once per round
        for r in rows:
            ver = versions.get(r["idempotency_key"])
            step = int(r["step"])
            if ver is None or not 0 <= step < len(ver.program.nodes):
                continue
            action = ver.program.nodes[step].action
            if action is None or not action.variants:
                continue
            test = (ver.rule_id, ver.version, step)
            if test not in winners:
                winners[test] = self.variants.winner(ver.rule_id, ver.version, step, r["store_id"], action, now)
            name = winners[test] or assign(action.variants, ver.rule_id, step, r["customer_key"])
            out[r["idempotency_key"]] = (name, to_json(action.variant_params(name)))
        return out


def is_control(row: StepRow) -> bool:
    return row["command"].get("action_type") in (WORKFLOW_START, WORKFLOW_BRANCH)


def program_keys(rule_id: int, event_id: str, program: Program) -> list[str]:
    """The idempotency keys of every step a run of `program` may have (its messages' ids)."""
    return [idempotency_key(rule_id, event_id, n.index) for n in program.nodes]
