"""What a test runs inside its own process, one place for each concern:

- a role in a thread: `wooflow.workers.testing.RoleThread` (`WorkerThread`) and
  `tests.rules_kit.ConsumerThread`;
- the bridge on a loopback port: `BridgeThread` (the `bridge` fixture), with `deliver` and
  `webhook_headers` for a webhook signed as WooCommerce signs it;
- the admin API: `ApiThread` on a port, `api_client` without a server, `bearer` for a token;
- a real SMTP server that keeps what it receives: `Inbox` (the `inbox` fixture).

Roles as separate processes are `tests.support.RoleProcess` and `tests.pipeline.Pipeline`."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from email.message import EmailMessage
from typing import Any, Self

import httpx
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.support import ServerThread, free_port
from wooflow.producers.signature import sign
from wooflow.settings import Settings
from wooflow.stores import Store


def webhook_headers(secret: str, body: bytes, topic: str = "order.created") -> dict[str, str]:
    """The headers WooCommerce sends with a webhook: its topic, resource and event, and the
    body's signature with the store's secret."""
    resource, _, event = topic.partition(".")
    return {"Content-Type": "application/json", "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Resource": resource,
            "X-WC-Webhook-Event": event, "X-WC-Webhook-Signature": sign(body, secret)}


def hook_url(bridge_url: str, store_id: str) -> str:
    """Where a store's webhooks go on the bridge at `bridge_url`."""
    return f"{bridge_url}/webhooks/woocommerce/{store_id}"


def deliver(url: str, secret: str, topic: str, body: bytes | Mapping[str, Any], *,
            headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> httpx.Response:
    """POST `body` (a JSON object, or its bytes) to `url` as WooCommerce would, signed with
    `secret`; `headers` adds to or replaces what WooCommerce sends."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=raw, timeout=timeout,
                      headers=webhook_headers(secret, raw, topic) | dict(headers or {}))


class BridgeThread(ServerThread):
    """The bridge (wooflow.producers.app) on a free loopback port in this process."""

    def __init__(self, settings: Settings) -> None:
        from wooflow.producers.app import create_app

        super().__init__(create_app(settings))

    def hook_url(self, store_id: str) -> str:
        return hook_url(self.url, store_id)

    def webhook(self, store: Store, topic: str, body: bytes | Mapping[str, Any], *,
                headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> httpx.Response:
        """`deliver` a webhook of `store` to this bridge, signed with the store's secret."""
        return deliver(self.hook_url(store.id), store.webhook_secret, topic, body, headers=headers, timeout=timeout)


def api_client(settings: Settings) -> TestClient:
    """The admin API called in this process, without a server."""
    from wooflow.api.app import create_app

    return TestClient(create_app(settings))


def bearer(engine: Engine, store_id: str) -> dict[str, str]:
    """An Authorization header with a new API token of the store."""
    from wooflow.api.auth import create_token

    return {"Authorization": f"Bearer {create_token(engine, store_id, 'test')}"}


class ApiThread(ServerThread):
    """The admin API (wooflow.api.app) on a free loopback port in this process."""

    def __init__(self, settings: Settings) -> None:
        from wooflow.api.app import create_app

        super().__init__(create_app(settings))


class Inbox:
    """A real SMTP server (aiosmtpd) on a free loopback port that keeps every message it
    accepts, parsed. `store_id` narrows `to()` to one store's mail (its X-Wooflow-Store
    header); `on_message` is awaited before the server answers (a server that sits on mail).
    `with Inbox() as inbox:` or `start()` ... `stop()`."""

    def __init__(self, store_id: str = "",
                 on_message: Callable[[EmailMessage, Any], Awaitable[None]] | None = None) -> None:
        self.store_id, self.on_message = store_id, on_message
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []

    def start(self) -> Self:
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.port = int(self.controller.port)
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
        if self.on_message is not None:
            await self.on_message(msg, envelope)
        return "250 OK"

    def smtp_settings(self, from_email: str) -> dict[str, Any]:
        """A store's `smtp` settings that send its mail here."""
        return {"host": "127.0.0.1", "port": self.port, "from_email": from_email}

    def to(self, address: str) -> list[EmailMessage]:
        """The messages to `address` (any case), of `store_id` when one is set."""
        with self.lock:
            return [m for m in self.messages if str(m["To"]).lower() == address.lower()
                    and (not self.store_id or str(m["X-Wooflow-Store"]) == self.store_id)]

    def subjects(self, address: str) -> list[str]:
        return [str(m["Subject"]) for m in self.to(address)]

    def summary(self) -> list[tuple[str, str]]:
        """(To, Subject) of everything received, for a failure's report."""
        with self.lock:
            return [(str(m["To"]), str(m["Subject"])) for m in self.messages]
