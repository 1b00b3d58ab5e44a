"""Rules as the API accepts them and the consumer runs them (pydantic at the boundary).

Validation errors carry the path of the offending element (`conditions.conditions[0].operator`,
`trigger_options.threshold`, `actions[1].delay`) so the API can answer 422 naming it.
"""

from __future__ import annotations

import re
from datetime import time as TimeOfDay
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

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


STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _step_id(v: str | None) -> str | None:
    if v is not None and not STEP_ID.match(v):
        raise ValueError("a step id is 1-40 letters, digits, '_' or '-', starting with a letter or digit")
    return v


def _unset(value: object) -> bool:
    """Optional keys left unset are not written: a rule written before they existed reads
    back (and is versioned) exactly as it was."""
    return value is None


class SendAt(BaseModel):
    """After its delay, a step waits for the next of these weekdays at this local time."""

    model_config = ConfigDict(extra="forbid")
    days: list[str] = Field(default_factory=lambda: list(DAYS),
                            description="Weekdays it may be sent on: mon, tue, wed, thu, fri, sat, sun (default: any)")
    time: str = Field(description="Local time of day, 24-hour HH:MM, e.g. '10:00'")
    timezone: str = Field("store", description="'store' (the store's timezone), 'customer' (the customer's when "
                                               "known, else the store's) or an IANA name like 'Europe/Warsaw'")

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for d in v:
            short = str(d).strip().lower()[:3]
            if short not in DAYS or str(d).strip().lower() not in (short, _LONG_DAYS[short]):
                raise ValueError(f"{d!r} is not a weekday; use mon, tue, wed, thu, fri, sat or sun")
            if short not in out:
                out.append(short)
        if not out:
            raise ValueError("name at least one weekday")
        return sorted(out, key=DAYS.index)

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        m = re.match(r"^([01]?\d|2[0-3]):([0-5]\d)$", v.strip())
        if not m:
            raise ValueError(f"{v!r} is not a time like '10:00' or '18:30'")
        return f"{int(m.group(1)):02d}:{m.group(2)}"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        if v in ("store", "customer"):
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {v!r}: 'store', 'customer' or an IANA name like 'Europe/Warsaw'") \
                from exc
        return v

    @property
    def local_time(self) -> TimeOfDay:
        h, m = self.time.split(":")
        return TimeOfDay(int(h), int(m))

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(DAYS.index(d) for d in self.days)


_LONG_DAYS = {"mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday", "fri": "friday",
              "sat": "saturday", "sun": "sunday"}


class Variant(BaseModel):
    """One version of an A/B-tested step: its params are laid over the step's own."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=40, description="Unique within the step, e.g. 'A'")
    weight: int = Field(1, ge=1, le=10_000, description="Share of customers, relative to the other variants")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters that differ from the step's")


class AutoWinner(BaseModel):
    """Pick the best variant once each had `min_sends`, then send only it."""

    model_config = ConfigDict(extra="forbid")
    metric: Literal["open_rate", "click_rate", "conversion_rate"] = Field(
        description="Opens or clicks per send (the open/click tracker's records), or orders per send")
    min_sends: int = Field(ge=1, le=1_000_000, description="Sends of every variant before the winner is picked")
    wait: str = Field("24h", description="How long after the last variant reached min_sends to measure before "
                                         "picking ('0' picks at once)")

    @field_validator("wait")
    @classmethod
    def _wait(cls, v: str) -> str:
        delay_seconds("immediately" if v.strip() == "0" else v)
        return v

    @property
    def wait_s(self) -> int:
        return delay_seconds("immediately" if self.wait.strip() == "0" else self.wait)


class Action(BaseModel):
    # python-re: the type's pattern (anything but "branch", which is a Branch) needs a lookahead
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")
    type: str = Field(min_length=1, pattern=r"^(?!branch$)", description="Action type, see GET /v1/schema")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters, see the action's JSON schema")
    delay: str | None = Field(None, description="'immediately', 'hour 24', 'day 3', '30m' (from the trigger)")
    id: str | None = Field(None, exclude_if=_unset,
                           description="A name for the step, unique in the workflow: branches refer to it")
    at: SendAt | None = Field(None, exclude_if=_unset,
                              description="After the delay, wait for a weekday and a local time")
    variants: list[Variant] | None = Field(None, min_length=2, max_length=4, exclude_if=_unset,
                                           description="A/B test: 2-4 variants; each customer always gets the same")
    auto_winner: AutoWinner | None = Field(None, exclude_if=_unset,
                                           description="Send only the best variant once the test has run")

    @field_validator("delay")
    @classmethod
    def _delay(cls, v: str | None) -> str | None:
        delay_seconds(v)
        return v

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return _step_id(v)

    @property
    def delay_s(self) -> int:
        return delay_seconds(self.delay)

    def variant_params(self, name: str) -> dict[str, Any]:
        """The params of one variant: the step's, with the variant's laid over them."""
        for v in self.variants or ():
            if v.name == name:
                return {**self.params, **v.params}
        return dict(self.params)


class BranchCondition(BaseModel):
    """What a yes/no branch asks when the run reaches it."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["condition", "email_opened", "email_clicked"] = Field(
        description="condition: a condition tree over the customer's state then; email_opened / email_clicked: "
                    "the customer opened / clicked an email of this run within `within` of its send time")
    conditions: dict[str, Any] | None = Field(None, exclude_if=_unset, description="type condition: the condition tree")
    step: str | None = Field(None, exclude_if=_unset,
                             description="email_*: the id of the email step (default: the email step "
                                               "before the branch)")
    within: str | None = Field(None, exclude_if=_unset,
                               description="email_*: how long after the email's send time (e.g. '24h'); "
                                                 "the branch waits that long")

    @field_validator("within")
    @classmethod
    def _within(cls, v: str | None) -> str | None:
        if v is not None and delay_seconds(v) <= 0:
            raise ValueError("`within` must be longer than zero, e.g. '24h'")
        return v

    @field_validator("step")
    @classmethod
    def _step(cls, v: str | None) -> str | None:
        return _step_id(v)

    @property
    def within_s(self) -> int:
        return delay_seconds(self.within)


class BranchPath(BaseModel):
    """The steps of one side of a branch, and where the run goes after them."""

    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(default_factory=list, max_length=50)
    then: str = Field("continue", description="'continue' (the step after the branch), 'end' (the run ends) or "
                                              "the id of a later top-level step to jump to")


class Branch(BaseModel):
    """A yes/no split: each side is its own list of steps."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["branch"]
    id: str | None = Field(None, exclude_if=_unset, description="A name for the step, unique in the workflow")
    delay: str | None = Field(None, exclude_if=_unset,
                              description="condition branches: when to ask, from the trigger "
                                                "(email branches wait `within` after their email)")
    condition: BranchCondition
    yes: BranchPath = Field(default_factory=BranchPath)
    no: BranchPath = Field(default_factory=BranchPath)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return _step_id(v)

    @field_validator("delay")
    @classmethod
    def _delay(cls, v: str | None) -> str | None:
        delay_seconds(v)
        return v

    @property
    def delay_s(self) -> int:
        return delay_seconds(self.delay)


def _step_kind(v: Any) -> str:
    kind = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return "~branch" if kind == "branch" else "~action"


# A workflow step: an action, or a branch ("~" tags are left out of error paths by the API).
Step = Annotated[Annotated[Action, Tag("~action")] | Annotated[Branch, Tag("~branch")], Discriminator(_step_kind)]
BranchPath.model_rebuild()


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
    actions: list[Step] = Field(min_length=1, max_length=50,
                                description="The workflow's steps: actions, and yes/no branches with steps of "
                                            "their own")
    priority: int = Field(10, ge=-1_000_000, le=1_000_000, description="Lower runs first")
    enabled: bool = True
    group_label: str = Field("", max_length=200)
    frequency: Frequency = Field(default_factory=Frequency)
    exit_conditions: list[dict[str, Any]] = Field(default_factory=list,
                                                  description="Conditions that stop a multi-step workflow early")
    holdout_percent: float = Field(0, ge=0, le=50, description="Share of the rule's audience held out as a control "
                                                                "group (same customers every time; they get no "
                                                                "effect): the analytics compare their orders")
    goals: list[dict[str, Any]] = Field(default_factory=list,
                                        description="What the workflow is for: reaching one ends the run as a "
                                                    "conversion (ordered, clicked, tag_added, a condition tree)")
    when_disabled: Literal["exit", "finish"] = Field("exit", description="Disabling the workflow: its runs in "
                                                                         "flight exit, or finish on their version")

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

    @field_validator("goals")
    @classmethod
    def _goals(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Like exits, checked before each step (scheduler/exits.py); a goal ends the run as a conversion.
        try:
            parse_exits(v, "goals", goals=True)
        except ConditionError as exc:
            raise RuleFieldError(exc.path, exc.message) from exc
        return v

    @model_validator(mode="after")
    def _program(self) -> RuleSpec:
        from wooflow.consumer.workflow import WorkflowError, compile_program

        try:
            compile_program(self.actions)
        except WorkflowError as exc:
            raise RuleFieldError(exc.path, exc.message) from exc
        return self

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
