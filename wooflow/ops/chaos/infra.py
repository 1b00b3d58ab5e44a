"""The Kafka broker and PostgreSQL a chaos run owns, and the faults done to them.

Both come from the local launcher (wooflow/devinfra) in the run's own state dir, so a
chaos run never touches a shared broker or database. A detached watchdog stops them if
the run itself dies. Faults: the broker stopped (controlled shutdown, or SIGKILL of the
JVM) and started again on the same data dir and ports; PostgreSQL shut down `fast` or
`immediate` (a crash: the restart replays the WAL) and started again on the same data
and port — the roles keep the addresses they were started with.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wooflow.devinfra import kafka as kafka_mod
from wooflow.devinfra import postgres as pg_mod
from wooflow.devinfra.launcher import down, down_when_gone, up


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap_servers: str
    database_url: str


class Infra:
    def __init__(self, state_dir: Path, cache_dir: Path, *, durable_postgres: bool = False) -> None:
        self.state_dir, self.cache_dir, self.durable = state_dir, cache_dir, durable_postgres
        self.kafka_dir, self.pg_dir = state_dir / "kafka", state_dir / "postgres"
        self._broker: kafka_mod.KafkaProcess | None = None
        self._pg_port = 0

    def up(self, say: Callable[[str], None] | None = None) -> Endpoints:
        down_when_gone(self.state_dir)
        services = up(self.state_dir, self.cache_dir, durable_postgres=self.durable, progress=say)
        pid = kafka_mod.find_broker(self.kafka_dir, services.pids.get("kafka"))
        self._broker = kafka_mod.configured_broker(self.kafka_dir, pid) if pid else None
        server = pg_mod.postmaster(self.pg_dir)
        if self._broker is None or server is None or not services.database_url:
            raise RuntimeError(f"the launcher did not start both services in {self.state_dir}")
        self._pg_port = server.port
        return Endpoints(self._broker.bootstrap_servers, services.database_url)

    def down(self) -> None:
        down(self.state_dir)

    # --- the broker ---------------------------------------------------------------------
    def stop_broker(self, *, kill: bool = False) -> None:
        broker = self._broker
        assert broker is not None, "up() first"
        pid = kafka_mod.find_broker(self.kafka_dir, broker.pid)
        if pid is None:
            return
        if kill:
            _sigkill(pid)
        else:
            kafka_mod.stop_kafka(pid)

    def start_broker(self) -> None:
        broker = self._broker
        assert broker is not None, "up() first"
        libs = kafka_mod.ensure_jars(self.cache_dir)
        self._broker = kafka_mod.start_kafka(self.kafka_dir, libs, port=broker.port,
                                             controller_port=broker.controller_port)

    def broker_pid(self) -> int | None:
        return kafka_mod.find_broker(self.kafka_dir, self._broker.pid if self._broker else None)

    # --- PostgreSQL -------------------------------------------------------------------
    def stop_postgres(self, mode: str) -> None:
        pg_mod.stop_postgres(self.pg_dir, mode=mode)

    def start_postgres(self) -> None:
        pg_mod.start_postgres(self.pg_dir, port=self._pg_port, durable=self.durable)


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    kafka_mod.wait_gone(pid, 10.0)
