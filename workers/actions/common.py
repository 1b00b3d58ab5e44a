"""Small helpers shared by the built-in actions: who and what a command is about."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from wooflow.jsontypes import JSONObject, as_array, as_object
from wooflow.workers.errors import ActionError
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render


def order_id(ctx: ActionContext[Any], action: str) -> str:
    oid = as_object(ctx.context.get("order")).get("id")
    oid = oid or (ctx.subject_id if ctx.command.get("subject_type") == "order" else None)
    if not oid:
        raise ActionError(f"{action} needs an order (the trigger has none)")
    return str(oid)


def customer_id(ctx: ActionContext[Any]) -> int | None:
    """The WooCommerce customer (user) id, when the customer is registered."""
    ckey = str(ctx.command.get("customer_key") or "")
    if ckey.startswith("c") and ckey[1:].isdigit():
        return int(ckey[1:])
    if ctx.command.get("subject_type") == "customer" and str(ctx.command.get("subject_id", "")).isdigit():
        return int(ctx.command["subject_id"])
    for source in ("customer", "order"):
        obj = ctx.context.get(source)
        if isinstance(obj, dict):
            cid = str(obj.get("id") if source == "customer" else obj.get("customer_id"))
            if cid.isdigit() and int(cid) > 0:
                return int(cid)
    return None


def require_customer_id(ctx: ActionContext[Any], action: str) -> int:
    cid = customer_id(ctx)
    if cid is None:
        raise ActionError(f"{action} needs a registered customer (guest {ctx.command.get('customer_key')!r} has no "
                          "WooCommerce account)")
    return cid


def customer_email(ctx: ActionContext[Any]) -> str | None:
    customer = ctx.context.get("customer")
    if isinstance(customer, dict) and customer.get("email"):
        return str(customer["email"])
    for resource in ("order", "subscription"):  # an order's or a subscription's billing email
        email = as_object(as_object(ctx.context.get(resource)).get("billing")).get("email")
        if email:
            return str(email)
    return None


async def without_consent(ctx: ActionContext[Any], channel: str, what: str, *, to: str,
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


def customer_phone(ctx: ActionContext[Any]) -> str | None:
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


def since_claim(ctx: ActionContext[Any]) -> datetime:
    """The claim time as WooCommerce's naive GMT second (for "created since" checks)."""
    return ctx.claimed_at.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)


async def find_note(ctx: ActionContext[Any], oid: str, match: Callable[[str], bool]) -> JSONObject | None:
    """A note on the order created since the claim whose text matches (recovery after a crash:
    WooCommerce notes carry no metadata to hold an idempotency key)."""
    since = since_claim(ctx)
    for item in as_array(await ctx.woo.get(f"/orders/{oid}/notes")):
        note = as_object(item)
        created = note.get("date_created_gmt")
        if created and match(str(note.get("note", ""))) and datetime.fromisoformat(str(created)) >= since:
            return note
    return None


class SetMeta(BaseAction["SetMeta.Params"]):
    """Set one meta key on a WooCommerce resource. After a crash the value is looked up
    (a PUT of the same value again would be harmless too)."""

    resource: ClassVar[str]  # "customer" | "order": the id field in results
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # the resource's meta_data

    class Params(BaseModel):
        key: str = Field(min_length=1, description="Meta key")
        value: str = Field("", description="Meta value (Jinja2 template)")

    def target(self, ctx: ActionContext[Params]) -> tuple[int | str, str]:
        """(resource id, REST path) of what to change."""
        raise NotImplementedError

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        rid, path = self.target(ctx)
        value = render(p.value, ctx.context)
        await ctx.woo.put(path, {"meta_data": [{"key": p.key, "value": value}]})
        return ActionResult("succeeded", f"{self.resource} {rid} meta {p.key} set",
                            {f"{self.resource}_id": rid, "key": p.key, "value": value})

    async def already_applied(self, ctx: ActionContext[Params]) -> ActionResult | None:
        p = ctx.params
        rid, path = self.target(ctx)
        value = render(p.value, ctx.context)
        meta = [as_object(m) for m in as_array((await ctx.woo.get_object(path)).get("meta_data"))]
        if not any(m.get("key") == p.key and str(m.get("value")) == value for m in meta):
            return None
        return ActionResult("succeeded", f"{self.resource} {rid} meta {p.key} already set",
                            {f"{self.resource}_id": rid, "key": p.key, "value": value, "recovered": True})

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        rid, _ = self.target(ctx)
        return ActionResult("dry_run", f"would set {self.resource} {rid} meta {p.key}",
                            {f"{self.resource}_id": rid, "key": p.key, "value": render(p.value, ctx.context)})
