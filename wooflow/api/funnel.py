"""The analytics API's reads: one store's funnel per rule, step and day over a range of UTC
days, from the tables built to answer them without scanning logs:

- executions by status: `execution_daily` (the log sink's counts per rule and day);
- opens and clicks: `engagement_daily` (each message's first open and first click, counted
  by the tracker per rule, step and UTC day: unique per message);
- conversions and revenue: `conversion_daily`, the sums of `message_conversions` per rule,
  step, day and currency (net of refunds; a cancelled, failed or fully refunded order
  counts neither);
- holdout groups: `holdout_daily`, the sums of `holdout_exposures` (each with what its
  customer ordered in the window after: wooflow/holdout.py) per rule, day and side.

Each function is one query for the whole store (or one rule), grouped in SQL.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from sqlalchemy import Connection, text

from wooflow import holdout
from wooflow.lift import Group


@dataclass(frozen=True, slots=True)
class Span:
    """A range of UTC days, both ends included; `start`/`end` bound its instants."""

    since: date
    until: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time(), timezone.utc)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.until + timedelta(days=1), time(), timezone.utc)


@dataclass
class Counts:
    """One cell of the funnel (a rule, a step, a day...)."""

    executions: dict[str, int] = field(default_factory=dict)  # by status
    sends: int = 0
    opened: int = 0
    clicked: int = 0
    conversions: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)  # by currency, net of refunds
    refunded: dict[str, Decimal] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        for k, v in other.executions.items():
            self.executions[k] = self.executions.get(k, 0) + v
        self.sends += other.sends
        self.opened += other.opened
        self.clicked += other.clicked
        self.conversions += other.conversions
        for money, more in ((self.revenue, other.revenue), (self.refunded, other.refunded)):
            for cur, amount in more.items():
                money[cur] = money.get(cur, Decimal(0)) + amount


# (rule, step) or (rule, day) → Counts
Cells = dict[tuple[int, object], Counts]

_EXECUTIONS = """
SELECT rule_id, {key} AS k, action_type, status, sum(n)::bigint AS n
FROM execution_daily
WHERE store_id = :store AND day >= :since AND day <= :until {rule}
GROUP BY rule_id, {key}, action_type, status
"""
_ENGAGEMENT = """
SELECT rule_id, {key} AS k, sum(opened)::bigint AS opened, sum(clicked)::bigint AS clicked
FROM engagement_daily
WHERE store_id = :store AND day >= :since AND day <= :until AND audience = :audience {rule}
GROUP BY rule_id, {key}
"""
_CONVERSIONS = """
SELECT rule_id, {key} AS k, currency, sum(conversions)::bigint AS conversions, sum(revenue) AS revenue,
       sum(refunded) AS refunded
FROM conversion_daily
WHERE store_id = :store AND day >= :since AND day <= :until {rule}
GROUP BY rule_id, {key}, currency
"""

_HOLDOUT = text("""
SELECT rule_id, held_out, sum(customers)::bigint AS customers, sum(converted)::bigint AS converted,
       sum(revenue) AS revenue, sum(revenue_sq) AS revenue_sq
FROM holdout_daily
WHERE store_id = :store AND day >= :since AND day <= :until AND (CAST(:rule AS bigint) IS NULL OR rule_id = :rule)
GROUP BY rule_id, held_out
""")


def _params(store: str, span: Span, rule: int | None, machine: bool) -> dict[str, object]:
    return {"store": store, "since": span.since, "until": span.until, "start": span.start, "end": span.end,
            "rule": rule, "audience": "any" if machine else "person"}


def _sql(template: str, by_day: bool, rule: int | None) -> str:
    return template.format(key="day" if by_day else "step", rule="AND rule_id = :rule" if rule else "")


def cells(conn: Connection, store: str, span: Span, *, by_day: bool = False, rule: int | None = None,
          machine: bool = False, message_actions: tuple[str, ...] = ()) -> Cells:
    """The funnel per (rule, step) — or (rule, UTC day) — of one store, or of one rule."""
    params = _params(store, span, rule, machine)
    out: Cells = defaultdict(Counts)
    for r in conn.execute(text(_sql(_EXECUTIONS, by_day, rule)), params):
        c = out[(int(r.rule_id), r.k)]
        c.executions[r.status] = c.executions.get(r.status, 0) + int(r.n)
        if r.status == "succeeded" and r.action_type in message_actions:
            c.sends += int(r.n)
    for r in conn.execute(text(_sql(_ENGAGEMENT, by_day, rule)), params):
        c = out[(int(r.rule_id), r.k)]
        c.opened, c.clicked = int(r.opened), int(r.clicked)
    for r in conn.execute(text(_sql(_CONVERSIONS, by_day, rule)), params):
        c = out[(int(r.rule_id), r.k)]
        c.conversions += int(r.conversions)
        c.revenue[r.currency] = c.revenue.get(r.currency, Decimal(0)) + Decimal(r.revenue)
        c.refunded[r.currency] = c.refunded.get(r.currency, Decimal(0)) + Decimal(r.refunded)
    return dict(out)


def by_step(conn: Connection, store: str, span: Span, rule: int | None, machine: bool,
            message_actions: tuple[str, ...]) -> dict[tuple[int, int], Counts]:
    """The funnel per (rule, step)."""
    found = cells(conn, store, span, rule=rule, machine=machine, message_actions=message_actions)
    return {(r, int(str(k))): c for (r, k), c in found.items()}


def by_day(conn: Connection, store: str, span: Span, rule: int | None, machine: bool,
           message_actions: tuple[str, ...]) -> dict[tuple[int, date], Counts]:
    """The funnel per (rule, UTC day)."""
    found = cells(conn, store, span, by_day=True, rule=rule, machine=machine, message_actions=message_actions)
    return {(r, k): c for (r, k), c in found.items() if isinstance(k, date)}


def step_actions(conn: Connection, store: str, span: Span, rule: int) -> dict[int, str]:
    """The action each step of the rule ran in the range (its current definition may differ)."""
    rows = conn.execute(text("SELECT DISTINCT ON (step) step, action_type FROM execution_daily "
                             "WHERE store_id = :store AND rule_id = :rule AND day >= :since AND day <= :until "
                             "ORDER BY step, day DESC"), _params(store, span, rule, False))
    return {int(r.step): str(r.action_type) for r in rows}


def holdout_groups(conn: Connection, store: str, span: Span, rule: int | None = None) -> dict[int, dict[bool, Group]]:
    """rule → {held_out: Group} for the customers who entered a holdout rule in the range,
    with their orders in the window after (kept on each exposure: wooflow/holdout.py)."""
    out: dict[int, dict[bool, Group]] = defaultdict(dict)
    for r in conn.execute(_HOLDOUT, _params(store, span, rule, False)):
        out[int(r.rule_id)][bool(r.held_out)] = Group(int(r.customers), int(r.converted), float(r.revenue),
                                                       float(r.revenue_sq))
    return dict(out)


_FORGET = [text(f"DELETE FROM {t} WHERE store_id = :store AND rule_id = :rule") for t in (
    "execution_daily", "messages", "engagements", "engagement_firsts", "engagement_daily", "message_conversions",
    "conversion_daily", "holdout_exposures", "holdout_daily")]


def forget_rule(conn: Connection, store: str, rule: int) -> None:
    """A deleted rule's analytics go with its execution logs (in the caller's transaction)."""
    for stmt in _FORGET:
        conn.execute(stmt, {"store": store, "rule": rule})


# The counts the sink and the tracker keep, computed again from the rows they counted (the
# execution logs still kept, the engagements), and every exposure's orders: for a store
# whose counts were lost or loaded around the roles (a restore, a bulk load).
_REBUILD = [text(sql) for sql in (
    "DELETE FROM execution_daily WHERE store_id = :store",
    """INSERT INTO execution_daily (store_id, rule_id, day, step, action_type, status, n)
       SELECT store_id, rule_id, (executed_at AT TIME ZONE 'UTC')::date, step, action_type, status, count(*)
       FROM execution_logs WHERE store_id = :store AND NOT dry_run GROUP BY 1, 2, 3, 4, 5, 6""",
    "DELETE FROM engagement_firsts WHERE store_id = :store",
    """INSERT INTO engagement_firsts (message_id, kind, audience, store_id, rule_id, step, at)
       SELECT DISTINCT ON (e.message_id, k.kind, a.audience) e.message_id, k.kind, a.audience, e.store_id, e.rule_id,
              e.step, e.at
       FROM engagements e CROSS JOIN (VALUES ('open'), ('click')) AS k(kind)
            CROSS JOIN (VALUES ('any'), ('person')) AS a(audience)
       WHERE e.store_id = :store AND (k.kind = 'open' OR e.kind = 'click') AND (a.audience = 'any' OR NOT e.machine)
       ORDER BY e.message_id, k.kind, a.audience, e.at""",
    "DELETE FROM engagement_daily WHERE store_id = :store",
    "DELETE FROM conversion_daily WHERE store_id = :store",
    """INSERT INTO conversion_daily (store_id, rule_id, day, step, currency, conversions, revenue, refunded)
       SELECT store_id, rule_id, (ordered_at AT TIME ZONE 'UTC')::date, step, currency,
              count(*) FILTER (WHERE NOT voided), sum(CASE WHEN voided THEN 0 ELSE revenue - refunded END),
              sum(refunded)
       FROM message_conversions WHERE store_id = :store GROUP BY 1, 2, 3, 4, 5""",
    "DELETE FROM holdout_daily WHERE store_id = :store",
    """INSERT INTO holdout_daily (store_id, rule_id, day, held_out, customers, converted, revenue, revenue_sq)
       SELECT store_id, rule_id, (exposed_at AT TIME ZONE 'UTC')::date, held_out, count(*),
              count(*) FILTER (WHERE orders > 0), sum(revenue), sum(revenue * revenue)
       FROM holdout_exposures WHERE store_id = :store GROUP BY 1, 2, 3, 4""",
    """INSERT INTO engagement_daily (store_id, rule_id, day, step, audience, opened, clicked)
       SELECT store_id, rule_id, (at AT TIME ZONE 'UTC')::date, step, audience, count(*) FILTER (WHERE kind = 'open'),
              count(*) FILTER (WHERE kind = 'click')
       FROM engagement_firsts WHERE store_id = :store GROUP BY 1, 2, 3, 4, 5""",
)]


def rebuild(conn: Connection, store: str) -> None:
    """Recompute the store's daily counts and holdout orders from their rows (in the caller's
    transaction)."""
    for stmt in _REBUILD:
        conn.execute(stmt, {"store": store})
    holdout.refresh_store(conn, store)
