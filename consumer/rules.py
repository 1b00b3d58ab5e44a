"""Rules loaded from PostgreSQL, compiled once, indexed by (store, trigger).

Changes arrive through LISTEN/NOTIFY: a trigger on `rules` calls pg_notify with the store
id, and `RuleListener` (a thread with its own psycopg connection) reloads that store's
rules and swaps them in, typically within a few milliseconds. A cheap fingerprint query
every `fallback_interval` seconds catches anything a lost connection missed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from wooflow.consumer.catalog import CATALOG_FIELDS
from wooflow.consumer.conditions import FIELDS, Predicate, compile_tree, fields_used
from wooflow.consumer.model import Action, RuleSpec
from wooflow.consumer.needs import rule_keep
from wooflow.consumer.triggers import TRIGGERS, Check, Keep, TriggerSpec, for_schema
from wooflow.consumer.workflow import Program, compile_program
from wooflow.db.tables import rules

log = logging.getLogger(__name__)
CHANNEL = "wooflow_rules"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: int
    store_id: str
    version: int
    spec: RuleSpec
    predicate: Predicate
    options: Check | None
    # read per event on the hot path: copied out of the pydantic spec once
    trigger: str = field(init=False)
    program: Program = field(init=False)  # the steps, numbered and linked (consumer/workflow.py)
    staged: bool = field(init=False)  # runs start as one control row; the scheduler stores the steps
    actions: list[Action] = field(init=False)  # a linear workflow's steps (empty when staged)
    limited: bool = field(init=False)
    keep: Keep = field(init=False)  # the state it reads (consumer/needs.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", self.spec.trigger)
        program = compile_program(self.spec.actions)
        object.__setattr__(self, "program", program)
        object.__setattr__(self, "staged", program.staged)
        object.__setattr__(self, "actions", [] if program.staged else program.linear)
        object.__setattr__(self, "limited", self.spec.frequency.limited)
        object.__setattr__(self, "keep", rule_keep(self.spec))


def compile_rule(row: dict[str, Any]) -> CompiledRule:
    spec = RuleSpec.model_validate({**{k: row[k] for k in (
        "name", "trigger", "trigger_options", "conditions", "actions", "priority", "enabled", "group_label",
        "frequency", "exit_conditions", "goals", "when_disabled") if k in row},
        "holdout_percent": row.get("holdout_percent") or 0})
    options = TRIGGERS[spec.trigger].compile_options(spec.trigger_options)
    return CompiledRule(int(row["id"]), row["store_id"], int(row["version"]), spec, compile_tree(spec.conditions),
                        options)


class RuleCache:
    """The compiled rules of every store. Readers never lock: each reload builds new
    dicts and swaps them in with one assignment."""

    def __init__(self, engine: Engine, fallback_interval: float = 5.0) -> None:
        self.engine = engine
        self.fallback_interval = fallback_interval
        self._by_store: dict[str, list[CompiledRule]] = {}
        self._index: dict[tuple[str, str], list[CompiledRule]] = {}
        self._triggers: dict[tuple[str, str], frozenset[str]] = {}
        self._specs: dict[tuple[str, str], list[TriggerSpec]] = {}
        self._by_id: dict[int, CompiledRule] = {}
        self._keeps: dict[str, Keep] = {}
        self._catalog_stores: frozenset[str] = frozenset()
        self._subscription_stores: frozenset[str] = frozenset()
        self._disabled: dict[int, tuple[str, str]] = {}  # disabled rule → (store, `when_disabled`: exit | finish)
        self._fingerprint: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()  # serialises reloads (listener thread vs. fallback)
        self.invalid: dict[int, str] = {}
        self.reloads = 0

    # --- lookups (hot path) ------------------------------------------------------------
    def for_trigger(self, store_id: str, trigger: str) -> list[CompiledRule]:
        return self._index.get((store_id, trigger), [])

    def triggers(self, store_id: str, schema: str) -> frozenset[str]:
        """Triggers of `schema` that some enabled rule of the store listens to."""
        return self._triggers.get((store_id, schema), frozenset())

    def trigger_specs(self, store_id: str, schema: str) -> list[TriggerSpec]:
        """The same triggers' specs, in the registry's order (the hot path walks only these)."""
        return self._specs.get((store_id, schema), [])

    def uses_catalog(self, store_id: str) -> bool:
        """Whether some enabled rule of the store has a condition on the product catalog."""
        return store_id in self._catalog_stores

    def uses_subscriptions(self, store_id: str) -> bool:
        """Whether some enabled rule of the store has a condition on the customer's subscriptions."""
        return store_id in self._subscription_stores

    def get(self, rule_id: int) -> CompiledRule | None:
        return self._by_id.get(rule_id)

    def when_disabled(self, rule_id: int) -> str | None:
        """What a disabled rule's runs in flight do (`exit` or `finish`); None if the rule is
        not known to be disabled (enabled, or deleted)."""
        hit = self._disabled.get(rule_id)
        return hit[1] if hit is not None else None

    def keeps(self, store_id: str) -> Keep:
        """The state the store's enabled rules read (consumer/needs.py)."""
        return self._keeps.get(store_id, Keep.NOTHING)

    def __len__(self) -> int:
        return len(self._by_id)

    # --- loading ----------------------------------------------------------------------
    def _current_fingerprint(self) -> tuple[Any, ...]:
        with self.engine.connect() as conn:
            row = conn.execute(select(func.count(), func.max(rules.c.updated_at),
                                      func.coalesce(func.sum(rules.c.version), 0),
                                      func.coalesce(func.sum(rules.c.id), 0))).one()
        return tuple(row)

    def refresh(self, force: bool = False) -> bool:
        """The fallback: reload everything if the fingerprint moved (at most every interval)."""
        now = time.monotonic()
        if not force and now - self._checked < self.fallback_interval:
            return False
        self._checked = now
        fp = self._current_fingerprint()
        if fp == self._fingerprint and not force:
            return False
        self.reload()
        self._fingerprint = fp
        return True

    def _compile_rows(self, rows: list[Any]) -> tuple[list[CompiledRule], dict[int, str]]:
        out, invalid = [], {}
        for row in rows:
            try:
                out.append(compile_rule(dict(row)))
            except (ValidationError, ValueError) as exc:
                # A rule written around the API's validation must not stop the pipeline.
                invalid[int(row["id"])] = str(exc)
                log.error("rule %s is invalid and skipped: %s", row["id"], exc)
        return out, invalid

    def reload(self, store_id: str | None = None) -> None:
        """Reload every store's rules, or one store's (what a notification names)."""
        with self._lock:
            q = select(rules).where(rules.c.enabled.is_(True))
            if store_id is not None:
                q = q.where(rules.c.store_id == store_id)
            off = select(rules.c.id, rules.c.store_id, rules.c.when_disabled).where(rules.c.enabled.is_(False))
            if store_id is not None:
                off = off.where(rules.c.store_id == store_id)
            with self.engine.connect() as conn:
                rows = conn.execute(q).mappings().all()
                disabled = {int(r[0]): (str(r[1]), str(r[2])) for r in conn.execute(off)}
            if store_id is None:
                self._disabled = disabled
            else:
                self._disabled = {k: v for k, v in self._disabled.items() if v[0] != store_id} | disabled
            compiled, invalid = self._compile_rows(list(rows))
            by_store: dict[str, list[CompiledRule]] = defaultdict(list)
            for r in compiled:
                by_store[r.store_id].append(r)
            if store_id is None:
                new_by_store = dict(by_store)
                self.invalid = invalid
            else:
                new_by_store = dict(self._by_store)
                new_by_store.pop(store_id, None)
                if by_store.get(store_id):
                    new_by_store[store_id] = by_store[store_id]
                self.invalid = {k: v for k, v in self.invalid.items() if k not in {r["id"] for r in rows}} | invalid
            self._swap(new_by_store)
            self.reloads += 1
        log.info("loaded rules (%s): %d enabled in total", store_id or "all stores", len(self._by_id))

    def _swap(self, by_store: dict[str, list[CompiledRule]]) -> None:
        index: dict[tuple[str, str], list[CompiledRule]] = defaultdict(list)
        by_id: dict[int, CompiledRule] = {}
        triggers: dict[tuple[str, str], set[str]] = defaultdict(set)
        catalog_stores: set[str] = set()
        subscription_stores: set[str] = set()
        for store, lst in by_store.items():
            for rule in lst:
                index[(store, rule.trigger)].append(rule)
                by_id[rule.id] = rule
                triggers[(store, TRIGGERS[rule.trigger].schema)].add(rule.trigger)
                used = fields_used(rule.spec.conditions)
                if used & CATALOG_FIELDS:
                    catalog_stores.add(store)
                if any(FIELDS[f].scope == "subscriptions" for f in used if f in FIELDS):
                    subscription_stores.add(store)
        for lst in index.values():
            lst.sort(key=lambda r: (r.spec.priority, r.id))
        # one assignment each; a reader may see the new index with the old trigger set for
        # an instant, which only means one event is evaluated against either version
        self._index = dict(index)
        self._triggers = {k: frozenset(v) for k, v in triggers.items()}
        self._specs = {k: [t for t in for_schema(k[1]) if t.name in v] for k, v in triggers.items()}
        self._by_id = by_id
        self._keeps = {store: max((r.keep for r in lst), default=Keep.NOTHING) for store, lst in by_store.items()}
        self._catalog_stores = frozenset(catalog_stores)
        self._subscription_stores = frozenset(subscription_stores)
        self._by_store = by_store


class RuleListener(threading.Thread):
    """LISTEN wooflow_rules on a dedicated connection; reload the named store on NOTIFY.
    Reconnects on failure, and reloads everything after a reconnect (notifications sent
    while disconnected are lost)."""

    def __init__(self, cache: RuleCache, database_url: str, stop: threading.Event) -> None:
        super().__init__(name="rules-listener", daemon=True)
        self.cache = cache
        self.url = database_url
        self.stop = stop
        self.listening = threading.Event()

    def _dsn(self) -> str:
        from sqlalchemy.engine import make_url

        from wooflow.db.engine import normalise_url

        url = make_url(normalise_url(self.url)).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def run(self) -> None:
        import psycopg

        first = True
        while not self.stop.is_set():
            try:
                with psycopg.connect(self._dsn(), autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        self.cache.reload()
                    first = False
                    self.listening.set()
                    while not self.stop.is_set():
                        stores: set[str | None] = set()
                        for n in conn.notifies(timeout=0.5, stop_after=None):
                            stores.add(self._store_of(n.payload))
                            break  # drain whatever else is queued without waiting
                        if stores:
                            for n in conn.notifies(timeout=0.005):
                                stores.add(self._store_of(n.payload))
                        for store in stores:
                            self.cache.reload(store)
            except Exception as exc:  # connection lost: the fallback keeps working meanwhile
                self.listening.clear()
                log.warning("rule listener: %s; reconnecting", exc)
                self.stop.wait(1.0)

    @staticmethod
    def _store_of(payload: str) -> str | None:
        try:
            return str(json.loads(payload)["store_id"])
        except (ValueError, KeyError, TypeError):
            return None
