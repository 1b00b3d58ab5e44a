"""Sending webhooks the way WC_Webhook::deliver() and ::deliver_ping() do.

The worker drains :class:`~wooflow.simulator.queue.DeliveryQueue` in an
asyncio loop (the simulator server's).  For every job it builds the payload
*now* (not when the change happened), encodes it with PHP's json_encode rules,
signs the exact bytes, POSTs once and judges the answer:

* success is ``200 <= status < 303`` – any 2xx, and 300/301/302, which are
  *not followed* (``redirection => 0``);
* anything else, or no answer within the timeout (60 s), is a failure; the
  failure is only counted – WooCommerce never retries a delivery – and past
  ``max_delivery_failures`` (5) consecutive failures the webhook is disabled.

Pings are different on purpose: a form-encoded ``webhook_id=N`` POST without
signature headers, WordPress' default 5 s timeout and redirect following, and
only a final 200 counts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from .models import DeliveryAttempt
from .phpjson import php_json_encode
from .queue import QueuedDelivery
from .state import SimulatedStore

__all__ = [
    "DEFAULT_TIMEOUT",
    "PING_TIMEOUT",
    "DeliveryWorker",
    "send_ping_async",
    "send_ping_sync",
    "sign",
    "wp_specialchars_decode",
]

DEFAULT_TIMEOUT = 60.0  # 'timeout' => MINUTE_IN_SECONDS
PING_TIMEOUT = 5.0  # WP_Http default for wp_safe_remote_post()
PING_REDIRECTS = 5  # WP_Http default 'redirection'

# The same port of wp_specialchars_decode() as producers/signature.py, kept as a separate
# copy on purpose: the simulator is WooCommerce's side of the wire and must not share the
# bridge's code, or a bug in one would hide in both (end-to-end tests have the bridge verify
# what the simulator signs).
_ENTITY_PADDING = [
    (re.compile(r"&#0*39;"), "&#039;"), (re.compile(r"&#x0*27;", re.I), "&#x27;"),
    (re.compile(r"&#0*34;"), "&#034;"), (re.compile(r"&#x0*22;", re.I), "&#x22;"),
    (re.compile(r"&#0*60;"), "&#060;"), (re.compile(r"&#0*62;"), "&#062;"),
    (re.compile(r"&#0*38;"), "&#038;"), (re.compile(r"&#x0*26;", re.I), "&#x26;"),
]
_ENTITIES = {
    "&#039;": "'", "&#x27;": "'", "&quot;": '"', "&#034;": '"', "&#x22;": '"',
    "&lt;": "<", "&#060;": "<", "&gt;": ">", "&#062;": ">", "&amp;": "&", "&#038;": "&", "&#x26;": "&",
}
_ENTITY_RE = re.compile("|".join(re.escape(k) for k in sorted(_ENTITIES, key=len, reverse=True)))


def wp_specialchars_decode(text: str) -> str:
    """WordPress' wp_specialchars_decode($text, ENT_QUOTES), single pass like strtr().

    WooCommerce signs with the *decoded* secret, so a secret containing e.g.
    ``&amp;`` is keyed as ``&`` – a receiver must do the same to verify.
    """
    if "&" not in text:
        return text
    for pattern, replacement in _ENTITY_PADDING:
        text = pattern.sub(replacement, text)
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group(0)], text)


def sign(body: bytes, secret: str) -> str:
    """X-WC-Webhook-Signature: base64(HMAC-SHA256(raw body, decoded secret))."""
    key = wp_specialchars_decode(secret).encode("utf-8")
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode("ascii")


def _is_success(status: int | None) -> bool:
    # log_delivery(): intval($code) >= 200 && intval($code) < 303
    return status is not None and 200 <= status < 303


def _describe(error: BaseException, timeout: float) -> str:
    # (httpx for the pings, aiohttp for the deliveries)
    # The WP_Error codes/messages WordPress' HTTP API reports.
    if isinstance(error, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return f"http_request_failed: cURL error 28: Operation timed out after {int(timeout * 1000)} milliseconds"
    if isinstance(error, httpx.TooManyRedirects):
        return "http_request_failed: Too many redirects."
    return f"http_request_failed: {type(error).__name__}: {error}"


# ------------------------------------------------------------------ pings


@dataclass
class _Ping:
    """One deliver_ping(): the request, timed from `start`, recorded by `record`."""
    store: SimulatedStore
    webhook_id: int
    timeout: float
    url: str
    topic: str
    body: bytes
    headers: dict[str, str]
    started: float = 0.0
    started_at: float = 0.0
    status: int | None = None
    error: str | None = None
    response_body: bytes = b""

    @classmethod
    def start(cls, store: SimulatedStore, webhook_id: int, timeout: float) -> _Ping | None:
        with store.lock:
            webhook = store.webhooks.get(webhook_id)
            if webhook is None:
                return None
            ping = cls(store, webhook_id, timeout, webhook.delivery_url, webhook.topic,
                       f"webhook_id={webhook.id}".encode(),
                       {"User-Agent": store.user_agent, "Content-Type": "application/x-www-form-urlencoded"})
        ping.started, ping.started_at = time.perf_counter(), store.clock()
        return ping

    def client_options(self) -> dict[str, Any]:
        return {"follow_redirects": True, "max_redirects": PING_REDIRECTS, "timeout": self.timeout}

    def answered(self, response: httpx.Response) -> None:
        self.status, self.response_body = response.status_code, response.content

    def failed(self, error: httpx.HTTPError) -> None:
        self.error = _describe(error, self.timeout)

    def record(self) -> DeliveryAttempt:
        attempt = DeliveryAttempt(
            kind="ping", webhook_id=self.webhook_id, topic=self.topic, resource_id=None, delivery_id=None,
            url=self.url, started_at=self.started_at, duration=round(time.perf_counter() - self.started, 5),
            status_code=self.status, error=self.error, success=self.status == 200, request_headers=self.headers,
            request_body=self.body, response_body=self.response_body,
        )
        self.store.record_attempt(attempt)
        return attempt


def send_ping_sync(store: SimulatedStore, webhook_id: int, *, timeout: float = PING_TIMEOUT) -> DeliveryAttempt | None:
    """deliver_ping() from a plain thread (used by ``store.create_webhook``)."""
    ping = _Ping.start(store, webhook_id, timeout)
    if ping is None:
        return None
    try:
        with httpx.Client(**ping.client_options()) as client:
            ping.answered(client.post(ping.url, content=ping.body, headers=ping.headers))
    except httpx.HTTPError as exc:
        ping.failed(exc)
    return ping.record()


async def send_ping_async(store: SimulatedStore, webhook_id: int, *,
                          timeout: float = PING_TIMEOUT) -> DeliveryAttempt | None:
    """deliver_ping() from inside the server's event loop (REST webhook creation)."""
    ping = _Ping.start(store, webhook_id, timeout)
    if ping is None:
        return None
    try:
        async with httpx.AsyncClient(**ping.client_options()) as client:
            ping.answered(await client.post(ping.url, content=ping.body, headers=ping.headers))
    except httpx.HTTPError as exc:
        ping.failed(exc)
    return ping.record()


# -------------------------------------------------------------- deliveries


class DeliveryWorker:
    """The queue runner: takes due jobs and delivers them, ``concurrency`` at a time.

    Deliveries go through aiohttp: httpx's connection pool cost the simulator half its CPU
    under load (bench/e2e: 54% of the process' samples at 200 deliveries/s)."""

    def __init__(
        self,
        store: SimulatedStore,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = 1,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    def _waker(self) -> None:
        # Called from whichever thread enqueued; hop into our loop.
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # loop already closed
            pass

    async def run(self) -> None:
        """Deliver until cancelled or :meth:`stop` is called."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        queue = self.store.queue
        queue.add_waker(self._waker)
        slots = asyncio.Semaphore(self.concurrency)
        # the total timeout, like cURL's CURLOPT_TIMEOUT
        client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                       connector=aiohttp.TCPConnector(limit=self.concurrency))
        try:
            while not self._stopping:
                # Take a runner slot first: a job waiting for a free slot is
                # still *pending* and keeps absorbing repeated changes.
                await slots.acquire()
                job = await self._next_job()
                if job is None:
                    slots.release()
                    break
                task = asyncio.create_task(self._run_job(client, job, slots))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            queue.remove_waker(self._waker)
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await client.close()

    async def _next_job(self) -> QueuedDelivery | None:
        assert self._wake is not None
        queue = self.store.queue
        while not self._stopping:
            job = queue.pop_due()
            if job is not None:
                return job
            self._wake.clear()
            job = queue.pop_due()  # re-check: an enqueue may have raced the clear()
            if job is not None:
                return job
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=queue.seconds_until_next())
            except TimeoutError:
                pass
        return None

    def stop(self) -> None:
        """Ask the worker to finish (call from the worker's loop or any thread)."""
        self._stopping = True
        self._waker()

    async def _run_job(self, client: aiohttp.ClientSession, job: QueuedDelivery, slots: asyncio.Semaphore) -> None:
        try:
            await self.deliver(client, job)
        finally:
            # Logged and judged before the job stops counting as in flight, so
            # wait_idle() returning means the log and failure_count are final.
            self.store.queue.task_done(job)
            slots.release()

    async def deliver(self, client: aiohttp.ClientSession, job: QueuedDelivery) -> DeliveryAttempt | None:
        store = self.store
        built = store.build_payload(job.webhook_id, job.arg)
        if built is None:
            # Webhook deleted while the job waited: WC_Webhook loads as id 0
            # with no URL, so nothing reaches any receiver.
            return None
        webhook, payload = built
        body = php_json_encode(payload)
        delivery_id = store.delivery_id(webhook.id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": store.user_agent,
            "X-WC-Webhook-Source": store.home_url,
            "X-WC-Webhook-Topic": webhook.topic,
            "X-WC-Webhook-Resource": webhook.resource,
            "X-WC-Webhook-Event": webhook.event,
            "X-WC-Webhook-Signature": sign(body, webhook.secret),
            "X-WC-Webhook-ID": str(webhook.id),
            "X-WC-Webhook-Delivery-ID": delivery_id,
        }
        started, started_at = time.perf_counter(), store.clock()
        status: int | None = None
        error: str | None = None
        response_body = b""
        try:
            async with client.post(webhook.delivery_url, data=body, headers=headers,
                                   allow_redirects=False) as response:
                status, response_body = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = _describe(exc, self.timeout)
        attempt = DeliveryAttempt(
            kind="delivery", webhook_id=webhook.id, topic=webhook.topic, resource_id=job.arg,
            delivery_id=delivery_id, url=webhook.delivery_url, started_at=started_at,
            duration=round(time.perf_counter() - started, 5), status_code=status, error=error,
            success=_is_success(status), request_headers=headers, request_body=body,
            response_body=response_body,
        )
        store.record_attempt(attempt)
        return attempt
