"""SMS through pluggable providers.

A provider is a class with `name` and `async send(ctx_http, config, to, text, reference)`
returning a message id; providers register in the `wooflow.sms_providers` entry-point
group. A store's `settings.sms` ({"provider", ...provider options}) overrides the global
`WOOFLOW_SMS_*` settings. Included: `http`, a generic JSON-over-HTTP provider:

    POST <url>  Authorization: Bearer <token>  Idempotency-Key: <idempotency key>
    {"to": "+48...", "from": "<sender>", "text": "...", "reference": "<idempotency key>"}
    → any 2xx; the answer's "id" / "message_id" (if JSON) is the provider's id.

The reference is the same on every retry and on the one repeat after an interrupted
attempt (workers/registry.py, `on_interrupted`), so a provider that de-duplicates client
references sends the message once; providers should pass `reference` on.

It goes through the same egress guard as webhooks (workers/netguard.py).
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from typing import Any, Protocol

from wooflow.settings import Settings
from wooflow.stores import Store
from wooflow.workers.errors import ActionError, TransientError
from wooflow.workers.netguard import SafeHttp


class SmsProvider(Protocol):
    name: str

    async def send(self, http: SafeHttp, config: dict[str, Any], to: str, text: str, reference: str) -> str: ...


class HttpSmsProvider:
    name = "http"

    async def send(self, http: SafeHttp, config: dict[str, Any], to: str, text: str, reference: str) -> str:
        url = str(config.get("url") or "")
        if not url:
            raise ActionError("SMS provider 'http' has no url (store settings.sms.url or WOOFLOW_SMS_HTTP_URL)")
        body = json.dumps({"to": to, "from": config.get("sender", ""), "text": text, "reference": reference}).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "wooflow/0.1",
                   "Idempotency-Key": reference}
        if config.get("token"):
            headers["Authorization"] = f"Bearer {config['token']}"
        answer = await http.request("POST", url, content=body, headers=headers,
                                    timeout=float(config.get("timeout", 10)))
        if answer.status_code == 429 or answer.status_code >= 500:
            raise TransientError(f"SMS provider answered HTTP {answer.status_code}")
        if not 200 <= answer.status_code < 300:
            raise ActionError(f"SMS provider answered HTTP {answer.status_code}: {answer.text[:200]}")
        try:
            data = answer.json()
        except ValueError:
            data = {}
        if isinstance(data, dict):
            return str(data.get("id") or data.get("message_id") or "")
        return ""


BUILTIN: dict[str, SmsProvider] = {"http": HttpSmsProvider()}


def provider_config(settings: Settings, store: Store) -> dict[str, Any]:
    config: dict[str, Any] = {
        "provider": settings.sms_provider, "url": settings.sms_http_url, "sender": settings.sms_sender,
        "token": settings.sms_http_token.get_secret_value() if settings.sms_http_token else "",
    }
    config.update(store.settings.get("sms") or {})
    return config


def get_provider(name: str) -> SmsProvider:
    if name in BUILTIN:
        return BUILTIN[name]
    for ep in entry_points(group="wooflow.sms_providers"):
        if ep.name == name:
            obj = ep.load()
            provider = obj() if isinstance(obj, type) else obj
            BUILTIN[name] = provider
            return provider
    raise ActionError(f"unknown SMS provider {name!r} (install one in the wooflow.sms_providers entry-point group)")
