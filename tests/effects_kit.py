"""Receivers of effects that cannot be looked up (SMTP, webhooks, an SMS provider) that can
sit on what arrives, and the Kafka facts the lease and crash tests wait on."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.harness import Inbox
from tests.support import unique, wait_for
from wooflow.kafka import topics
from wooflow.kafka.admin import admin_client
from wooflow.kafka.consumer import make_reader
from wooflow.kafka.producer import Producer
from wooflow.settings import Settings
from wooflow.stores import Store, upsert_store


@dataclass
class Arrival:
    identity: str  # what the receiver de-duplicates by: Message-ID, Idempotency-Key, SMS reference
    info: dict[str, Any]


@dataclass
class HoldingReceiver:
    """Records every arrival; answers the first `hold` arrivals of each identity only once
    `release` is set (an identity may have its own count in `holds`)."""

    hold: int = 0
    holds: dict[str, int] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def arrive(self, identity: str, info: dict[str, Any],
                     gone: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Record, then hold if this identity's arrivals are held; `gone` tells whether the
        client hung up (noted as `info["gone_at"]`, epoch seconds)."""
        with self.lock:
            self.arrivals.append(Arrival(identity, info))
            nth = sum(1 for a in self.arrivals if a.identity == identity)
        if nth <= self.holds.get(identity, self.hold):
            while not self.release.is_set():  # the server's own wait, not the test's
                if gone is not None and await gone():
                    info["gone_at"] = time.time()
                    return
                await asyncio.sleep(0.02)

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(a.identity for a in self.arrivals)

    def of(self, identity: str) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.identity == identity]


class SmtpReceiver(HoldingReceiver):
    """The SMTP inbox (tests/harness.py) sitting on mail; the identity is the Message-ID."""

    def start(self) -> SmtpReceiver:
        self.inbox = Inbox(on_message=self._arrived).start()
        self.port = self.inbox.port
        return self

    def stop(self) -> None:
        self.release.set()
        self.inbox.stop()

    async def _arrived(self, msg: EmailMessage, envelope: Any) -> None:
        await self.arrive(str(msg["Message-ID"]), {"to": envelope.rcpt_tos, "subject": str(msg["Subject"])})


class HttpReceiver(HoldingReceiver):
    """POST /hook (webhooks: identity = the delivery id header) and /sms (identity = the
    body's reference), as one Starlette app."""

    def app(self) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            body = json.loads(await request.body())
            await self.arrive(str(request.headers.get("x-wooflow-delivery")),
                              {"idempotency_key": request.headers.get("idempotency-key"), "body_id": body.get("id")},
                              request.is_disconnected)
            return JSONResponse({"ok": True})

        async def sms(request: Request) -> JSONResponse:
            body = json.loads(await request.body())
            await self.arrive(str(body.get("reference")), {"to": body.get("to"), "text": body.get("text"),
                                                           "idempotency_key": request.headers.get("idempotency-key")})
            return JSONResponse({"id": unique("m")})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/sms", sms, methods=["POST"])])


def effects_store(engine: Engine, smtp_port: int, http_url: str) -> Store:
    """A store whose mail goes to the SMTP receiver and whose SMS go to the HTTP receiver's /sms."""
    store = Store(id=unique("store"), url="http://127.0.0.1:1", webhook_secret="whs", name="Shop",
                  settings={"smtp": {"host": "127.0.0.1", "port": smtp_port, "from_email": "shop@example.com"},
                            "sms": {"provider": "http", "url": f"{http_url}/sms", "sender": "SHOP"}})
    upsert_store(engine, store)
    return store


def partitions_of(s: Settings, keys: list[str]) -> dict[str, int]:
    """The partition each Kafka key goes to on a topic of `s.topic_partitions` partitions, with
    wooflow's producer configuration (found on a scratch topic of the same size)."""
    scratch = s.topic(unique("probe"))
    admin = admin_client(s)
    admin.create_topics([NewTopic(scratch, s.topic_partitions, 1)])[scratch].result(30)
    got: dict[str, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        got[msg.key().decode()] = int(msg.partition())

    producer = Producer(s)
    try:
        for key in keys:
            producer.raw.produce(scratch, b"probe", key=key, on_delivery=delivered)
        producer.flush(30)
    finally:
        producer.close()
        admin.delete_topics([scratch])
    return got


def keys_on_every_partition(s: Settings, prefix: str, per_partition: int) -> list[list[str]]:
    """`per_partition` Kafka keys `prefix` + n for each partition: [[keys of p0], [keys of p1], ...]."""
    where = partitions_of(s, [f"{prefix}{n}" for n in range(40 * s.topic_partitions)])
    out: list[list[str]] = [[] for _ in range(s.topic_partitions)]
    for key, p in sorted(where.items(), key=lambda kv: int(kv[0][len(prefix):])):
        if len(out[p]) < per_partition:
            out[p].append(key)
    assert all(len(keys) == per_partition for keys in out), out
    return out


def caught_up(s: Settings) -> bool:
    """The workers' group has committed every partition of automation.commands to its end."""
    topic = s.topic(topics.COMMANDS)
    consumer = make_reader(s, s.workers_group)  # asks for the group's offsets, never joins it
    try:
        parts = [TopicPartition(topic, p) for p in range(s.topic_partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        return all(end == 0 or committed[p] == end for p, end in ends.items())
    finally:
        consumer.close()


def deferred_keys(engine: Engine, keys: list[str], reason: str | None = None) -> set[str]:
    """Which of `keys` wait in deferred_commands (optionally for one reason) right now."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT idempotency_key, reason FROM deferred_commands "
                                 "WHERE idempotency_key = ANY(:k)"), {"k": keys}).all()
    return {k for k, r in rows if reason is None or r == reason}


def settled(s: Settings, engine: Engine, keys: list[str], final: Callable[[], bool], timeout: float = 60) -> None:
    """Wait until `final()` holds, no copy of `keys` waits in PostgreSQL and the workers
    committed every command: nothing about these keys can still happen."""
    wait_for(final, timeout, 0.3, "the final outcomes")
    wait_for(lambda: not deferred_keys(engine, keys), timeout, 0.2, "no deferred copies left")
    wait_for(lambda: caught_up(s), timeout, 0.3, "the workers to commit every command")


class TcpProxy:
    """A TCP forwarder on a loopback port (asyncio, in a thread): `cut()` drops every
    connection and stops listening — PostgreSQL becomes unreachable for whoever used it, as
    during a restart; `restore()` listens on the same port again (PostgreSQL is back)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port_to = host, port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tcp-proxy", daemon=True)
        self.writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> TcpProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop).result(10)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port_to)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def restore(self) -> None:
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True), self.loop).result(10)

    def cut(self) -> None:
        async def cut() -> None:
            self.server.close()
            for w in self.writers:
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(cut(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
