"""Rules loaded from PostgreSQL, compiled per store on first use, indexed by (store, trigger).

Built for many stores: at start a process reads every enabled rule as JSON text (one
query) and compiles a store's rules only when it first needs them (its first event), so
start-up costs a read, not 100,000 compilations, and stores without traffic cost their
text only. Compiling a store also settles what the batch path asks of it per event: the
triggers its rules listen to (`trigger_specs`), the state they read (`keeps`,
consumer/needs.py) and whether they read the product catalog (`uses_catalog`) or the
customer's subscriptions (`uses_subscriptions`). Conditions that many rules share
(`geo_scope equals eu`) are one compiled function, and so are equal trigger options; the
pydantic `RuleSpec` of a rule, and a workflow's `Program` (consumer/workflow.py), are
parsed again from its text only where they are asked for (the scheduler, dry runs, a staged
workflow's held-out log), never on the hot path: a rule keeps a linear workflow's steps,
whether it is staged, and its holdout share.

Disabled rules are not compiled; the cache keeps only what their runs in flight do
(`when_disabled`: exit or finish), for the scheduler.

Changes arrive through LISTEN/NOTIFY: a trigger on `rules` calls pg_notify with the store
id, and `RuleListener` (a thread with its own psycopg connection) reloads that store's
rules and swaps them in, typically within a few milliseconds. A cheap fingerprint query
every `fallback_interval` seconds catches anything a lost connection missed; when it moved,
per-store fingerprints say which stores to reload — never all of them. A reloaded store
whose rules read exactly as before (a digest of their text: a change made in SQL need not
touch `updated_at` or `version`) keeps its compiled rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func, select, text

from wooflow.consumer.catalog import CATALOG_FIELDS
from wooflow.consumer.commands import to_json
from wooflow.consumer.conditions import FIELDS, Predicate, compile_tree, fields_used
from wooflow.consumer.model import Action, Frequency, RuleSpec
from wooflow.consumer.needs import rule_keep
from wooflow.consumer.triggers import TRIGGERS, Check, Keep, TriggerSpec, for_schema
from wooflow.consumer.workflow import Program, compile_program
from wooflow.db.tables import rules

log = logging.getLogger(__name__)
CHANNEL = "wooflow_rules"

SPEC_FIELDS = ("name", "trigger", "trigger_options", "conditions", "actions", "priority", "enabled", "group_label",
               "frequency", "exit_conditions", "holdout_percent", "goals", "when_disabled")

# Shared compiled parts, by their JSON: bounded, cleared when full (they are rebuilt on demand).
_SHARED_MAX = 100_000
_leaves: dict[str, Predicate] = {}
_options: dict[tuple[str, str], Check | None] = {}
_steps: dict[tuple[str, str, str | None], CompiledStep] = {}
_frequencies: dict[tuple[bool, int | None], Frequency] = {}


@dataclass(frozen=True, slots=True)
class CompiledStep:
    """One action of a linear workflow as the hot path reads it (the API's `Action`, without
    pydantic): its parameters as the JSON a command carries."""
    type: str
    params_json: str
    delay: str | None
    delay_s: int

    @property
    def params(self) -> dict[str, Any]:
        return dict(json.loads(self.params_json))


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: int
    store_id: str
    version: int
    trigger: str
    priority: int
    staged: bool  # runs start as one control row; the scheduler stores the steps (consumer/workflow.py)
    actions: tuple[CompiledStep, ...]  # a linear workflow's steps (empty when staged)
    frequency: Frequency
    holdout_percent: float  # the share of its audience held out as a control group (wooflow/holdout.py)
    predicate: Predicate
    options: Check | None
    keep: Keep  # the state it reads (consumer/needs.py)
    reads_catalog: bool  # a condition on the product catalog (category, product_tag)
    reads_subscriptions: bool  # a condition on the customer's subscriptions
    source: bytes  # the rule's fields as JSON, zlib-compressed: `spec` is parsed from it when asked for
    limited: bool = field(init=False)
    _spec: list[RuleSpec] = field(init=False, default_factory=list, repr=False, compare=False)
    _program: list[Program] = field(init=False, default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limited", self.frequency.limited)

    @property
    def spec(self) -> RuleSpec:
        """The rule as the API validated it (parsed on first use, then kept)."""
        if not self._spec:
            self._spec.append(RuleSpec.model_validate_json(zlib.decompress(self.source)))
        return self._spec[0]

    @property
    def program(self) -> Program:
        """The workflow's steps, numbered and linked (consumer/workflow.py; built on first use)."""
        if not self._program:
            self._program.append(compile_program(self.spec.actions))
        return self._program[0]

    @property
    def first_action(self) -> str:
        """The type of the workflow's first action ("" if it has none)."""
        if self.actions:
            return self.actions[0].type
        return next((n.action.type for n in self.program.nodes if n.action is not None), "")


def _shared_options(trigger: str, options: dict[str, Any]) -> Check | None:
    key = (trigger, json.dumps(options, sort_keys=True, default=str))
    if key not in _options:
        if len(_options) >= _SHARED_MAX:
            _options.clear()
        _options[key] = TRIGGERS[trigger].compile_options(options)
    return _options[key]


def _shared_step(a: Action) -> CompiledStep:
    step = CompiledStep(a.type, to_json(a.params), a.delay, a.delay_s)
    key = (step.type, step.params_json, step.delay)
    if key not in _steps and len(_steps) >= _SHARED_MAX:
        _steps.clear()
    return _steps.setdefault(key, step)


def _compile(rule_id: int, store_id: str, version: int, spec: RuleSpec, source: bytes) -> CompiledRule:
    if len(_leaves) >= _SHARED_MAX:
        _leaves.clear()
    f = spec.frequency
    program = compile_program(spec.actions)  # raises WorkflowError (a ValueError) for a broken workflow
    used = fields_used(spec.conditions)
    rule = CompiledRule(rule_id, store_id, version, spec.trigger, spec.priority, program.staged,
                        () if program.staged else tuple(_shared_step(a) for a in program.linear),
                        _frequencies.setdefault((f.once_per_customer, f.per_days), f), spec.holdout_percent,
                        compile_tree(spec.conditions, leaves=_leaves),
                        _shared_options(spec.trigger, spec.trigger_options), rule_keep(spec),
                        bool(used & CATALOG_FIELDS),
                        any(FIELDS[u].scope == "subscriptions" for u in used if u in FIELDS), source)
    if program.staged:  # kept: the scheduler and dry runs walk it
        rule._program.append(program)
    return rule


def compile_rule(row: Mapping[str, Any]) -> CompiledRule:
    """A `rules` row (its columns) compiled; raises ValidationError/ValueError when invalid.
    Columns added since the first rules (goals, when_disabled, holdout_percent) may be absent."""
    spec = RuleSpec.model_validate({**{k: row[k] for k in SPEC_FIELDS if k in row},
                                    "holdout_percent": row.get("holdout_percent") or 0})
    rule = _compile(int(row["id"]), str(row["store_id"]), int(row["version"]), spec,
                    zlib.compress(spec.model_dump_json().encode()))
    rule._spec.append(spec)
    return rule


def compile_source(rule_id: int, store_id: str, version: int, source: bytes) -> CompiledRule:
    """A rule from its fields as zlib-compressed JSON (what `RuleCache` keeps until the store
    is used, and the compiled rule after it)."""
    spec = RuleSpec.model_validate_json(zlib.decompress(source))
    return _compile(rule_id, store_id, version, spec, source)


# rules (enabled or not), enabled rules, last change, Σ version, Σ id
Fingerprint = tuple[int, int, datetime | None, int, int]


@dataclass(slots=True)
class _Compiled:
    by_trigger: dict[str, list[CompiledRule]]
    triggers: dict[str, frozenset[str]]  # schema → triggers some enabled rule listens to
    specs: dict[str, list[TriggerSpec]]  # the same triggers' specs, in the registry's order
    by_id: dict[int, CompiledRule]
    keep: Keep  # the state the store's enabled rules read (consumer/needs.py)
    catalog: bool  # some enabled rule has a condition on the product catalog
    subscriptions: bool  # some enabled rule has a condition on the customer's subscriptions

    @classmethod
    def of(cls, rules: Sequence[CompiledRule]) -> _Compiled:
        by_trigger: dict[str, list[CompiledRule]] = defaultdict(list)
        triggers: dict[str, set[str]] = defaultdict(set)
        for r in rules:
            by_trigger[r.trigger].append(r)
            triggers[TRIGGERS[r.trigger].schema].add(r.trigger)
        for group in by_trigger.values():
            group.sort(key=lambda r: (r.priority, r.id))
        return cls(dict(by_trigger), {k: frozenset(v) for k, v in triggers.items()},
                   {k: [t for t in for_schema(k) if t.name in v] for k, v in triggers.items()},
                   {r.id: r for r in rules}, max((r.keep for r in rules), default=Keep.NOTHING),
                   any(r.reads_catalog for r in rules), any(r.reads_subscriptions for r in rules))


@dataclass(slots=True)
class _Store:
    """One store's enabled rules as read (id, version, compressed JSON), compiled on first use,
    and what its disabled rules' runs in flight do (rule → `when_disabled`)."""
    rows: list[tuple[int, int, bytes]]
    fingerprint: Fingerprint
    compiled: _Compiled | None = None
    disabled: dict[int, str] = field(default_factory=dict)
    digest: bytes = b""  # of every rule's id, version and fields as read ("" when built by hand)


_EMPTY: tuple[CompiledRule, ...] = ()
_NO_SPECS: list[TriggerSpec] = []

# Every rule of the selected stores, enabled or not (the fingerprint counts them all), with the
# fields of its spec as one JSON text.
_LOAD = f"""
SELECT id, store_id, version, enabled, updated_at, when_disabled,
       jsonb_build_object({", ".join(f"'{f}', {f}" for f in SPEC_FIELDS)})::text
FROM rules {{where}} ORDER BY store_id, id
"""
_FINGERPRINTS = text("""
SELECT store_id, count(*)::bigint, (count(*) FILTER (WHERE enabled))::bigint, max(updated_at),
       sum(version)::bigint, sum(id)::bigint
FROM rules GROUP BY store_id
""")


class RuleCache:
    """The rules of every store. Readers never lock: a store's rules are replaced with one
    assignment, and a store is compiled into its own entry (a reader that compiles an entry
    a reload just replaced compiles a copy nobody keeps)."""

    def __init__(self, engine: Engine, fallback_interval: float = 5.0) -> None:
        self.engine = engine
        self.fallback_interval = fallback_interval
        self._stores: dict[str, _Store] = {}
        self._rule_store: dict[int, str] = {}
        self._disabled: dict[int, str] = {}  # disabled rule → `when_disabled` (exit | finish)
        self._count = 0
        self._fingerprint: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()  # serialises reloads (listener thread vs. fallback)
        self.invalid: dict[int, str] = {}
        self.reloads = 0

    # --- lookups (hot path) ------------------------------------------------------------
    def _compiled(self, store_id: str) -> _Compiled | None:
        st = self._stores.get(store_id)
        if st is None:
            return None
        c = st.compiled
        if c is None:
            c = st.compiled = self._compile_store(store_id, st.rows)
        return c

    def for_trigger(self, store_id: str, trigger: str) -> Sequence[CompiledRule]:
        c = self._compiled(store_id)
        return c.by_trigger.get(trigger, _EMPTY) if c is not None else _EMPTY

    def triggers(self, store_id: str, schema: str) -> frozenset[str]:
        """Triggers of `schema` that some enabled rule of the store listens to."""
        c = self._compiled(store_id)
        return c.triggers.get(schema, frozenset()) if c is not None else frozenset()

    def trigger_specs(self, store_id: str, schema: str) -> list[TriggerSpec]:
        """The same triggers' specs, in the registry's order (the hot path walks only these)."""
        c = self._compiled(store_id)
        return c.specs.get(schema, _NO_SPECS) if c is not None else _NO_SPECS

    def keeps(self, store_id: str) -> Keep:
        """The state the store's enabled rules read (consumer/needs.py)."""
        c = self._compiled(store_id)
        return c.keep if c is not None else Keep.NOTHING

    def uses_catalog(self, store_id: str) -> bool:
        """Whether some enabled rule of the store has a condition on the product catalog."""
        c = self._compiled(store_id)
        return c.catalog if c is not None else False

    def uses_subscriptions(self, store_id: str) -> bool:
        """Whether some enabled rule of the store has a condition on the customer's subscriptions."""
        c = self._compiled(store_id)
        return c.subscriptions if c is not None else False

    def when_disabled(self, rule_id: int) -> str | None:
        """What a disabled rule's runs in flight do (`exit` or `finish`); None if the rule is
        not known to be disabled (enabled, or deleted)."""
        return self._disabled.get(rule_id)

    def get(self, rule_id: int) -> CompiledRule | None:
        store = self._rule_store.get(rule_id)
        c = self._compiled(store) if store is not None else None
        return c.by_id.get(rule_id) if c is not None else None

    def __len__(self) -> int:
        return self._count

    # --- compiling ----------------------------------------------------------------------
    def _compile_store(self, store_id: str, rows: list[tuple[int, int, bytes]]) -> _Compiled:
        compiled: list[CompiledRule] = []
        for rule_id, version, source in rows:
            try:
                rule = compile_source(rule_id, store_id, version, source)
            except (ValidationError, ValueError) as exc:
                # A rule written around the API's validation must not stop the pipeline.
                self.invalid[rule_id] = str(exc)
                log.error("rule %s is invalid and skipped: %s", rule_id, exc)
                continue
            self.invalid.pop(rule_id, None)
            compiled.append(rule)
        return _Compiled.of(compiled)

    # --- loading ----------------------------------------------------------------------
    def _current_fingerprint(self) -> tuple[Any, ...]:
        with self.engine.connect() as conn:
            row = conn.execute(select(func.count(), func.count().filter(rules.c.enabled), func.max(rules.c.updated_at),
                                      func.coalesce(func.sum(rules.c.version), 0),
                                      func.coalesce(func.sum(rules.c.id), 0))).one()
        return tuple(row)

    def refresh(self, force: bool = False) -> bool:
        """The fallback (at most every interval, now with `force`): if the rules moved since
        the last look, reload the stores whose rules did. True if anything was reloaded."""
        now = time.monotonic()
        if not force and now - self._checked < self.fallback_interval:
            return False
        self._checked = now
        fp = self._current_fingerprint()
        if fp == self._fingerprint:
            return False
        changed = self._sync()
        self._fingerprint = fp
        return changed

    def _sync(self) -> bool:
        """Reload the stores whose fingerprint differs from what is loaded."""
        if self._fingerprint is None:
            self.reload()
            return True
        with self.engine.connect() as conn:
            current = {r[0]: (int(r[1]), int(r[2]), r[3], int(r[4]), int(r[5])) for r in conn.execute(_FINGERPRINTS)}
        stale = {s for s, fp in current.items() if (st := self._stores.get(s)) is None or st.fingerprint != fp}
        stale |= set(self._stores) - set(current)
        for store in stale:
            self.reload(store)
        return bool(stale)

    def _read(self, store_id: str | None) -> dict[str, _Store]:
        where = "WHERE store_id = :store" if store_id is not None else ""
        by_store: dict[str, list[tuple[int, int, bool, datetime, bytes]]] = defaultdict(list)
        disabled: dict[str, dict[int, str]] = defaultdict(dict)
        digests: dict[str, hashlib.blake2b] = {}
        with self.engine.connect() as conn:
            # streamed, and kept compressed: 100,000 rules are ~70 MB of JSON, ~30 MB compressed
            for rid, sid, version, enabled, updated, when_off, source in conn.execution_options(
                    yield_per=2000).execute(text(_LOAD.format(where=where)), {"store": store_id}):
                raw = source.encode()
                h = digests.get(sid)
                if h is None:
                    h = digests[sid] = hashlib.blake2b(digest_size=16)
                h.update(f"{rid}:{version}:{len(raw)}:".encode())
                h.update(raw)
                by_store[sid].append((int(rid), int(version), bool(enabled), updated,
                                      zlib.compress(raw, 1) if enabled else b""))
                if not enabled:
                    disabled[sid][int(rid)] = str(when_off)
        out = {}
        for sid, rows in by_store.items():
            fp: Fingerprint = (len(rows), sum(r[2] for r in rows), max(r[3] for r in rows), sum(r[1] for r in rows),
                               sum(r[0] for r in rows))
            out[sid] = _Store([(rid, v, src) for rid, v, on, _, src in rows if on], fp,
                              disabled=disabled.get(sid, {}), digest=digests[sid].digest())
        return out

    def reload(self, store_id: str | None = None) -> None:
        """Reload every store's rules, or one store's (what a notification names). A store
        whose rules read as before keeps its compiled rules; a changed store that was in use
        is compiled again at once, the others when they are next used."""
        with self._lock:
            fp = self._current_fingerprint() if store_id is not None and self._fingerprint is not None else None
            fresh = self._read(store_id)
            old = self._stores if store_id is None else {store_id: st} if (st := self._stores.get(store_id)) \
                else {}
            for sid, st in fresh.items():
                prev = old.get(sid)
                if prev is not None and prev.digest == st.digest:
                    st.compiled = prev.compiled
                elif prev is not None and prev.compiled is not None:
                    st.compiled = self._compile_store(sid, st.rows)
            if store_id is None:
                self._install_all(fresh)
            else:
                self._install(store_id, fresh.get(store_id))
                if fp is not None:
                    # this store's change is in; a change of another store still moves the
                    # fingerprint (its notification or the fallback reloads it)
                    self._fingerprint = fp
            self.reloads += 1
        log.info("loaded rules (%s): %d enabled in total", store_id or "all stores", self._count)

    def _install_all(self, stores: dict[str, _Store]) -> None:
        rule_store = {rid: sid for sid, st in stores.items() for rid, _, _ in st.rows}
        self._stores, self._rule_store, self._count = stores, rule_store, len(rule_store)
        self._disabled = {rid: policy for st in stores.values() for rid, policy in st.disabled.items()}
        self.invalid = {k: v for k, v in self.invalid.items() if k in rule_store}

    def _install(self, store_id: str, st: _Store | None) -> None:
        prev = self._stores.get(store_id)
        if st is None:
            self._stores.pop(store_id, None)
        else:
            self._stores[store_id] = st
            for rid, _, _ in st.rows:
                self._rule_store[rid] = store_id
        keep = {rid for rid, _, _ in st.rows} if st is not None else set()
        for rid, _, _ in prev.rows if prev is not None else ():
            if rid not in keep:
                self._rule_store.pop(rid, None)
                self.invalid.pop(rid, None)
        for rid in prev.disabled if prev is not None else ():
            self._disabled.pop(rid, None)
        if st is not None:
            self._disabled.update(st.disabled)
        self._count += len(keep) - (len(prev.rows) if prev is not None else 0)

    def _swap(self, by_store: dict[str, list[CompiledRule]]) -> None:
        """Install already compiled rules (tests and benchmarks that build rules by hand)."""
        self._install_all({sid: _Store([(r.id, r.version, r.source) for r in lst], (len(lst), len(lst), None, 0, 0),
                                       _Compiled.of(lst)) for sid, lst in by_store.items()})


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
