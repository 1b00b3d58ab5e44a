"""Polski Pro automation rules → wooflow rules (`wooflow rules import --from polski-pro`).

Polski Pro keeps its automation rules in `wp_polski_pro_automation_rules` and serves them
at `GET /polski-pro/v1/automation/rules`: a trigger, filters (field, operator, value), a
match mode, a priority, a group label, enabled, and actions (type + params). An export is
that answer saved to a file: a JSON list of rules (or `{"rules": [...]}`, or one rule).

Every trigger, filter field, operator and action Polski Pro documents has a wooflow
equivalent with the same name and meaning: `geo_scope` is one value per order as Polski
Pro defines it, `category` resolves the ordered products through the store's product
catalog, `in`/`not_in` take the same comma-separated lists. `plan_import` maps each rule
whole or not at all: leaving out a filter would widen a rule, leaving out an action would
change what it does, so a rule with anything wooflow cannot express is reported with
every reason and not created.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from wooflow.consumer.conditions import ConditionError, compile_leaf
from wooflow.consumer.model import RuleSpec
from wooflow.consumer.workflow import action_steps, dotted
from wooflow.jsontypes import JSONObject, JSONValue
from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - cart_abandoned maps to the scheduler's trigger

# Polski Pro trigger → wooflow trigger
TRIGGERS = {"new_order": "new_order", "order_status_changed": "order_status_changed",
            "new_customer": "new_customer", "product_saved": "product_saved", "cart_abandoned": "abandoned_cart"}
# Polski Pro's filter fields (FilterField) and operators: the same names in wooflow
FILTER_FIELDS = ("order_total", "order_status", "item_count", "billing_country", "shipping_country", "geo_scope",
                 "customer_email", "payment_method", "shipping_method", "product_id", "category")
OPERATORS = ("equals", "not_equals", "gt", "lt", "in", "not_in", "contains")
# Polski Pro action → (wooflow action, {Polski Pro param: wooflow param})
ACTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "send_email": ("send_email", {"to": "to", "subject": "subject", "body": "body", "marketing": "marketing"}),
    "send_sms": ("send_sms", {"to": "to", "message": "text", "text": "text", "body": "text",
                              "marketing": "marketing"}),
    "change_order_status": ("change_order_status", {"status": "status", "note": "note"}),
    "add_order_note": ("add_order_note", {"note": "note", "customer_note": "customer_note"}),
    "add_customer_tag": ("add_customer_tag", {"tag": "tag"}),
    "webhook": ("webhook", {"url": "url"}),
}
# keys of a Polski Pro rule and what they are called here
_KEYS = {"name": ("name", "title"), "trigger": ("trigger", "trigger_type"),
         "options": ("trigger_options", "trigger_config", "config"), "filters": ("filters", "conditions"),
         "match": ("match_mode", "match", "filter_mode"), "priority": ("priority",),
         "group": ("group_label", "group"), "enabled": ("enabled", "active", "status"), "actions": ("actions",)}
_METADATA = {"id", "created_at", "updated_at", "created_by", "description", "last_run_at", "run_count"}
_PLACEHOLDER = re.compile(r"(?<!\{)\{([a-z_][a-z0-9_.]*)\}(?!\})", re.I)
_YES = {"1", "true", "yes", "on"}
_NO = {"0", "false", "no", "off", ""}


class ExportError(ValueError):
    """The file is not a Polski Pro rules export."""


@dataclass
class Mapped:
    """A Polski Pro rule and the wooflow rule it becomes."""

    source: str  # how the export names it: "#12 Big orders"
    spec: RuleSpec
    notes: list[str] = field(default_factory=list)  # what differs in form, not in effect


@dataclass
class Unmappable:
    source: str
    problems: list[str]


@dataclass
class ImportPlan:
    rules: list[Mapped] = field(default_factory=list)
    unmappable: list[Unmappable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the import as a whole


def load_export(text: str) -> list[JSONObject]:
    """The rules of an export (a JSON list, `{"rules": [...]}`/`{"data": [...]}`, or one rule)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ExportError(f"not JSON: {exc}") from exc
    if isinstance(doc, dict):
        doc = doc.get("rules", doc.get("data", [doc] if "trigger" in doc or "trigger_type" in doc else None))
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise ExportError("expected a list of Polski Pro rules (objects with trigger, filters, actions)")
    return doc


def plan_import(rules: list[JSONObject]) -> ImportPlan:
    plan = ImportPlan()
    for i, raw in enumerate(rules):
        mapper = _RuleMapper(raw, i)
        spec = mapper.map()
        if spec is None:
            plan.unmappable.append(Unmappable(mapper.source, mapper.problems))
        else:
            plan.rules.append(Mapped(mapper.source, spec, mapper.notes))
    plan.notes = _general_notes(plan)
    return plan


def _general_notes(plan: ImportPlan) -> list[str]:
    specs = [m.spec for m in plan.rules]
    fields = {str(c.get("field")) for s in specs for c in s.conditions.get("conditions", [])}
    types = {a.type for s in specs for _, a in action_steps(s.actions)}
    notes = []
    if "category" in fields:
        notes.append("category filters read the store's product catalog, which wooflow keeps from product "
                     "webhooks, backfill and the poller; a product it has not seen is asked from the store's REST API")
    if any(a.params.get("marketing") is True for s in specs for _, a in action_steps(s.actions)):
        notes.append("marketing messages follow the store's consent policy in wooflow (`wooflow stores consent`), "
                     "not polski_consent_log: record existing consents before enabling them")
    if "add_customer_tag" in types:
        notes.append("customer tags are kept by wooflow and mirrored to the _wooflow_tags user meta, not to "
                     "polski_customer_tags")
    return notes


def _first(raw: JSONObject, names: tuple[str, ...]) -> JSONValue:
    for n in names:
        if n in raw:
            return raw[n]
    return None


def _truth(v: JSONValue) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v)
    s = str(v).strip().lower()
    return True if s in _YES or s == "active" else False if s in _NO or s == "inactive" else None


class _RuleMapper:
    """One rule: `map()` gives its RuleSpec, or None with `problems` saying why."""

    def __init__(self, raw: JSONObject, index: int) -> None:
        self.raw = raw
        rid = raw.get("id")
        name = str(_first(raw, _KEYS["name"]) or "").strip()
        self.name = name or f"Polski Pro rule {rid if rid is not None else index + 1}"
        self.source = f"#{rid} {name}".strip() if rid is not None else f"[{index}] {self.name}"
        self.problems: list[str] = []
        self.notes: list[str] = []

    def map(self) -> RuleSpec | None:
        known = {k for names in _KEYS.values() for k in names} | _METADATA
        for key in sorted(set(self.raw) - known):
            self.problems.append(f"{key}: not a Polski Pro rule field wooflow knows")
        trigger = self._trigger()
        conditions = self._conditions()
        actions = self._actions()
        enabled = self._enabled(trigger)
        if self.problems or trigger is None:
            return None
        body = {"name": self.name[:200], "trigger": trigger, "trigger_options": self._options(trigger),
                "conditions": conditions, "actions": actions, "enabled": enabled,
                "priority": self._int("priority", 10), "group_label": str(_first(self.raw, _KEYS["group"]) or "")}
        if self.problems:
            return None
        try:
            spec = RuleSpec.model_validate(body)
        except (ValidationError, ValueError) as exc:
            self.problems.append(f"not a valid wooflow rule: {exc}")
            return None
        self._check_actions(spec)
        return None if self.problems else spec

    def _trigger(self) -> str | None:
        t = str(_first(self.raw, _KEYS["trigger"]) or "")
        if t not in TRIGGERS:
            self.problems.append(f"trigger {t!r}: wooflow has no equivalent (Polski Pro's are {sorted(TRIGGERS)})")
            return None
        return TRIGGERS[t]

    def _options(self, trigger: str) -> dict[str, Any]:
        opts = _first(self.raw, _KEYS["options"])
        if opts in (None, {}, [], ""):
            return {}
        if trigger == "order_status_changed" and isinstance(opts, dict):
            pairs = (("from", _first(opts, ("from", "from_status"))), ("to", _first(opts, ("to", "to_status"))))
            out = {k: [str(s).removeprefix("wc-") for s in (v if isinstance(v, list) else str(v).split(","))]
                   for k, v in pairs if v not in (None, "", [])}
            rest = set(opts) - {"from", "from_status", "to", "to_status"}
            if not rest:
                return out
        self.problems.append(f"trigger options {json.dumps(opts)}: wooflow cannot express them for {trigger}")
        return {}

    def _enabled(self, trigger: str | None) -> bool:
        raw = _first(self.raw, _KEYS["enabled"])
        enabled = True if raw is None else _truth(raw)
        if enabled is None:
            self.problems.append(f"enabled {raw!r}: not a yes or no")
            enabled = False
        if trigger == "abandoned_cart":
            self.notes.append("cart_abandoned is reserved in Polski Pro and never fired: imported disabled as "
                              "abandoned_cart (the store's abandoned-after time); enable it when wanted")
            return False
        return enabled

    def _int(self, key: str, default: int) -> int:
        v = self.raw.get(key)
        if v is None or v == "":
            return default
        try:
            return int(str(v).strip())
        except ValueError:
            self.problems.append(f"{key} {v!r}: not a whole number")
            return default

    def _conditions(self) -> dict[str, Any]:
        match = str(_first(self.raw, _KEYS["match"]) or "all").strip().lower()
        if match not in ("all", "any"):
            self.problems.append(f"match mode {match!r}: Polski Pro's are all and any")
        filters = _first(self.raw, _KEYS["filters"]) or []
        if not isinstance(filters, list):
            self.problems.append("filters: not a list")
            return {}
        leaves = [leaf for i, f in enumerate(filters) if (leaf := self._filter(i, f)) is not None]
        return {"match": match, "conditions": leaves} if leaves else {}

    def _filter(self, i: int, f: JSONValue) -> dict[str, Any] | None:
        where = f"filters[{i}]"
        if not isinstance(f, dict):
            self.problems.append(f"{where}: not an object")
            return None
        field_, op, value = str(f.get("field") or ""), str(f.get("operator") or ""), f.get("value")
        if field_ not in FILTER_FIELDS:
            self.problems.append(f"{where}: field {field_!r} is not one of Polski Pro's filter fields")
            return None
        if op not in OPERATORS:
            self.problems.append(f"{where}: operator {op!r} is not one of Polski Pro's operators")
            return None
        if field_ == "order_status" and isinstance(value, (str, list)):
            value = [str(v).strip().removeprefix("wc-") for v in value] if isinstance(value, list) \
                else ",".join(s.strip().removeprefix("wc-") for s in value.split(","))
        leaf = {"field": field_, "operator": op, "value": value}
        try:
            compile_leaf(leaf, where)
        except ConditionError as exc:
            self.problems.append(f"{where}: {exc.message}")
            return None
        return leaf

    def _actions(self) -> list[dict[str, Any]]:
        raw = self.raw.get("actions")
        if not isinstance(raw, list) or not raw:
            self.problems.append("actions: a rule needs at least one")
            return []
        return [a for i, r in enumerate(raw) if (a := self._action(i, r)) is not None]

    def _action(self, i: int, a: JSONValue) -> dict[str, Any] | None:
        where = f"actions[{i}]"
        if not isinstance(a, dict):
            self.problems.append(f"{where}: not an object")
            return None
        kind = str(a.get("type") or "")
        if kind not in ACTIONS:
            self.problems.append(f"{where}: action {kind!r} has no wooflow equivalent (a custom action added through "
                                 "the polski_pro/automation/action filter needs a wooflow action plugin)")
            return None
        target, renames = ACTIONS[kind]
        params = a.get("params") or {}
        if not isinstance(params, dict):
            self.problems.append(f"{where}.params: not an object")
            return None
        extra = sorted(set(params) - set(renames))
        if extra:
            self.problems.append(f"{where}.params: {', '.join(extra)} — handled by a polski_pro/automation/action "
                                 f"filter (e.g. another provider), which wooflow cannot run")
            return None
        mapped = {renames[k]: v for k, v in params.items() if v is not None}
        for text_value in (v for v in mapped.values() if isinstance(v, str)):
            for placeholder in _PLACEHOLDER.findall(text_value):
                self.notes.append(f"{where}: {{{placeholder}}} is copied as written; wooflow templates are Jinja2, "
                                  "e.g. {{ customer.first_name }}, {{ order.number }}")
        out: dict[str, Any] = {"type": target, "params": mapped}
        delay = a.get("delay")
        if delay not in (None, "", 0, "0"):
            out["delay"] = str(delay)
        return out

    def _check_actions(self, spec: RuleSpec) -> None:
        """Parameters as the workers' actions take them (yes/no strings become booleans)."""
        from wooflow.workers import registry

        for loc, action in action_steps(spec.actions):
            where = dotted(loc)
            handler = registry.get(action.type)
            if handler is None:
                self.problems.append(f"{where}: action {action.type!r} is not installed")
                continue
            model: type[BaseModel] = handler.Params
            for name, info in model.model_fields.items():
                if info.annotation is bool and name in action.params and not isinstance(action.params[name], bool):
                    truth = _truth(action.params[name])
                    if truth is None:
                        self.problems.append(f"{where}.params.{name}: {action.params[name]!r} is not a yes or no")
                    else:
                        action.params[name] = truth
            try:
                model.model_validate(action.params)
            except ValidationError as exc:
                for e in exc.errors():
                    at = ".".join(str(p) for p in e.get("loc", ()))
                    self.problems.append(f"{where}.params{'.' + at if at else ''}: {e.get('msg', 'invalid')}")
