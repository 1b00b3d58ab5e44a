"""Dry run of one rule on a real order or customer (POST /v1/rules/{id}/dry-run).

Like Polski Pro's automation engine: evaluate the filters against the order, check marketing consent,
run the actions in dry-run mode and write an audit entry flagged dry_run — with per-
condition reasons, the trigger's view given the state wooflow stored, the ordered
products as the product catalog (then the store) describes them, and rendered previews
from each action's `dry_run`. Nothing is written except the audit entries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import HTTPException
from sqlalchemy import Engine, insert, select

from wooflow.clock import get_clock
from wooflow.consumer.apply import apply_customer, apply_order
from wooflow.consumer.catalog import ProductCatalog, catalog_for
from wooflow.consumer.commands import build_command, to_json
from wooflow.consumer.conditions import explain
from wooflow.consumer.facts import ItemFacts, LazyFacts
from wooflow.consumer.model import Action
from wooflow.consumer.needs import StateView, state_view
from wooflow.consumer.rules import CompiledRule, compile_rule
from wooflow.consumer.state import StateBatch
from wooflow.consumer.tiers import loyalty_of
from wooflow.consumer.triggers import TRIGGERS, Keep
from wooflow.db.tables import execution_logs, rule_audit, rules, variant_tests
from wooflow.jsontypes import JSONObject
from wooflow.scheduler.triggers import SCHEMA as SCHEDULED
from wooflow.schemas.codec import Record
from wooflow.schemas.types import CustomerEvent, OrderEvent
from wooflow.settings import Settings
from wooflow.stores import Store, StoreCache

log = logging.getLogger(__name__)
MARKETING_CHANNELS = {"send_email": "email", "send_sms": "sms"}


def _customer_key(customer_id: int | None, email: str | None, fallback: str) -> str:
    from wooflow.producers.keys import customer_key

    return customer_key(customer_id, email, fallback=fallback)


def _order_event(store: Store, payload: JSONObject, run_id: str) -> OrderEvent:
    from wooflow.producers.normalise import order_record

    order = order_record(payload, ZoneInfo(store.timezone))
    now = datetime.now(timezone.utc)
    return {"event_id": f"dry-run:{run_id}", "store_id": store.id,
            "customer_key": _customer_key(order["customer_id"], order["billing"]["email"], f"o{order['id']}"),
            "occurred_at": order["date_modified"], "received_at": now, "source": "rest", "schema_version": 1,
            "topic": "order.updated", "store_timezone": store.timezone, "order_id": order["id"],
            "action": "updated", "order": order, "previous_status": None, "note": None, "raw_json": None}


def _customer_event(store: Store, payload: JSONObject, run_id: str) -> CustomerEvent:
    from wooflow.producers.normalise import customer_record

    customer = customer_record(payload, ZoneInfo(store.timezone))
    now = datetime.now(timezone.utc)
    return {"event_id": f"dry-run:{run_id}", "store_id": store.id, "customer_key": f"c{customer['id']}",
            "occurred_at": customer["date_modified"], "received_at": now, "source": "rest", "schema_version": 1,
            "topic": "customer.created", "store_timezone": store.timezone, "customer_id": customer["id"],
            "action": "created", "customer": customer, "raw_json": None}


async def _fetch(store: Store, path: str) -> JSONObject:
    from wooflow.workers.errors import ActionError, TransientError
    from wooflow.workers.woo_client import WooClient

    client = WooClient(store, timeout=10.0)
    try:
        data = await client.get(path)
    except ActionError as exc:
        raise HTTPException(404 if "HTTP 404" in str(exc) else 502, f"store answered: {exc}") from exc
    except TransientError as exc:
        raise HTTPException(502, f"store unreachable: {exc}") from exc
    finally:
        await client.aclose()
    if not isinstance(data, dict) or "id" not in data:
        raise HTTPException(502, f"store answered {path} with something that is not a resource")
    return data


def _consent(settings: Settings, engine: Engine, store: Store, path: list[PathStep], email: str | None,
             ckey: str, context: Mapping[str, object]) -> dict[str, Any]:
    """The verdict per channel, as the workers would decide it: the store's policy over the
    recorded answers and the answer the order/customer itself carries (`context`), for the
    marketing steps on the run's path."""
    from wooflow.consent_policy import policy_of

    needs = [(p.step, MARKETING_CHANNELS.get(p.action.type, "email")) for p in path
             if p.action is not None and p.params.get("marketing") is True]
    try:
        from wooflow.workers.consent import load_checker
    except ImportError:
        return {"checked": False, "note": "consent: not checked (no consent module in this build)",
                "required_by_steps": [i for i, _ in needs]}
    checker = load_checker(settings, engine)
    out: dict[str, Any] = {"checked": True, "required_by_steps": [i for i, _ in needs],
                           "policy": policy_of(store).model_dump(mode="json"), "channels": {}}
    for channel in sorted({c for _, c in needs} or {"email"}):
        d = checker.check(store.id, channel, email=email, customer_key=ckey, context=context)
        out["channels"][channel] = {"granted": d.granted, "reason": d.reason, "policy": d.policy, "source": d.source,
                                    "recorded_at": d.recorded_at.isoformat() if d.recorded_at else None}
    out["marketing_allowed"] = all(out["channels"][c]["granted"] for _, c in needs) if needs else None
    return out


@dataclass
class PathStep:
    """A step of the path a run would take: the action to preview (None for a branch) and what
    the dry run says about it."""

    step: int
    action: Action | None
    entry: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


def _path(engine: Engine, store: Store, rule: CompiledRule, customer_key: str, facts: dict[str, Any],
          now: datetime) -> list[PathStep]:
    """The steps a run started now would take, in order: each action with its due time (delay,
    weekday and time, quiet hours) and its A/B variant, each branch with its answer for this
    customer now (an email branch: not opened — the run has not sent it yet)."""
    from wooflow.consumer.conditions import compile_tree
    from wooflow.scheduler import timing
    from wooflow.scheduler.flow import assign

    tz = timing.zone(store.timezone)
    quiet = timing.quiet_hours(store.settings)
    with engine.connect() as conn:
        winners = {int(r[0]): str(r[1]) for r in conn.execute(
            select(variant_tests.c.step, variant_tests.c.winner).where(
                variant_tests.c.rule_id == rule.id, variant_tests.c.version == rule.version,
                variant_tests.c.winner.is_not(None)))}
    program = rule.program
    out: list[PathStep] = []
    due_of: dict[int, datetime] = {}
    at: int | None = 0 if program.nodes else None
    while at is not None:
        node = program.nodes[at]
        if node.action is not None:
            a = node.action
            due = timing.due_at(now, a.delay_s, a.at, timing.zone(a.at.timezone) if a.at is not None and
                                a.at.timezone not in ("store", "customer") else tz, quiet=quiet, store_tz=tz,
                                message=a.type in timing.MESSAGE_ACTIONS)
            due_of[node.index] = due
            entry: dict[str, Any] = {"step": node.index, "where": node.path, "type": a.type, "delay": a.delay,
                                     "delay_s": a.delay_s, "due_at": due.isoformat()}
            params = a.params
            if a.variants:
                name = winners.get(node.index) or assign(a.variants, rule.id, node.index, customer_key)
                params = a.variant_params(name)
                entry["variant"] = name
                entry["variant_by"] = "the test's winner" if node.index in winners else "the customer's hash"
            entry["params"] = params
            out.append(PathStep(node.index, a, entry, params))
            at = node.next
            continue
        b = node.branch
        assert b is not None
        if b.condition.type == "condition" and b.condition.conditions is not None:
            yes = bool(compile_tree(b.condition.conditions)(facts))
            due = now + timedelta(seconds=b.delay_s)
            reason = f"the customer's state {'meets' if yes else 'does not meet'} the conditions now"
        else:
            yes = False
            due = due_of.get(node.ref or 0, now) + timedelta(seconds=b.condition.within_s)
            reason = (f"decided at {due.isoformat()}: shown as not {b.condition.type.removeprefix('email_')} "
                      f"(the run has not sent the email yet); if it is, the run goes to step {node.yes}")
        out.append(PathStep(node.index, None, {"step": node.index, "where": node.path, "type": "branch",
                                               "due_at": due.isoformat(), "answer": "yes" if yes else "no",
                                               "reason": reason}))
        at = node.yes if yes else node.no
    return out


async def _plan(settings: Settings, engine: Engine, store: Store, rule: CompiledRule, schema: str, event: Record,
                trigger: str, cstate: Mapping[str, object], extra: Mapping[str, object],
                consent: dict[str, Any], path: list[PathStep]) -> list[dict[str, Any]]:
    from wooflow.workers import registry
    from wooflow.workers.registry import ActionContext
    from wooflow.workers.woo_client import WooClient

    services = None
    try:
        from wooflow.workers.services import build_services

        services = build_services(settings, engine)
    except Exception as exc:  # noqa: BLE001 - previews degrade, the dry run still answers
        log.info("dry run without worker services: %s", exc)
    woo = WooClient(store, timeout=10.0)
    planned: list[dict[str, Any]] = []
    steps: dict[int, dict[str, Any]] = {}
    try:
        for p in path:
            entry = dict(p.entry)
            action = p.action
            if action is None:
                planned.append(json.loads(to_json(entry)))
                continue
            step = p.step
            cmd = build_command(rule_id=rule.id, rule_version=rule.version, step=step, action_type=action.type,
                                params=p.params, delay_s=action.delay_s, schema=schema, event=event,
                                trigger=trigger, state=cstate, dry_run=True, extra=extra)
            handler = registry.get(action.type)
            if handler is None:
                entry.update(status="error", message=f"unknown action {action.type!r}")
            elif p.params.get("marketing") is True and consent.get("checked") and \
                    not (verdict := consent["channels"].get(MARKETING_CHANNELS.get(action.type, "email"), {})).get(
                        "granted"):
                entry.update(status="skipped", message=f"no valid marketing consent: this step would be skipped "
                                                       f"({verdict.get('reason', '')})",
                             details={"reason": "no_consent", "policy": verdict.get("policy"),
                                      "consent": verdict.get("reason"), "consent_source": verdict.get("source")})
            else:
                try:
                    params = handler.Params.model_validate(p.params)
                    ctx = ActionContext(store, cmd, params, woo=woo, dry_run=True, services=services, steps=steps)
                    res = await handler.dry_run(ctx)
                    entry.update(status=res.status, message=res.message, details=res.details)
                    steps[step] = res.details if isinstance(res.details, dict) else {}
                except Exception as exc:  # noqa: BLE001 - report, don't fail the whole dry run
                    entry.update(status="error", message=f"{type(exc).__name__}: {exc}")
            planned.append(json.loads(to_json(entry)))
    finally:
        await woo.aclose()
        if services is not None:
            await services.aclose()
    return planned


async def run_dry_run(settings: Settings, engine: Engine, store_id: str, rule_id: int, *, order_id: int | None,
                      customer_id: int | None) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(rules).where(rules.c.id == rule_id, rules.c.store_id == store_id)).mappings().first()
    if row is None:
        raise HTTPException(404, f"rule {rule_id} not found")
    rule = compile_rule(dict(row))
    store = StoreCache(engine, 0).get(store_id)
    if store is None:
        raise HTTPException(404, f"store {store_id!r} not found")
    run_id = uuid.uuid4().hex[:16]
    order_ev: OrderEvent | None = None
    customer_ev: CustomerEvent | None = None
    event: OrderEvent | CustomerEvent
    if order_id is not None:
        order_ev = _order_event(store, await _fetch(store, f"/orders/{order_id}"), run_id)
        order = order_ev["order"]
        schema, event, email = "OrderEvent", order_ev, order["billing"]["email"] if order else None
        subject = {"type": "order", "id": order_id}
    else:
        customer_ev = _customer_event(store, await _fetch(store, f"/customers/{customer_id}"), run_id)
        schema, event = "CustomerEvent", customer_ev
        email = customer_ev["customer"]["email"] if customer_ev["customer"] else None
        subject = {"type": "customer", "id": customer_id}

    # The customer's state as wooflow stored it; the event is applied in memory only.
    state = StateBatch()
    lo = loyalty_of(store.settings, store.currency)
    who = (store.id, event["customer_key"])
    with engine.connect() as conn:
        state.load(conn, {who}, {(store.id, order_ev["order_id"])} if order_ev is not None else set())
        state.load_subscriptions(conn, set(), {who})
    ctx = apply_order(order_ev, state, lo) if order_ev is not None else \
        apply_customer(customer_ev, state, lo) if customer_ev is not None else None
    assert ctx is not None
    ctx.customer_subscriptions = state.subs_of.get(who)
    spec = TRIGGERS[rule.trigger]
    if spec.schema == SCHEDULED:
        # No event fires these: ask the scheduler's own candidate query about this customer.
        trigger_fires, trigger_reason = _scheduled(settings, engine, store, rule, event["customer_key"])
    else:
        trigger_fires = spec.schema == schema and spec.fires(ctx) and (rule.options is None or rule.options(ctx))
        trigger_reason = _trigger_reason(spec.schema, schema, ctx, bool(trigger_fires))
    history = ctx.after.history if ctx.after is not None else None
    catalog = await _catalog(settings, engine, store.id, order_ev, history.products() if history else ())
    facts = LazyFacts(ctx, catalog)
    conditions = explain(rule.spec.conditions, facts)
    items = _items(rule, spec, ctx, facts) if spec.each_line_item else None
    if items is not None:  # a per-line-item trigger: the rule runs once per matching item
        conditions = {**conditions, "result": any(i["matched"] for i in items),
                      "reason": f"{sum(i['matched'] for i in items)} of {len(items)} line items match"}
    cust = ctx.customer
    resource = {k: v for k, v in (("order", ctx.order), ("customer", ctx.profile)) if v}
    path = _path(engine, store, rule, event["customer_key"], facts.materialise(), get_clock(settings).now())
    consent = _consent(settings, engine, store, path, email or (cust.email if cust else None),
                       event["customer_key"], {"customer_key": event["customer_key"], **resource})
    cstate: Mapping[str, object] = cust.public() if cust is not None else {}
    planned = await _plan(settings, engine, store, rule, schema, event, rule.trigger, cstate,
                          {"previous_status": ctx.previous_status, "trigger": rule.trigger}, consent, path)
    result: dict[str, Any] = {
        "dry_run": True, "rule_id": rule.id, "rule_version": rule.version, "rule_name": rule.spec.name,
        "enabled": rule.spec.enabled, "subject": subject, "customer_key": event["customer_key"],
        "trigger": {"name": rule.trigger, "listens_to": spec.schema, "would_fire_now": bool(trigger_fires),
                    "reason": trigger_reason},
        "conditions": conditions, "matched": bool(conditions["result"]), "consent": consent,
        "customer_state": json.loads(to_json(cstate)),
        "state": _state(engine, store.id, rule.keep),
        "facts": json.loads(to_json({k: v for k, v in facts.materialise().items()})),
        **({"line_items": items} if items is not None else {}),
        "products": _products(catalog, store.id, order_ev),
        "actions": planned,
        "path": [{"step": p["step"], "where": p["where"], "type": p["type"]} for p in planned],
        "goals": rule.spec.goals, "exit_conditions": rule.spec.exit_conditions,
        "when_disabled": rule.spec.when_disabled,
        "would_run": bool(conditions["result"]) and rule.spec.enabled,
    }
    result["audit_id"] = _record(engine, store.id, rule, event, subject, result)
    return result


def _state(engine: Engine, store_id: str, need: Keep) -> StateView:
    """Which state the rule reads and since when the consumer keeps it for the store
    (consumer/needs.py): a rule added later sees only what was kept from then on."""
    with engine.connect() as conn:
        return state_view(conn, store_id, need)
def _ordered_ids(order_ev: OrderEvent | None) -> set[int]:
    order = order_ev["order"] if order_ev is not None else None
    return {li["product_id"] or li["variation_id"] for li in order["line_items"]} - {0} if order else set()


def _items(rule: Any, spec: Any, ctx: Any, facts: LazyFacts) -> list[dict[str, Any]]:
    """A per-line-item rule's conditions on each line item of the order."""
    out = []
    for li in (ctx.order.get("line_items") or ()) if ctx.order is not None else ():
        explained = explain(rule.spec.conditions, ItemFacts(facts, li))
        out.append({"id": li["id"], "product_id": li["product_id"], "variation_id": li.get("variation_id") or 0,
                    "matched": bool(explained["result"]), "conditions": explained})
    return out


async def _catalog(settings: Settings, engine: Engine, store_id: str,
                   order_ev: OrderEvent | None, purchased: Iterable[int] = ()) -> ProductCatalog | None:
    """The ordered (and, for the purchase-history fields, the purchased) products as the rule
    consumer would see them: the catalog, then the store for those it lacks (bounded by the
    same timeout); nothing is written."""
    ids = _ordered_ids(order_ev) | set(purchased)
    if not ids:
        return None
    catalog = catalog_for(settings, engine, record=False)
    try:
        await asyncio.to_thread(catalog.prepare, {store_id: ids})
    finally:
        catalog.close()
    return catalog


def _products(catalog: ProductCatalog | None, store_id: str, order_ev: OrderEvent | None) -> dict[str, Any]:
    """What the catalog says about each ordered product (null: unknown)."""
    out: dict[str, Any] = {}
    for pid in sorted(_ordered_ids(order_ev)):
        p = catalog.get(store_id, pid) if catalog is not None else None
        parent = catalog.get(store_id, p.parent_id) if catalog is not None and p is not None and p.parent_id \
            else None
        out[str(pid)] = None if p is None else {
            "type": p.type, "parent_id": p.parent_id, "category_ids": list(p.category_ids),
            "tag_ids": list(p.tag_ids), "source": p.source,
            "parent": None if parent is None else {"category_ids": list(parent.category_ids),
                                                   "tag_ids": list(parent.tag_ids), "source": parent.source}}
    return out


def _scheduled(settings: Settings, engine: Engine, store: Store, rule: Any, customer_key: str) -> tuple[bool, str]:
    """Would the scheduler's next scan fire this rule for this customer? The same read-only
    candidate queries the scan runs (scheduler/scan.py), at the scheduler's clock's now."""
    from wooflow.clock import get_clock
    from wooflow.scheduler import scan
    from wooflow.scheduler.triggers import validate_options

    now = get_clock(settings).now()
    try:
        opts: Any = validate_options(rule.trigger, rule.spec.trigger_options)
    except ValueError as exc:
        return False, f"the rule's trigger options are invalid: {exc}"
    with engine.connect() as conn:
        if rule.trigger == "abandoned_cart":
            return scan.cart_verdict(conn, store, customer_key, opts, now)
        tz = ZoneInfo(store.timezone or "UTC")
        found = scan.QUALIFIERS[rule.trigger](conn, store, rule, opts, now, tz, who=customer_key)
    if found:
        return True, (f"the scheduler's scan at {now.isoformat()} finds this customer (period {found[0].period}) "
                      "and would fire the trigger")
    return False, (f"the scheduler's scan at {now.isoformat()} does not find this customer: not due, or already "
                   "fired for this period; conditions were evaluated anyway")


def _trigger_reason(listens: str, schema: str, ctx: Any, fires: bool) -> str:
    if listens != schema:
        return f"the trigger listens to {listens} events; conditions were evaluated on this {schema} anyway"
    if fires:
        return "given the state wooflow stored, this resource would fire the trigger now"
    return ("given the state wooflow stored, this resource would not fire the trigger now (e.g. the order was "
            "already seen, or its status did not change); conditions were evaluated anyway")


def _record(engine: Engine, store_id: str, rule: Any, event: Record, subject: dict[str, Any],
            result: dict[str, Any]) -> int:
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        audit_id = int(conn.execute(insert(rule_audit).values(
            store_id=store_id, rule_id=rule.id, action="dry_run", dry_run=True,
            details={"subject": subject, "matched": result["matched"], "trigger": result["trigger"],
                     "consent": result["consent"], "actions": result["actions"]})
            .returning(rule_audit.c.id)).scalar_one())
        rows = []
        for a in result["actions"]:
            key = hashlib.sha256(f"{rule.id}|{event['event_id']}|{a['step']}".encode()).hexdigest()[:40]
            rows.append({"log_id": f"{key}:dry_run", "idempotency_key": key, "store_id": store_id,
                         "customer_key": event["customer_key"], "rule_id": rule.id, "event_id": event["event_id"],
                         "step": a["step"], "action_type": a["type"], "status": "dry_run",
                         "message": str(a.get("message", ""))[:2000], "attempt": 1, "duration_ms": 0.0,
                         "dry_run": True, "details": {"subject": subject, "matched": result["matched"],
                                                      "planned_status": a.get("status"),
                                                      "audit_id": audit_id, **(a.get("details") or {})},
                         "executed_at": now})
        if rows:
            conn.execute(insert(execution_logs), rows)
    return audit_id
