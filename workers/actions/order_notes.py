"""add_order_note: a private or customer-visible note on the order (WooCommerce REST)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from wooflow.jsontypes import as_object
from wooflow.workers.actions.common import find_note, order_id
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render


class AddOrderNote(BaseAction["AddOrderNote.Params"]):
    name: ClassVar[str] = "add_order_note"
    description: ClassVar[str] = "Add a note to the order, private or sent to the customer"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # by its text, created since the claim

    class Params(BaseModel):
        note: str = Field(min_length=1, description="Note text (Jinja2 template)")
        customer_note: bool = Field(False, description="Visible to (and emailed to) the customer")

    def _text(self, ctx: ActionContext[Params]) -> str:
        p = ctx.params
        return render(p.note, ctx.context)

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        oid, text = order_id(ctx, self.name), self._text(ctx)
        note = as_object(await ctx.woo.post(f"/orders/{oid}/notes", {"note": text, "customer_note": p.customer_note}))
        return ActionResult("succeeded", f"note {note.get('id')} added to order {oid}",
                            {"order_id": oid, "note_id": note.get("id")})

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        oid, text = order_id(ctx, self.name), self._text(ctx)
        kind = "customer" if p.customer_note else "private"
        return ActionResult("dry_run", f"would add a {kind} note to order {oid}",
                            {"order_id": oid, "note": text})

    async def already_applied(self, ctx: ActionContext[Params]) -> ActionResult | None:
        """A note with exactly this text created since the claim is ours (the rendered text is deterministic)."""
        oid, text = order_id(ctx, self.name), self._text(ctx)
        note = await find_note(ctx, oid, lambda t: t == text)
        if note is None:
            return None
        return ActionResult("succeeded", f"note {note.get('id')} already on order {oid}",
                            {"order_id": oid, "note_id": note.get("id"), "recovered": True})
