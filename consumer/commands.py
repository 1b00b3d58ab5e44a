"""Action commands and their idempotency keys.

The key is a pure function of (rule, triggering event, step). Whoever produces the
command — the rule consumer, a replay, the scheduler for a delayed step — produces the
same key, and the workers execute each key at most once.

A staged workflow (consumer/workflow.py) starts as one control command, `WORKFLOW_START`
at step `START_STEP`: it never reaches the workers. The rule consumer (and a replay, and
the scheduler's trigger scans) store it like a delayed step; the scheduler stores the
run's steps from it, and branches as `WORKFLOW_BRANCH` control rows, as the run goes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from wooflow.consumer.values import to_datetime
from wooflow.schemas.codec import Record
from wooflow.schemas.types import ActionCommand

SUBJECTS = {"OrderEvent": ("order", "order_id"), "CustomerEvent": ("customer", "customer_id"),
            "ProductEvent": ("product", "product_id"), "StorefrontEvent": ("session", "session_id"),
            "SubscriptionEvent": ("subscription", "subscription_id")}
RESOURCE_FIELD = {"OrderEvent": "order", "CustomerEvent": "customer", "ProductEvent": "product",
                  "SubscriptionEvent": "subscription"}


START_STEP = -1
WORKFLOW_START = "workflow.start"
WORKFLOW_BRANCH = "workflow.branch"
CONTROL = frozenset({WORKFLOW_START, WORKFLOW_BRANCH})


def idempotency_key(rule_id: int, event_id: str, step: int) -> str:
    return hashlib.sha256(f"{rule_id}|{event_id}|{step}".encode()).hexdigest()[:40]


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        # "100", "19.99", "19.90", "0.125" — never "1E+2"
        n = v.normalize()
        if n == n.to_integral() or int(n.as_tuple().exponent) < -2:
            return format(n, "f")
        return str(v.quantize(Decimal("0.01")))
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    raise TypeError(type(v).__name__)


_OPTS = orjson.OPT_NON_STR_KEYS


def to_json(obj: Any) -> str:
    # orjson: command contexts carry whole orders, and this runs once per command
    return orjson.dumps(obj, default=_jsonable, option=_OPTS).decode()


def context_of(schema: str, event: Record, state: Mapping[str, object] | None = None,
               extra: Mapping[str, object] | None = None) -> dict[str, object]:
    """What action templates can see: the resource, the customer state, the store (values
    as the event holds them: `to_json` writes them)."""
    field = RESOURCE_FIELD.get(schema)
    ctx: dict[str, object] = {"store_id": event["store_id"], "event_id": event["event_id"],
                           "customer_key": event["customer_key"], "topic": event.get("topic")}
    if field:
        ctx[field] = event.get(field)
    if schema == "OrderEvent":
        ctx["previous_status"] = event.get("previous_status")
        if event.get("note") is not None:  # an order note added: the note
            ctx["note"] = event.get("note")
    if state:
        ctx["customer_state"] = {k: v for k, v in state.items() if k not in ("store_id",)}
    if extra:
        ctx.update({k: v for k, v in extra.items() if v is not None})
    return ctx


def build_command(*, rule_id: int, rule_version: int, step: int, action_type: str, params: Mapping[str, object],
                  delay_s: int, schema: str, event: Record, trigger: str,
                  state: Mapping[str, object] | None = None, now: datetime | None = None,
                  dry_run: bool = False, extra: Mapping[str, object] | None = None,
                  context_json: str | None = None, params_json: str | None = None) -> ActionCommand:
    """One action step as an ActionCommand record. A delayed step carries `not_before`
    (now + delay): workers must not execute it earlier; the scheduler holds it.
    `context_json`: the context, already serialised (the rule consumer shares one between
    the steps and rules an event fires); `params_json`: `params`, already serialised (the
    compiled rule keeps its steps' parameters that way)."""
    now = now or datetime.now(timezone.utc)
    event_id = str(event["event_id"])
    key = idempotency_key(rule_id, event_id, step)
    subject_type, id_field = SUBJECTS.get(schema, ("event", "event_id"))
    received = event.get("received_at")  # hot-path events carry epoch ms
    return {
        "command_id": key,
        "idempotency_key": key,
        "store_id": str(event["store_id"]),
        "customer_key": str(event["customer_key"]),
        "rule_id": rule_id,
        "rule_version": rule_version,
        "event_id": event_id,
        "trigger": trigger,
        "step": step,
        "action_type": action_type,
        "params_json": params_json if params_json is not None else to_json(params),
        "subject_type": subject_type,
        "subject_id": str(event.get(id_field, "")),
        "context_json": context_json if context_json is not None else to_json(context_of(schema, event, state, extra)),
        "created_at": now,
        "not_before": now + timedelta(seconds=delay_s) if delay_s else None,
        "received_at": to_datetime(received) if isinstance(received, (datetime, int)) else None,
        "dry_run": dry_run,
        "attempt": 1,
    }


def start_command(*, rule_id: int, rule_version: int, schema: str, event: Record, trigger: str, now: datetime,
                  state: Mapping[str, object] | None = None, extra: Mapping[str, object] | None = None,
                  context_json: str | None = None) -> ActionCommand:
    """The control command that starts a run of a staged workflow (due now, stored, never executed)."""
    cmd = build_command(rule_id=rule_id, rule_version=rule_version, step=START_STEP, action_type=WORKFLOW_START,
                        params={}, delay_s=0, schema=schema, event=event, trigger=trigger, state=state, now=now,
                        extra=extra, context_json=context_json)
    return {**cmd, "not_before": now}


def held(command: ActionCommand, now: datetime) -> bool:
    """Whether the scheduler holds the command instead of the workers getting it now: a
    step due later, or a control command."""
    nb = command["not_before"]
    return (nb is not None and nb > now) or command["action_type"] in CONTROL
