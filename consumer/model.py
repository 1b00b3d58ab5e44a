"""Rules as the API accepts them and the consumer runs them (pydantic at the boundary)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wooflow.consumer.conditions import ConditionError, compile_tree

_DELAY = re.compile(r"^\s*(?:(immediately|now)|(?:(minute|hour|day|week)s?\s+(\d+))|(\d+)\s*(m|h|d|w))\s*$", re.I)
_UNIT_SECONDS = {"minute": 60, "m": 60, "hour": 3600, "h": 3600, "day": 86400, "d": 86400, "week": 604800, "w": 604800}


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
        return int(m.group(3)) * _UNIT_SECONDS[m.group(2).lower()]
    return int(m.group(4)) * _UNIT_SECONDS[m.group(5).lower()]


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1, description="Action type, see GET /v1/schema")
    params: dict[str, Any] = Field(default_factory=dict)
    delay: str | None = Field(None, description="'immediately', 'hour 24', 'day 3', '30m'")

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
    once_per_customer: bool = False
    per_days: int | None = Field(None, ge=1, description="At most once per customer per N days")


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    trigger: str
    trigger_options: dict[str, Any] = Field(default_factory=dict)
    conditions: dict[str, Any] = Field(default_factory=dict)
    actions: list[Action] = Field(min_length=1)
    priority: int = Field(10, description="Lower runs first")
    enabled: bool = True
    group_label: str = ""
    frequency: Frequency = Field(default_factory=Frequency)
    exit_conditions: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, v: str) -> str:
        from wooflow.consumer.triggers import TRIGGERS

        if v not in TRIGGERS:
            raise ValueError(f"unknown trigger {v!r}; one of {sorted(TRIGGERS)}")
        return v

    @model_validator(mode="after")
    def _conditions(self) -> "RuleSpec":
        try:
            compile_tree(self.conditions, "conditions")
        except ConditionError as exc:
            raise ValueError(str(exc)) from exc
        return self
