"""send_email: HTML + plain-text email from Jinja2 templates (sandboxed), over SMTP.

Templates see the trigger's order/customer, the store, and what earlier steps handed on
(`coupon` from apply_coupon). `marketing: true` emails go only to customers with valid
consent (workers/consent.py; otherwise the command is logged `skipped` with the reason),
and carry an unsubscribe link in the body plus `List-Unsubscribe` and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058) headers pointing at the
API's signed unsubscribe route.

Marketing emails (and, if the store asks for it, the others: `analytics.track_transactional`)
are tracked: every http(s) link but the unsubscribe link becomes a signed click link and the
HTML part gets an open pixel (wooflow/engagement.py); once the mail server accepted the
message, its row in `messages` (id = the idempotency key, its links, when it was sent on
the workflow clock) is what send-based attribution and the per-link report read.

The Message-ID is derived from the idempotency key, so a copy sent twice in the one
crash window no check can close (the server accepted, the worker died before recording
it) is recognisable as the same message by the receiving side.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta, timezone
from typing import ClassVar, TypedDict

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert

from wooflow import engagement
from wooflow.attribution_policy import policy_of
from wooflow.clock import get_clock
from wooflow.db.tables import messages
from wooflow.workers import unsubscribe
from wooflow.workers.actions.common import customer_email, without_consent
from wooflow.workers.errors import ActionError
from wooflow.workers.mailer import build_message, html_to_text, smtp_config
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render

log = logging.getLogger(__name__)


class Mail(TypedDict):
    """An email as rendered for one recipient."""

    subject: str
    html: str | None
    text: str
    unsubscribe_url: str
    tracked: engagement.Message | None  # the message its tracking links name (None: not tracked)
    links: list[str]  # the tracked URLs, by link index


def _tracked_message(ctx: ActionContext[SendEmail.Params]) -> engagement.Message | None:
    """The tracking identity of this email, or None when it is not tracked."""
    if not (ctx.params.marketing or policy_of(ctx.store).track_transactional) or ctx.services is None:
        return None
    settings = ctx.services.settings
    now = int(get_clock(settings).now().timestamp())
    cmd = ctx.command
    return engagement.Message(ctx.store.id, ctx.idempotency_key, str(cmd.get("customer_key") or ""),
                              int(cmd.get("rule_id") or 0), int(cmd.get("step") or 0), now,
                              now + int(timedelta(days=settings.tracking_link_ttl_days).total_seconds()))


def _record_message(engine: Engine, m: engagement.Message, event_id: str, links: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(messages).values(
            message_id=m.message_id, store_id=m.store_id, rule_id=m.rule_id, step=m.step, customer_key=m.customer_key,
            event_id=event_id, channel="email", links=links, sent_at=datetime.fromtimestamp(m.issued, timezone.utc),
        ).on_conflict_do_nothing(index_elements=["message_id"]))


class SendEmail(BaseAction["SendEmail.Params"]):
    name: ClassVar[str] = "send_email"
    description: ClassVar[str] = "Send an email (HTML and plain text), marketing emails only with consent"
    timeout_s: ClassVar[float | None] = 60.0
    on_interrupted: ClassVar[InterruptPolicy] = "repeat_once"  # a sent email cannot be looked up

    class Params(BaseModel):
        subject: str = Field(min_length=1, description="Subject (Jinja2 template)")
        html: str = Field("", description="HTML body (Jinja2 template, autoescaped)")
        body: str = Field("", description="Alias of `html` (Polski Pro's field name)")
        text: str = Field("", description="Plain-text body (Jinja2 template); derived from the HTML if empty")
        to: str = Field("", description="Recipient (Jinja2 template); default: the customer's email")
        marketing: bool = Field(False, description="A marketing email: needs consent, gets an unsubscribe link")
        reply_to: str = Field("", description="Reply-To address")

        @model_validator(mode="after")
        def _has_body(self) -> SendEmail.Params:
            if not (self.html or self.body or self.text):
                raise ValueError("an email needs html (or body) or text")
            return self

    def _recipient(self, ctx: ActionContext[Params]) -> str:
        p = ctx.params
        to = render(p.to, ctx.context).strip() if p.to else (customer_email(ctx) or "")
        if not to or "@" not in to:
            raise ActionError("send_email: no recipient (the customer has no email and `to` is empty)")
        return to

    def _compose(self, ctx: ActionContext[Params], to: str, track: bool = True) -> Mail:
        p = ctx.params
        template_ctx = dict(ctx.context)
        unsubscribe_url = ""
        if p.marketing:
            assert ctx.services is not None
            token = unsubscribe.make_token(ctx.services.settings, ctx.store, email=to,
                                           customer_key=ctx.command.get("customer_key"), channel="email",
                                           rule_id=ctx.command.get("rule_id"))
            unsubscribe_url = unsubscribe.unsubscribe_url(ctx.services.settings, token)
        template_ctx["unsubscribe_url"] = unsubscribe_url
        subject = render(p.subject, template_ctx)
        html_src = p.html or p.body
        html = render(html_src, template_ctx, html=True) if html_src else None
        text = render(p.text, template_ctx) if p.text else (html_to_text(html) if html else "")
        tracked = _tracked_message(ctx) if track else None
        links: list[str] = []
        if tracked is not None:
            assert ctx.services is not None
            rewriter = engagement.Rewriter(ctx.services.settings.public_base_url,
                                           engagement.signing_key(ctx.services.settings, ctx.store.link_key),
                                           tracked, skip=frozenset({unsubscribe_url}))
            html = rewriter.html(html) if html is not None else None
            text = rewriter.text(text)
            links = rewriter.links
        if unsubscribe_url:
            # The link must be in the message whatever the template says.
            if html is not None and unsubscribe_url not in html:
                html += f'\n<p style="font-size:12px;color:#777"><a href="{unsubscribe_url}">Unsubscribe</a></p>\n'
            if unsubscribe_url not in text:
                text = text.rstrip("\n") + f"\n\n--\nUnsubscribe: {unsubscribe_url}\n"
        return {"subject": subject, "html": html, "text": text, "unsubscribe_url": unsubscribe_url,
                "tracked": tracked, "links": links}

    async def _consent(self, ctx: ActionContext[Params], to: str) -> ActionResult | None:
        p = ctx.params
        if not p.marketing:
            return None
        return await without_consent(ctx, "email", "marketing email", to=to, email=to)

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        assert ctx.services is not None
        to = self._recipient(ctx)
        skipped = await self._consent(ctx, to)
        if skipped is not None:
            return skipped
        mail = self._compose(ctx, to)
        cfg = smtp_config(ctx.services.settings, ctx.store)
        domain = cfg.from_email.rsplit("@", 1)[-1] or "wooflow.local"
        message_id = f"<{hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:32]}@{domain}>"
        headers = {"X-Wooflow-Store": ctx.store.id, "X-Wooflow-Rule": str(ctx.command.get("rule_id")),
                   "Auto-Submitted": "auto-generated"}
        if mail["unsubscribe_url"]:
            headers["List-Unsubscribe"] = f"<{mail['unsubscribe_url']}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        p = ctx.params
        message = build_message(cfg, to=to, subject=mail["subject"], text=mail["text"], html=mail["html"],
                                message_id=message_id, headers=headers, reply_to=p.reply_to or None)
        reply = await ctx.services.mailer.send(cfg, message)
        tracked = mail["tracked"]
        if tracked is not None:
            await self._record(ctx, tracked, mail["links"])
        return ActionResult("succeeded", f"email '{mail['subject']}' sent to {to}",
                            {"to": to, "subject": mail["subject"], "message_id": message_id,
                             "marketing": p.marketing, "tracked": tracked is not None, "smtp": str(reply)[:200]})

    @staticmethod
    async def _record(ctx: ActionContext[Params], tracked: engagement.Message, links: list[str]) -> None:
        """The message's row (send-based attribution, the per-link report). A database error
        here must not send the email again: the opens and clicks it gets are recorded all the
        same (their links carry everything), only a send-based credit would miss it."""
        assert ctx.services is not None
        try:
            await ctx.services.db(_record_message, ctx.services.engine, tracked, str(ctx.command.get("event_id")),
                                  links)
        except Exception as exc:  # noqa: BLE001 - logged; the email is out
            log.warning("store %s: could not record sent message %s: %s", tracked.store_id, tracked.message_id,
                        type(exc).__name__)

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        to = self._recipient(ctx)
        skipped = await self._consent(ctx, to)
        mail = self._compose(ctx, to, track=False)
        status = "would skip (no consent)" if skipped else "would send"
        return ActionResult("dry_run", f"{status} '{mail['subject']}' to {to}",
                            {"to": to, "subject": mail["subject"], "html": mail["html"], "text": mail["text"],
                             "consent": skipped.details["consent"] if skipped else "not needed or given"})
