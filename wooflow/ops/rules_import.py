"""`wooflow rules import`: another automation plugin's rules into a store, dry run by
default.

Each rule the export maps to (`polski_pro.plan_import`) is created as the API's
`POST /v1/rules` creates one — action parameters checked against the workers' registry,
a `created` entry in `rule_audit` (actor `import polski-pro`, with the source rule) — all
in one transaction. A rule the store already has (same name, trigger, options,
conditions, actions, priority, group, enabled) is left alone, so importing the same file
again creates nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine, select

from wooflow.api.rules import action_errors, insert_rule
from wooflow.db.tables import rules
from wooflow.ops.polski_pro import ImportPlan, Mapped

Status = Literal["would create", "created", "already present"]
_SAME = ("name", "trigger", "trigger_options", "conditions", "actions", "priority", "enabled", "group_label",
         "frequency", "exit_conditions")


@dataclass(frozen=True)
class Outcome:
    mapped: Mapped
    status: Status
    rule_id: int | None = None  # the rule created, or the one already there


def _key(rule: Mapping[str, Any]) -> str:
    """What makes two rules the same, from a rule as stored (its spec's JSON form)."""
    return json.dumps({k: rule[k] for k in _SAME}, sort_keys=True)


def import_plan(engine: Engine, store_id: str, plan: ImportPlan, *, apply: bool, source: str) -> list[Outcome]:
    """Create the plan's rules in the store (`apply`), or say what would be created."""
    for m in plan.rules:
        errors = action_errors(m.spec)
        if errors:
            raise ValueError(f"{m.source}: {errors[0]['msg']}")  # plan_import checked them: a bug if reached
    outcomes: list[Outcome] = []
    with engine.begin() as conn:
        rows = conn.execute(select(rules).where(rules.c.store_id == store_id)).mappings().all()
        present = {_key(dict(r)): int(r["id"]) for r in rows}
        for m in plan.rules:
            key = _key(m.spec.model_dump(mode="json"))
            found = present.get(key)
            if found is not None:
                outcomes.append(Outcome(m, "already present", found))
            elif apply:
                row = insert_rule(conn, store_id, m.spec, actor=f"import {source}",
                                  details={"imported_from": source, "source_rule": m.source})
                present[key] = int(row["id"])
                outcomes.append(Outcome(m, "created", int(row["id"])))
            else:
                outcomes.append(Outcome(m, "would create"))
    return outcomes
