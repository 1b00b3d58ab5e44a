"""Rules as the API accepts them and the consumer runs them (pydantic at the boundary).

Validation errors carry the path of the offending element (`conditions.conditions[0].operator`,
`trigger_options.threshold`, `actions[1].delay`) so the API can answer 422 naming it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wooflow.consumer.conditions import ITEM_FIELDS, ConditionError, compile_tree, fields_used
from wooflow.consumer.exits import parse_exits

_DELAY = re.compile(r"^\s*(?:(immediately|now)|(?:(minute|hour|day|week)s?\s+(\d+))|(\d+)\s*(m|h|d|w))\s*$", re.I)
_UNIT_SECONDS = {"minute": 60, "m": 60, "hour": 3600, "h": 3600, "day": 86400, "d": 86400, "week": 604800, "w": 604800}
MAX_DELAY_S = 366 * 86400


class RuleFieldError(ValueError):
    """A validation error about one element of a rule; `path` names it from the rule's root."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def delay_seconds(delay: str | None) -> int:
    """'immediately' → 0, 'hour 24' → 86400, 'day 3' → 259200, '30m' → 1800."""
    if delay is None or delay == "":
        return 0
    m = _DELAY.match(delay)
    if not m:
        raise ValueError(f"delay {delay!r} is not like 'immediately', 'hour 24', 'day 3' or '30m'")
    if m.group(1):
        return 0
    if m.group(2):
        seconds = int(m.group(3)) * _UNIT_SECONDS[m.group(2).lower()]
    else:
        seconds = int(m.group(4)) * _UNIT_SECONDS[m.group(5).lower()]
    if seconds > MAX_DELAY_S:
        raise ValueError(f"delay {delay!r} is longer than a year")
    return seconds


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1, description="Action type, see GET /v1/schema")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters, see the action's JSON schema")
    delay: str | None = Field(None, description="'immediately', 'hour 24', 'day 3', '30m' (from the trigger)")

    @field_validator("delay")
    @classmethod
    def _delay(cls, v: str | None) -> str | None:
        delay_seconds(v)
        return v

    @property
    def delay_s(self) -> int:
        return delay_seconds(self.delay)


class Frequency(BaseModel):
    model_config = ConfigDict(extra="forbid")
    once_per_customer: bool = Field(False, description="Fire at most once per customer, ever")
    per_days: int | None = Field(None, ge=1, le=3650, description="Fire at most once per customer per N days")

    @property
    def limited(self) -> bool:
        return self.once_per_customer or self.per_days is not None


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    trigger: str = Field(description="Trigger name, see GET /v1/schema")
    trigger_options: dict[str, Any] = Field(default_factory=dict, description="Options of the trigger (from/to, "
                                                                              "threshold, counts, ...)")
    conditions: dict[str, Any] = Field(default_factory=dict, description='{"match": "all"|"any", "conditions": '
                                                                         '[{"field", "operator", "value"} | group]}')
    actions: list[Action] = Field(min_length=1, max_length=50)
    priority: int = Field(10, ge=-1_000_000, le=1_000_000, description="Lower runs first")
    enabled: bool = True
    group_label: str = Field("", max_length=200)
    frequency: Frequency = Field(default_factory=Frequency)
    exit_conditions: list[dict[str, Any]] = Field(default_factory=list,
                                                  description="Conditions that stop a multi-step workflow early")
    holdout_percent: float = Field(0, ge=0, le=50, description="Share of the rule's audience held out as a control "
                                                                "group (same customers every time; they get no "
                                                                "effect): the analytics compare their orders")

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, v: str) -> str:
        from wooflow.consumer.triggers import TRIGGERS

        if v not in TRIGGERS:
            raise RuleFieldError("trigger", f"unknown trigger {v!r}; one of {sorted(TRIGGERS)}")
        return v

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            compile_tree(v, "conditions")
        except ConditionError as exc:
            raise RuleFieldError(exc.path, exc.message) from exc
        return v

    @field_validator("exit_conditions")
    @classmethod
    def _exit(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Condition trees, or named exits ({"type": "ordered" | "cart_recovered" | "unsubscribed"})
        # that the scheduler checks before each delayed step (scheduler/exits.py).
        try:
            parse_exits(v)
        except ConditionError as exc:
            raise RuleFieldError(exc.path, exc.message) from exc
        return v

    @model_validator(mode="after")
    def _options(self) -> RuleSpec:
        from wooflow.consumer.triggers import TRIGGERS

        spec = TRIGGERS.get(self.trigger)
        if spec is None:
            return self
        try:
            spec.compile_options(self.trigger_options)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ()))
            raise RuleFieldError(f"trigger_options.{loc}" if loc else "trigger_options", err.get("msg", "invalid")) \
                from exc
        except ValueError as exc:
            raise RuleFieldError("trigger_options", str(exc)) from exc
        items = sorted(fields_used(self.conditions) & ITEM_FIELDS)
        if items and not spec.each_line_item:
            raise RuleFieldError("conditions", f"{items[0]} is a field of a line item: only the per-line-item "
                                               "triggers (…_each_line_item) have one")
        return self
