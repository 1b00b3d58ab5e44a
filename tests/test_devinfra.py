"""The local infrastructure launcher: real broker and database, clear errors."""

from __future__ import annotations

import stat
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from wooflow.devinfra import kafka as kafka_mod
from wooflow.devinfra.kafka import LauncherError
from wooflow.devinfra.launcher import Services, env_lines, status, up
from wooflow.kafka.admin import admin_client
from wooflow.kafka.config import producer_config
from wooflow.kafka.consumer import make_reader
from wooflow.settings import Settings

if TYPE_CHECKING:  # conftest is loaded by pytest; importing it at runtime could load it twice
    from tests.conftest import ServiceEndpoints


def _consume(s: Settings, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer = make_reader(s, f"devinfra-{uuid.uuid4().hex}")
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
    finally:
        consumer.close()
    return values


@pytest.mark.integration
def test_broker_creates_topic_and_round_trips_messages(services: ServiceEndpoints) -> None:
    s = Settings(kafka_bootstrap_servers=services.kafka_bootstrap_servers)
    admin = admin_client(s)
    topic = f"devinfra-test-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    try:
        producer = Producer(producer_config(s))
        sent = [f"message-{i}".encode() for i in range(3)]
        for value in sent:
            producer.produce(topic, key=b"k", value=value)
        assert producer.flush(30) == 0
        assert _consume(s, topic, len(sent)) == sent
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


@pytest.mark.integration
def test_postgres_answers(services: ServiceEndpoints) -> None:
    assert services.database_url.startswith("postgresql+psycopg://")
    with psycopg.connect(services.database_url.replace("+psycopg", "", 1), connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.integration
def test_up_is_idempotent_and_status_reports_running(services: ServiceEndpoints) -> None:
    if services.launcher_state_dir is None or services.launcher_cache_dir is None:
        pytest.skip("services come from the environment or testcontainers, not the launcher")
    started = time.monotonic()
    again = up(services.launcher_state_dir, services.launcher_cache_dir,
               kafka="kafka" in services.launched, postgres="postgres" in services.launched)
    assert time.monotonic() - started < 5, "a second up must reuse, not restart"
    assert again.pids == services.pids
    if "kafka" in services.launched:
        assert again.kafka_bootstrap_servers == services.kafka_bootstrap_servers
    if "postgres" in services.launched:
        assert again.database_url == services.database_url
    report = status(services.launcher_state_dir)
    for name in services.launched:
        assert report[name]["running"] and report[name]["answering"], report
        assert report[name]["pid"] == services.pids[name]


@pytest.mark.unit
def test_env_lines_are_shell_exports() -> None:
    services = Services(kafka_bootstrap_servers="127.0.0.1:1234",
                        database_url="postgresql+psycopg://postgres@127.0.0.1:5/wooflow",
                        state_dir=Path("/nowhere"))
    assert env_lines(services) == [
        "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1234",
        "export DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5/wooflow",
    ]


@pytest.mark.unit
def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LauncherError, match=r"Java not found.*Java 17\+"):
        kafka_mod.require_java({"PATH": str(tmp_path)})


def _fake_tool(directory: Path, name: str, script: str) -> Path:
    tool = directory / name
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


@pytest.mark.unit
def test_old_java_is_a_clear_error(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "java", "echo 'openjdk version \"11.0.22\" 2024-01-16' >&2")
    with pytest.raises(LauncherError, match=r"Java 11.*needs Java 17 or newer"):
        kafka_mod.require_java({"PATH": str(tmp_path)})


@pytest.mark.unit
def test_java_home_wins_over_path(tmp_path: Path) -> None:
    (tmp_path / "home" / "bin").mkdir(parents=True)
    (tmp_path / "path").mkdir()
    home_java = _fake_tool(tmp_path / "home" / "bin", "java", "echo 'openjdk version \"21.0.1\"' >&2")
    _fake_tool(tmp_path / "path", "java", "echo 'java version \"1.8.0_392\"' >&2")
    env = {"JAVA_HOME": str(tmp_path / "home"), "PATH": str(tmp_path / "path")}
    assert kafka_mod.require_java(env) == home_java
    assert kafka_mod.java_major_version(tmp_path / "path" / "java") == 8


@pytest.mark.unit
def test_missing_mvn_is_a_clear_error_only_when_jars_are_not_cached(tmp_path: Path) -> None:
    empty = {"PATH": str(tmp_path / "empty")}
    with pytest.raises(LauncherError, match=r"Maven \(`mvn`\) not found"):
        kafka_mod.ensure_jars(tmp_path / "cache", env=empty)
    libs = kafka_mod.jars_dir(tmp_path / "cache")
    libs.mkdir(parents=True)
    (libs.parent / ".complete").write_text(kafka_mod.KAFKA_VERSION)
    assert kafka_mod.ensure_jars(tmp_path / "cache", env=empty) == libs


@pytest.mark.unit
def test_failing_mvn_reports_its_output(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "mvn", "echo 'Could not resolve dependencies: boom' >&2; exit 1")
    with pytest.raises(LauncherError, match=r"(?s)mvn failed.*Could not resolve dependencies: boom"):
        kafka_mod.ensure_jars(tmp_path / "cache", env={"PATH": str(tmp_path)})
    assert not kafka_mod.jars_ready(tmp_path / "cache")
