"""GET /v1/logs: the execution log of the caller's store, newest first (Polski Pro's audit
log; at most 500 rows per request, like its `recent($limit)`), one entry with its claim,
and the outcomes per rule over a time window.

Pages are a keyset: `next_cursor` names the last row's (executed_at, log_id), and the next
page starts strictly below it, so any page costs what the first costs however deep the
log is — an index range scan over the store's entries (migration 0014_console), never an
OFFSET that reads every row it skips."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select, tuple_

from wooflow.api.auth import CurrentStore
from wooflow.db.tables import action_executions, execution_logs, rules

router = APIRouter(prefix="/v1", tags=["logs"])
MAX_LIMIT = 500
SUMMARY_DAYS = 30


class LogEntry(BaseModel):
    log_id: str
    idempotency_key: str
    store_id: str
    customer_key: str
    rule_id: int
    event_id: str
    step: int
    action_type: str
    status: str
    message: str
    attempt: int
    duration_ms: float
    dry_run: bool
    details: dict[str, Any]
    executed_at: datetime
    received_at: datetime | None
    logged_at: datetime


class LogPage(BaseModel):
    logs: list[LogEntry]
    limit: int
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next (older) page; null at the end")


class Execution(BaseModel):
    """The claim the workers keep per idempotency key: what the action returned or why it failed."""
    status: str
    attempts: int
    result: dict[str, Any]
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class LogDetail(LogEntry):
    execution: Execution | None = Field(None, description="The action's claim (none for dry runs and exits)")


class RuleOutcomes(BaseModel):
    rule_id: int
    rule_name: str | None = Field(description="null when the rule no longer exists")
    total: int
    outcomes: dict[str, int] = Field(description="entries per status: succeeded, failed, skipped, ...")


class LogSummary(BaseModel):
    since: datetime
    until: datetime | None
    rules: list[RuleOutcomes]


def encode_cursor(executed_at: datetime, log_id: str) -> str:
    return base64.urlsafe_b64encode(f"{executed_at.isoformat()}|{log_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, _, log_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), log_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise HTTPException(422, "cursor: not a cursor this API gave out") from exc


def _filtered(q: Select[Any], store_id: str, rule_id: int | None, status: str | None, dry_run: bool | None,
              customer_key: str | None) -> Select[Any]:
    q = q.where(execution_logs.c.store_id == store_id)
    if rule_id is not None:
        q = q.where(execution_logs.c.rule_id == rule_id)
    if status is not None:
        q = q.where(execution_logs.c.status == status)
    if dry_run is not None:
        q = q.where(execution_logs.c.dry_run.is_(dry_run))
    if customer_key is not None:
        q = q.where(execution_logs.c.customer_key == customer_key)
    return q


@router.get("/logs", response_model=LogPage, summary="Recent execution logs, newest first")
def list_logs(request: Request, who: CurrentStore,
              limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most 500")] = 200,
              rule_id: Annotated[int | None, Query(description="Only this rule")] = None,
              status: Annotated[str | None, Query(description="succeeded, failed, skipped, dry_run, ...")] = None,
              dry_run: Annotated[bool | None, Query(description="Only dry runs (true) or live runs (false)")] = None,
              customer_key: Annotated[str | None, Query(description="Only this customer (c42, g…)")] = None,
              since: Annotated[datetime | None, Query(description="Only entries executed at or after this")] = None,
              before: Annotated[datetime | None, Query(description="Only entries executed before this time")] = None,
              cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
              ) -> LogPage:
    # The store filter is the caller's store (an operator names it with X-Wooflow-Store /
    # store_id): one store never sees another's logs.
    q = _filtered(select(execution_logs), who.store_id, rule_id, status, dry_run, customer_key)
    if since is not None:
        q = q.where(execution_logs.c.executed_at >= since)
    if before is not None:
        q = q.where(execution_logs.c.executed_at < before)
    if cursor is not None:
        q = q.where(tuple_(execution_logs.c.executed_at, execution_logs.c.log_id) < tuple_(*decode_cursor(cursor)))
    q = q.order_by(execution_logs.c.executed_at.desc(), execution_logs.c.log_id.desc()).limit(limit + 1)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    page = [LogEntry.model_validate(dict(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return LogPage(logs=page, limit=limit,
                   next_cursor=encode_cursor(page[-1].executed_at, page[-1].log_id) if more else None)


@router.get("/logs/summary", response_model=LogSummary, summary="Entries per rule and status over a time window")
def summary(request: Request, who: CurrentStore,
            since: Annotated[datetime | None, Query(description=f"Default: {SUMMARY_DAYS} days ago")] = None,
            until: Annotated[datetime | None, Query(description="Default: now")] = None,
            dry_run: Annotated[bool, Query(description="Count dry runs instead of live runs")] = False) -> LogSummary:
    since = since or datetime.now(timezone.utc) - timedelta(days=SUMMARY_DAYS)
    q = _filtered(select(execution_logs.c.rule_id, execution_logs.c.status, func.count().label("n")),
                  who.store_id, None, None, dry_run, None).where(execution_logs.c.executed_at >= since)
    if until is not None:
        q = q.where(execution_logs.c.executed_at < until)
    counts = q.group_by(execution_logs.c.rule_id, execution_logs.c.status).subquery()
    named = (select(counts, rules.c.name).select_from(counts.outerjoin(
        rules, (rules.c.id == counts.c.rule_id) & (rules.c.store_id == who.store_id))))
    by_rule: dict[int, RuleOutcomes] = {}
    with request.app.state.engine.connect() as conn:
        for r in conn.execute(named):
            entry = by_rule.setdefault(r.rule_id, RuleOutcomes(rule_id=r.rule_id, rule_name=r.name, total=0,
                                                               outcomes={}))
            entry.outcomes[r.status] = int(r.n)
            entry.total += int(r.n)
    return LogSummary(since=since, until=until, rules=sorted(by_rule.values(), key=lambda e: (-e.total, e.rule_id)))


@router.get("/logs/{log_id}", response_model=LogDetail, summary="One execution log entry with its action's claim")
def get_log(request: Request, who: CurrentStore, log_id: str) -> LogDetail:
    with request.app.state.engine.connect() as conn:
        row = conn.execute(select(execution_logs).where(execution_logs.c.store_id == who.store_id,
                                                        execution_logs.c.log_id == log_id)).mappings().first()
        if row is None:  # another store's entry is "not found" too
            raise HTTPException(404, f"log entry {log_id!r} not found")
        claim = conn.execute(select(action_executions).where(
            action_executions.c.store_id == who.store_id,
            action_executions.c.idempotency_key == row["idempotency_key"])).mappings().first()
    return LogDetail.model_validate({**row, "execution": dict(claim) if claim is not None else None})
