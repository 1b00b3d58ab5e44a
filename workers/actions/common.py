"""Small helpers shared by the built-in actions: who and what a command is about."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from wooflow.workers.errors import ActionError
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render


def order_id(ctx: ActionContext, action: str) -> str:
    order = ctx.context.get("order") or {}
    oid = order.get("id") if isinstance(order, dict) else None
    oid = oid or (ctx.subject_id if ctx.command.get("subject_type") == "order" else None)
    if not oid:
        raise ActionError(f"{action} needs an order (the trigger has none)")
    return str(oid)


def customer_id(ctx: ActionContext) -> int | None:
    """The WooCommerce customer (user) id, when the customer is registered."""
    ckey = str(ctx.command.get("customer_key") or "")
    if ckey.startswith("c") and ckey[1:].isdigit():
        return int(ckey[1:])
    if ctx.command.get("subject_type") == "customer" and str(ctx.command.get("subject_id", "")).isdigit():
        return int(ctx.command["subject_id"])
    for source in ("customer", "order"):
        obj = ctx.context.get(source)
        if isinstance(obj, dict):
            cid = obj.get("id") if source == "customer" else obj.get("customer_id")
            if cid and str(cid).isdigit() and int(cid) > 0:
                return int(cid)
    return None


def require_customer_id(ctx: ActionContext, action: str) -> int:
    cid = customer_id(ctx)
    if cid is None:
        raise ActionError(f"{action} needs a registered customer (guest {ctx.command.get('customer_key')!r} has no "
                          "WooCommerce account)")
    return cid


def customer_email(ctx: ActionContext) -> str | None:
    customer = ctx.context.get("customer")
    if isinstance(customer, dict) and customer.get("email"):
        return str(customer["email"])
    order = ctx.context.get("order")
    if isinstance(order, dict) and isinstance(order.get("billing"), dict) and order["billing"].get("email"):
        return str(order["billing"]["email"])
    return None


async def without_consent(ctx: ActionContext, channel: str, what: str, *, to: str,
                          email: str | None) -> ActionResult | None:
    """None if this marketing message may go out; else the `skipped` result, with reason
    `no_consent` and the store's policy and the deciding answer's source in the details."""
    assert ctx.services is not None
    decision = await ctx.services.has_consent(ctx.store.id, channel, email=email,
                                              customer_key=ctx.command.get("customer_key"), context=ctx.context)
    if decision.granted:
        return None
    return ActionResult("skipped", f"{what} not sent: {decision.reason}",
                        {"to": to, "reason": "no_consent", "consent": decision.reason, "policy": decision.policy,
                         "consent_source": decision.source})


def customer_phone(ctx: ActionContext) -> str | None:
    for source in ("customer", "order"):
        obj = ctx.context.get(source)
        if not isinstance(obj, dict):
            continue
        if obj.get("phone"):
            return str(obj["phone"])
        billing = obj.get("billing")
        if isinstance(billing, dict) and billing.get("phone"):
            return str(billing["phone"])
    return None


def since_claim(ctx: ActionContext) -> datetime:
    """The claim time as WooCommerce's naive GMT second (for "created since" checks)."""
    return ctx.claimed_at.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)


async def find_note(ctx: ActionContext, oid: str, match: Callable[[str], bool]) -> dict[str, Any] | None:
    """A note on the order created since the claim whose text matches (recovery after a crash:
    WooCommerce notes carry no metadata to hold an idempotency key)."""
    since = since_claim(ctx)
    for note in await ctx.woo.get(f"/orders/{oid}/notes") or []:
        created = note.get("date_created_gmt")
        if created and match(str(note.get("note", ""))) and datetime.fromisoformat(created) >= since:
            return note  # type: ignore[no-any-return]
    return None


class SetMeta(BaseAction):
    """Set one meta key on a WooCommerce resource. After a crash the value is looked up
    (a PUT of the same value again would be harmless too)."""

    resource: ClassVar[str]  # "customer" | "order": the id field in results
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # the resource's meta_data

    class Params(BaseModel):
        key: str = Field(min_length=1, description="Meta key")
        value: str = Field("", description="Meta value (Jinja2 template)")

    def target(self, ctx: ActionContext) -> tuple[Any, str]:
        """(resource id, REST path) of what to change."""
        raise NotImplementedError

    async def run(self, ctx: ActionContext) -> ActionResult:
        p: SetMeta.Params = ctx.params  # type: ignore[assignment]
        rid, path = self.target(ctx)
        value = render(p.value, ctx.context)
        await ctx.woo.put(path, {"meta_data": [{"key": p.key, "value": value}]})
        return ActionResult("succeeded", f"{self.resource} {rid} meta {p.key} set",
                            {f"{self.resource}_id": rid, "key": p.key, "value": value})

    async def already_applied(self, ctx: ActionContext) -> ActionResult | None:
        p: SetMeta.Params = ctx.params  # type: ignore[assignment]
        rid, path = self.target(ctx)
        value = render(p.value, ctx.context)
        meta = (await ctx.woo.get(path) or {}).get("meta_data") or []
        if not any(m.get("key") == p.key and str(m.get("value")) == value for m in meta):
            return None
        return ActionResult("succeeded", f"{self.resource} {rid} meta {p.key} already set",
                            {f"{self.resource}_id": rid, "key": p.key, "value": value, "recovered": True})

    async def dry_run(self, ctx: ActionContext) -> ActionResult:
        p: SetMeta.Params = ctx.params  # type: ignore[assignment]
        rid, _ = self.target(ctx)
        return ActionResult("dry_run", f"would set {self.resource} {rid} meta {p.key}",
                            {f"{self.resource}_id": rid, "key": p.key, "value": render(p.value, ctx.context)})
