"""POST /webhooks/woocommerce/{store_id}: a WooCommerce delivery becomes Kafka events.

Order of checks (each failure is a clear 4xx, produces nothing and is counted in
`wooflow_webhooks_rejected_total{reason}`):
unknown store → 404, body too large → 413, the creation ping (form-encoded
`webhook_id=N`, no signature) → 200, not JSON → 415, bad/missing signature → 401
(checked over the raw bytes, before parsing), unknown topic or topic/resource/event
headers that disagree → 400, malformed JSON → 400, not a resource of that topic → 400.

Accepted deliveries are answered 200 once durable (Kafka acks=all or the outbox, see
ingest.py). A delivery whose content was seen before (a re-send, a second hook for one
save) is answered 200 with `"duplicate": true` and produces nothing. A REST error object
(the resource was gone when WooCommerce built the payload) is recorded and answered 200:
anything else would count towards WooCommerce disabling the webhook.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Engine, insert
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from wooflow import metrics
from wooflow.db.engine import unavailable
from wooflow.db.tables import bridge_gone_deliveries
from wooflow.jsontypes import JSONObject
from wooflow.producers.ingest import DUPLICATE, Ingestor, OutboxFull, Unavailable
from wooflow.producers.normalise import (
    RESOURCE_EVENTS,
    NormaliseError,
    normalise,
    normalise_action,
    normalise_note,
    plan_action,
)
from wooflow.producers.notes import find_note
from wooflow.producers.signature import verify
from wooflow.producers.tenants import Tenants
from wooflow.producers.woo_rest import AsyncWooRest
from wooflow.settings import Settings
from wooflow.stores import Store

log = logging.getLogger(__name__)

_PING = re.compile(rb"^webhook_id=\d+$")
_WANTED = frozenset({b"content-length", b"content-type", b"x-wc-webhook-signature", b"x-wc-webhook-topic",
                     b"x-wc-webhook-resource", b"x-wc-webhook-event", b"x-wc-webhook-id"})


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def reply(status: int, code: str, message: str) -> tuple[int, bytes]:
    metrics.webhooks_rejected.labels(code).inc()
    return status, orjson.dumps({"error": code, "message": message})


def known_topic(topic: str) -> bool:
    resource, _, event = topic.partition(".")
    if resource == "action":
        return bool(re.fullmatch(r"(woocommerce|wc)_[A-Za-z0-9_\-]+", event))
    return event in RESOURCE_EVENTS.get(resource, ())


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class WebhookReceiver:
    def __init__(self, settings: Settings, tenants: Tenants, ingestor: Ingestor, engine: Engine,
                 rest: AsyncWooRest) -> None:
        self.settings = settings
        self.tenants = tenants
        self.ingestor = ingestor
        self.engine = engine
        self.rest = rest
        self._children: dict[Any, Any] = {}

    def _counter(self, metric: Any, *labels: str) -> Any:
        """Labelled children cached: `.labels()` takes a lock and a lookup per call."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def handle(self, request: Request) -> Response:
        """Starlette entry point (the app serves the same logic through `asgi`, faster)."""
        try:
            body: bytes | Exception = await read_body(request, self.settings.max_body_bytes)
        except (TooLarge, ClientDisconnect) as exc:
            body = exc
        status, content = await self.process(request.path_params["store_id"], request.headers, body)
        return Response(content, status_code=status, media_type="application/json")

    async def asgi(self, scope: Any, receive: Any, send: Any, store_id: str) -> None:
        """The hot path as a bare ASGI handler: no Request/Response objects per delivery."""
        headers = {}
        for k, v in scope["headers"]:
            k = k.lower()
            if k in _WANTED:  # only what `process` reads: decoding every header cost more
                headers[k.decode("latin-1")] = v.decode("latin-1")
        limit = self.settings.max_body_bytes
        body: bytes | Exception
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            body = TooLarge()
        else:
            chunks, size, more = [], 0, True
            body = b""
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    body = ClientDisconnect()
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    body = TooLarge()
                    break
                chunks.append(chunk)
                more = message.get("more_body", False)
            else:
                body = b"".join(chunks)
        status, content = await self.process(store_id, headers, body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})

    async def process(self, store_id: str, headers: Any, body: bytes | Exception) -> tuple[int, bytes]:
        started = time.perf_counter()
        try:
            store = await self.tenants.get(store_id)
        except Exception as exc:
            if not unavailable(exc):
                raise
            return reply(503, "unavailable", "the store could not be looked up now (PostgreSQL unavailable)")
        if store is None:
            return reply(404, "unknown_store", f"no store {store_id!r} is registered with wooflow")
        # exported at 0 from the store's first delivery: a forged burst in a series' first
        # sample would show Prometheus no increase() — no alert, an empty panel
        failures = self._counter(metrics.signature_failures, store_id)
        if isinstance(body, TooLarge):
            return reply(413, "body_too_large", f"body exceeds {self.settings.max_body_bytes} bytes")
        if isinstance(body, Exception):
            return reply(400, "client_disconnect", "client went away mid-body")
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded" and _PING.match(body.strip()):
            # WooCommerce pings a new webhook unsigned and accepts only 200.
            metrics.webhooks_accepted.labels("ping").inc()
            return 200, b'{"status":"pong"}'
        if ctype != "application/json":
            return reply(415, "unsupported_media_type", f"expected application/json, got {ctype or 'nothing'}")
        signature = headers.get("x-wc-webhook-signature")
        if not verify(body, store.webhook_secret, signature):
            fresh = await self.tenants.refresh(store_id) if signature else None
            if fresh is None or fresh.webhook_secret == store.webhook_secret \
                    or not verify(body, fresh.webhook_secret, signature):
                failures.inc()
                return reply(401, "invalid_signature", f"{'bad' if signature else 'missing'} X-WC-Webhook-Signature")
            store = fresh
        topic = headers.get("x-wc-webhook-topic", "").strip().lower()
        if not known_topic(topic):
            return reply(400, "unknown_topic", f"unknown X-WC-Webhook-Topic {topic!r}")
        resource, _, event = topic.partition(".")
        for name, expected in (("resource", resource), ("event", event)):
            given = headers.get(f"x-wc-webhook-{name}")
            if given is not None and given.strip().lower() != expected:
                return reply(400, "topic_mismatch",
                             f"X-WC-Webhook-{name.title()} {given!r} does not match topic {topic!r}")
        try:
            payload: Any = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return reply(400, "malformed_json", f"body is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return reply(400, "malformed_json", "body must be a JSON object")
        if "code" in payload and "id" not in payload and "action" not in payload:
            return await self._resource_gone(store, topic, headers.get("x-wc-webhook-id", ""), payload, body)

        received = datetime.now(timezone.utc)
        info = self.tenants.info(store)
        raw = body.decode("utf-8", "replace") if len(body) <= self.settings.raw_json_max_bytes else None
        try:
            if resource == "action":
                hook, arg = payload.get("action"), payload.get("arg")
                plan = plan_action(str(hook or event), arg)
                if plan is None:
                    metrics.webhooks_accepted.labels("unmapped_action").inc()
                    return 200, orjson.dumps({"accepted": 0, "event_ids": [],
                                              "note": f"action {event!r} has no wooflow event"})
                if plan.action == "note_added":
                    found = await find_note(self.rest, store, plan, self.settings.note_lookup_orders)
                    if found is None:
                        metrics.webhooks_accepted.labels("note_not_found").inc()
                        return 200, orjson.dumps({"accepted": 0, "event_ids": [],
                                                  "note": "the order note could not be found through REST"})
                    events = [normalise_note(info, found.order_id, found.note, found.order, source="webhook",
                                             received_at=received, wc_topic=topic, raw=raw)]
                else:
                    fetched = await self.rest.get_item(store, plan.resource, plan.resource_id)
                    events = [normalise_action(info, plan, fetched, source="webhook", received_at=received, raw=raw)]
            else:
                deleted_state = None
                if event == "deleted" and _id_of(payload) > 0:
                    deleted_state = await self.rest.get_item(store, resource, _id_of(payload))
                events = normalise(info, topic, payload, source="webhook", received_at=received, raw=raw,
                                   deleted_state=deleted_state)
        except NormaliseError as exc:
            return reply(400, "invalid_resource", str(exc))
        try:
            outcomes = await self.ingestor.submit(events, "webhook")
        except OutboxFull as exc:
            return 503, orjson.dumps({"error": "outbox_full", "message": str(exc)})
        except Unavailable as exc:
            log.error("webhook for store %s not made durable: %s", store.id, exc)
            return 503, orjson.dumps({"error": "unavailable", "message": "event could not be made durable"})
        new = [o for o in outcomes if o != DUPLICATE]
        for ev, outcome in zip(events, outcomes, strict=True):
            if outcome != DUPLICATE:
                self._counter(metrics.events_in, ev.topic, store.id).inc()
        self._counter(metrics.webhooks_accepted, new[0] if new else DUPLICATE).inc()
        metrics.webhook_latency.observe(time.perf_counter() - started)
        return 200, orjson.dumps({"accepted": len(new), "duplicate": not new,
                                  "event_ids": [e.event_id for e in events]})

    async def _resource_gone(self, store: Store, topic: str, webhook_id: str, payload: JSONObject,
                             body: bytes) -> tuple[int, bytes]:
        # The resource was gone when WooCommerce built the payload: nothing to produce,
        # but WooCommerce must see success or it counts a failure. Recorded for operators.
        code = str(payload.get("code"))
        metrics.webhooks_accepted.labels("resource_gone").inc()
        try:
            await asyncio.to_thread(self._record_gone, store.id, topic, webhook_id, code, body)
        except Exception as exc:  # noqa: BLE001 - recording is best effort; the answer is not
            log.warning("could not record a resource-gone delivery for %s: %s", store.id, exc)
        log.info("store %s: %s delivery for a resource that is gone (%s)", store.id, topic, code)
        return 200, orjson.dumps({"accepted": 0, "event_ids": [], "note": f"resource gone: {code}"})

    def _record_gone(self, store_id: str, topic: str, webhook_id: str, code: str, body: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(bridge_gone_deliveries).values(
                store_id=store_id, topic=topic, webhook_id=webhook_id[:64], code=code[:200],
                body=body[:4000].decode("utf-8", "replace")))


def _id_of(payload: JSONObject) -> int:
    rid = payload.get("id") or 0
    try:
        return int(rid) if isinstance(rid, (int, float, str)) else 0
    except ValueError:
        return 0
