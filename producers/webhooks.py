"""POST /webhooks/woocommerce/{store_id}: a WooCommerce delivery becomes Kafka events.

Order of checks (each failure is a clear 4xx and produces nothing):
unknown store → 404, body too large → 413, the creation ping (form-encoded
`webhook_id=N`, no signature) → 200, not JSON → 415, bad/missing signature → 401
(checked over the raw bytes, before parsing), unknown topic → 400, malformed JSON → 400.
The 2xx goes out only after Kafka acknowledged every event with acks=all.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from wooflow import metrics
from wooflow.kafka.producer import DeliveryFailed, Producer
from wooflow.producers.normalise import NormaliseError, normalise
from wooflow.producers.signature import verify
from wooflow.schemas.codec import Codec
from wooflow.settings import Settings
from wooflow.stores import StoreCache

log = logging.getLogger(__name__)

RESOURCES = {"order", "customer", "product", "coupon"}
EVENTS = {"created", "updated", "deleted", "restored"}
_PING = re.compile(rb"^webhook_id=\d+$")


def error(status: int, code: str, message: str) -> JSONResponse:
    metrics.webhooks_rejected.labels(code).inc()
    return JSONResponse({"error": code, "message": message}, status_code=status)


def known_topic(topic: str) -> bool:
    resource, _, event = topic.partition(".")
    return (resource in RESOURCES and event in EVENTS) or (resource == "action" and bool(event))


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
    def __init__(self, settings: Settings, stores: StoreCache, producer: Producer, codec: Codec) -> None:
        self.settings = settings
        self.stores = stores
        self.producer = producer
        self.codec = codec

    async def handle(self, request: Request) -> JSONResponse:
        store_id = request.path_params["store_id"]
        store = await run_in_threadpool(self.stores.get, store_id)
        if store is None:
            return error(404, "unknown_store", f"no store {store_id!r} is registered with wooflow")
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except TooLarge:
            return error(413, "body_too_large", f"body exceeds {self.settings.max_body_bytes} bytes")
        except ClientDisconnect:
            return error(400, "client_disconnect", "client went away mid-body")
        headers = request.headers
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded" and _PING.match(body.strip()):
            # WooCommerce pings a new webhook unsigned and accepts only 200.
            return JSONResponse({"status": "pong"}, status_code=200)
        if ctype != "application/json":
            return error(415, "unsupported_media_type", f"expected application/json, got {ctype or 'nothing'}")
        if not verify(body, store.webhook_secret, headers.get("x-wc-webhook-signature")):
            metrics.signature_failures.labels(store_id).inc()
            which = "bad" if headers.get("x-wc-webhook-signature") else "missing"
            return error(401, "invalid_signature", f"{which} X-WC-Webhook-Signature")
        topic = headers.get("x-wc-webhook-topic", "")
        if not known_topic(topic):
            return error(400, "unknown_topic", f"unknown X-WC-Webhook-Topic {topic!r}")
        try:
            payload: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, "malformed_json", f"body is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return error(400, "malformed_json", "body must be a JSON object")
        if "code" in payload and "id" not in payload:
            # The resource was gone when WooCommerce built the payload: nothing to produce,
            # but WooCommerce must see success or it counts a failure.
            metrics.webhooks_rejected.labels("resource_gone").inc()
            return JSONResponse({"accepted": 0, "note": f"resource gone: {payload.get('code')}"}, status_code=200)
        received = datetime.now(timezone.utc)
        try:
            events = normalise(store.id, store.timezone, topic, payload, source="webhook", received_at=received,
                               raw=body.decode("utf-8", "replace"))
        except NormaliseError as exc:
            return error(400, "invalid_resource", str(exc))
        try:
            for ev in events:
                value = self.codec.encode(ev.schema, ev.record, self.settings.topic(ev.topic))
                await self.producer.send(self.settings.topic(ev.topic), value, key=ev.key)
                metrics.events_in.labels(ev.topic, store.id).inc()
        except DeliveryFailed as exc:
            log.error("kafka delivery failed for store %s: %s", store.id, exc)
            return JSONResponse({"error": "unavailable", "message": "event could not be made durable"}, status_code=503)
        return JSONResponse({"accepted": len(events), "event_ids": [e.event_id for e in events]})
