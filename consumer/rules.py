"""Rules loaded from PostgreSQL, compiled once, indexed by (store, trigger).

`refresh()` is cheap (one aggregate query) and reloads only when something changed,
so running consumers pick up rule edits within the refresh interval.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from wooflow.consumer.conditions import Predicate
from wooflow.consumer.model import Action, RuleSpec
from wooflow.db.tables import rules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompiledRule:
    id: int
    store_id: str
    version: int
    spec: RuleSpec
    predicate: Predicate

    @property
    def trigger(self) -> str:
        return self.spec.trigger

    @property
    def actions(self) -> list[Action]:
        return self.spec.actions


def compile_rule(row: dict[str, Any]) -> CompiledRule:
    from wooflow.consumer.conditions import compile_tree

    spec = RuleSpec.model_validate({k: row[k] for k in (
        "name", "trigger", "trigger_options", "conditions", "actions", "priority", "enabled", "group_label",
        "frequency", "exit_conditions")})
    return CompiledRule(int(row["id"]), row["store_id"], int(row["version"]), spec, compile_tree(spec.conditions))


class RuleCache:
    def __init__(self, engine: Engine, refresh_interval: float = 1.0) -> None:
        self.engine = engine
        self.refresh_interval = refresh_interval
        self._index: dict[tuple[str, str], list[CompiledRule]] = {}
        self._by_id: dict[int, CompiledRule] = {}
        self._fingerprint: tuple[Any, ...] | None = None
        self._checked = 0.0
        self.invalid: dict[int, str] = {}

    def _current_fingerprint(self) -> tuple[Any, ...]:
        with self.engine.connect() as conn:
            row = conn.execute(select(func.count(), func.max(rules.c.updated_at), func.coalesce(func.sum(rules.c.version), 0),
                                      func.coalesce(func.sum(rules.c.id), 0))).one()
        return tuple(row)

    def refresh(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_interval:
            return False
        self._checked = now
        fp = self._current_fingerprint()
        if fp == self._fingerprint and not force:
            return False
        self._load()
        self._fingerprint = fp
        return True

    def _load(self) -> None:
        index: dict[tuple[str, str], list[CompiledRule]] = defaultdict(list)
        by_id: dict[int, CompiledRule] = {}
        invalid: dict[int, str] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(rules).where(rules.c.enabled.is_(True))).mappings().all()
        for row in rows:
            try:
                rule = compile_rule(dict(row))
            except (ValidationError, ValueError) as exc:
                # A rule written around the API's validation must not stop the pipeline.
                invalid[int(row["id"])] = str(exc)
                log.error("rule %s is invalid and skipped: %s", row["id"], exc)
                continue
            index[(rule.store_id, rule.trigger)].append(rule)
            by_id[rule.id] = rule
        for lst in index.values():
            lst.sort(key=lambda r: (r.spec.priority, r.id))
        self._index, self._by_id, self.invalid = dict(index), by_id, invalid
        log.info("loaded %d rules (%d invalid)", len(by_id), len(invalid))

    def for_trigger(self, store_id: str, trigger: str) -> list[CompiledRule]:
        return self._index.get((store_id, trigger), [])

    def get(self, rule_id: int) -> CompiledRule | None:
        return self._by_id.get(rule_id)

    def __len__(self) -> int:
        return len(self._by_id)
