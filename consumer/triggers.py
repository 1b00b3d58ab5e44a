"""The trigger registry: which triggers an incoming event fires.

Each trigger is a small function `(event, ctx) -> bool` registered for the schema it
listens to. Time- and behaviour-based triggers (abandoned cart, inactive N days, ...)
plug in here the same way, registered by the modules that produce their events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]


@dataclass
class TriggerContext:
    """What the consumer knows besides the event (customer state before/after, options)."""
    state_before: dict[str, Any] = field(default_factory=dict)
    state_after: dict[str, Any] = field(default_factory=dict)
    first_seen: bool = True  # first time this resource id is seen by wooflow
    previous_status: str | None = None


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    schema: str
    description: str
    fires: Callable[[Event, TriggerContext], bool]
    options: dict[str, str] = field(default_factory=dict)  # option → description


TRIGGERS: dict[str, TriggerSpec] = {}


def register(spec: TriggerSpec) -> TriggerSpec:
    TRIGGERS[spec.name] = spec
    return spec


def _order_action(ev: Event) -> str:
    return str(ev.get("action") or "")


register(TriggerSpec(
    "new_order", "OrderEvent", "An order is placed (first time wooflow sees it)",
    lambda ev, ctx: ev.get("order") is not None and _order_action(ev) == "created"))
register(TriggerSpec(
    "order_status_changed", "OrderEvent", "An order's status changed (options: from, to)",
    lambda ev, ctx: ev.get("order") is not None and ctx.previous_status is not None
    and ctx.previous_status != ev["order"]["status"],
    options={"from": "previous status (optional)", "to": "new status (optional)"}))
register(TriggerSpec(
    "new_customer", "CustomerEvent", "A customer account is created",
    lambda ev, ctx: ev.get("customer") is not None and ev.get("action") == "created" and ctx.first_seen))
register(TriggerSpec(
    "product_saved", "ProductEvent", "A product is created or updated",
    lambda ev, ctx: ev.get("product") is not None and ev.get("action") in ("created", "updated", "restored")))


def fired(schema: str, event: Event, ctx: TriggerContext) -> list[str]:
    return [t.name for t in TRIGGERS.values() if t.schema == schema and t.fires(event, ctx)]


def options_match(options: dict[str, Any], event: Event, ctx: TriggerContext) -> bool:
    """Trigger options narrow a trigger (e.g. order_status_changed from→to)."""
    order = event.get("order") or {}
    want_from, want_to = options.get("from"), options.get("to")
    if want_from and (ctx.previous_status or "").removeprefix("wc-") != str(want_from).removeprefix("wc-"):
        return False
    if want_to and str(order.get("status", "")).removeprefix("wc-") != str(want_to).removeprefix("wc-"):
        return False
    return True
