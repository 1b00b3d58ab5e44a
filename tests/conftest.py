"""Shared fixtures.

``services`` provides a Kafka broker and a PostgreSQL database for the whole
session, each resolved independently in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` from the environment (CI services,
   a developer's ``wooflow dev up``) - an external service always wins;
2. testcontainers, when a Docker engine answers;
3. the local launcher (``wooflow.devinfra``) in a throw-away state dir, with the
   machine-wide jar cache so only the first run ever downloads Kafka.

Whatever this session starts is stopped at session end, also on failures, and a
detached watchdog stops launcher services even if pytest itself is killed.

Every test belongs to exactly one tier, a marker (registered in pyproject.toml):
``unit`` (no broker, no PostgreSQL, no role process), ``integration`` (the real broker
and/or PostgreSQL, roles in this process) or ``e2e`` (roles as processes, crashes, the
CLI against the services). Collection fails for a test with none or two, and a unit test
that asks for ``services`` — itself or through ``settings``, ``engine``, ``migrated`` —
fails before anything is started: ``-m unit`` never starts Kafka or PostgreSQL.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.harness import BridgeThread, Inbox

pytest_plugins = ["pytester"]  # tests/test_tiers.py runs small sessions through these hooks

TIERS = ("unit", "integration", "e2e")
_NEEDS_SERVICES = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test is checked
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Exactly one tier per test; a unit test that needs the services is failed at setup."""
    wrong = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"  {item.nodeid}: {', '.join(tiers) or 'no tier'}")
        elif tiers == ["unit"] and "services" in getattr(item, "fixturenames", ()):
            item.stash[_NEEDS_SERVICES] = True
    if wrong:
        more = f"\n  ... and {len(wrong) - 20} more" if len(wrong) > 20 else ""
        raise pytest.UsageError("every test needs exactly one tier marker (" + ", ".join(TIERS) + "), "
                                "e.g. a module's `pytestmark = pytest.mark.unit`:\n" + "\n".join(wrong[:20]) + more)


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.stash.get(_NEEDS_SERVICES, False):
        pytest.fail("a unit test may not use the `services` fixture (directly or through settings, engine, "
                    "migrated...): it needs no broker and no PostgreSQL, or it is an integration test",
                    pytrace=False)


KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "postgres:16"


@dataclass(frozen=True)
class ServiceEndpoints:
    kafka_bootstrap_servers: str
    database_url: str  # always the postgresql+psycopg dialect
    # Set only when the dev launcher started something, for tests of the launcher itself.
    launcher_state_dir: Path | None = None
    launcher_cache_dir: Path | None = None
    launched: frozenset[str] = field(default_factory=frozenset)
    pids: dict[str, int] = field(default_factory=dict)


def _psycopg_dialect(url: str) -> str:
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql+psycopg://", url)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:  # no client lib, no socket, daemon down: all mean "no Docker"
        return False


def _kafka_container(stack: ExitStack) -> str:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.kafka import KafkaContainer

    class ApacheKafkaContainer(KafkaContainer):  # type: ignore[misc, valid-type]
        """testcontainers' KafkaContainer scripts the Confluent image; the official
        apache/kafka image is configured by KAFKA_* env vars and /etc/kafka/docker/run."""

        def configure(self) -> None:
            self.wait_for = re.compile(r".*Kafka Server started.*")
            env = {
                "CLUSTER_ID": self.cluster_id,
                "KAFKA_NODE_ID": "1",
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9094",
                "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                "KAFKA_LISTENERS": f"{self.listeners},CONTROLLER://0.0.0.0:9094",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": f"{self.security_protocol_map},CONTROLLER:PLAINTEXT",
                "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
            }
            for key, value in env.items():
                self.with_env(key, value)

        def tc_start(self) -> None:
            # The advertised address is only known once Docker has mapped the port.
            advertised = (f"{self.listener_name}://{self.get_container_host_ip()}:{self.get_exposed_port(self.port)},"
                          "BROKER://$(hostname -i | cut -d' ' -f1):9092")
            script = f"#!/bin/bash\nexport KAFKA_ADVERTISED_LISTENERS={advertised}\nexec /etc/kafka/docker/run\n"
            self.create_file(script.encode(), self.TC_START_SCRIPT)

    container = stack.enter_context(ApacheKafkaContainer(KAFKA_IMAGE))
    return str(container.get_bootstrap_server())


def _postgres_container(stack: ExitStack) -> str:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.postgres import PostgresContainer

    container = stack.enter_context(PostgresContainer(POSTGRES_IMAGE, dbname="wooflow", driver=None))
    return _psycopg_dialect(container.get_connection_url())


def _launch(stack: ExitStack, base: Path, *, kafka: bool, postgres: bool) -> ServiceEndpoints:
    from wooflow.devinfra.launcher import down, down_when_gone, up
    from wooflow.settings import Settings

    state_dir, cache_dir = base / "devinfra", Settings().cache_dir
    stack.callback(down, state_dir)  # registered before up(): a half-started up is cleaned too
    down_when_gone(state_dir)
    started = up(state_dir, cache_dir, kafka=kafka, postgres=postgres)
    return ServiceEndpoints(
        kafka_bootstrap_servers=started.kafka_bootstrap_servers or "",
        database_url=started.database_url or "",
        launcher_state_dir=started.state_dir,
        launcher_cache_dir=cache_dir,
        launched=frozenset(name for name, on in (("kafka", kafka), ("postgres", postgres)) if on),
        pids=started.pids,
    )


def _resolve_services(stack: ExitStack) -> ServiceEndpoints:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    database = _psycopg_dialect(os.environ["DATABASE_URL"]) if os.environ.get("DATABASE_URL") else None
    if (kafka is None or database is None) and _docker_answers():
        kafka = kafka or _kafka_container(stack)
        database = database or _postgres_container(stack)
    if kafka is not None and database is not None:
        return ServiceEndpoints(kafka_bootstrap_servers=kafka, database_url=database)
    # Not under pytest's basetemp: another pytest session of the same user removes all but the
    # newest three of those directories, and with them this session's PostgreSQL data.
    base = Path(tempfile.mkdtemp(prefix="wooflow-test-services-"))
    stack.callback(shutil.rmtree, base, ignore_errors=True)  # runs after the services stopped
    launched = _launch(stack, base, kafka=kafka is None, postgres=database is None)
    return ServiceEndpoints(
        kafka_bootstrap_servers=kafka or launched.kafka_bootstrap_servers,
        database_url=database or launched.database_url,
        launcher_state_dir=launched.launcher_state_dir,
        launcher_cache_dir=launched.launcher_cache_dir,
        launched=launched.launched,
        pids=launched.pids,
    )


@pytest.fixture(scope="session")
def services() -> Iterator[ServiceEndpoints]:
    """Kafka + PostgreSQL endpoints shared by the whole test session (see module doc)."""
    with ExitStack() as stack:
        yield _resolve_services(stack)
        # Kafka clients left in reference cycles — or in the frames of the last failure, kept
        # for post-mortem debugging — are destroyed now, while their broker still answers;
        # after it stops, a live client logs "Connection refused" until exit.
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                setattr(sys, name, None)
        gc.collect()


@pytest.fixture(autouse=True)
def _collector_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """Roles run in-process (a RuleConsumer in a thread, a replay) tune the collector for a
    long-lived process: `gc.freeze()` moves everything alive into a generation that is
    never collected — their Kafka clients included, which then outlive the session's
    broker. After each test the collector is as it was, and what a test of the services
    left is freed. A test without them holds no client of the broker, and a full collection
    costs ~0.3 s once every test module is imported (58 s over the 188 tests without
    services, more than they took to run): the collector frees its garbage in due course."""
    thresholds = gc.get_threshold()
    yield
    tuned = gc.get_freeze_count() or gc.get_threshold() != thresholds
    if tuned:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    if tuned or "services" in request.fixturenames:
        gc.collect()


# --- pipeline fixtures ----------------------------------------------------------------

from wooflow.settings import Settings  # noqa: E402


@pytest.fixture(scope="session")
def migrated(services: ServiceEndpoints) -> str:
    """The database at the latest migration (applied once per session)."""
    from wooflow.db.migrate import upgrade

    upgrade(services.database_url)
    return services.database_url


@pytest.fixture
def settings(services: ServiceEndpoints, migrated: str) -> Iterator[Settings]:
    """Settings isolated for one test: its own topic prefix and consumer groups, topics
    created, and deleted again after the test (a shared broker would otherwise gather
    thousands of partitions and run out of memory maps)."""
    from tests.support import isolated_settings
    from wooflow.kafka.admin import create_topics, delete_topics_with_prefix

    s = isolated_settings(services.kafka_bootstrap_servers, migrated)
    create_topics(s)
    yield s
    delete_topics_with_prefix(s, s.topic_prefix)


@pytest.fixture
def engine(migrated: str):  # type: ignore[no-untyped-def]
    from wooflow.db.engine import get_engine

    return get_engine(migrated)


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def bridge(settings: Settings) -> Iterator[BridgeThread]:
    """The bridge in this test's process, on the test's topics (tests/harness.py)."""
    from tests.harness import BridgeThread

    with BridgeThread(settings) as server:
        yield server


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    """A real SMTP server that keeps what it receives (tests/harness.py)."""
    from tests.harness import Inbox

    with Inbox() as box:
        yield box


@pytest.fixture
def own_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Kafka broker of the test's own (the session broker is shared: never stopped):
    (bootstrap servers, stop, restart) — restart on the same data dir and ports."""
    from tests.support import free_port
    from wooflow.devinfra import kafka as kafka_mod

    libs = kafka_mod.ensure_jars(Settings().cache_dir)
    java = kafka_mod.require_java()
    kafka_dir = tmp_path / "kafka"
    ports = {"port": free_port(), "controller_port": free_port()}
    state = {"broker": kafka_mod.start_kafka(kafka_dir, libs, java=java, **ports)}

    def restart() -> None:
        state["broker"] = kafka_mod.start_kafka(kafka_dir, libs, java=java, **ports)

    def stop() -> None:
        kafka_mod.stop_kafka(state["broker"].pid, 30)

    try:
        yield state["broker"].bootstrap_servers, stop, restart
    finally:
        if kafka_mod.process_alive(state["broker"].pid):
            kafka_mod.stop_kafka(state["broker"].pid, 10)
