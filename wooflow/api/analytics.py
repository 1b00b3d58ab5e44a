"""/v1/analytics: what the store's automations did and earned, scoped to the caller's store.

- GET /v1/analytics/summary — the funnel per rule and for the store over a range of UTC
  days: executions by status, sends, opened, clicked, conversions and revenue (net of
  refunds, per currency), and for holdout rules the lift over the control group;
- GET /v1/analytics/rules/{id} — one rule: the same per step and per day;
- GET|PUT /v1/analytics/settings — the store's attribution window and what starts it
  (wooflow/attribution_policy.py).

How the numbers are made: wooflow/api/funnel.py (queries), wooflow/lift.py (the intervals),
docs/analytics.md (for store owners).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, select

from wooflow import holdout
from wooflow.api import funnel
from wooflow.api.auth import CurrentStore
from wooflow.attribution_policy import MESSAGE_ACTIONS, AttributionPolicy, policy_in, policy_of, set_policy
from wooflow.clock import get_clock
from wooflow.db.tables import rules, stores
from wooflow.lift import METHOD, Group, Lift, compare
from wooflow.stores import Store, StoreCache

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
MAX_DAYS = 366


class Funnel(BaseModel):
    executions: dict[str, int] = Field(description="Steps run, by status (succeeded, skipped, failed, held_out, "
                                                   "exited, ...)")
    sends: int = Field(description="Messages sent (succeeded email and SMS steps)")
    opened: int = Field(description="Messages a person opened or clicked (unique per message)")
    clicked: int = Field(description="Messages a person clicked a link of (unique per message)")
    conversions: int = Field(description="Orders credited to the messages (cancelled, failed and fully refunded "
                                         "orders excluded)")
    revenue: dict[str, Decimal] = Field(description="Credited order totals net of refunds, per currency")
    refunded: dict[str, Decimal] = Field(description="Refunds of credited orders, per currency")


class GroupStats(BaseModel):
    customers: int = Field(description="Customers who entered the rule in the range")
    converted: int = Field(description="...and ordered within the attribution window after it")
    conversion_rate: float
    revenue: float = Field(description="Their net revenue in the store's currency")
    revenue_per_customer: float


class Interval(BaseModel):
    estimate: float
    low: float = Field(description="95% interval, lower end")
    high: float = Field(description="95% interval, upper end")


class Holdout(BaseModel):
    percent: float = Field(description="The rule's holdout share now")
    window_days: int
    currency: str = Field(description="Revenue figures are in this currency (the store's); orders in others count "
                                      "as conversions only")
    treated: GroupStats
    control: GroupStats = Field(description="The held-out customers: no effect, recorded only")
    conversion_lift: Interval | None = Field(description="Treated minus control conversion rate")
    revenue_per_customer_lift: Interval | None
    incremental_revenue: Interval | None = Field(description="Revenue per customer lift × treated customers")
    conclusive: bool = Field(description="Enough customers and conversions in both groups for the interval to hold")
    significant: bool = Field(description="Conclusive, and the conversion interval excludes 0")
    note: str = Field(description="Why the comparison is not conclusive yet, if it is not")
    method: str


class RuleStats(Funnel):
    rule_id: int
    name: str
    holdout: Holdout | None = Field(description="Only for rules that held customers out in the range")


class StepStats(Funnel):
    step: int
    action_type: str


class DayStats(Funnel):
    day: date


class Summary(BaseModel):
    store_id: str
    since: date
    until: date
    attribution: AttributionPolicy
    totals: Funnel
    rules: list[RuleStats]


class RuleReport(RuleStats):
    since: date
    until: date
    attribution: AttributionPolicy
    steps: list[StepStats]
    daily: list[DayStats]


def _span(request: Request, since: date | None, until: date | None) -> funnel.Span:
    until = until or get_clock(request.app.state.settings).now().date()
    since = since or until - timedelta(days=29)
    if since > until:
        raise HTTPException(422, "since must not be after until")
    if (until - since).days >= MAX_DAYS:
        raise HTTPException(422, f"at most {MAX_DAYS} days at a time")
    return funnel.Span(since, until)


def _store(request: Request, store_id: str) -> Store:
    store = StoreCache(request.app.state.engine, ttl=0).get(store_id)
    if store is None:
        raise HTTPException(404, f"store {store_id!r} not found")
    return store


def _store_in(conn: Connection, store_id: str) -> tuple[str, AttributionPolicy]:
    """The store's currency and attribution settings, on the report's own connection."""
    row = conn.execute(select(stores.c.currency, stores.c.settings).where(stores.c.id == store_id)).first()
    if row is None:
        raise HTTPException(404, f"store {store_id!r} not found")
    return str(row.currency), policy_in(row.settings, store_id)


def _funnel(c: funnel.Counts) -> dict[str, Any]:
    """A cell's fields, for any of the models built on `Funnel`."""
    return Funnel(executions=c.executions, sends=c.sends, opened=c.opened, clicked=c.clicked,
                  conversions=c.conversions, revenue=c.revenue, refunded=c.refunded).model_dump()


def _group(g: Group) -> GroupStats:
    return GroupStats(customers=g.customers, converted=g.converted, conversion_rate=g.rate, revenue=g.revenue,
                      revenue_per_customer=g.mean)


def _interval(i: object) -> Interval | None:
    return Interval.model_validate(i, from_attributes=True) if i is not None else None


def _holdout(groups: dict[bool, Group] | None, percent: float, policy: AttributionPolicy,
             currency: str) -> Holdout | None:
    if not groups:
        return None
    treated, control = groups.get(False, Group(0, 0, 0.0, 0.0)), groups.get(True, Group(0, 0, 0.0, 0.0))
    lift: Lift = compare(treated, control)
    return Holdout(percent=percent, window_days=policy.window_days, currency=currency, treated=_group(treated),
                   control=_group(control), conversion_lift=_interval(lift.conversion),
                   revenue_per_customer_lift=_interval(lift.revenue_per_customer),
                   incremental_revenue=_interval(lift.incremental_revenue), conclusive=lift.conclusive,
                   significant=lift.significant, note=lift.note, method=METHOD)


def _rules(conn: Connection, store_id: str, rule_id: int | None = None) -> list[tuple[int, str, float]]:
    q = select(rules.c.id, rules.c.name, rules.c.holdout_percent).where(rules.c.store_id == store_id)
    if rule_id is not None:
        q = q.where(rules.c.id == rule_id)
    return [(int(r.id), str(r.name), float(r.holdout_percent)) for r in conn.execute(q.order_by(rules.c.id))]


Since = Annotated[date | None, Query(description="First UTC day (default: 29 days before `until`)")]
Until = Annotated[date | None, Query(description="Last UTC day, included (default: today)")]


@router.get("/summary", response_model=Summary, summary="The store's funnel and revenue per rule")
def summary(request: Request, who: CurrentStore, since: Since = None, until: Until = None) -> Summary:
    span = _span(request, since, until)
    engine: Engine = request.app.state.engine
    with engine.connect() as conn:
        currency, policy = _store_in(conn, who.store_id)
        known = _rules(conn, who.store_id)
        cells = funnel.by_step(conn, who.store_id, span, None, policy.count_machine, MESSAGE_ACTIONS)
        groups = funnel.holdout_groups(conn, who.store_id, span)
    per_rule: dict[int, funnel.Counts] = {rid: funnel.Counts() for rid, _, _ in known}
    for (rid, _), c in cells.items():
        per_rule.setdefault(rid, funnel.Counts()).add(c)
    totals = funnel.Counts()
    out = []
    names = {rid: (name, pct) for rid, name, pct in known}
    for rid, c in sorted(per_rule.items(), key=lambda kv: kv[0]):
        if rid not in names:
            continue  # a rule deleted meanwhile
        totals.add(c)
        name, pct = names[rid]
        out.append(RuleStats(rule_id=rid, name=name, holdout=_holdout(groups.get(rid), pct, policy, currency),
                             **_funnel(c)))
    return Summary(store_id=who.store_id, since=span.since, until=span.until, attribution=policy,
                   totals=Funnel.model_validate(_funnel(totals)), rules=out)


@router.get("/rules/{rule_id}", response_model=RuleReport, summary="One rule's funnel per step and per day",
            responses={404: {"description": "No such rule in this store"}})
def rule_report(request: Request, who: CurrentStore, rule_id: int, since: Since = None,
                until: Until = None) -> RuleReport:
    span = _span(request, since, until)
    engine: Engine = request.app.state.engine
    with engine.connect() as conn:
        currency, policy = _store_in(conn, who.store_id)
        found = _rules(conn, who.store_id, rule_id)
        if not found:
            raise HTTPException(404, f"rule {rule_id} not found")
        steps_of = funnel.by_step(conn, who.store_id, span, rule_id, policy.count_machine, MESSAGE_ACTIONS)
        days_of = funnel.by_day(conn, who.store_id, span, rule_id, policy.count_machine, MESSAGE_ACTIONS)
        actions = funnel.step_actions(conn, who.store_id, span, rule_id)
        groups = funnel.holdout_groups(conn, who.store_id, span, rule_id)
    _, name, pct = found[0]
    total = funnel.Counts()
    steps = []
    for (_, step), c in sorted(steps_of.items(), key=lambda kv: kv[0]):
        total.add(c)
        steps.append(StepStats(step=step, action_type=actions.get(step, ""), **_funnel(c)))
    daily = [DayStats(day=day, **_funnel(c)) for (_, day), c in sorted(days_of.items(), key=lambda kv: kv[0])]
    return RuleReport(rule_id=rule_id, name=name, since=span.since, until=span.until, attribution=policy,
                      holdout=_holdout(groups.get(rule_id), pct, policy, currency), steps=steps, daily=daily,
                      **_funnel(total))


@router.get("/settings", response_model=AttributionPolicy, summary="The store's attribution settings")
def get_settings(request: Request, who: CurrentStore) -> AttributionPolicy:
    return policy_of(_store(request, who.store_id))


@router.put("/settings", response_model=AttributionPolicy, summary="Set the store's attribution settings")
def put_settings(body: AttributionPolicy, request: Request, who: CurrentStore) -> AttributionPolicy:
    engine: Engine = request.app.state.engine
    before = policy_of(_store(request, who.store_id))
    if not set_policy(engine, who.store_id, body):
        raise HTTPException(404, f"store {who.store_id!r} not found")
    if body.window_days != before.window_days:  # the holdout groups' orders are counted in the window
        with engine.begin() as conn:
            holdout.refresh_store(conn, who.store_id)
    return body
