"""One consumer batch: load state → apply + match every event in order → frequency
limits → commands. Pure with respect to Kafka: the runner produces what this returns,
and saves `state` (after the commands are acknowledged, before offsets move)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine

from wooflow.consumer.apply import APPLIERS, STATEFUL, no_state
from wooflow.consumer.commands import build_command, context_of, idempotency_key, to_json
from wooflow.consumer.engine import Match, RuleEngine
from wooflow.consumer.state import Firing, StateBatch, StateCache
from wooflow.consumer.tiers import Loyalty
from wooflow.consumer.values import ms

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


@dataclass(slots=True)
class Item:
    """A decoded event and where it came from (`source` is the Kafka message, or None)."""
    schema: str
    event: dict[str, Any]
    source: Any = None
    raw: bytes | None = None  # the encoded event, decoded again in full only if it matches


@dataclass
class Outcome:
    commands: list[tuple[Item, dict[str, Any]]] = field(default_factory=list)
    failed: list[tuple[Item, str, str]] = field(default_factory=list)  # (item, reason, error)
    matches: list[tuple[Item, Match]] = field(default_factory=list)
    skipped_by_frequency: int = 0
    state: StateBatch = field(default_factory=StateBatch)


def allowed(f: Firing | None, rule: Any, event_id: str, at_ms: int) -> bool:
    """Frequency limits, decided on event time so a replay decides the same way."""
    if f is None or event_id in (f.first_event_id, f.last_event_id):
        return True
    freq = rule.spec.frequency
    if freq.once_per_customer:
        return False
    if freq.per_days is not None:
        return at_ms - f.last_fired_ms >= freq.per_days * DAY_MS
    return True


def record(state: StateBatch, rule: Any, store_id: str, ckey: str, event_id: str, at_ms: int) -> None:
    key = (rule.id, ckey)
    f = state.firings.get(key)
    if f is None:
        state.firings[key] = Firing(rule.id, ckey, store_id, event_id, event_id, at_ms, 1, dirty=True)
    elif event_id not in (f.first_event_id, f.last_event_id):
        f.last_event_id, f.last_fired_ms, f.fired, f.dirty = event_id, max(at_ms, f.last_fired_ms), f.fired + 1, True


class BatchProcessor:
    def __init__(self, engine: RuleEngine, db: Engine, loyalty: Callable[[str], Loyalty],
                 full_decode: Callable[[bytes], tuple[str, dict[str, Any]]] | None = None,
                 latencies: list[float] | None = None,
                 context_event: Callable[[str, dict[str, Any], bytes | None], dict[str, Any]] | None = None) -> None:
        self.engine = engine
        self.db = db
        self.loyalty = loyalty
        self.full_decode = full_decode
        # (schema, hot-path event, raw) → the event for command contexts: with logical types, or
        # with their JSON text already (`EventDecoder.json_event`); `to_json` writes both the same
        self.context_event = context_event
        self.cache: StateCache | None = None  # the live consumer's rows of earlier batches
        self.latencies = latencies  # per-event apply+match seconds, when someone wants them (benchmarks)

    def run(self, items: list[Item], *, now: datetime | None = None, only_rules: set[int] | None = None,
            dry_run: bool = False, plan_only: bool = False, state: StateBatch | None = None) -> Outcome:
        """`plan_only` (dry-run replays) decides everything but builds no command payloads:
        each planned step is `(item, {"rule_id", "step", "action_type", "idempotency_key"})`.
        `state`: rows carried over from earlier batches (a replay, which never saves): only
        customers and orders not in it yet are read from the database."""
        out = Outcome() if state is None else Outcome(state=state)
        state = out.state
        customers: set[tuple[str, str]] = set()
        orders: set[tuple[str, int]] = set()
        known_c, known_o = state.customers, state.orders
        for it in items:
            if it.schema in STATEFUL:
                ev = it.event
                ck = (ev["store_id"], ev["customer_key"])
                if ck not in known_c:
                    customers.add(ck)
                if it.schema == "OrderEvent":
                    ok = (ev["store_id"], int(ev["order_id"]))
                    if ok not in known_o:
                        orders.add(ok)
        if customers or orders:
            with self.db.connect() as conn:
                state.load(conn, customers, orders, None if dry_run or plan_only else self.cache)

        lat = self.latencies
        perf = time.perf_counter
        loyalties: dict[str, Loyalty] = {}
        for it in items:
            t0 = perf()
            ev = it.event
            try:
                store = ev["store_id"]
                lo = loyalties.get(store)
                if lo is None:
                    lo = loyalties[store] = self.loyalty(store)
                apply = APPLIERS.get(it.schema)
                if apply is None:  # an event type without state (coupons, plugins' events)
                    apply = APPLIERS[it.schema] = no_state(it.schema)
                ctx = apply(ev, state, lo)
                for m in self.engine.matches(ctx, only_rules):
                    out.matches.append((it, m))
            except Exception as exc:  # a poison event must not stall the partition
                log.exception("evaluation failed for %s", ev.get("event_id") if isinstance(ev, dict) else "?")
                out.failed.append((it, "evaluation_error", f"{type(exc).__name__}: {exc}"))
            if lat is not None:
                lat.append(perf() - t0)

        if not out.matches:
            return out
        limited = {(m.rule.id, it.event["customer_key"]) for it, m in out.matches if m.rule.limited}
        if limited:
            with self.db.connect() as conn:
                state.load_firings(conn, limited)
        now = now or datetime.now(timezone.utc)
        full: dict[int, dict[str, Any]] = {}
        contexts: dict[tuple[int, str], str] = {}  # (event, trigger) → context JSON, shared by steps and rules
        for it, m in out.matches:
            ev = it.event
            if m.rule.limited:
                at = ms(ev.get("occurred_at"))
                f = state.firings.get((m.rule.id, ev["customer_key"]))
                if not allowed(f, m.rule, ev["event_id"], at):
                    out.skipped_by_frequency += 1
                    continue
                record(state, m.rule, ev["store_id"], ev["customer_key"], ev["event_id"], at)
            if plan_only:
                for step, action in enumerate(m.rule.actions):
                    out.commands.append((it, {"rule_id": m.rule.id, "step": step, "action_type": action.type,
                                              "idempotency_key": idempotency_key(m.rule.id, ev["event_id"], step)}))
                continue
            try:
                ctx = m.ctx
                ckey = (id(it), m.trigger)
                context = contexts.get(ckey)
                if context is None:
                    fev = full.get(id(it))
                    if fev is None:
                        fev = full[id(it)] = self._full(it)
                    extra = {"previous_status": ctx.previous_status, "trigger": m.trigger}
                    cstate = ctx.customer.public() if ctx.customer is not None else None
                    context = contexts[ckey] = to_json(context_of(it.schema, fev, cstate, extra))
                for step, action in enumerate(m.rule.actions):
                    out.commands.append((it, build_command(
                        rule_id=m.rule.id, rule_version=m.rule.version, step=step, action_type=action.type,
                        params=action.params, delay_s=action.delay_s, schema=it.schema, event=ev,
                        trigger=m.trigger, now=now, dry_run=dry_run, context_json=context)))
            except Exception as exc:
                log.exception("building commands failed")
                out.failed.append((it, "evaluation_error", f"{type(exc).__name__}: {exc}"))
        return out

    def _full(self, it: Item) -> dict[str, Any]:
        if it.raw is None:  # not from the hot-path decoder: already complete
            return it.event
        if self.context_event is not None:
            return self.context_event(it.schema, it.event, it.raw)
        if self.full_decode is not None:
            return self.full_decode(it.raw)[1]
        return it.event
