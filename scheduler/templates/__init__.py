"""Workflow templates shipped with wooflow: one YAML file per template in this folder.

A template is `{name, title, description, rule}` where `rule` is a RuleSpec (the same
JSON the rules API takes). Installing one creates a rule for a store, optionally with
another name, trigger options or disabled; `wooflow templates install NAME --store S` and
`POST /v1/templates/{name}/install` both end in `install()`.

Templates are validated when loaded (rule spec, action parameters against the workers'
action registry), so a broken template fails the test suite, not a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import Engine, insert, select

from wooflow.consumer.model import RuleSpec
from wooflow.db.tables import rule_audit, rules, stores
from wooflow.scheduler import triggers as _triggers  # noqa: F401 - templates name the scheduler's triggers


class TemplateError(ValueError):
    """Unknown template or store, or an override that makes the rule invalid."""


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    rule: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "description": self.description,
                "trigger": self.rule["trigger"], "trigger_options": self.rule.get("trigger_options", {}),
                "exit_conditions": self.rule.get("exit_conditions", []),
                "steps": [{"delay": a.get("delay") or "immediately", "type": a["type"]} for a in self.rule["actions"]]}


@lru_cache(maxsize=1)
def load_templates() -> dict[str, Template]:
    out: dict[str, Template] = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        data = yaml.safe_load(entry.read_text(encoding="utf-8"))
        try:
            RuleSpec.model_validate(data["rule"])
        except (ValidationError, KeyError) as exc:
            raise TemplateError(f"template {entry.name} is invalid: {exc}") from exc
        t = Template(str(data["name"]), str(data["title"]), str(data["description"]).strip(), dict(data["rule"]))
        out[t.name] = t
    return out


def get_template(name: str) -> Template:
    t = load_templates().get(name)
    if t is None:
        raise TemplateError(f"no template {name!r}; one of {sorted(load_templates())}")
    return t


def rule_spec(name: str, *, rule_name: str | None = None, enabled: bool = True,
              trigger_options: dict[str, Any] | None = None, group_label: str | None = None) -> RuleSpec:
    """The template's rule with the installer's overrides, validated."""
    data = dict(get_template(name).rule)
    if rule_name:
        data["name"] = rule_name
    if trigger_options is not None:
        data["trigger_options"] = trigger_options
    if group_label is not None:
        data["group_label"] = group_label
    data["enabled"] = enabled
    try:
        return RuleSpec.model_validate(data)
    except ValidationError as exc:
        raise TemplateError(f"template {name!r} with these overrides is invalid: {exc}") from exc


def check_actions(spec: RuleSpec) -> list[str]:
    """Action types and params against the workers' registry (empty list: all fine)."""
    from wooflow.consumer.workflow import dotted
    from wooflow.workers.registry import step_problems

    return [f"{dotted(p.loc)}: {p.message}" for p in step_problems(spec.actions)]


def install(engine: Engine, store_id: str, name: str, *, rule_name: str | None = None, enabled: bool = True,
            trigger_options: dict[str, Any] | None = None, group_label: str | None = None,
            actor: str = "template") -> int:
    """Create the template's rule for a store; returns the rule id."""
    spec = rule_spec(name, rule_name=rule_name, enabled=enabled, trigger_options=trigger_options,
                     group_label=group_label)
    problems = check_actions(spec)
    if problems:
        raise TemplateError(f"template {name!r}: " + "; ".join(problems))
    with engine.begin() as conn:
        if conn.execute(select(stores.c.id).where(stores.c.id == store_id)).first() is None:
            raise TemplateError(f"no store {store_id!r}; register it with `wooflow stores add`")
        rule_id = int(conn.execute(insert(rules).values(store_id=store_id, **spec.model_dump(mode="json"))
                                   .returning(rules.c.id)).scalar_one())
        conn.execute(insert(rule_audit).values(store_id=store_id, rule_id=rule_id, action="created", actor=actor,
                                               details={"template": name, "rule": spec.model_dump(mode="json")}))
    return rule_id
