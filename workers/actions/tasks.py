"""create_admin_task: a to-do for the store team (listed and completed through the API,
GET /v1/tasks and POST /v1/tasks/{id}/complete). One task per idempotency key."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import ClassVar, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Connection, text

from wooflow.jsontypes import JSONObject
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render

_INSERT = text("""
WITH t AS (
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        store_id text, idempotency_key text, rule_id bigint, customer_key text, subject_type text, subject_id text,
        title text, description text, assignee text, priority text, due_at timestamptz)
), ins AS (
    INSERT INTO tasks (store_id, idempotency_key, rule_id, customer_key, subject_type, subject_id, title,
                       description, assignee, priority, due_at)
    SELECT store_id, idempotency_key, rule_id, customer_key, subject_type, subject_id, title, description, assignee,
           priority, due_at FROM t
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, idempotency_key
)
SELECT idempotency_key, id FROM ins
UNION ALL
SELECT k.idempotency_key, k.id FROM tasks k JOIN t ON t.idempotency_key = k.idempotency_key
WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.idempotency_key = k.idempotency_key)
""")


class CreateAdminTask(BaseAction["CreateAdminTask.Params"]):
    name: ClassVar[str] = "create_admin_task"
    description: ClassVar[str] = "Create a task for the store team (manual follow-up)"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # the effect commits with its claim row

    class Params(BaseModel):
        title: str = Field(min_length=1, description="Task title (Jinja2 template)")
        description: str = Field("", description="Details (Jinja2 template)")
        assignee: str = Field("", description="Who should do it")
        priority: Literal["low", "normal", "high"] = "normal"
        due_in_days: float | None = Field(None, ge=0, description="Due this many days after creation")

    def _row(self, ctx: ActionContext[Params]) -> JSONObject:
        p = ctx.params
        due = (datetime.now(timezone.utc) + timedelta(days=p.due_in_days)).isoformat() if p.due_in_days else None
        cmd = ctx.command
        return {"store_id": ctx.store.id, "idempotency_key": ctx.idempotency_key, "rule_id": cmd["rule_id"],
                "customer_key": cmd["customer_key"], "subject_type": cmd.get("subject_type", ""),
                "subject_id": str(cmd.get("subject_id", "")), "title": render(p.title, ctx.context)[:500],
                "description": render(p.description, ctx.context) if p.description else "",
                "assignee": p.assignee, "priority": p.priority, "due_at": due}

    def apply_batch(self, conn: Connection, ctxs: list[ActionContext[Params]]) -> list[ActionResult | Exception]:
        rows: list[JSONObject | Exception] = []
        for ctx in ctxs:
            try:
                rows.append(self._row(ctx))
            except Exception as exc:  # a template error fails this task only
                rows.append(exc)
        good = [r for r in rows if isinstance(r, dict)]
        ids: dict[str, int] = {}
        if good:
            ids = {key: task for key, task in conn.execute(_INSERT, {"rows": json.dumps(good)})}
        return [r if isinstance(r, Exception) else
                ActionResult("succeeded", f"task {ids[str(r['idempotency_key'])]} created: {r['title']}",
                             {"task_id": ids[str(r["idempotency_key"])], "title": r["title"]})
                for r in rows]

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        row = self._row(ctx)
        return ActionResult("dry_run", f"would create task: {row['title']}", {"task": row})
