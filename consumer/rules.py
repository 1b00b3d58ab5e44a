"""Rules loaded from PostgreSQL, compiled per store on first use, indexed by (store, trigger).

Built for many stores: at start a process reads every enabled rule as JSON text (one
query) and compiles a store's rules only when it first needs them (its first event), so
start-up costs a read, not 100,000 compilations, and stores without traffic cost their
text only. Compiling a store also settles what the batch path asks of it per event: the
state its rules read (`keeps`, consumer/needs.py) and whether they read the product
catalog (`uses_catalog`). Conditions that many rules share (`geo_scope equals eu`) are one compiled
function, and so are equal trigger options; the pydantic `RuleSpec` of a rule is parsed
again from its text only where it is asked for (the scheduler, dry runs), never on the hot
path.

Changes arrive through LISTEN/NOTIFY: a trigger on `rules` calls pg_notify with the store
id, and `RuleListener` (a thread with its own psycopg connection) reloads that store's
rules and swaps them in, typically within a few milliseconds. A cheap fingerprint query
every `fallback_interval` seconds catches anything a lost connection missed; when it moved,
per-store fingerprints say which stores to reload — never all of them.
"""

from __future__ import annotations

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
from wooflow.consumer.conditions import Predicate, compile_tree, fields_used
from wooflow.consumer.model import Action, Frequency, RuleSpec
from wooflow.consumer.needs import rule_keep
from wooflow.consumer.triggers import TRIGGERS, Check, Keep
from wooflow.db.tables import rules

log = logging.getLogger(__name__)
CHANNEL = "wooflow_rules"

SPEC_FIELDS = ("name", "trigger", "trigger_options", "conditions", "actions", "priority", "enabled", "group_label",
               "frequency", "exit_conditions")

# Shared compiled parts, by their JSON: bounded, cleared when full (they are rebuilt on demand).
_SHARED_MAX = 100_000
_leaves: dict[str, Predicate] = {}
_options: dict[tuple[str, str], Check | None] = {}
_steps: dict[tuple[str, str, str | None], Step] = {}
_frequencies: dict[tuple[bool, int | None], Frequency] = {}


@dataclass(frozen=True, slots=True)
class Step:
    """One action of a rule as the hot path reads it (the API's `Action`, without pydantic):
    its parameters as the JSON a command carries."""
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
    actions: tuple[Step, ...]
    frequency: Frequency
    predicate: Predicate
    options: Check | None
    keep: Keep  # the state it reads (consumer/needs.py)
    reads_catalog: bool  # a condition on the product catalog (category, product_tag)
    source: bytes  # the rule's fields as JSON, zlib-compressed: `spec` is parsed from it when asked for
    limited: bool = field(init=False)
    _spec: list[RuleSpec] = field(init=False, default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limited", self.frequency.limited)

    @property
    def spec(self) -> RuleSpec:
        """The rule as the API validated it (parsed on first use, then kept)."""
        if not self._spec:
            self._spec.append(RuleSpec.model_validate_json(zlib.decompress(self.source)))
        return self._spec[0]


def _shared_options(trigger: str, options: dict[str, Any]) -> Check | None:
    key = (trigger, json.dumps(options, sort_keys=True, default=str))
    if key not in _options:
        if len(_options) >= _SHARED_MAX:
            _options.clear()
        _options[key] = TRIGGERS[trigger].compile_options(options)
    return _options[key]


def _shared_step(a: Action) -> Step:
    step = Step(a.type, to_json(a.params), a.delay, a.delay_s)
    key = (step.type, step.params_json, step.delay)
    if key not in _steps and len(_steps) >= _SHARED_MAX:
        _steps.clear()
    return _steps.setdefault(key, step)


def _compile(rule_id: int, store_id: str, version: int, spec: RuleSpec, source: bytes) -> CompiledRule:
    if len(_leaves) >= _SHARED_MAX:
        _leaves.clear()
    f = spec.frequency
    return CompiledRule(rule_id, store_id, version, spec.trigger, spec.priority,
                        tuple(_shared_step(a) for a in spec.actions),
                        _frequencies.setdefault((f.once_per_customer, f.per_days), f),
                        compile_tree(spec.conditions, leaves=_leaves),
                        _shared_options(spec.trigger, spec.trigger_options), rule_keep(spec),
                        bool(fields_used(spec.conditions) & CATALOG_FIELDS), source)


def compile_rule(row: Mapping[str, Any]) -> CompiledRule:
    """A `rules` row (its columns) compiled; raises ValidationError/ValueError when invalid."""
    spec = RuleSpec.model_validate({k: row[k] for k in SPEC_FIELDS})
    rule = _compile(int(row["id"]), str(row["store_id"]), int(row["version"]), spec,
                    zlib.compress(spec.model_dump_json().encode()))
    rule._spec.append(spec)
    return rule


def compile_source(rule_id: int, store_id: str, version: int, source: bytes) -> CompiledRule:
    """A rule from its fields as zlib-compressed JSON (what `RuleCache` keeps until the store
    is used, and the compiled rule after it)."""
    spec = RuleSpec.model_validate_json(zlib.decompress(source))
    return _compile(rule_id, store_id, version, spec, source)


Fingerprint = tuple[int, datetime | None, int, int]  # rules (enabled or not), last change, Σ version, Σ id


@dataclass(slots=True)
class _Compiled:
    by_trigger: dict[str, list[CompiledRule]]
    triggers: dict[str, frozenset[str]]  # schema → triggers some enabled rule listens to
    by_id: dict[int, CompiledRule]
    keep: Keep  # the state the store's enabled rules read (consumer/needs.py)
    catalog: bool  # some enabled rule has a condition on the product catalog

    @classmethod
    def of(cls, rules: Sequence[CompiledRule]) -> _Compiled:
        by_trigger: dict[str, list[CompiledRule]] = defaultdict(list)
        triggers: dict[str, set[str]] = defaultdict(set)
        for r in rules:
            by_trigger[r.trigger].append(r)
            triggers[TRIGGERS[r.trigger].schema].add(r.trigger)
        for group in by_trigger.values():
            group.sort(key=lambda r: (r.priority, r.id))
        return cls(dict(by_trigger), {k: frozenset(v) for k, v in triggers.items()}, {r.id: r for r in rules},
                   max((r.keep for r in rules), default=Keep.NOTHING), any(r.reads_catalog for r in rules))


@dataclass(slots=True)
class _Store:
    """One store's enabled rules as read (id, version, compressed JSON), compiled on first use."""
    rows: list[tuple[int, int, bytes]]
    fingerprint: Fingerprint
    compiled: _Compiled | None = None


_EMPTY: tuple[CompiledRule, ...] = ()

# Every rule of the selected stores, enabled or not (the fingerprint counts them all), with the
# fields of its spec as one JSON text.
_LOAD = f"""
SELECT id, store_id, version, enabled, updated_at,
       jsonb_build_object({", ".join(f"'{f}', {f}" for f in SPEC_FIELDS)})::text
FROM rules {{where}} ORDER BY store_id, id
"""
_FINGERPRINTS = text("""
SELECT store_id, count(*)::bigint, max(updated_at), sum(version)::bigint, sum(id)::bigint
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

    def keeps(self, store_id: str) -> Keep:
        """The state the store's enabled rules read (consumer/needs.py)."""
        c = self._compiled(store_id)
        return c.keep if c is not None else Keep.NOTHING

    def uses_catalog(self, store_id: str) -> bool:
        """Whether some enabled rule of the store has a condition on the product catalog."""
        c = self._compiled(store_id)
        return c.catalog if c is not None else False

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
            row = conn.execute(select(func.count(), func.max(rules.c.updated_at),
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
            current = {r[0]: (int(r[1]), r[2], int(r[3]), int(r[4])) for r in conn.execute(_FINGERPRINTS)}
        stale = {s for s, fp in current.items() if (st := self._stores.get(s)) is None or st.fingerprint != fp}
        stale |= set(self._stores) - set(current)
        for store in stale:
            self.reload(store)
        return bool(stale)

    def _read(self, store_id: str | None) -> dict[str, _Store]:
        where = "WHERE store_id = :store" if store_id is not None else ""
        by_store: dict[str, list[tuple[int, int, bool, datetime, bytes]]] = defaultdict(list)
        with self.engine.connect() as conn:
            # streamed, and kept compressed: 100,000 rules are ~70 MB of JSON, ~30 MB compressed
            for rid, sid, version, enabled, updated, source in conn.execution_options(yield_per=2000).execute(
                    text(_LOAD.format(where=where)), {"store": store_id}):
                by_store[sid].append((int(rid), int(version), bool(enabled), updated,
                                      zlib.compress(source.encode(), 1) if enabled else b""))
        out = {}
        for sid, rows in by_store.items():
            fp: Fingerprint = (len(rows), max(r[3] for r in rows), sum(r[1] for r in rows), sum(r[0] for r in rows))
            out[sid] = _Store([(rid, v, src) for rid, v, on, _, src in rows if on], fp)
        return out

    def reload(self, store_id: str | None = None) -> None:
        """Reload every store's rules, or one store's (what a notification names). A store
        whose rules did not change keeps its compiled rules; a reloaded store that was in use
        is compiled again at once, the others when they are next used."""
        with self._lock:
            fp = self._current_fingerprint() if store_id is not None and self._fingerprint is not None else None
            fresh = self._read(store_id)
            old = self._stores if store_id is None else {store_id: st} if (st := self._stores.get(store_id)) \
                else {}
            for sid, st in fresh.items():
                prev = old.get(sid)
                if prev is not None and prev.fingerprint == st.fingerprint:
                    fresh[sid] = prev
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
        self._count += len(keep) - (len(prev.rows) if prev is not None else 0)

    def _swap(self, by_store: dict[str, list[CompiledRule]]) -> None:
        """Install already compiled rules (tests and benchmarks that build rules by hand)."""
        self._install_all({sid: _Store([(r.id, r.version, r.source) for r in lst], (len(lst), None, 0, 0),
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
