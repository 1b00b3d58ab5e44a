"""Admin tasks (created by the create_admin_task action): GET /v1/tasks, POST /v1/tasks/{id}/complete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update

from wooflow.api.auth import CurrentStore
from wooflow.db.tables import tasks

router = APIRouter(prefix="/v1", tags=["tasks"])
MAX_LIMIT = 500


class Task(BaseModel):
    id: int
    store_id: str
    rule_id: int | None
    customer_key: str | None
    subject_type: str
    subject_id: str
    title: str
    description: str
    assignee: str
    priority: str
    status: str
    due_at: datetime | None
    created_at: datetime
    completed_at: datetime | None
    completed_by: str | None


class TaskPage(BaseModel):
    tasks: list[Task]
    limit: int


class Completion(BaseModel):
    completed_by: str = Field("", max_length=200, description="Who did it")


@router.get("/tasks", response_model=TaskPage, summary="Admin tasks of the store, newest first")
def list_tasks(request: Request, who: CurrentStore,
               status: Annotated[Literal["open", "done", "all"], Query(description="open, done or all")] = "open",
               limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most 500")] = 100,
               rule_id: Annotated[int | None, Query(description="Only tasks created by this rule")] = None) -> TaskPage:
    q = select(tasks).where(tasks.c.store_id == who.store_id)
    if status != "all":
        q = q.where(tasks.c.status == status)
    if rule_id is not None:
        q = q.where(tasks.c.rule_id == rule_id)
    q = q.order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit)
    with request.app.state.engine.connect() as conn:
        rows = [Task.model_validate(dict(r._mapping)) for r in conn.execute(q)]
    return TaskPage(tasks=rows, limit=limit)


@router.post("/tasks/{task_id}/complete", response_model=Task, summary="Mark a task done (idempotent)")
def complete_task(task_id: int, request: Request, who: CurrentStore, body: Completion | None = None) -> Task:
    by = (body.completed_by if body else "") or ("operator" if who.operator else "store")
    with request.app.state.engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id, tasks.c.store_id == who.store_id,
                                         tasks.c.status == "open")
                     .values(status="done", completed_at=func.now(), completed_by=by))
        row = conn.execute(select(tasks).where(tasks.c.id == task_id, tasks.c.store_id == who.store_id)).first()
    if row is None:  # another store's task is "not found" too
        raise HTTPException(404, f"task {task_id} not found")
    return Task.model_validate(dict(row._mapping))
