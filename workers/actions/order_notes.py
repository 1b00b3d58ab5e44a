"""add_order_note: a private or customer-visible note on the order (WooCommerce REST)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import ClassVar

from pydantic import BaseModel, Field

from wooflow.workers.errors import ActionError
from wooflow.workers.registry import ActionContext, ActionResult
from wooflow.workers.templating import render


class AddOrderNote:
    name: ClassVar[str] = "add_order_note"
    description: ClassVar[str] = "Add a note to the order, private or sent to the customer"

    class Params(BaseModel):
        note: str = Field(min_length=1, description="Note text (Jinja2 template)")
        customer_note: bool = Field(False, description="Visible to (and emailed to) the customer")

    def _order_id(self, ctx: ActionContext) -> str:
        order = ctx.context.get("order") or {}
        oid = order.get("id") or (ctx.subject_id if ctx.command["subject_type"] == "order" else None)
        if not oid:
            raise ActionError("add_order_note needs an order (the trigger has none)")
        return str(oid)

    def _text(self, ctx: ActionContext) -> str:
        p: AddOrderNote.Params = ctx.params  # type: ignore[assignment]
        return render(p.note, ctx.context)

    async def run(self, ctx: ActionContext) -> ActionResult:
        p: AddOrderNote.Params = ctx.params  # type: ignore[assignment]
        oid, text = self._order_id(ctx), self._text(ctx)
        note = await ctx.woo.post(f"/orders/{oid}/notes", {"note": text, "customer_note": p.customer_note})
        return ActionResult("succeeded", f"note {note.get('id')} added to order {oid}",
                            {"order_id": oid, "note_id": note.get("id")})

    async def dry_run(self, ctx: ActionContext) -> ActionResult:
        p: AddOrderNote.Params = ctx.params  # type: ignore[assignment]
        oid, text = self._order_id(ctx), self._text(ctx)
        return ActionResult("dry_run", f"would add a {'customer' if p.customer_note else 'private'} note to order {oid}",
                            {"order_id": oid, "note": text})

    async def already_applied(self, ctx: ActionContext) -> ActionResult | None:
        """A note with exactly this text created since the claim is ours: WooCommerce notes
        carry no metadata to hold an idempotency key, and the rendered text is deterministic."""
        oid, text = self._order_id(ctx), self._text(ctx)
        since = ctx.claimed_at.astimezone(timezone.utc).replace(tzinfo=None)
        for note in await ctx.woo.get(f"/orders/{oid}/notes") or []:
            created = note.get("date_created_gmt")
            if note.get("note") == text and created and datetime.fromisoformat(created) >= since.replace(microsecond=0):
                return ActionResult("succeeded", f"note {note.get('id')} already on order {oid}",
                                    {"order_id": oid, "note_id": note.get("id"), "recovered": True})
        return None
