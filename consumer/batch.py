"""One consumer batch, one method per step: the products its orders name made known
(catalog.py) → load state and link guests to customers (`_load_state`) → apply + match
every event in order (`_evaluate`) → frequency limits (`_limit`) → commands (`_build`,
or `_plan` for dry-run replays). Pure with respect to Kafka: the runner produces what
this returns (commands, re-routed events), and saves `state` and the catalog rows learnt
(after the commands are acknowledged, before offsets move).

Holdout rules (wooflow/holdout.py) decide after the frequency limits: their control group
gets no commands (`held_out`, logged by the runner) and both sides become exposures saved
with the state.

Linking (consumer/merge.py): a registered customer's event with an email whose guest key
the customer has not looked at yet loads that guest with the batch's other rows (one
query) and folds it into the customer before any event is applied. Events of a guest
that is merged (now or earlier) are not applied: the live consumer re-routes them to the
customer's partition; a replay, which never saves, applies them to the customer in place.

State is kept per store at the level its rules read (`keep_of`, consumer/needs.py),
decided once per store per batch: below `Keep.CUSTOMERS` no customer row is read or
written and no guest is linked; at `Keep.NOTHING` not even the order rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypedDict, cast

from sqlalchemy import Engine

from wooflow.consumer.apply import APPLIERS, STATEFUL, no_state, reads_state
from wooflow.consumer.catalog import CatalogProduct, ProductCatalog, batch_products
from wooflow.consumer.commands import (
    START_STEP,
    WORKFLOW_START,
    build_command,
    context_of,
    idempotency_key,
    start_command,
    to_json,
)
from wooflow.consumer.engine import Match, RuleEngine
from wooflow.consumer.merge import LINKED, Merge, email_of, fold_customer, fold_firing, guest_key
from wooflow.consumer.state import Firing, StateBatch, StateCache
from wooflow.consumer.tiers import Loyalty
from wooflow.consumer.triggers import TRIGGERS, Keep
from wooflow.consumer.values import Envelope, SubscriptionEventIn, as_order_event, ms, to_datetime
from wooflow.db.engine import unavailable
from wooflow.holdout import Exposure, held_out
from wooflow.schemas.codec import Record
from wooflow.schemas.types import ActionCommand

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


@dataclass(slots=True)
class Item:
    """A decoded event and where it came from (`source` is the Kafka message, or None)."""
    schema: str
    event: Envelope  # of `schema`, as the hot path decodes it (or in full: `raw` is None)
    source: Any = None
    raw: bytes | None = None  # the encoded event, decoded again in full only if it matches


class PlannedStep(TypedDict):
    """A step a dry-run replay would emit, without its payload."""

    rule_id: int
    step: int
    action_type: str
    idempotency_key: str


@dataclass
class Outcome:
    commands: list[tuple[Item, ActionCommand]] = field(default_factory=list)
    planned: list[tuple[Item, PlannedStep]] = field(default_factory=list)  # plan_only: instead of commands
    failed: list[tuple[Item, str, str]] = field(default_factory=list)  # (item, reason, error)
    matches: list[tuple[Item, Match]] = field(default_factory=list)
    skipped_by_frequency: int = 0
    held_out: list[tuple[Item, Match, Exposure]] = field(default_factory=list)  # a holdout rule's control group
    state: StateBatch = field(default_factory=StateBatch)
    rerouted: list[tuple[Item, str]] = field(default_factory=list)  # (event of a merged guest, its customer's key)
    products: list[CatalogProduct] = field(default_factory=list)  # catalog rows learnt, saved with the state


class FirstSights:
    """Which events of a batch (or of a replay's range) are later events of an order already
    seen, in a store where only first sights matter (`BatchProcessor.first_sight_only`):
    those are skipped undecoded. An order is seen if `known` (the state kept between
    batches) has its row — its first event id never changes — or an earlier event of this
    batch named it (a partition holds an order's events in order, so the first sight of an
    order comes before all its other events)."""

    def __init__(self, processor: BatchProcessor, peek: Callable[[bytes], tuple[str, int] | None],
                 known: Callable[[tuple[str, int]], str | None]) -> None:
        self.processor = processor
        self.peek = peek
        self.known = known
        self.only: dict[str, bool] = {}
        self.first: dict[tuple[str, int], str] = {}

    def later(self, store: str, schema: str, value: bytes) -> bool:
        only = self.only.get(store)
        if only is None:
            only = self.only[store] = self.processor.first_sight_only(store, schema)
        if not only:
            return False
        peeked = self.peek(value)
        if peeked is None:
            return False
        eid, oid = peeked
        key = (store, oid)
        first = self.first.get(key)
        if first is None:
            first = self.known(key)
            if first is None:
                self.first[key] = eid
                return False
        return first != eid


def allowed(f: Firing | None, rule: Any, event_id: str, at_ms: int) -> bool:
    """Frequency limits, decided on event time so a replay decides the same way."""
    if f is None or event_id in (f.first_event_id, f.last_event_id):
        return True
    freq = rule.frequency
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
                 full_decode: Callable[[bytes], tuple[str, Record]] | None = None,
                 latencies: list[float] | None = None,
                 context_event: Callable[[str, Record, bytes | None], Record] | None = None) -> None:
        self.engine = engine
        self.db = db
        self.loyalty = loyalty
        self.full_decode = full_decode
        # (schema, hot-path event, raw) → the event for command contexts: with logical types, or
        # with their JSON text already (`EventDecoder.json_event`); `to_json` writes both the same
        self.context_event = context_event
        self.cache: StateCache | None = None  # the live consumer's rows of earlier batches
        # a merged guest's events: re-routed to the customer's partition (live), or applied to
        # the customer in place (a replay, which never saves)
        self.reroute = True
        self.latencies = latencies  # per-event apply+match seconds, when someone wants them (benchmarks)

    def run(self, items: list[Item], *, now: datetime | None = None, only_rules: set[int] | None = None,
            dry_run: bool = False, plan_only: bool = False, state: StateBatch | None = None) -> Outcome:
        """`plan_only` (dry-run replays) decides everything but builds no command payloads:
        each planned step is `(item, PlannedStep)` in `planned`.
        `state`: rows carried over from earlier batches (a replay, which never saves): only
        customers and orders not in it yet are read from the database."""
        out = Outcome() if state is None else Outcome(state=state)
        keeps = self._keeps(items, out.state)
        catalog = self.engine.catalog
        if catalog is not None:  # the products the orders name, known before any is evaluated
            batch_products(catalog, ((it.schema, it.event) for it in items), self.engine.rules.uses_catalog)
            out.products = catalog.take_pending()
        moved = self._load_state(items, out.state, None if dry_run or plan_only else self.cache, keeps)
        if catalog is not None:  # the products of the histories the batch's customers bring
            _history_products(catalog, out.state, self.engine.rules.uses_catalog)
            out.products += catalog.take_pending()
        self._evaluate(items, out, moved, only_rules, keeps)
        if not out.matches:
            return out
        due = _holdout(out, self._limit(out))
        if plan_only:
            _plan(out, due)
        else:
            self._build(out, due, now or datetime.now(timezone.utc), dry_run)
        return out

    def keep_of(self, store: str) -> Keep:
        """The state kept for the store: what its rules read, everything if it has loyalty settings."""
        keep = self.engine.rules.keeps(store)
        if keep < Keep.CUSTOMERS and self.loyalty(store).configured:
            return Keep.CUSTOMERS
        return keep

    def first_sight_only(self, store: str, schema: str) -> bool:
        """Whether, for this store, an event of `schema` matters only if it is the first
        sight of its resource: the store keeps order first sights and nothing more, and
        every trigger of its rules on the schema fires only at a first sight (`new_order`).
        Then a later event of an order already seen (by its event id and order id, read
        with `EventDecoder.peek`) can neither change state nor fire: it is skipped undecoded."""
        if schema != "OrderEvent" or self.keep_of(store) != Keep.SEEN:
            return False
        return all(TRIGGERS[t].first_sight for t in self.engine.rules.triggers(store, schema))

    def _keeps(self, items: list[Item], state: StateBatch) -> dict[str, Keep]:
        """Each store's level for this batch, decided once (the rules may reload meanwhile);
        recorded with the batch's state (`StateBatch.levels`)."""
        keeps: dict[str, Keep] = {}
        for it in items:
            store = it.event["store_id"]
            if store not in keeps:
                keeps[store] = self.keep_of(store)
        state.levels.update(keeps)
        return keeps

    def _load_state(self, items: list[Item], state: StateBatch, cache: StateCache | None,
                    keeps: dict[str, Keep]) -> dict[tuple[str, str], str]:
        """Read the batch's customers and orders not in memory yet (one connection), fold
        the guests its customers have not looked at yet; → the guest keys whose events
        belong to a customer now."""
        known_c, known_o = state.customers, state.orders
        customers: set[tuple[str, str]] = set()
        orders: set[tuple[str, int]] = set()
        guests: set[tuple[str, str]] = set()
        links: list[tuple[tuple[str, str], str]] = []  # (customer, guest key) to look at
        subs: set[tuple[str, int]] = set()  # subscriptions named, and customers whose subscriptions are read
        subs_of: set[tuple[str, str]] = set()
        uses_subscriptions = self.engine.rules.uses_subscriptions
        for it in items:
            if it.schema in STATEFUL:
                ev = it.event
                if it.schema == "SubscriptionEvent":
                    subs.add((ev["store_id"], int(cast(SubscriptionEventIn, ev)["subscription_id"])))
                if uses_subscriptions(ev["store_id"]):
                    subs_of.add((ev["store_id"], ev["customer_key"]))
                keep = keeps[ev["store_id"]]
                if not reads_state(it.schema, keep):
                    continue
                oev = as_order_event(it.schema, ev)
                if oev is not None:
                    ok = (ev["store_id"], int(oev["order_id"]))
                    if ok not in known_o:
                        orders.add(ok)
                if keep < Keep.CUSTOMERS:
                    continue
                ck = (ev["store_id"], ev["customer_key"])
                if ck not in known_c:
                    customers.add(ck)
                kind = ck[1][:1]
                if kind == "g":
                    guests.add(ck)
                elif kind == "c":
                    email = email_of(it.schema, ev)
                    if email and not _linked(state, cache, ck, gk := guest_key(email)):
                        links.append((ck, gk))
                        if (ck[0], gk) not in known_c:
                            customers.add((ck[0], gk))
        if customers or orders or links or subs or subs_of:
            with self.db.connect() as conn:
                if customers or orders:
                    state.load(conn, customers, orders, cache)
                if links:
                    self._link(conn, state, links)
                if subs or subs_of:
                    state.load_subscriptions(conn, subs, subs_of)
        moved = _moved(state, guests) if guests or state.merges else {}
        if moved and not self.reroute:
            # applied in place: the customers they belong to must be in memory too
            targets = {(s, k) for (s, _), k in moved.items() if (s, k) not in known_c}
            if targets:
                with self.db.connect() as conn:
                    state.load(conn, targets, set())
        return moved

    def _evaluate(self, items: list[Item], out: Outcome, moved: dict[tuple[str, str], str],
                  only_rules: set[int] | None, keeps: dict[str, Keep]) -> None:
        """Apply every event to the state and match it against the rules, in order. The hot
        path (bench/rules): one loop, with no helper call per event."""
        state = out.state
        lat = self.latencies
        perf = time.perf_counter
        loyalties: dict[str, Loyalty] = {}
        for it in items:
            t0 = perf()
            ev = it.event
            if moved and it.schema in STATEFUL:
                target = moved.get((ev["store_id"], ev["customer_key"]))
                if target is not None:
                    if self.reroute:
                        out.rerouted.append((it, target))
                        continue
                    ev = it.event = {**ev, "customer_key": target}
            try:
                store = ev["store_id"]
                lo = loyalties.get(store)
                if lo is None:
                    lo = loyalties[store] = self.loyalty(store)
                apply = APPLIERS.get(it.schema)
                if apply is None:  # an event type without state (coupons, plugins' events)
                    apply = APPLIERS[it.schema] = no_state(it.schema)
                ctx = apply(ev, state, lo, keeps[store])
                if state.subs_of:
                    ctx.customer_subscriptions = state.subs_of.get((store, ev["customer_key"]))
                for m in self.engine.matches(ctx, only_rules):
                    out.matches.append((it, m))
            except Exception as exc:  # a poison event must not stall the partition
                if unavailable(exc):
                    raise  # PostgreSQL, not the event: the whole batch is read again (run_batches)
                log.exception("evaluation failed for %s", ev.get("event_id") if isinstance(ev, dict) else "?")
                out.failed.append((it, "evaluation_error", f"{type(exc).__name__}: {exc}"))
            if lat is not None:
                lat.append(perf() - t0)

    def _limit(self, out: Outcome) -> list[tuple[Item, Match]]:
        """Frequency limits: the matches that may fire, in order; each one allowed is
        recorded as a firing (counted in `skipped_by_frequency` otherwise)."""
        state = out.state
        limited = {(m.rule.id, it.event["customer_key"]) for it, m in out.matches if m.rule.limited}
        if not limited:
            return out.matches
        with self.db.connect() as conn:
            state.load_firings(conn, limited)
        due: list[tuple[Item, Match]] = []
        for it, m in out.matches:
            if m.rule.limited:
                ev = it.event
                at = ms(ev.get("occurred_at"))
                f = state.firings.get((m.rule.id, ev["customer_key"]))
                unit = m.event_id
                if not allowed(f, m.rule, unit, at):
                    out.skipped_by_frequency += 1
                    continue
                record(state, m.rule, ev["store_id"], ev["customer_key"], unit, at)
                c = state.customers.get((ev["store_id"], ev["customer_key"]))
                if c is not None:
                    # the customer row is written with its firings: a guest merged meanwhile
                    # refuses both together (state.py), so a firing never lands on a merged guest
                    c.dirty = True
            due.append((it, m))
        return due

    def _build(self, out: Outcome, due: list[tuple[Item, Match]], now: datetime, dry_run: bool) -> None:
        """One command per action of every match; the command context (the full event, the
        customer's state) is built once per (event, trigger) and shared by its rules and steps."""
        full: dict[int, Record] = {}
        contexts: dict[tuple[int, str, int], str] = {}  # (event, trigger, line item) → context JSON
        for it, m in due:
            ev = it.event
            try:
                ctx = m.ctx
                ckey = (id(it), m.trigger, m.item["id"] if m.item is not None else -1)
                context = contexts.get(ckey)
                if context is None:
                    fev = full.get(id(it))
                    if fev is None:
                        fev = full[id(it)] = self._full(it)
                    extra = match_extra(m, fev)
                    cstate = ctx.customer.public() if ctx.customer is not None else None
                    context = contexts[ckey] = to_json(context_of(it.schema, fev, cstate, extra))
                event = ev if m.item is None else {**ev, "event_id": m.event_id}
                if m.rule.staged:  # one control row; the scheduler stores the steps as the run goes
                    out.commands.append((it, start_command(
                        rule_id=m.rule.id, rule_version=m.rule.version, schema=it.schema, event=event,
                        trigger=m.trigger, now=now, context_json=context)))
                    continue
                for step, action in enumerate(m.rule.actions):
                    out.commands.append((it, build_command(
                        rule_id=m.rule.id, rule_version=m.rule.version, step=step, action_type=action.type,
                        params={}, params_json=action.params_json, delay_s=action.delay_s, schema=it.schema,
                        event=event, trigger=m.trigger, now=now, dry_run=dry_run, context_json=context)))
            except Exception as exc:
                if unavailable(exc):
                    raise
                log.exception("building commands failed")
                out.failed.append((it, "evaluation_error", f"{type(exc).__name__}: {exc}"))

    def _link(self, conn: Any, state: StateBatch, links: list[tuple[tuple[str, str], str]]) -> None:
        """Fold the guests these customers have not looked at yet into them (consumer/merge.py)."""
        folded: set[tuple[str, str]] = set()
        for (store, ck), gk in links:
            c = state.customer(store, ck)
            linked = c.engine.get(LINKED, [])
            if gk in linked or (store, gk) in state.merges:
                continue
            c.engine[LINKED] = [*linked, gk]
            c.dirty = True
            g = state.customers.get((store, gk))
            if g is not None and g.merged_into is not None:
                continue  # another customer's (or already this one's)
            exists = g is not None and (store, gk) in state.versions
            state.merges[(store, gk)] = Merge(store, gk, ck, g if exists else None)
            if g is not None and exists:
                fold_customer(c, g, self.loyalty(store))
                folded.add((store, gk))
        if not folded:
            return
        found = state.firings_of(conn, folded)
        state.load_firings(conn, {(r, state.merges[k].customer_key) for k, fs in found.items() for r in fs})
        for k, fs in found.items():
            m = state.merges[k]
            m.firings = fs
            for r, f in fs.items():
                state.firings[(r, m.customer_key)] = fold_firing(state.firings.get((r, m.customer_key)), f,
                                                                 m.customer_key)

    def _full(self, it: Item) -> Record:
        if it.raw is None:  # not from the hot-path decoder: already complete
            return it.event
        if self.context_event is not None:
            return self.context_event(it.schema, it.event, it.raw)
        if self.full_decode is not None:
            return self.full_decode(it.raw)[1]
        return it.event


def match_extra(m: Match, event: Record) -> dict[str, object]:
    """What a match adds to its command context: the trigger, the status it came from, the
    refund a refund trigger saw, and a per-line-item match's line item (as `event` holds it)."""
    ctx = m.ctx
    extra: dict[str, object] = {"previous_status": ctx.previous_status, "trigger": m.trigger}
    if ctx.refund is not None:
        before, after = ctx.refund
        extra["refund"] = {"amount": after - before, "total_refunded": after}
    if m.item is not None:
        order = event.get("order")
        items = order.get("line_items") if isinstance(order, dict) else None
        extra["item"] = next((li for li in items or () if isinstance(li, dict) and li.get("id") == m.item["id"]),
                             m.item)
    return extra


def _history_products(catalog: ProductCatalog, state: StateBatch, wants: Callable[[str], bool]) -> None:
    """Make known the products of the loaded customers' purchase histories, for the stores
    with a rule on a catalog field (`purchased_categories_all_time` among them)."""
    wanted: dict[str, set[int]] = {}
    for (store, _), c in state.customers.items():
        h = c.agg.history
        if h is not None and h.orders and wants(store):
            wanted.setdefault(store, set()).update(h.products())
    if wanted:
        catalog.prepare(wanted)


def _holdout(out: Outcome, due: list[tuple[Item, Match]]) -> list[tuple[Item, Match]]:
    """Holdout rules (wooflow/holdout.py): their control group gets no commands; both sides
    are recorded as exposures with the state (the first one per rule and customer counts)."""
    kept: list[tuple[Item, Match]] = []
    for it, m in due:
        percent = m.rule.holdout_percent
        if not percent:
            kept.append((it, m))
            continue
        ev = it.event
        ckey = ev["customer_key"]
        control = held_out(m.rule.id, ckey, percent)
        x = Exposure(ev["store_id"], m.rule.id, ckey, control, m.event_id,  # per line item: its own unit
                     to_datetime(ev.get("occurred_at")) or datetime.now(timezone.utc))
        out.state.exposures.append(x)
        if control:
            out.held_out.append((it, m, x))
        else:
            kept.append((it, m))
    return kept


def _plan(out: Outcome, due: list[tuple[Item, Match]]) -> None:
    """A dry-run replay's plan: each step's rule, action and idempotency key, no payload."""
    for it, m in due:
        eid = m.event_id
        if m.rule.staged:
            out.planned.append((it, {"rule_id": m.rule.id, "step": START_STEP, "action_type": WORKFLOW_START,
                                     "idempotency_key": idempotency_key(m.rule.id, eid, START_STEP)}))
            continue
        for step, action in enumerate(m.rule.actions):
            out.planned.append((it, {"rule_id": m.rule.id, "step": step, "action_type": action.type,
                                     "idempotency_key": idempotency_key(m.rule.id, eid, step)}))


def _linked(state: StateBatch, cache: StateCache | None, key: tuple[str, str], gk: str) -> bool:
    """Whether the customer already looked at this guest key, from what is in memory (the
    batch's rows, else the cache: the list only grows, so a stale copy is still right)."""
    c = state.customers.get(key)
    if c is None and cache is not None:
        hit = cache.customers.get(key)
        c = hit[0] if hit is not None else None
    return c is not None and gk in c.engine.get(LINKED, ())


def _moved(state: StateBatch, guests: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Guest keys of this batch whose events belong to a customer now."""
    moved = {k: m.customer_key for k, m in state.merges.items()}
    for k in guests:
        g = state.customers.get(k)
        if g is not None and g.merged_into is not None:
            moved[k] = g.merged_into
    return moved
