"""What a chaos run's pipeline talks to: the simulated store, a real SMTP server and a
webhook receiver — each recording what reached it, the "observed" side of the ledger.

* `ChaosStore`: the simulator's store, plus a note of which orders WooCommerce delivered
  while they were still `processing` (answered 2xx: durable by the bridge's contract) —
  what makes a later completion's workflow a must (traffic.py). Failed deliveries are
  never retried (as in WooCommerce); the reconciliation poller has to find those changes.
  The store never disables a webhook for failing (as a store that raised
  `woocommerce_max_webhook_delivery_failures`): the chaos would otherwise turn webhooks
  off within seconds of the first bridge kill.
* `Mailbox`: aiosmtpd with AUTH (the SMTP password is one of the secrets no log may show),
  keeping each message's Message-ID, recipient and subject.
* `Receiver`: outbound webhooks, with their `Idempotency-Key` and whether the signature
  matches the signing secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any, Generic, Protocol, TypeVar

from wooflow.ops.chaos.roles import free_port
from wooflow.simulator.models import DeliveryAttempt
from wooflow.simulator.state import SimulatedStore


class Subjected(Protocol):
    @property
    def subject(self) -> str: ...


T = TypeVar("T", bound=Subjected)


class Recorded(Generic[T]):
    """What reached a receiver, by subject (thread-safe: servers add, the run reads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[T] = []

    def add(self, item: T) -> None:
        with self.lock:
            self.items.append(item)

    def by_subject(self) -> dict[str, list[T]]:
        out: dict[str, list[T]] = defaultdict(list)
        with self.lock:
            for item in self.items:
                out[item.subject].append(item)
        return out

    def count(self) -> int:
        with self.lock:
            return len(self.items)


class ChaosStore(SimulatedStore):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_delivery_failures=10**9, **kwargs)
        # The shop's admin account is as old as the shop: no poller pass reports it as a new customer.
        self.admin.created_at = self.admin.modified_at = self.admin.created_at - 30 * 86400
        self.acked_processing: set[int] = set()  # orders delivered (2xx) in state `processing`
        self.deliveries_ok = 0
        self.deliveries_failed = 0

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        super().record_attempt(attempt)
        if attempt.kind != "delivery":
            return
        if not attempt.success:
            self.deliveries_failed += 1
            return
        self.deliveries_ok += 1
        if attempt.topic.startswith("order.") and b'"processing"' in attempt.request_body:
            try:
                status = json.loads(attempt.request_body).get("status")
            except ValueError:
                return
            if status == "processing":
                self.acked_processing.add(int(attempt.resource_id))


@dataclass(frozen=True)
class Mail:
    message_id: str
    to: str
    subject: str
    at: float


class Mailbox:
    """A local SMTP server that requires AUTH (without TLS: loopback only)."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.lock = threading.Lock()
        self.got: Recorded[Mail] = Recorded()
        self.auth_failures = 0
        self.port = 0
        self._controller: Any = None

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # aiosmtpd hook
        headers = BytesHeaderParser(policy=default_policy).parsebytes(envelope.original_content or envelope.content)
        mail = Mail(str(headers.get("Message-ID", "")), str(headers.get("To", "")), str(headers.get("Subject", "")),
                    time.monotonic())
        self.got.add(mail)
        return "250 OK"

    def _authenticate(self, server: object, session: object, envelope: object, mechanism: str,
                      auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.username
              and hmac.compare_digest(auth_data.password, self.password.encode()))
        if not ok:
            with self.lock:
                self.auth_failures += 1
        return AuthResult(success=ok)

    def start(self) -> Mailbox:
        from aiosmtpd.controller import Controller

        # Plain-text AUTH is deliberate (loopback only): aiosmtpd warns about it on every connection.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, authenticator=self._authenticate,
                                      auth_required=True, auth_require_tls=False)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()


@dataclass(frozen=True)
class Delivery:
    key: str  # Idempotency-Key
    subject: str  # what the payload says it is about (e.g. the order id)
    signed: bool  # the signature matches the signing secret
    at: float


@dataclass
class Receiver:
    """An HTTP endpoint for the rules' outbound webhooks (uvicorn in a thread)."""

    secret: str
    got: Recorded[Delivery] = field(default_factory=Recorded)
    url: str = ""

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        ts = headers.get("x-wooflow-timestamp", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        try:
            subject = str(json.loads(body).get("payload", {}).get("subject", ""))
        except (ValueError, AttributeError):
            subject = ""
        self.got.add(Delivery(headers.get("idempotency-key", ""), subject,
                              hmac.compare_digest(expected, headers.get("x-wooflow-signature", "")), time.monotonic()))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self) -> Receiver:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False,
                                                    interface="asgi3"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="chaos-receiver")
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

