"""Storefront events: what shoppers do in the store's theme, sent by a small script.

POST /storefront/{store_id}/events  — {"key", "session_id", "events": [{"type", ...}]}
GET  /storefront/{store_id}/wooflow.js — the script themes include.

A request must carry the store's public key (`X-Wooflow-Key` header or `key` field),
come from the store's own origin (`Origin`, else `Referer`), and stay under a per-IP and
per-session token-bucket rate. Failures are a clear 4xx, produce nothing and are counted
in `wooflow_storefront_rejected_total{reason}`.

Identity: a guest session is linked to `g<email hash>` once it captures an email — or to
`c<customer id>` when that email belongs to a registered customer (the bridge's identity
map, identity.py) — and to `c<customer id>` on login; later events of the session are keyed
by what it was linked to (table `storefront_sessions`). An email typed into the storefront
is never taken as proof of an account: it only finds the account the store said owns it.
Because the public key is public, a customer id only counts when signed by the store:
`customer_sig = hex(HMAC-SHA256(webhook secret, "<store>:<session>:<customer id>"))` (one line of PHP in the theme); an unsigned id is
kept as a property and does not link the session.

Consent: `email_captured` may say `marketing_consent: true` (the shopper ticked the
form's box); the scheduler's activity reader records it as a grant of source
`storefront`, which counts only in stores that trust that source (anyone holding the
public key can send it, for any address).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from wooflow import metrics
from wooflow.consent_policy import STOREFRONT_FLAG
from wooflow.db.engine import unavailable
from wooflow.db.tables import storefront_sessions
from wooflow.kafka import topics
from wooflow.producers import dedupe
from wooflow.producers.identity import Found, Lookup
from wooflow.producers.ingest import Ingestor, OutboxFull, Unavailable
from wooflow.producers.keys import customer_key, email_hash, event_id, kafka_key
from wooflow.producers.normalise import Event, schema_version
from wooflow.producers.tenants import Tenants
from wooflow.producers.webhooks import JSON, TooLarge, read_body
from wooflow.schemas.types import StorefrontEvent
from wooflow.settings import Settings
from wooflow.stores import Store

log = logging.getLogger(__name__)

EVENT_TYPES = ("product_viewed", "search", "category_viewed", "cart_updated", "checkout_started", "email_captured",
               "login")
MAX_BODY = 64 * 1024


class CartItemIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    product_id: int = Field(ge=0)
    variation_id: int = Field(0, ge=0)
    quantity: int = Field(ge=0, le=100_000)
    price: Decimal | None = Field(None, ge=0, max_digits=20, decimal_places=4)
    name: str = Field("", max_length=200)


class StorefrontIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["product_viewed", "search", "category_viewed", "cart_updated", "checkout_started",
                  "email_captured", "login"]
    id: str | None = Field(None, max_length=64, description="Client event id: retries of one event dedupe")
    occurred_at: datetime | None = None
    product_id: int | None = Field(None, ge=0)
    category_id: int | None = Field(None, ge=0)
    query: str | None = Field(None, max_length=200)
    cart: list[CartItemIn] = Field(default_factory=list, max_length=200)
    cart_total: Decimal | None = Field(None, ge=0, max_digits=20, decimal_places=4)
    currency: str | None = Field(None, max_length=3)
    email: str | None = Field(None, max_length=254)
    customer_id: int | None = Field(None, ge=1)
    customer_sig: str | None = Field(None, max_length=128)
    url: str | None = Field(None, max_length=2000)
    properties: dict[str, str] = Field(default_factory=dict, max_length=20)
    marketing_consent: bool | None = Field(None, description="email_captured: the shopper ticked a marketing "
                                                             "consent box (kept as property marketing_consent)")

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        local, at, domain = v.rpartition("@")
        if not at or not local or "." not in domain:
            raise ValueError("not an email address")
        return v


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str | None = Field(None, max_length=200)
    session_id: str = Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_\-.]+$")
    events: list[StorefrontIn] = Field(min_length=1, max_length=50)


class TokenBuckets:
    """Per-key token buckets (rate/s, burst), pruned as they go idle."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._buckets: dict[Any, tuple[float, float]] = {}
        self._pruned = time.monotonic()

    def take(self, key: Any, n: int = 1) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= n
        self._buckets[key] = (tokens - n if ok else tokens, now)
        if now - self._pruned > 60:
            self._pruned = now
            idle = self.burst / max(self.rate, 1e-6)
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < idle}
        return ok


def origin_of(url: str) -> str:
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return ""
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{parts.hostname}{port}".lower()


def allowed_origins(store: Store) -> set[str]:
    extra = store.settings.get("storefront_origins") or []
    return {o for o in (origin_of(u) for u in [store.url, *extra]) if o}


def customer_signature(secret: str, store_id: str, session_id: str, customer_id: int) -> str:
    return hmac.new(secret.encode(), f"{store_id}:{session_id}:{customer_id}".encode(), hashlib.sha256).hexdigest()


def reject(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> Response:
    metrics.storefront_rejected.labels(reason).inc()
    return JSON({"error": reason, "message": message}, status_code=status, headers=headers)


class Sessions:
    """session → customer key, remembered in memory and in `storefront_sessions`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._mem: OrderedDict[tuple[str, str], str] = OrderedDict()

    def _remember(self, k: tuple[str, str], ckey: str) -> None:
        self._mem[k] = ckey
        self._mem.move_to_end(k)
        if len(self._mem) > 100_000:
            self._mem.popitem(last=False)

    async def lookup(self, store_id: str, session_id: str) -> str | None:
        k = (store_id, session_id)
        if k in self._mem:
            return self._mem[k]

        def read() -> str | None:
            with self.engine.connect() as conn:
                return conn.execute(select(storefront_sessions.c.customer_key).where(
                    storefront_sessions.c.store_id == store_id,
                    storefront_sessions.c.session_id == session_id)).scalar()

        ckey = await asyncio.to_thread(read)
        if ckey:
            self._remember(k, ckey)
        return ckey

    async def link(self, store_id: str, session_id: str, ckey: str, customer_id: int | None) -> str:
        """Link a session; a registered customer (`c…`) is never downgraded to a guest key."""
        current = await self.lookup(store_id, session_id)
        if current and current.startswith("c") and not ckey.startswith("c"):
            return current
        if current == ckey:
            return ckey

        def write() -> None:
            stmt = insert(storefront_sessions).values(store_id=store_id, session_id=session_id, customer_key=ckey,
                                                      customer_id=customer_id)
            stmt = stmt.on_conflict_do_update(
                index_elements=[storefront_sessions.c.store_id, storefront_sessions.c.session_id],
                set_={"customer_key": ckey, "customer_id": customer_id, "updated_at": datetime.now(timezone.utc)})
            with self.engine.begin() as conn:
                conn.execute(stmt)

        await asyncio.to_thread(write)
        self._remember((store_id, session_id), ckey)
        return ckey


class StorefrontReceiver:
    def __init__(self, settings: Settings, tenants: Tenants, ingestor: Ingestor, engine: Engine) -> None:
        self.settings = settings
        self.tenants = tenants
        self.ingestor = ingestor
        self.sessions = Sessions(engine)
        self.engine = engine
        self.identities = ingestor.identities
        self.per_ip = TokenBuckets(settings.storefront_rate_per_s, settings.storefront_burst)
        self.per_session = TokenBuckets(settings.storefront_rate_per_s, settings.storefront_burst)

    @staticmethod
    def _cors(origin: str) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Headers": "Content-Type, X-Wooflow-Key",
                "Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Max-Age": "600"}

    async def _store_and_origin(self, request: Request) -> tuple[Store | None, str, Response | None]:
        store_id = request.path_params["store_id"]
        store = await self.tenants.get(store_id)
        if store is None:
            return None, "", reject(404, "unknown_store", f"no store {store_id!r} is registered with wooflow")
        origin = request.headers.get("origin") or origin_of(request.headers.get("referer") or "")
        if not origin or origin_of(origin) not in allowed_origins(store):
            return store, "", reject(403, "bad_origin", f"origin {origin or 'missing'!r} is not the store's")
        return store, origin, None

    async def preflight(self, request: Request) -> Response:
        _, origin, problem = await self._store_and_origin(request)
        if problem is not None:
            return problem
        return Response(status_code=204, headers=self._cors(origin))

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except Exception as exc:
            if not unavailable(exc):
                raise
            # PostgreSQL away (sessions, the store row): the script sends the batch again later
            log.warning("storefront batch refused, PostgreSQL is unavailable: %s", str(exc).splitlines()[0][:200])
            return JSON({"error": "unavailable", "message": "events could not be recorded now: retry"},
                        status_code=503, headers={"Retry-After": "2"})

    async def _handle(self, request: Request) -> Response:
        store, origin, problem = await self._store_and_origin(request)
        if problem is not None or store is None:
            return problem  # type: ignore[return-value]
        cors = self._cors(origin)
        ip = request.client.host if request.client else "?"
        if not self.per_ip.take((store.id, ip)):
            return reject(429, "rate_limited", "too many storefront events from this address",
                          cors | {"Retry-After": "1"})
        try:
            body = await read_body(request, MAX_BODY)
        except TooLarge:
            return reject(413, "body_too_large", f"body exceeds {MAX_BODY} bytes", cors)
        except ClientDisconnect:
            return reject(400, "client_disconnect", "client went away mid-body", cors)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "text/plain"):  # text/plain: navigator.sendBeacon
            return reject(415, "unsupported_media_type", f"expected application/json, got {ctype or 'nothing'}", cors)
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return reject(400, "malformed_json", f"body is not valid JSON: {exc}", cors)
        if isinstance(raw, dict) and "events" not in raw and "type" in raw:
            raw = {"key": raw.get("key"), "session_id": raw.get("session_id"), "events": [raw]}
        key = request.headers.get("x-wooflow-key") or (raw.get("key") if isinstance(raw, dict) else None)
        if not store.public_key or not key or not hmac.compare_digest(str(key).encode(), store.public_key.encode()):
            return reject(401, "invalid_key", f"{'wrong' if key else 'missing'} storefront key", cors)
        try:
            batch = BatchIn.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return reject(400, "invalid_event", f"{where}: {first['msg']}", cors)
        if not self.per_session.take((store.id, batch.session_id), len(batch.events)):
            return reject(429, "rate_limited", "too many storefront events in this session",
                          cors | {"Retry-After": "1"})
        received = datetime.now(timezone.utc)
        events = [await self._event(store, batch.session_id, ev, received) for ev in batch.events]
        try:
            outcomes = await self.ingestor.submit(events, "storefront")
        except OutboxFull as exc:
            return JSON({"error": "outbox_full", "message": str(exc)}, status_code=503, headers=cors)
        except Unavailable:
            return JSON({"error": "unavailable", "message": "events could not be made durable"}, status_code=503,
                        headers=cors)
        for outcome in outcomes:
            if outcome != "duplicate":
                metrics.events_in.labels(topics.STOREFRONT, store.id).inc()
        return JSON({"accepted": sum(o != "duplicate" for o in outcomes),
                     "customer_key": events[-1].record["customer_key"],
                     "event_ids": [e.event_id for e in events]}, headers=cors)

    async def _event(self, store: Store, session_id: str, ev: StorefrontIn, received: datetime) -> Event:
        props = dict(ev.properties)
        if ev.marketing_consent is not None:
            props[STOREFRONT_FLAG] = "yes" if ev.marketing_consent else "no"
        customer_id = None
        if ev.customer_id is not None:
            expected = customer_signature(store.webhook_secret, store.id, session_id, ev.customer_id)
            if ev.customer_sig and hmac.compare_digest(expected, ev.customer_sig.strip().lower()):
                customer_id = ev.customer_id
            else:
                props["unverified_customer_id"] = str(ev.customer_id)
        if customer_id is not None:
            ckey = await self.sessions.link(store.id, session_id, customer_key(customer_id, None), customer_id)
        elif ev.email and ev.type in ("email_captured", "login", "checkout_started"):
            person = await self._person(store.id, customer_key(None, ev.email))
            ckey = await self.sessions.link(store.id, session_id, person,
                                            int(person[1:]) if person.startswith("c") else None)
        else:
            ckey = await self.sessions.lookup(store.id, session_id) or customer_key(
                None, None, fallback="s" + email_hash(session_id))
        occurred = ev.occurred_at or received
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=timezone.utc)
        if abs(occurred - received) > timedelta(days=1):  # a wrong client clock is not the event's time
            occurred = received
        client_id = ev.id or hashlib.sha256(orjson.dumps(ev.model_dump(mode="json"))).hexdigest()[:24]
        record: StorefrontEvent = {
            "event_id": event_id(store.id, "storefront", session_id, client_id),
            "store_id": store.id,
            "customer_key": ckey,
            "occurred_at": occurred,
            "received_at": received,
            "source": "storefront",
            "schema_version": schema_version("StorefrontEvent"),
            "topic": f"storefront.{ev.type}",
            "store_timezone": store.timezone,
            "event_type": ev.type,
            "session_id": session_id,
            "customer_id": customer_id,
            "email": ev.email,
            "product_id": ev.product_id,
            "category_id": ev.category_id,
            "query": ev.query,
            "cart": [{"product_id": c.product_id, "variation_id": c.variation_id, "quantity": c.quantity,
                      "price": c.price.quantize(Decimal("0.0001")) if c.price is not None else None, "name": c.name}
                     for c in ev.cart],
            "cart_total": ev.cart_total.quantize(Decimal("0.0001")) if ev.cart_total is not None else None,
            "currency": ev.currency or store.currency,
            "url": ev.url,
            "properties": props,
        }
        return Event(topics.STOREFRONT, kafka_key(store.id, ckey), "StorefrontEvent", record)

    async def _person(self, store_id: str, guest: str) -> str:
        """The registered customer a guest key's email belongs to, else the guest key."""
        known = self.identities.customer_key(store_id, guest)
        if known is None:
            need = Lookup(emails={(store_id, guest[1:])})

            def read() -> Found:
                with self.engine.connect() as conn:
                    return dedupe.lookup(conn, need)

            self.identities.found(await asyncio.to_thread(read))
            known = self.identities.customer_key(store_id, guest)
        return known or guest

    async def script(self, request: Request) -> Response:
        store_id = request.path_params["store_id"]
        store = await self.tenants.get(store_id)
        if store is None or not store.public_key:
            return reject(404, "unknown_store", f"no store {store_id!r} with storefront events")
        base = self.settings.bridge_public_url.rstrip("/") or str(request.base_url).rstrip("/")
        endpoint = f"{base}/storefront/{store.id}/events"
        js = SNIPPET.replace("__ENDPOINT__", orjson.dumps(endpoint).decode()).replace(
            "__KEY__", orjson.dumps(store.public_key).decode())
        return Response(js, media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"})


# The snippet themes include: <script src="https://bridge/storefront/STORE/wooflow.js" async></script>
# It keeps a session id in localStorage, sends with sendBeacon (falls back to fetch keepalive),
# exposes wooflow.track(type, props), tracks product/category/search pages from
# WooCommerce's body classes by itself, and refills the cart a recovery link names
# (scheduler/recovery.py) through WooCommerce's Store API, leaving the cart's token in the
# `wooflow_cart` cookie for the order (README: the hook that copies it into the order meta).
SNIPPET = r"""(function (w, d) {
  "use strict";
  var ENDPOINT = __ENDPOINT__, KEY = __KEY__, SK = "wooflow_sid";
  function rid() { return (Date.now().toString(36) + Math.random().toString(36).slice(2, 12)); }
  function sid() {
    try { var s = w.localStorage.getItem(SK); if (!s) { s = "s" + rid() + rid(); w.localStorage.setItem(SK, s); } return s; }
    catch (e) { return w.__wooflowSid || (w.__wooflowSid = "s" + rid() + rid()); }
  }
  function send(events) {
    var body = JSON.stringify({ key: KEY, session_id: sid(), events: events });
    if (w.navigator && w.navigator.sendBeacon && w.navigator.sendBeacon(ENDPOINT, new Blob([body], { type: "text/plain" }))) return;
    if (w.fetch) w.fetch(ENDPOINT, { method: "POST", body: body, keepalive: true, headers: { "Content-Type": "text/plain" } })
      .catch(function () {});
  }
  function track(type, props) {
    var ev = { type: type, id: rid(), occurred_at: new Date().toISOString(), url: w.location.href };
    for (var k in (props || {})) { if (Object.prototype.hasOwnProperty.call(props, k)) ev[k] = props[k]; }
    send([ev]);
  }
  function auto() {
    var c = d.body ? d.body.className : "", m;
    if (/\bsingle-product\b/.test(c) && (m = c.match(/\bpostid-(\d+)\b/))) track("product_viewed", { product_id: +m[1] });
    else if (/\btax-product_cat\b/.test(c) && (m = c.match(/\bterm-(\d+)\b/))) track("category_viewed", { category_id: +m[1] });
    var q = new URLSearchParams(w.location.search).get("s");
    if (q) track("search", { query: q.slice(0, 200) });
  }
  function restore() {
    // A cart-recovery link (?wooflow_cart=TOKEN&wooflow_items=P[-V]:Q,...): refill the cart
    // through WooCommerce's Store API, keep the token for the order, reload without the params.
    var p = new URLSearchParams(w.location.search), token = p.get("wooflow_cart"), items = p.get("wooflow_items");
    if (!token || !items || !w.fetch) return;
    var done = "wooflow_restored_" + token, api = w.location.origin + "/wp-json/wc/store/v1/cart";
    try { if (w.sessionStorage.getItem(done)) return; } catch (e) {}
    w.fetch(api, { credentials: "same-origin" }).then(function (r) {
      var h = { "Content-Type": "application/json" }, n = r.headers.get("Nonce"), t = r.headers.get("Cart-Token");
      if (n) h.Nonce = n;
      if (t) h["Cart-Token"] = t;
      return items.split(",").reduce(function (chain, part) {
        var m = /^(\d+)(?:-(\d+))?:(\d+)$/.exec(part);
        if (!m) return chain;
        var id = m[2] && m[2] !== "0" ? +m[2] : +m[1];
        return chain.then(function () {
          return w.fetch(api + "/add-item", { method: "POST", credentials: "same-origin", headers: h,
                                               body: JSON.stringify({ id: id, quantity: +m[3] }) });
        });
      }, Promise.resolve());
    }).then(function () {
      try { w.sessionStorage.setItem(done, "1"); } catch (e) {}
      d.cookie = "wooflow_cart=" + encodeURIComponent(token) + "; path=/; max-age=604800; samesite=lax";
      p.delete("wooflow_cart"); p.delete("wooflow_items");
      var q = p.toString();
      w.location.replace(w.location.pathname + (q ? "?" + q : "") + w.location.hash);
    }).catch(function () {});
  }
  w.wooflow = { track: track, session: sid };
  restore();
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", auto); else auto();
})(window, document);
"""
