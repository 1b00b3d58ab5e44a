"""Order actions through WooCommerce REST: status (with note), meta, resend an email, order actions.

Resending an order email and triggering an order action use the order actions REST
endpoints of WooCommerce ≥ 9.8 (`POST /orders/{id}/actions/send_order_details`,
`/actions/send_email` with an optional `template_id`); WooCommerce records each send as
an order note ("Order details sent to …"), which is also how a crashed attempt is
recognised afterwards.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from wooflow.jsontypes import JSONObject, as_object
from wooflow.workers.actions.common import SetMeta, find_note, order_id
from wooflow.workers.errors import ActionError
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render

ORDER_STATUSES = ("pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed")


class ChangeOrderStatus(BaseAction["ChangeOrderStatus.Params"]):
    name: ClassVar[str] = "change_order_status"
    description: ClassVar[str] = "Change the order's status, optionally adding a note"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # the order's status (and the note by its text)

    class Params(BaseModel):
        status: str = Field(description="New status: " + ", ".join(ORDER_STATUSES) + " (or a custom status slug)")
        note: str = Field("", description="Note added with the change (Jinja2 template)")
        customer_note: bool = Field(False, description="Make the note visible to the customer")

    def _status(self, ctx: ActionContext[Params]) -> str:
        p = ctx.params
        return p.status.removeprefix("wc-")

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        oid, status = order_id(ctx, self.name), self._status(ctx)
        note = render(p.note, ctx.context) if p.note else ""
        order = await ctx.woo.get_object(f"/orders/{oid}")
        before = order.get("status")
        if before != status:
            await ctx.woo.put(f"/orders/{oid}", {"status": status})
        details: JSONObject = {"order_id": oid, "from": before, "to": status}
        if note:
            created = as_object(await ctx.woo.post(f"/orders/{oid}/notes",
                                                   {"note": note, "customer_note": p.customer_note}))
            details["note_id"] = created.get("id")
        changed = f"changed from {before} to {status}" if before != status else f"already {status}"
        return ActionResult("succeeded", f"order {oid} {changed}", details)

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        oid = order_id(ctx, self.name)
        note = render(p.note, ctx.context) if p.note else ""
        return ActionResult("dry_run", f"would set order {oid} to {self._status(ctx)}",
                            {"order_id": oid, "to": self._status(ctx), "note": note})

    async def already_applied(self, ctx: ActionContext[Params]) -> ActionResult | None:
        p = ctx.params
        oid, status = order_id(ctx, self.name), self._status(ctx)
        order = await ctx.woo.get_object(f"/orders/{oid}")
        if order.get("status") != status:
            return None
        if p.note:
            text = render(p.note, ctx.context)
            if await find_note(ctx, oid, lambda t: t == text) is None:
                return None  # the status is there but not our note: run (the status part is a no-op)
        return ActionResult("succeeded", f"order {oid} already {status}", {"order_id": oid, "to": status})


# The order's SetMeta, as SetCustomerMeta (actions/customers.py) is the customer's: only
# the target differs, and each action is its own class for the registry.
class SetOrderMeta(SetMeta):
    name: ClassVar[str] = "set_order_meta"
    description: ClassVar[str] = "Add or update a custom field (meta) on the order"
    resource: ClassVar[str] = "order"

    def target(self, ctx: ActionContext[SetMeta.Params]) -> tuple[int | str, str]:
        oid = order_id(ctx, self.name)
        return oid, f"/orders/{oid}"


async def _order_action(ctx: ActionContext[Any], oid: str, action: str, body: JSONObject) -> JSONObject:
    return as_object(await ctx.woo.post(f"/orders/{oid}/actions/{action}", body))


def _is_send_note(text: str) -> bool:
    return text.startswith("Order details sent to ") or (text.startswith("Email template ") and " sent to " in text)


class ResendOrderEmail(BaseAction["ResendOrderEmail.Params"]):
    name: ClassVar[str] = "resend_order_email"
    description: ClassVar[str] = "Resend an order email to the customer (order details, or a template by id)"
    # WooCommerce notes each send on the order; a send it did not note is repeated at most once
    on_interrupted: ClassVar[InterruptPolicy] = "repeat_once"

    class Params(BaseModel):
        template_id: str = Field("", description="WooCommerce email template id, e.g. customer_completed_order; "
                                                 "empty: the order details (customer invoice)")

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        oid = order_id(ctx, self.name)
        if p.template_id and p.template_id != "customer_invoice":
            answer = await _order_action(ctx, oid, "send_email", {"template_id": p.template_id})
        else:
            answer = await _order_action(ctx, oid, "send_order_details", {})
        return ActionResult("succeeded", str(answer.get("message") or f"order {oid} email resent"),
                            {"order_id": oid, "template_id": p.template_id or "customer_invoice"})

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        oid = order_id(ctx, self.name)
        return ActionResult("dry_run", f"would resend {p.template_id or 'the order details'} for order {oid}",
                            {"order_id": oid, "template_id": p.template_id or "customer_invoice"})

    async def already_applied(self, ctx: ActionContext[Params]) -> ActionResult | None:
        oid = order_id(ctx, self.name)
        note = await find_note(ctx, oid, _is_send_note)
        if note is None:
            return None
        return ActionResult("succeeded", str(note.get("note")), {"order_id": oid, "recovered": True})


class TriggerOrderAction(BaseAction["TriggerOrderAction.Params"]):
    name: ClassVar[str] = "trigger_order_action"
    description: ClassVar[str] = "Run an order action (WooCommerce order actions REST: send_order_details, send_email)"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat_once"  # only the core email actions leave a note

    class Params(BaseModel):
        action: Literal["send_order_details", "send_email"] | str = Field(
            description="Order action slug; WooCommerce core offers send_order_details and send_email")
        args: dict[str, Any] = Field(default_factory=dict, description="Body of the action request, "
                                                                      "e.g. {\"template_id\": \"...\"}")

    def _slug(self, ctx: ActionContext[Params]) -> str:
        p = ctx.params
        slug = p.action.strip()
        if not slug.replace("_", "").replace("-", "").isalnum():
            raise ActionError(f"invalid order action {slug!r}")
        return slug

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        oid, slug = order_id(ctx, self.name), self._slug(ctx)
        answer = await _order_action(ctx, oid, slug, p.args)
        return ActionResult("succeeded", str(answer.get("message") or f"order action {slug} run on order {oid}"),
                            {"order_id": oid, "action": slug})

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        oid, slug = order_id(ctx, self.name), self._slug(ctx)
        return ActionResult("dry_run", f"would run order action {slug} on order {oid}", {"order_id": oid,
                                                                                        "action": slug})

    async def already_applied(self, ctx: ActionContext[Params]) -> ActionResult | None:
        oid = order_id(ctx, self.name)
        if self._slug(ctx) not in ("send_order_details", "send_email"):
            return None
        note = await find_note(ctx, oid, _is_send_note)
        return None if note is None else ActionResult("succeeded", str(note.get("note")),
                                                      {"order_id": oid, "recovered": True})
