"""Test support: waiting on conditions, running roles as real processes, reading topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import Consumer, TopicPartition

from wooflow.kafka import topics
from wooflow.kafka.consumer import make_reader
from wooflow.schemas.codec import get_codec
from wooflow.settings import Settings

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll `cond` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def isolated_settings(kafka_bootstrap_servers: str, database_url: str) -> Settings:
    """Settings of one test (or one module's pipeline): its own topic prefix and consumer
    groups, short timeouts. The caller creates the topics and deletes them afterwards."""
    tag = unique("t")
    return Settings(kafka_bootstrap_servers=kafka_bootstrap_servers, database_url=database_url,
                    topic_prefix=f"{tag}.", topic_partitions=4, rules_group=f"{tag}-rules",
                    workers_group=f"{tag}-workers", sink_group=f"{tag}-sink", action_lease_s=5.0,
                    batch_timeout_s=0.1, store_cache_ttl_s=1.0, state_dir=Path("/nonexistent"))


def env_of(s: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOOFLOW_")}
    for name in ("kafka_bootstrap_servers", "database_url", "topic_prefix", "topic_partitions", "rules_group",
                 "workers_group", "sink_group", "action_lease_s", "batch_timeout_s", "batch_size", "transactional",
                 "action_max_attempts", "allow_private_webhooks", "metrics_port", "store_cache_ttl_s"):
        env[f"WOOFLOW_{name.upper()}"] = str(getattr(s, name))
    env.update(extra)
    return env


CLI = [sys.executable, "-m", "wooflow.cli"]  # `wooflow` of this interpreter, installed or not


def wooflow_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`wooflow ARGS` as an operator runs it: its own process, settings from `env`
    (`env_of(settings)`), output captured as text."""
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


class RoleProcess:
    """One wooflow role (`wooflow rules`, `wooflow workers`, ...) as a real OS process."""

    def __init__(self, role: str, settings: Settings, log_dir: Path, *args: str, **env: str) -> None:
        self.role, self.args = role, args
        self.env = env_of(settings, **env)
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> RoleProcess:
        self.starts += 1
        with open(self.log_dir / f"{self.role}-{self.starts}.log", "wb") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen([*CLI, self.role, *self.args], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit — the crash we must survive."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.role}-*.log")))


def logs_of(roles: dict[str, RoleProcess], tail: int = 4000) -> str:
    """The end of each role's log, for a failure's report."""
    return "\n".join(f"--- {name} ---\n{role.log_text()[-tail:]}" for name, role in roles.items())


def read_topic(s: Settings, base_topic: str, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
    """Everything in a topic up to its current end, decoded."""
    topic = s.topic(base_topic)
    consumer = make_reader(s, unique("reader"))
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        parts = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
        ends = {p.partition: _high_watermark(consumer, p, timeout) for p in parts}
        consumer.assign(parts)
        codec = get_codec(s.schema_registry_url)
        out: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout

        def behind() -> bool:
            # position(), not the last offset seen: transaction markers occupy offsets too
            return any(ends[tp.partition] > 0 and tp.offset < ends[tp.partition] for tp in consumer.position(parts))

        while behind():
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout}s")
            for m in consumer.consume(500, 0.2):
                if not m.error():
                    out.append(codec.decode(m.value()))
        return out
    finally:
        consumer.close()


def _high_watermark(consumer: Consumer, tp: TopicPartition, timeout: float) -> int:
    """Right after topic creation a partition may briefly have no leader: retry."""
    from confluent_kafka import KafkaException

    def attempt() -> int | None:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=timeout)[1])
        except KafkaException:
            return None

    return wait_for(lambda: (v,) if (v := attempt()) is not None else None, timeout, 0.2, "watermarks")[0]


def _ends(consumer: Consumer, s: Settings, base_topics: Iterable[str], timeout: float) -> dict[TopicPartition, int]:
    """The current end (high watermark) of every partition of `base_topics`."""
    out: dict[TopicPartition, int] = {}
    for base in base_topics:
        topic = s.topic(base)
        md = consumer.list_topics(topic, timeout=timeout)
        for p in md.topics[topic].partitions:
            tp = TopicPartition(topic, p)
            out[tp] = _high_watermark(consumer, tp, timeout)
    return out


def _records_between(s: Settings, tp: TopicPartition, start: int, end: int, timeout: float) -> int:
    """How many records a read_committed reader gets from [start, end) of one partition.
    Transaction markers and aborted records occupy offsets but are never delivered, so a
    group whose committed offset stops short of the end may still have nothing left."""
    reader = make_reader(s, unique("gap"))
    try:
        reader.assign([TopicPartition(tp.topic, tp.partition, start)])
        seen = 0
        deadline = time.monotonic() + timeout
        while reader.position([TopicPartition(tp.topic, tp.partition)])[0].offset < end:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {tp.topic}[{tp.partition}] {start}..{end} within {timeout}s")
            seen += sum(1 for m in reader.consume(100, 0.2) if not m.error() and (m.offset() or 0) < end)
        return seen
    finally:
        reader.close()


def wait_until_consumed(s: Settings, group: str, base_topics: Iterable[str], timeout: float = 60.0) -> None:
    """Wait until consumer group `group` has processed everything `base_topics` hold now.

    The proof an absence check needs: every wooflow role commits a message's offset only
    after its effects exist (commands acknowledged, state or effect recorded), so once the
    group's committed offsets reach the ends taken here, whatever those messages would
    have caused has happened. Call it once the event is durable (e.g. after its webhook's
    2xx); chain it stage by stage (rules on the event topics, then workers on commands)."""
    names = sorted(base_topics)
    probe = make_reader(s, group)  # never subscribes: it only reads the group's offsets
    try:
        ends = {(tp.topic, tp.partition): end for tp, end in _ends(probe, s, names, timeout).items() if end > 0}
        seen: dict[tuple[str, int], int] = {}  # committed offset at the previous look
        behind: dict[str, int] = {}

        def caught_up() -> bool:
            behind.clear()
            for c in probe.committed([TopicPartition(t, p) for t, p in ends], timeout=timeout):
                key = (c.topic, c.partition)
                if c.offset >= ends[key]:
                    continue
                # stalled short of the end: only markers or aborted records left?
                stalled = c.offset >= 0 and seen.get(key) == c.offset
                seen[key] = c.offset
                if stalled and _records_between(s, c, c.offset, ends[key], timeout) == 0:
                    ends[key] = c.offset
                    continue
                behind[f"{c.topic}[{c.partition}]"] = ends[key] - max(c.offset, 0)
            return not behind

        try:
            wait_for(caught_up, timeout, 0.1, f"group {group} to consume {names}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; messages still to process per partition: {behind}") from None
    finally:
        probe.close()


def wait_until_pipeline_idle(s: Settings, timeout: float = 60.0) -> None:
    """Everything in the event topics went through the rule consumers, then every command
    that produced (and every earlier one) went through the workers: each effect the
    events call for exists now, and nothing more is on its way."""
    wait_until_consumed(s, s.rules_group, topics.EVENT_TOPICS, timeout)
    wait_until_consumed(s, s.workers_group, [topics.COMMANDS], timeout)


def wait_until_bridge_idle(engine: Any, store_id: str, timeout: float = 30.0) -> None:
    """The bridge answers a webhook once its event is in Kafka, or in its PostgreSQL outbox
    while Kafka is unreachable; the outbox is its only way to produce after answering. No
    outbox row left for the store: whatever the bridge accepted is in Kafka, and what it
    refused will never be."""
    from sqlalchemy import text

    def empty() -> bool:
        with engine.connect() as conn:
            return not conn.execute(text("SELECT 1 FROM bridge_outbox WHERE store_id = :s LIMIT 1"),
                                    {"s": store_id}).first()

    wait_for(empty, timeout, 0.1, f"the bridge's outbox of {store_id} to drain")


def topic_size(s: Settings, base_topic: str) -> int:
    topic = s.topic(base_topic)
    consumer = make_reader(s, unique("size"))
    try:
        md = consumer.list_topics(topic, timeout=5)
        total = 0
        for p in md.topics[topic].partitions:
            total += _high_watermark(consumer, TopicPartition(topic, p), 10)
        return total
    finally:
        consumer.close()


class ServerThread:
    """An ASGI app served by uvicorn on a loopback address (127.0.0.1 unless told otherwise,
    e.g. "127.0.0.2" or "::1"), on a free port unless given one, in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port

    def __enter__(self) -> ServerThread:
        import socket
        import threading

        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.url = f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 15, 0.02, "server start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def ready(url: str, timeout: float = 2.0) -> bool:
    """The service at `url` answers its readiness probe (/readyz) with 200."""
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_store(engine: Any, url: str = "http://127.0.0.1:1", *, consumer_key: str = "ck_test",
               consumer_secret: str = "cs_test", secret: str = "s3cr3t & <shh> %20", timezone: str = "Europe/Warsaw",
               currency: str = "PLN") -> Any:
    from wooflow.stores import Store, upsert_store

    store = Store(id=unique("store"), url=url, webhook_secret=secret, consumer_key=consumer_key,
                  consumer_secret=consumer_secret, timezone=timezone, currency=currency, public_key=unique("pk"))
    upsert_store(engine, store)
    return store


def make_sim_store(engine: Any, sim: Any, **fields: Any) -> Any:
    """A store registered in wooflow whose REST API is the simulator `sim` (a SimulatorServer)."""
    return make_store(engine, sim.url, consumer_key=sim.auth[0], consumer_secret=sim.auth[1], **fields)


@contextmanager
def fresh_database(url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server of `url` (its URL), dropped afterwards: for
    whatever must not see the rows other tests left (an outbox, due steps, claims)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from wooflow.db.engine import get_engine

    name = unique(prefix).replace("-", "_")
    admin = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    fresh = make_url(url).set(database=name).render_as_string(hide_password=False)
    try:
        yield fresh
    finally:
        get_engine(fresh).dispose()
        with admin.connect() as conn:  # FORCE: a session a killed process left is no reason to keep it
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def tool_missing(message: str) -> None:
    """A test that needs an external tool: skipped loudly on a developer's machine, failed
    under CI (where `./run setup` installs it), so the check never silently disappears."""
    message = f"!!! {message} !!!"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


class Discards:
    """Counts a property's examples that were thrown away (inputs outside its domain):
    the property fails when most were, instead of passing on the few that remained."""

    def __init__(self, name: str, max_share: float = 0.5) -> None:
        self.name, self.max_share = name, max_share
        self.kept = self.dropped = 0

    def keep(self) -> None:
        self.kept += 1

    def drop(self) -> None:
        self.dropped += 1

    def check(self) -> None:
        total = self.kept + self.dropped
        assert total > 0, f"{self.name}: no example ran"
        assert self.dropped <= self.max_share * total, (
            f"{self.name}: {self.dropped} of {total} examples discarded; the property tested too little")
