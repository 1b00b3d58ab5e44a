"""`list_subscribe`: subscribe the customer's email to a mailing list over HTTP.

Everything a wooflow action needs: a name, a pydantic `Params` model (validated before
`run`, shown in the API's schema), `run` doing the effect, `dry_run` saying what it would
do, and what to do after a worker stopped in the middle of it: `already_applied` is
inherited (None: the effect cannot be looked up) and `on_interrupted = "repeat"` says to
run it again anyway, because subscribing twice is harmless and the API is told the
idempotency key. An action that must never run twice declares "at_most_once"; the default,
"repeat_once", runs an interrupted attempt once more and then gives up.
"""

from __future__ import annotations

import json
from typing import ClassVar

from pydantic import BaseModel, Field, HttpUrl

from wooflow.workers.errors import ActionError, TransientError
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy


class ListSubscribe(BaseAction["ListSubscribe.Params"]):
    name: ClassVar[str] = "list_subscribe"
    description: ClassVar[str] = "Subscribe the customer to a mailing list (example plugin)"
    on_interrupted: ClassVar[InterruptPolicy] = "repeat"  # subscribing twice is harmless

    class Params(BaseModel):
        api_url: HttpUrl = Field(description="The list provider's subscribe endpoint")
        list_id: str = Field(min_length=1, description="List to subscribe to")
        api_key: str = Field("", description="Bearer token for the provider")

    def _email(self, ctx: ActionContext[Params]) -> str:
        customer = ctx.context.get("customer") or {}
        email = customer.get("email") if isinstance(customer, dict) else None
        if not email:
            raise ActionError("list_subscribe: the customer has no email")
        return str(email)

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        email = self._email(ctx)
        body = json.dumps({"email": email, "list": p.list_id}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": ctx.idempotency_key}
        if p.api_key:
            headers["Authorization"] = f"Bearer {p.api_key}"
        answer = await ctx.http.request("POST", str(p.api_url), content=body, headers=headers)
        if answer.status_code >= 500 or answer.status_code == 429:
            raise TransientError(f"list provider answered {answer.status_code}")
        if answer.status_code >= 400:
            raise ActionError(f"list provider refused: {answer.status_code} {answer.text[:200]}")
        return ActionResult("succeeded", f"{email} subscribed to {p.list_id}", {"email": email, "list": p.list_id})

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        return ActionResult("dry_run", f"would subscribe {self._email(ctx)} to {p.list_id}",
                            {"dry_run": True, "provider": "list_subscribe", "list": p.list_id})
