"""The public tracking links of the messages wooflow sends: `GET /t/o/<token>.gif` (the open
pixel) and `GET /t/c/<token>?u=<URL>` (a click, answered 302 to the URL).

Served by the API process, in front of FastAPI (`TrackedApi`: the API's hot path, as the
bridge has its own): a hit is a token check, a rate-limit check and one row, so
routing and request objects would cost more than the work. Each hit is answered once its
row is committed: rows of concurrent hits share one INSERT on one psycopg connection on
the event loop (group commit: while one batch is written the next gathers), idempotent per
(message, open | click, link, machine) — the first hit of each is kept — and with it the
message's first open and first click, counted per rule, step and day for the analytics.

What is refused (a JSON 4xx, nothing recorded, counted in
`wooflow_tracking_rejected_total{reason}`): a token wooflow did not sign (malformed 400,
tampered 403), an expired link (410, with a page that shows where it pointed), a click on
a URL that was not in the message (its digest is not the signed one: 404), more than
`WOOFLOW_TRACKING_RATE_PER_S` (burst `WOOFLOW_TRACKING_BURST`) hits a second from one
address (429). A database that cannot take the row does not keep a person from the store:
the click still redirects (the pixel still answers), and the hit is counted in
`wooflow_tracking_unrecorded_total` and logged.

Client addresses come from the connection, or from X-Forwarded-For when the connection is
from a proxy in `WOOFLOW_API_FORWARDED_ALLOW_IPS` (`ClientAddress`).
"""

from __future__ import annotations

import asyncio
import functools
import html
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_plus

import orjson
import psycopg
from fastapi import FastAPI
from sqlalchemy import Engine

from wooflow import engagement, metrics
from wooflow.clock import get_clock
from wooflow.producers.storefront import TokenBuckets
from wooflow.settings import Settings
from wooflow.stores import StoreCache

log = logging.getLogger(__name__)

# A transparent 1x1 GIF.
PIXEL_GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,"
             b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
NO_STORE = (b"cache-control", b"no-store, private")
KEY_TTL_S = 300.0

# One statement per batch: the hits (`engagements`, one row per message, kind, link and
# machine); the first open (any hit) and first click of each message, by a person and by
# anyone (`engagement_firsts`: the unique index decides what is first, across processes);
# and those firsts counted per rule, step and day (`engagement_daily`, what the analytics
# read). Rows go in key order, so two processes never lock the same rows in opposite orders.
_INSERT = """
WITH h AS (
    SELECT * FROM unnest(%(m)b::text[], %(k)b::text[], %(l)b::int[], %(mc)b::bool[], %(s)b::text[],
                         %(r)b::bigint[], %(p)b::int[], %(c)b::text[], %(a)b::timestamptz[], %(u)b::text[])
        AS h(message_id, kind, link, machine, store_id, rule_id, step, customer_key, at, user_agent)
), hits AS (
    INSERT INTO engagements (message_id, kind, link, machine, store_id, rule_id, step, customer_key, at, user_agent)
    SELECT * FROM h ORDER BY message_id, kind, link, machine
    ON CONFLICT DO NOTHING
), firsts AS (
    INSERT INTO engagement_firsts (message_id, kind, audience, store_id, rule_id, step, at)
    SELECT DISTINCT ON (h.message_id, k.kind, a.audience) h.message_id, k.kind, a.audience, h.store_id, h.rule_id,
           h.step, h.at
    FROM h CROSS JOIN (VALUES ('open'), ('click')) AS k(kind) CROSS JOIN (VALUES ('any'), ('person')) AS a(audience)
    WHERE (k.kind = 'open' OR h.kind = 'click') AND (a.audience = 'any' OR NOT h.machine)
    ORDER BY h.message_id, k.kind, a.audience, h.at
    ON CONFLICT DO NOTHING
    RETURNING store_id, rule_id, step, audience, kind, at
)
INSERT INTO engagement_daily AS d (store_id, rule_id, day, step, audience, opened, clicked)
SELECT store_id, rule_id, (at AT TIME ZONE 'UTC')::date, step, audience, count(*) FILTER (WHERE kind = 'open'),
       count(*) FILTER (WHERE kind = 'click')
FROM firsts GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (store_id, rule_id, day, step, audience) DO UPDATE
    SET opened = d.opened + EXCLUDED.opened, clicked = d.clicked + EXCLUDED.clicked
"""


@dataclass(frozen=True, slots=True)
class Hit:
    """One open or click, as its `engagements` row."""

    claim: engagement.Claim
    machine: bool
    at: datetime
    user_agent: str


class Recorder:
    """Group commit of hits: one INSERT per batch on a psycopg async connection on the
    event loop; a batch is whatever arrived while the previous one was written."""

    def __init__(self, engine: Engine) -> None:
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._pending: list[tuple[Hit, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, hit: Hit) -> None:
        """Returns once the hit's row is committed; raises what the database said if not."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((hit, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await fut

    async def _write_all(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._insert([h for h, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _insert(self, hits: list[Hit]) -> None:
        ms = [h.claim.message for h in hits]
        params = {"m": [m.message_id for m in ms], "k": [h.claim.kind for h in hits],
                  "l": [h.claim.link for h in hits], "mc": [h.machine for h in hits],
                  "s": [m.store_id for m in ms], "r": [m.rule_id for m in ms], "p": [m.step for m in ms],
                  "c": [m.customer_key for m in ms], "a": [h.at for h in hits], "u": [h.user_agent for h in hits]}
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                                      connect_timeout=5)
        try:
            await conn.execute(_INSERT, params, prepare=True)
        except psycopg.OperationalError:
            self._conn = None
            raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], head: bool) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else body})


class Tracker:
    """The tracking endpoint (an ASGI callable for paths under /t/)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.clock = get_clock(settings)
        self.recorder = Recorder(engine)
        self.stores = StoreCache(engine, ttl=settings.store_cache_ttl_s)
        self.buckets = TokenBuckets(settings.tracking_rate_per_s, settings.tracking_burst)
        self.client = ClientAddress(settings.api_forwarded_allow_ips)
        self._global_key = (engagement.signing_key(settings, "") if settings.tracking_secret is not None else None)
        self._keys: dict[str, tuple[float, bytes]] = {}  # store → (kept until, its tracking key)
        self._reading: dict[str, asyncio.Future[bytes | None]] = {}
        self._hits: dict[tuple[str, str], Any] = {}  # (store, kind) → its counter child

    async def __call__(self, scope: dict[str, Any], _receive: Any, send: Send) -> None:
        head = scope["method"] == "HEAD"
        if scope["method"] not in ("GET", "HEAD"):
            return await self._reject(send, 405, "method_not_allowed", "tracking links answer GET", head)
        agent, forwarded = _headers(scope)
        client = scope.get("client")
        ip = self.client(str(client[0]) if client else "", forwarded)
        if not self.buckets.take(ip):
            return await self._reject(send, 429, "rate_limited", "too many requests from this address", head,
                                      [(b"retry-after", b"1")])
        path: str = scope["path"]
        is_open = path.startswith(engagement.PATH_OPEN)
        token = path[len(engagement.PATH_OPEN if is_open else engagement.PATH_CLICK):].removesuffix(".gif")
        try:
            parsed = engagement.parse(token)
            claim = engagement.check(await self._key(parsed), parsed, self.clock.now().timestamp())
        except engagement.BadToken as exc:
            return await self._reject(send, 400 if exc.reason == "malformed" else 403, exc.reason,
                                      f"this tracking link is not valid ({exc})", head)
        except engagement.Expired as exc:
            return await self._expired(send, exc.claim, scope, is_open, head)
        url = ""
        if not is_open:
            url = _target(scope)
            if claim.link == engagement.PIXEL or engagement.url_digest(url) != claim.digest:
                return await self._reject(send, 404, "link_not_in_message", "this link is not in the message", head)
        elif claim.link != engagement.PIXEL:
            return await self._reject(send, 404, "link_not_in_message", "this token is a link, not the pixel", head)
        await self._record(claim, agent[:300], ip)
        if is_open:
            return await _answer(send, 200, PIXEL_GIF, [(b"content-type", b"image/gif"), NO_STORE], head)
        await _answer(send, 302, b"", [(b"location", _location(url)), NO_STORE, (b"referrer-policy", b"no-referrer")],
                      head)

    async def _key(self, token: engagement.Parsed) -> bytes:
        """The store's tracking key. A store's link key never changes, so the key is kept for
        `KEY_TTL_S` (a deleted store's links stop working after it); one read per store at a
        time, however many hits wait for it."""
        if self._global_key is not None:
            return self._global_key
        store_id = token.store_id
        known = self._keys.get(store_id)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        reading = self._reading.get(store_id)
        if reading is None:
            reading = self._reading[store_id] = asyncio.ensure_future(self._read_key(store_id))
            reading.add_done_callback(lambda _: self._reading.pop(store_id, None))
        key = await asyncio.shield(reading)
        if key is None:
            raise engagement.BadToken("tracking token names no store")
        return key

    async def _read_key(self, store_id: str) -> bytes | None:
        store = await self.stores.aget(store_id)
        if store is None or not store.link_key:
            return None
        key = engagement.signing_key(self.settings, store.link_key)
        if len(self._keys) > 10_000:  # ids probed at random must not grow this forever
            self._keys.clear()
        self._keys[store_id] = (time.monotonic() + KEY_TTL_S, key)
        return key

    async def _record(self, claim: engagement.Claim, agent: str, ip: str) -> None:
        hit = Hit(claim, engagement.is_machine(agent, ip), self.clock.now(), agent)
        counter = self._hits.get((claim.message.store_id, claim.kind))
        if counter is None:
            counter = self._hits[(claim.message.store_id, claim.kind)] = metrics.tracking_hits.labels(
                claim.message.store_id, claim.kind)
        counter.inc()
        try:
            await self.recorder.record(hit)
        except Exception as exc:  # noqa: BLE001 - a person still gets where they were going
            metrics.tracking_unrecorded.inc()
            log.warning("tracking hit not recorded (%s: %s)", type(exc).__name__, str(exc).splitlines()[0][:200])

    async def _expired(self, send: Send, claim: engagement.Claim, scope: dict[str, Any], is_open: bool,
                       head: bool) -> None:
        metrics.tracking_rejected.labels("expired").inc()
        url = "" if is_open else _target(scope)
        if is_open or engagement.url_digest(url) != claim.digest:
            return await _answer(send, 410, _json("expired", "this link has expired"),
                                 [(b"content-type", b"application/json"), NO_STORE], head)
        # A genuine link, only old: show where it pointed, as a link the reader may follow.
        page = (f"<!doctype html><meta charset='utf-8'><title>Link expired</title><body style='font-family:sans-serif;"
                f"max-width:32em;margin:3em auto'><h1>This link has expired</h1><p>It pointed to "
                f"<a href=\"{html.escape(url, quote=True)}\" rel='noopener noreferrer'>{html.escape(url)}</a>.</p>")
        await _answer(send, 410, page.encode(), [(b"content-type", b"text/html; charset=utf-8"), NO_STORE], head)

    async def _reject(self, send: Send, status: int, reason: str, message: str, head: bool,
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:
        metrics.tracking_rejected.labels(reason).inc()
        await _answer(send, status, _json(reason, message),
                      [(b"content-type", b"application/json"), NO_STORE, *(extra or [])], head)

    async def close(self) -> None:
        await self.recorder.close()


def _json(reason: str, message: str) -> bytes:
    return orjson.dumps({"error": reason, "message": message})


def _headers(scope: dict[str, Any]) -> tuple[str, str]:
    """User-Agent and X-Forwarded-For (all of its lines), in one pass over the headers."""
    agent, forwarded = "", []
    for k, v in scope.get("headers") or ():
        if k == b"user-agent":
            agent = bytes(v).decode("latin-1")
        elif k == b"x-forwarded-for":
            forwarded.append(bytes(v).decode("latin-1"))
    return agent, ",".join(forwarded)


class ClientAddress:
    """The address a hit comes from: the connection's, or — when the connection is from a
    trusted proxy (`WOOFLOW_API_FORWARDED_ALLOW_IPS`: addresses, networks, or `*`) — the
    rightmost X-Forwarded-For entry that is not one (the first, if all are; as uvicorn).
    Single addresses are compared as text, networks parsed once per address (uvicorn's own
    middleware parsed them on every request)."""

    def __init__(self, trusted: str) -> None:
        items = [x.strip() for x in trusted.split(",") if x.strip()]
        self.everyone = "*" in items
        nets = [ipaddress.ip_network(x, strict=False) for x in items if x != "*"]
        # single addresses are compared as text: most hops are clients, parsed only if networks are trusted
        self.addresses = {str(n.network_address) for n in nets if n.num_addresses == 1}
        self.networks = [n for n in nets if n.num_addresses > 1]
        self._in_networks = functools.lru_cache(maxsize=4096)(self._parse_in_networks)

    def trusted(self, host: str) -> bool:
        return self.everyone or host in self.addresses or (bool(self.networks) and self._in_networks(host))

    def _parse_in_networks(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def __call__(self, peer: str, forwarded: str) -> str:
        if not forwarded or not self.trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer  # every hop a trusted proxy: the chain's first


def _location(url: str) -> bytes:
    """The destination as a header value: ASCII, whatever the message's URL held (non-ASCII
    characters and anything but URL syntax percent-encoded, existing escapes kept)."""
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~").encode("ascii")


def _target(scope: dict[str, Any]) -> str:
    """The click's destination: the first `u` query parameter, as the message had it (what
    parse_qs would give, without parsing the rest)."""
    for part in bytes(scope.get("query_string") or b"").decode("latin-1").split("&"):
        if part.startswith("u="):
            return unquote_plus(part[2:])
    return ""


class TrackedApi(FastAPI):
    """The admin API with the tracking links in front: a hit goes straight to the `Tracker`
    (no middleware, routing or request objects — FastAPI's own middleware cost more per hit
    than the hit's work); everything else to FastAPI."""

    tracker: Tracker

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(engagement.PATH_OPEN) or path.startswith(engagement.PATH_CLICK):
                await self.tracker(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
