"""send_sms: a text message through the store's SMS provider (pluggable; workers/sms.py).
Marketing messages need SMS consent, like marketing emails."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from wooflow.workers import sms
from wooflow.workers.actions.common import customer_email, customer_phone, without_consent
from wooflow.workers.errors import ActionError
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render


class SendSms(BaseAction["SendSms.Params"]):
    name: ClassVar[str] = "send_sms"
    description: ClassVar[str] = "Send a text message through the store's SMS provider"
    timeout_s: ClassVar[float | None] = 30.0
    on_interrupted: ClassVar[InterruptPolicy] = "repeat_once"  # the provider gets the key as its reference

    class Params(BaseModel):
        text: str = Field(min_length=1, description="Message (Jinja2 template)")
        to: str = Field("", description="Phone number (Jinja2 template); default: the customer's billing phone")
        marketing: bool = Field(False, description="A marketing message: needs SMS consent")

    def _compose(self, ctx: ActionContext[Params]) -> tuple[str, str]:
        p = ctx.params
        to = render(p.to, ctx.context).strip() if p.to else (customer_phone(ctx) or "")
        if not to:
            raise ActionError("send_sms: no phone number (the customer has none and `to` is empty)")
        return to, render(p.text, ctx.context)

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        assert ctx.services is not None
        p = ctx.params
        to, text = self._compose(ctx)
        if p.marketing:
            skipped = await without_consent(ctx, "sms", "marketing SMS", to=to, email=customer_email(ctx))
            if skipped is not None:
                return skipped
        config = sms.provider_config(ctx.services.settings, ctx.store)
        provider = sms.get_provider(str(config.get("provider") or "http"))
        message_id = await provider.send(ctx.services.http, config, to, text, ctx.idempotency_key)
        return ActionResult("succeeded", f"SMS sent to {to} via {provider.name}",
                            {"to": to, "provider": provider.name, "message_id": message_id, "chars": len(text)})

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        to, text = self._compose(ctx)
        return ActionResult("dry_run", f"would send an SMS to {to}", {"to": to, "text": text})
