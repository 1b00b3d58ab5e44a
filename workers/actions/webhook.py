"""webhook: POST JSON about the subject to an external system, signed.

Body: {"id", "subject_type", "subject_id", "store_id", "rule_id", "step", "event": {...},
"data": {order/customer snapshot}, "payload": {templated extras}}. Headers:
`X-Wooflow-Timestamp: <unix seconds>` and `X-Wooflow-Signature: sha256=<hex>` where the
HMAC-SHA256 (key: the action's `secret`, else the store's `webhook_signing_secret`
setting, else the store's webhook secret) covers `"<timestamp>.<raw body>"`; receivers
should reject stale timestamps. The delivery id — the command's idempotency key — is the
body's `id` and the `Idempotency-Key` and `X-Wooflow-Delivery` headers, the same on every
retry and on the one repeat after an interrupted attempt: receivers de-duplicate by it.

10 s timeout; 5xx, 429, timeouts and network errors are retried with backoff by the
worker; other answers are permanent. The URL passes the egress guard (no private,
loopback, link-local or metadata addresses, checked after DNS and on each redirect).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import ClassVar

from pydantic import BaseModel, Field, HttpUrl, field_validator

from wooflow.jsontypes import JSONObject
from wooflow.workers.errors import ActionError, TransientError
from wooflow.workers.registry import ActionContext, ActionResult, BaseAction, InterruptPolicy
from wooflow.workers.templating import render

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Framing and routing belong to the HTTP client (a rule's Content-Length or Transfer-Encoding
# would desynchronise a kept-alive connection to the receiver, which other stores may share;
# Host would pick another site on the checked address); the rest wooflow sets itself.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
    "expect", "proxy-authorization", "proxy-connection", "content-type", "user-agent", "idempotency-key",
})


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if name.lower() in RESERVED_HEADERS or name.lower().startswith("x-wooflow-"):
            raise ValueError(f"header {name!r} is set by wooflow or its HTTP client and cannot be given")
        if _CONTROL.search(value):
            raise ValueError(f"header {name!r} has a control character (CR, LF, NUL...) in its value")
    return headers


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class Webhook(BaseAction["Webhook.Params"]):
    name: ClassVar[str] = "webhook"
    description: ClassVar[str] = "POST signed JSON about the subject to a URL"
    timeout_s: ClassVar[float | None] = 45.0  # the request has its own timeout; this bounds redirects too
    on_interrupted: ClassVar[InterruptPolicy] = "repeat_once"  # the receiver de-duplicates by Idempotency-Key

    class Params(BaseModel):
        url: HttpUrl = Field(description="Where to POST (http/https)")
        secret: str = Field("", description="HMAC key (default: the store's webhook_signing_secret or webhook secret)")
        timeout: float = Field(10.0, gt=0, le=30, description="Seconds per request")
        include_context: bool = Field(True, description="Send the order/customer snapshot as `data`")
        payload: dict[str, str] = Field(default_factory=dict, description="Extra fields (values are Jinja2 templates)")
        headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (not the ones "
                                        "wooflow or HTTP set: Host, Content-Length, Content-Type, X-Wooflow-*...)")

        _headers = field_validator("headers")(check_headers)

    def _body(self, ctx: ActionContext[Params]) -> bytes:
        p = ctx.params
        cmd = ctx.command
        received = cmd.get("received_at")
        doc: JSONObject = {
            "id": ctx.idempotency_key, "subject_type": cmd.get("subject_type"),
            "subject_id": str(cmd.get("subject_id")),
            "store_id": ctx.store.id, "rule_id": cmd.get("rule_id"), "step": cmd.get("step"),
            "customer_key": cmd.get("customer_key"),
            "event": {"event_id": cmd.get("event_id"), "trigger": cmd.get("trigger"),
                      "received_at": received.isoformat() if received else None},
        }
        if p.include_context:
            ctx_data = ctx.context
            doc["data"] = {k: ctx_data[k] for k in ("order", "customer", "product", "previous_status", "topic",
                                                     "customer_state", "coupon") if ctx_data.get(k) is not None}
        if p.payload:
            doc["payload"] = {k: render(v, ctx.context) for k, v in p.payload.items()}
        return json.dumps(doc, separators=(",", ":"), default=str).encode()

    def _secret(self, ctx: ActionContext[Params]) -> str:
        p = ctx.params
        return p.secret or str(ctx.store.settings.get("webhook_signing_secret") or "") or ctx.store.webhook_secret

    async def run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        assert ctx.services is not None
        body = self._body(ctx)
        ts = str(int(time.time()))
        headers = {**p.headers, "Content-Type": "application/json", "User-Agent": "wooflow/0.1 (+webhook)",
                   "X-Wooflow-Timestamp": ts, "X-Wooflow-Signature": sign(self._secret(ctx), ts, body),
                   "Idempotency-Key": ctx.idempotency_key, "X-Wooflow-Delivery": ctx.idempotency_key,
                   "X-Wooflow-Attempt": str(ctx.command.get("attempt", 1)),
                   "X-Wooflow-Event": str(ctx.command.get("trigger", ""))}
        answer = await ctx.services.http.request("POST", str(p.url), content=body, headers=headers, timeout=p.timeout)
        status = answer.status_code
        if 200 <= status < 300:
            details: JSONObject = {"url": str(p.url), "status": status, "bytes": len(body)}
            if answer.redirects:
                details["redirects"] = list(answer.redirects)
            return ActionResult("succeeded", f"POST {p.url} → {status}", details)
        if status == 429 or status >= 500 or status == 408:
            raise TransientError(f"POST {p.url} → HTTP {status}")
        raise ActionError(f"POST {p.url} → HTTP {status}: {answer.text[:200]}")

    async def dry_run(self, ctx: ActionContext[Params]) -> ActionResult:
        p = ctx.params
        body = self._body(ctx)
        return ActionResult("dry_run", f"would POST {len(body)} bytes to {p.url}",
                            {"url": str(p.url), "body": json.loads(body)})
