"""/v1/rules: rules CRUD and dry runs, scoped to the caller's store (parity with Polski Pro's
/polski-pro/v1/automation/rules, plus more). Every change notifies running consumers
through the `rules` table trigger (LISTEN/NOTIFY), so it applies within a second."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Engine, delete, func, insert, select, update

from wooflow.api.auth import CurrentStore
from wooflow.api.funnel import forget_rule
from wooflow.consumer.model import RuleSpec
from wooflow.db.tables import execution_logs, rule_audit, rules
from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - rules may name the scheduler's triggers

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["rules"])


class RuleOut(RuleSpec):
    model_config = ConfigDict(extra="ignore")
    id: int
    store_id: str
    version: int
    created_at: datetime
    updated_at: datetime


class RuleList(BaseModel):
    rules: list[RuleOut]
    total: int


class AuditEntry(BaseModel):
    id: int
    action: str = Field(description="created, updated, deleted, installed, ...")
    actor: str
    version: int | None = Field(description="The rule's version after this change, when recorded")
    rule: dict[str, Any] | None = Field(description="The rule as it was saved by this change")
    created_at: datetime


class RuleHistory(BaseModel):
    entries: list[AuditEntry]


class DryRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: int | None = Field(None, ge=1, description="Simulate on this WooCommerce order")
    customer_id: int | None = Field(None, ge=1, description="...or on this customer")

    @model_validator(mode="after")
    def _one(self) -> DryRunRequest:
        if (self.order_id is None) == (self.customer_id is None):
            raise ValueError("give exactly one of order_id or customer_id")
        return self


def _out(row: dict[str, Any]) -> RuleOut:
    try:
        return RuleOut.model_validate(row)
    except ValidationError:
        # a stored rule that no longer validates (e.g. its plugin trigger is gone) must
        # still be listable, so it can be fixed or deleted
        return RuleOut.model_construct(**row)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def validate_actions(spec: RuleSpec) -> None:
    """Action types must exist and their params must fit the action's Params model."""
    errors = action_errors(spec)
    if errors:
        raise RequestValidationError(errors)


def action_errors(spec: RuleSpec) -> list[dict[str, Any]]:
    """What is wrong with the rule's actions (every step, both sides of every branch, every
    A/B variant), as 422 error entries (none: nothing)."""
    from wooflow.workers.registry import step_problems

    return [{"loc": ("body", *p.loc), "type": p.type, "msg": p.message} for p in step_problems(spec.actions)]


def insert_rule(conn: Any, store_id: str, spec: RuleSpec, *, actor: str = "",
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new rule of the store (actions already validated), with its `created` audit entry."""
    row = conn.execute(insert(rules).values(store_id=store_id, **spec.model_dump(mode="json"))
                       .returning(rules)).mappings().one()
    _audit(conn, store_id, row["id"], "created", {"rule": spec.model_dump(mode="json"), **(details or {})},
           actor=actor)
    return dict(row)


def _audit(conn: Any, store_id: str, rule_id: int | None, action: str, details: dict[str, Any],
           dry_run: bool = False, actor: str = "") -> int:
    return int(conn.execute(insert(rule_audit).values(store_id=store_id, rule_id=rule_id, action=action,
                                                      dry_run=dry_run, actor=actor, details=details)
                            .returning(rule_audit.c.id)).scalar_one())


def _row(conn: Any, store_id: str, rule_id: int) -> dict[str, Any]:
    row = conn.execute(select(rules).where(rules.c.id == rule_id, rules.c.store_id == store_id)).mappings().first()
    if row is None:
        # Another store's rule is indistinguishable from a missing one.
        raise HTTPException(404, f"rule {rule_id} not found")
    return dict(row)


@router.get("/rules", response_model=RuleList, summary="List the store's rules (priority order)")
def list_rules(request: Request, who: CurrentStore,
               trigger: Annotated[str | None, Query(description="Only rules of this trigger")] = None,
               enabled: Annotated[bool | None,
                                  Query(description="Only enabled (true) or disabled (false) rules")] = None,
               group_label: Annotated[str | None, Query(description="Only rules with this group label")] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 500,
               offset: Annotated[int, Query(ge=0)] = 0) -> RuleList:
    q = select(rules).where(rules.c.store_id == who.store_id)
    if trigger is not None:
        q = q.where(rules.c.trigger == trigger)
    if enabled is not None:
        q = q.where(rules.c.enabled.is_(enabled))
    if group_label is not None:
        q = q.where(rules.c.group_label == group_label)
    with _engine(request).connect() as conn:
        total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = conn.execute(q.order_by(rules.c.priority, rules.c.id).limit(limit).offset(offset)).mappings().all()
    return RuleList(rules=[_out(dict(r)) for r in rows], total=int(total))


@router.post("/rules", response_model=RuleOut, status_code=201, summary="Create a rule")
def create_rule(request: Request, who: CurrentStore, spec: Annotated[RuleSpec, Body()]) -> RuleOut:
    validate_actions(spec)
    with _engine(request).begin() as conn:
        row = insert_rule(conn, who.store_id, spec)
    return RuleOut.model_validate(row)


@router.get("/rules/{rule_id}", response_model=RuleOut, summary="Get one rule")
def get_rule(request: Request, who: CurrentStore, rule_id: int) -> RuleOut:
    with _engine(request).connect() as conn:
        return _out(_row(conn, who.store_id, rule_id))


@router.put("/rules/{rule_id}", response_model=RuleOut, summary="Replace a rule (its version goes up)")
def put_rule(request: Request, who: CurrentStore, rule_id: int, spec: Annotated[RuleSpec, Body()]) -> RuleOut:
    validate_actions(spec)
    with _engine(request).begin() as conn:
        _row(conn, who.store_id, rule_id)
        row = conn.execute(update(rules).where(rules.c.id == rule_id, rules.c.store_id == who.store_id)
                           .values(**spec.model_dump(mode="json"), version=rules.c.version + 1,
                                   updated_at=func.now()).returning(rules)).mappings().one()
        _audit(conn, who.store_id, rule_id, "updated", {"rule": spec.model_dump(mode="json"),
                                                         "version": row["version"]})
    return RuleOut.model_validate(dict(row))


@router.get("/rules/{rule_id}/history", response_model=RuleHistory,
            summary="The rule's changes, newest first (dry runs left out)")
def rule_history(request: Request, who: CurrentStore, rule_id: int,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100) -> RuleHistory:
    with _engine(request).connect() as conn:
        _row(conn, who.store_id, rule_id)
        rows = conn.execute(select(rule_audit).where(rule_audit.c.store_id == who.store_id,
                                                     rule_audit.c.rule_id == rule_id, rule_audit.c.dry_run.is_(False))
                            .order_by(rule_audit.c.created_at.desc(), rule_audit.c.id.desc()).limit(limit)).mappings()
        entries = []
        for r in rows:
            details = r["details"] if isinstance(r["details"], dict) else {}
            version = details.get("version", 1 if r["action"] == "created" else None)
            entries.append(AuditEntry(id=r["id"], action=r["action"], actor=r["actor"], created_at=r["created_at"],
                                      version=version if isinstance(version, int) else None,
                                      rule=details.get("rule") if isinstance(details.get("rule"), dict) else None))
    return RuleHistory(entries=entries)


@router.delete("/rules/{rule_id}", status_code=204, summary="Delete a rule, its execution logs and its analytics")
def delete_rule(request: Request, who: CurrentStore, rule_id: int) -> Response:
    with _engine(request).begin() as conn:
        old = _row(conn, who.store_id, rule_id)
        conn.execute(delete(rules).where(rules.c.id == rule_id, rules.c.store_id == who.store_id))
        logs = conn.execute(delete(execution_logs).where(execution_logs.c.store_id == who.store_id,
                                                         execution_logs.c.rule_id == rule_id)).rowcount
        forget_rule(conn, who.store_id, rule_id)
        _audit(conn, who.store_id, rule_id, "deleted", {"name": old["name"], "logs_deleted": logs})
    return Response(status_code=204)


@router.post("/rules/{rule_id}/dry-run", summary="Simulate the rule on a real order or customer",
             description="Fetches the order/customer from the store (WooCommerce REST) and the customer's state "
                         "from PostgreSQL, evaluates the trigger (for cart, behaviour and calendar triggers: "
                         "whether the scheduler's scan would pick the customer now) and every condition (with "
                         "reasons), checks "
                         "marketing consent, runs each action's dry run (rendered previews, no side effects) "
                         "and writes an audit entry flagged dry_run.")
async def dry_run(request: Request, who: CurrentStore, rule_id: int,
                  body: Annotated[DryRunRequest, Body()]) -> dict[str, Any]:
    from wooflow.api.dry_run import run_dry_run

    return await run_dry_run(request.app.state.settings, _engine(request), who.store_id, rule_id,
                             order_id=body.order_id, customer_id=body.customer_id)
