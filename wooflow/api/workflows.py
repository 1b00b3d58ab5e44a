"""/v1/rules/{id}/versions, /runs, /journeys, /variants: a workflow as it runs.

Every edit of a rule's content is a new version (`rule_versions`); a run stays on the
version it started with. These routes show the versions, the runs per version (what
`scheduled_steps` holds: every run of a staged workflow, and runs of a linear one that had
a step to wait for), one customer's journey through the workflow (each step: when it was
due, whether it went out, on which side of which branch, why the run ended), and the
results of A/B tests per variant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Engine, select, text

from wooflow.api.auth import CurrentStore
from wooflow.consumer.model import RuleSpec
from wooflow.consumer.workflow import Program, compile_program
from wooflow.db.tables import rule_versions, rules
from wooflow.scheduler.flow import VARIANT_RESULTS

router = APIRouter(prefix="/v1", tags=["workflows"])


class VersionOut(BaseModel):
    version: int
    created_at: datetime
    current: bool
    spec: dict[str, Any] = Field(description="The rule as this version has it")


class VersionList(BaseModel):
    rule_id: int
    versions: list[VersionOut]


class RunCounts(BaseModel):
    version: int
    runs: int = Field(description="Runs started on this version")
    active: int = Field(description="Runs with a step still to come")
    completed: int = Field(description="Runs whose every step went out")
    goal_reached: int = Field(description="Runs that reached a goal: the workflow's conversions")
    exited: int = Field(description="Runs stopped by an exit condition, or by disabling the workflow")


class RunSummary(BaseModel):
    rule_id: int
    current_version: int
    versions: list[RunCounts]


class JourneyStep(BaseModel):
    step: int = Field(description="The step's number in its version (-1: the run's start)")
    kind: str = Field(description="start, branch, or the action type")
    where: str = Field(description="Where the step is in its version, e.g. actions[1].yes.steps[0]")
    due_at: datetime
    status: str = Field(description="pending, emitted (sent to the workers), done (start / branch decided), exited")
    at: datetime | None = Field(description="When it went out or was decided")
    variant: str | None = Field(description="The A/B variant sent")
    decision: str | None = Field(description="A branch's side: yes or no")
    reason: str | None = Field(description="Why a branch decided so, or why the run stopped here")
    stopped_by: str | None = Field(description="What stopped the run here: goal, ordered, unsubscribed, ...")
    outcome: str | None = Field(description="The step's last execution log: succeeded, skipped, failed, ...")


class JourneyRun(BaseModel):
    event_id: str
    version: int
    started_at: datetime | None
    state: str = Field(description="active, completed, goal_reached or exited")
    ended_because: str | None
    steps: list[JourneyStep]


class Journey(BaseModel):
    rule_id: int
    customer_key: str
    runs: list[JourneyRun]


class VariantResult(BaseModel):
    variant: str
    sends: int
    opens: int
    clicks: int
    conversions: int


class VariantTest(BaseModel):
    version: int
    step: int
    variants: list[VariantResult]
    metric: str | None
    ready_at: datetime | None
    winner: str | None
    decided_at: datetime | None


class VariantReport(BaseModel):
    rule_id: int
    tests: list[VariantTest]


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _rule(conn: Any, store_id: str, rule_id: int) -> dict[str, Any]:
    row = conn.execute(select(rules.c.id, rules.c.version).where(rules.c.id == rule_id,
                                                                  rules.c.store_id == store_id)).mappings().first()
    if row is None:
        raise HTTPException(404, f"rule {rule_id} not found")
    return dict(row)


@router.get("/rules/{rule_id}/versions", response_model=VersionList, summary="Every version of a workflow")
def list_versions(request: Request, who: CurrentStore, rule_id: int) -> VersionList:
    with _engine(request).connect() as conn:
        current = _rule(conn, who.store_id, rule_id)["version"]
        rows = conn.execute(select(rule_versions).where(rule_versions.c.rule_id == rule_id)
                            .order_by(rule_versions.c.version)).mappings().all()
    return VersionList(rule_id=rule_id, versions=[VersionOut(version=r["version"], created_at=r["created_at"],
                                                             current=r["version"] == current, spec=r["spec"])
                                                  for r in rows])


# One row per run: its version and its state, from its rows in scheduled_steps.
_RUNS = """
WITH runs AS (
    SELECT event_id,
           min(coalesce(rule_version, (command ->> 'rule_version')::int)) AS version,
           CASE WHEN bool_or(status = 'exited' AND exit_kind = 'goal') THEN 'goal_reached'
                WHEN bool_or(status = 'exited') THEN 'exited'
                WHEN bool_or(status = 'pending') THEN 'active'
                ELSE 'completed' END AS state
    FROM scheduled_steps WHERE store_id = :s AND rule_id = :r
    GROUP BY event_id)
"""

_COUNTS = text(_RUNS + """
SELECT version, count(*) AS runs, count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'goal_reached') AS goal_reached,
       count(*) FILTER (WHERE state = 'exited') AS exited
FROM runs GROUP BY version ORDER BY version
""")


@router.get("/rules/{rule_id}/runs", response_model=RunSummary, summary="Runs per version of a workflow")
def run_summary(request: Request, who: CurrentStore, rule_id: int) -> RunSummary:
    with _engine(request).connect() as conn:
        current = _rule(conn, who.store_id, rule_id)["version"]
        rows = conn.execute(_COUNTS, {"s": who.store_id, "r": rule_id}).mappings().all()
    return RunSummary(rule_id=rule_id, current_version=current, versions=[RunCounts(**dict(r)) for r in rows])


_JOURNEY_STEPS = text("""
SELECT event_id, step, due_at, status, emitted_at, variant, decision, exit_reason, exit_kind,
       coalesce(rule_version, (command ->> 'rule_version')::int) AS version,
       command ->> 'action_type' AS action_type, command ->> 'created_at' AS created_at
FROM scheduled_steps WHERE store_id = :s AND rule_id = :r AND customer_key = :k
ORDER BY created_at, event_id, step
""")

_OUTCOMES = text("""
SELECT DISTINCT ON (event_id, step) event_id, step, status FROM execution_logs
WHERE store_id = :s AND rule_id = :r AND customer_key = :k AND NOT dry_run
ORDER BY event_id, step, executed_at DESC
""")


def _programs(conn: Any, rule_id: int, versions: set[int]) -> dict[int, Program]:
    out: dict[int, Program] = {}
    for r in conn.execute(select(rule_versions.c.version, rule_versions.c.spec)
                          .where(rule_versions.c.rule_id == rule_id, rule_versions.c.version.in_(versions))):
        try:
            out[int(r[0])] = compile_program(RuleSpec.model_validate(r[1]).actions)
        except (ValidationError, ValueError):
            continue  # a version that no longer validates: its steps are shown without their place
    return out


def _where(programs: dict[int, Program], version: int, step: int) -> str:
    if step < 0:
        return "start"
    program = programs.get(version)
    return program.nodes[step].path if program is not None and step < len(program.nodes) else f"step {step}"


def _state(steps: list[JourneyStep]) -> tuple[str, str | None]:
    for s in steps:
        if s.status == "exited":
            return ("goal_reached" if s.stopped_by == "goal" else "exited"), s.reason
    if any(s.status == "pending" for s in steps):
        return "active", None
    return "completed", None


@router.get("/rules/{rule_id}/journeys/{customer_key}", response_model=Journey,
            summary="One customer's runs of a workflow, step by step")
def journey(request: Request, who: CurrentStore, rule_id: int, customer_key: str) -> Journey:
    params = {"s": who.store_id, "r": rule_id, "k": customer_key}
    with _engine(request).connect() as conn:
        _rule(conn, who.store_id, rule_id)
        rows = conn.execute(_JOURNEY_STEPS, params).mappings().all()
        outcomes = {(r["event_id"], r["step"]): r["status"] for r in conn.execute(_OUTCOMES, params).mappings()}
        programs = _programs(conn, rule_id, {int(r["version"]) for r in rows})
    runs: dict[str, JourneyRun] = {}
    for r in rows:
        run = runs.get(r["event_id"])
        if run is None:
            started = datetime.fromisoformat(r["created_at"]) if r["created_at"] else None
            run = runs[r["event_id"]] = JourneyRun(event_id=r["event_id"], version=int(r["version"]),
                                                   started_at=started, state="active", ended_because=None, steps=[])
        kind = {"workflow.start": "start", "workflow.branch": "branch"}.get(r["action_type"], r["action_type"])
        run.steps.append(JourneyStep(step=r["step"], kind=kind, where=_where(programs, run.version, r["step"]),
                                     due_at=r["due_at"], status=r["status"], at=r["emitted_at"], variant=r["variant"],
                                     decision=r["decision"], reason=r["exit_reason"], stopped_by=r["exit_kind"],
                                     outcome=outcomes.get((r["event_id"], r["step"]))))
    for run in runs.values():
        run.state, run.ended_because = _state(run.steps)
    return Journey(rule_id=rule_id, customer_key=customer_key, runs=list(runs.values()))


_VARIANT_RESULTS = text(VARIANT_RESULTS.format(where="AND s.store_id = :s"))

_TESTS = text("SELECT version, step, metric, ready_at, winner, decided_at FROM variant_tests WHERE rule_id = :r")


@router.get("/rules/{rule_id}/variants", response_model=VariantReport,
            summary="A/B tests of a workflow: sends, opens, clicks and conversions per variant")
def variants(request: Request, who: CurrentStore, rule_id: int) -> VariantReport:
    with _engine(request).connect() as conn:
        _rule(conn, who.store_id, rule_id)
        results = conn.execute(_VARIANT_RESULTS, {"s": who.store_id, "rule": rule_id}).mappings().all()
        tests = {(r["version"], r["step"]): dict(r) for r in conn.execute(_TESTS, {"r": rule_id}).mappings()}
    out: dict[tuple[int, int], VariantTest] = {}
    for r in results:
        key = (int(r["version"] or 1), int(r["step"]))
        t = tests.get(key, {})
        test = out.get(key)
        if test is None:
            test = out[key] = VariantTest(version=key[0], step=key[1], variants=[], metric=t.get("metric"),
                                          ready_at=t.get("ready_at"), winner=t.get("winner"),
                                          decided_at=t.get("decided_at"))
        test.variants.append(VariantResult(variant=r["variant"], sends=r["sends"], opens=r["opens"],
                                           clicks=r["clicks"], conversions=r["conversions"]))
    return VariantReport(rule_id=rule_id, tests=list(out.values()))
