"""Synthesised trigger events → rule engine → workflow steps.

A scan hands over candidates ("customer K qualifies for trigger T in period P"); for
each rule of the trigger, `Firer.fire` builds the event with a deterministic id
(sha256 of store | customer | trigger | period), asks `RuleEngine.matches` whether the
rule's conditions hold on the customer's state, applies the rule's frequency limits,
records the firing in `trigger_firings` (primary key rule, customer, period — so it
fires once per period, whichever scheduler gets there first), and stores every step in
`scheduled_steps` (immediate ones due now) — except for a holdout rule's control group
(wooflow/holdout.py), which gets no steps; both sides are recorded as exposures. All of
it in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import Connection, text

from wooflow import holdout, metrics
from wooflow.consumer.batch import allowed, record
from wooflow.consumer.commands import build_command, start_command
from wooflow.consumer.engine import RuleEngine
from wooflow.consumer.rules import CompiledRule
from wooflow.consumer.state import StateBatch
from wooflow.consumer.tiers import loyalty_of
from wooflow.consumer.triggers import TriggerContext
from wooflow.consumer.values import ms
from wooflow.holdout import Exposure, held_out
from wooflow.scheduler.steps import store_steps
from wooflow.scheduler.triggers import SCHEMA
from wooflow.schemas.types import ActionCommand
from wooflow.stores import Store

log = logging.getLogger(__name__)


def synthetic_event_id(store_id: str, customer_key: str, trigger: str, period: str) -> str:
    return hashlib.sha256(f"{store_id}|{customer_key}|{trigger}|{period}".encode()).hexdigest()[:32]


@dataclass
class Candidate:
    store_id: str
    customer_key: str
    period: str                      # fires once per (rule, customer, period)
    trigger_at: datetime             # when the qualifying thing happened (exit checks compare with it)
    subject: str = ""                # product/category/cart...: behaviour cooldowns are per subject
    context: dict[str, Any] = field(default_factory=dict)  # extra template context
    subject_type: str = "customer"
    subject_id: str = ""


_FIRING = text("""
INSERT INTO trigger_firings (rule_id, customer_key, period, store_id, trigger, subject, event_id, fired_at)
VALUES (:rule_id, :ckey, :period, :store, :trigger, :subject, :event_id, :now)
ON CONFLICT (rule_id, customer_key, period) DO NOTHING
RETURNING event_id
""")


class SyntheticEvent(TypedDict):
    """What a time or behaviour trigger fires on: no Kafka record, an event of the scheduler's
    own (its id is derived from the candidate, so a rescan fires nothing twice)."""

    event_id: str
    store_id: str
    customer_key: str
    trigger: str
    period: str
    occurred_at: datetime
    received_at: None
    topic: str
    store_timezone: str
    currency: str


def event_of(store: Store, trigger: str, c: Candidate, now: datetime) -> SyntheticEvent:
    return {
        "event_id": synthetic_event_id(c.store_id, c.customer_key, trigger, c.period),
        "store_id": c.store_id,
        "customer_key": c.customer_key,
        "trigger": trigger,
        "period": c.period,
        "occurred_at": now,
        "received_at": None,
        "topic": f"scheduler.{trigger}",
        "store_timezone": store.timezone,
        "currency": store.currency,
    }


class Firer:
    def __init__(self, engine: RuleEngine) -> None:
        self.engine = engine

    def fire(self, conn: Connection, store: Store, rule: CompiledRule, trigger: str, candidates: list[Candidate],
             now: datetime) -> list[str]:
        """Event ids of the runs started (already-fired periods and unmet conditions start none)."""
        if not candidates:
            return []
        state = StateBatch()
        state.load(conn, {(c.store_id, c.customer_key) for c in candidates}, set())
        if rule.limited:
            state.load_firings(conn, {(rule.id, c.customer_key) for c in candidates})
        loyalty = loyalty_of(store.settings, store.currency)
        started: list[str] = []
        exposures: list[Exposure] = []
        percent = rule.holdout_percent
        at = ms(now)
        for c in candidates:
            event = event_of(store, trigger, c, now)
            customer = state.customer(c.store_id, c.customer_key)
            ctx = TriggerContext(schema=SCHEMA, event=event, loyalty=loyalty, customer=customer,
                                 currency=store.currency)
            if not self.engine.matches(ctx, {rule.id}):
                continue
            if rule.limited:
                if not allowed(state.firings.get((rule.id, c.customer_key)), rule, event["event_id"], at):
                    continue
                record(state, rule, c.store_id, c.customer_key, event["event_id"], at)
            if conn.execute(_FIRING, {"rule_id": rule.id, "ckey": c.customer_key, "period": c.period,
                                      "store": c.store_id, "trigger": trigger, "subject": c.subject,
                                      "event_id": event["event_id"], "now": now}).first() is None:
                continue  # this period already fired (another scan, a restart)
            if percent:
                x = Exposure(c.store_id, rule.id, c.customer_key, held_out(rule.id, c.customer_key, percent),
                             event["event_id"], now)
                exposures.append(x)
                if x.held_out:  # the rule's control group: fired (once per period), no steps
                    continue
            extra = {"trigger": trigger, "trigger_at": c.trigger_at, "period": c.period, **c.context}
            commands: list[ActionCommand] = []
            if rule.staged:  # one control row: the emitter stores the steps as the run goes (scheduler/flow.py)
                cmd = start_command(rule_id=rule.id, rule_version=rule.version, schema=SCHEMA, event=event,
                                    trigger=trigger, state=customer.public(), now=now, extra=extra)
                commands.append({**cmd, "subject_type": c.subject_type, "subject_id": c.subject_id or c.customer_key})
            for step, action in enumerate(rule.actions):
                cmd = build_command(rule_id=rule.id, rule_version=rule.version, step=step, action_type=action.type,
                                    params=action.params, delay_s=action.delay_s, schema=SCHEMA, event=event,
                                    trigger=trigger, state=customer.public(), now=now, extra=extra)
                commands.append({**cmd, "subject_type": c.subject_type,
                                 "subject_id": c.subject_id or c.customer_key})
            n = store_steps(conn, commands, now)
            metrics.scheduler_triggers.labels(c.store_id, trigger).inc()
            metrics.scheduler_steps.labels(c.store_id, "stored").inc(n)
            started.append(event["event_id"])
        if rule.limited:
            state.save(conn)
        holdout.save(conn, exposures)
        return started
