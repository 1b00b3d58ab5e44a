"""GET /v1/logs: the execution log of the caller's store (Polski Pro's audit log; at most
500 rows per request, like its `recent($limit)`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from wooflow.api.auth import CurrentStore
from wooflow.db.tables import execution_logs

router = APIRouter(prefix="/v1", tags=["logs"])
MAX_LIMIT = 500


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


@router.get("/logs", response_model=LogPage, summary="Recent execution logs, newest first")
def list_logs(request: Request, who: CurrentStore,
              limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most 500")] = 200,
              rule_id: Annotated[int | None, Query(description="Only this rule")] = None,
              status: Annotated[str | None, Query(description="succeeded, failed, skipped, dry_run, ...")] = None,
              dry_run: Annotated[bool | None, Query(description="Only dry runs (true) or live runs (false)")] = None,
              before: Annotated[datetime | None, Query(description="Only entries executed before this time")] = None,
              ) -> LogPage:
    # The store filter is the caller's store (an operator names it with X-Wooflow-Store /
    # store_id): one store never sees another's logs.
    q = select(execution_logs).where(execution_logs.c.store_id == who.store_id)
    if rule_id is not None:
        q = q.where(execution_logs.c.rule_id == rule_id)
    if status is not None:
        q = q.where(execution_logs.c.status == status)
    if dry_run is not None:
        q = q.where(execution_logs.c.dry_run.is_(dry_run))
    if before is not None:
        q = q.where(execution_logs.c.executed_at < before)
    q = q.order_by(execution_logs.c.executed_at.desc(), execution_logs.c.log_id).limit(limit)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return LogPage(logs=[LogEntry.model_validate(dict(r)) for r in rows], limit=limit)
