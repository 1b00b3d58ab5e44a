"""Local Kafka + PostgreSQL for `wooflow dev up|down|status`, the tests and the demo.

Layout of a state dir::

    services.json      pids and ports (a hint; the processes themselves are the truth)
    .lock              serialises up/down on this state dir across processes
    kafka/             server.properties, data/ (KRaft log dirs), logs/server.log, kafka.out
    postgres/          data/ (PGDATA), postgres.log, run/ (unix socket)

Data persists across ``down``/``up``; ports are reused when still free so the
exported environment stays valid.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from wooflow.devinfra import kafka as kafka_mod
from wooflow.devinfra import postgres as pg_mod
from wooflow.devinfra.kafka import KafkaProcess, LauncherError, file_lock
from wooflow.devinfra.postgres import PostgresProcess

__all__ = ["LauncherError", "Services", "down", "down_when_gone", "env_lines", "status", "up"]

STATE_FILE = "services.json"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Services:
    kafka_bootstrap_servers: str | None
    database_url: str | None
    state_dir: Path
    pids: dict[str, int] = field(default_factory=dict)


# --- state file ----------------------------------------------------------------------


def _kafka_dir(state_dir: Path) -> Path:
    return state_dir / "kafka"


def _pg_dir(state_dir: Path) -> Path:
    return state_dir / "postgres"


def _read_state(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    # Write-then-rename so a concurrent `status` never reads half a file.
    tmp = state_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(state_dir / STATE_FILE)


def _record(state: dict[str, Any], name: str, **values: Any) -> None:
    state[name] = {**state.get(name, {}), **values}


# --- ports ---------------------------------------------------------------------------


def _claim(stack: ExitStack, port: int) -> bool:
    """Bind ``port`` (0 = any) and hold it until the stack closes."""
    sock = stack.enter_context(socket.socket())
    # Same option the servers set, so a port in TIME_WAIT still counts as free.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _pick_ports(previous: list[int | None]) -> list[int]:
    """Previous ports when still free (stable env lines), else fresh ones from the
    kernel (bind to port 0). Every socket stays bound until all ports are chosen so
    no two picks collide."""
    chosen: list[int] = []
    with ExitStack() as stack:
        for port in previous:
            if port and port not in chosen and _claim(stack, port):
                chosen.append(port)
                continue
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            chosen.append(sock.getsockname()[1])
    return chosen


# --- per-service helpers -------------------------------------------------------------


def _running_broker(state_dir: Path, state: dict[str, Any]) -> KafkaProcess | None:
    kafka_dir = _kafka_dir(state_dir)
    pid = kafka_mod.find_broker(kafka_dir, state.get("kafka", {}).get("pid"))
    return kafka_mod.configured_broker(kafka_dir, pid) if pid else None


def _launch_broker(state_dir: Path, cache_dir: Path, java: Path, ports: tuple[int, int],
                   say: Progress) -> KafkaProcess:
    if not kafka_mod.jars_ready(cache_dir):
        say(f"Fetching Kafka {kafka_mod.KAFKA_VERSION} jars with Maven into {cache_dir} (first run only)")
    libs = kafka_mod.ensure_jars(cache_dir)
    say(f"Starting Kafka {kafka_mod.KAFKA_VERSION} broker on 127.0.0.1:{ports[0]}")
    return kafka_mod.launch_broker(_kafka_dir(state_dir), libs, port=ports[0], controller_port=ports[1], java=java)


def _ensure_postgres(state_dir: Path, port: int, *, durable: bool, timeout: float,
                     say: Progress, started: list[Callable[[], object]]) -> PostgresProcess:
    pg_dir = _pg_dir(state_dir)
    server = pg_mod.postmaster(pg_dir)
    if server is not None:
        if not pg_mod.postgres_answers(server.port):
            raise LauncherError(f"PostgreSQL (pid {server.pid}) is running but does not answer on "
                                f"127.0.0.1:{server.port}.\n{kafka_mod.tail_text(pg_mod.log_file(pg_dir))}")
        return server
    say(f"Starting PostgreSQL on 127.0.0.1:{port}" + ("" if durable else " (fsync off)"))
    server = pg_mod.start_postgres(pg_dir, port=port, durable=durable, timeout=timeout)
    started.append(lambda: pg_mod.stop_postgres(pg_dir))
    return server


def _undo(started: list[Callable[[], object]]) -> None:
    """Best effort: the original error matters more than a failed cleanup."""
    for stop in reversed(started):
        try:
            stop()
        except Exception:  # noqa: BLE001
            pass


# --- public API ----------------------------------------------------------------------


def up(state_dir: Path, cache_dir: Path, *, kafka: bool = True, postgres: bool = True,
       durable_postgres: bool = False, timeout: float = kafka_mod.READY_TIMEOUT_S,
       progress: Progress | None = None) -> Services:
    """Start what is not running yet and return connection details; idempotent.

    The broker JVM boots in the background while PostgreSQL starts, so a cold
    ``up`` costs about one broker start. Anything started by a failing call is
    stopped again before the LauncherError propagates.
    """
    say = progress or (lambda _message: None)
    state_dir = state_dir.expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(state_dir / ".lock"):
        state = _read_state(state_dir)
        started: list[Callable[[], object]] = []
        try:
            broker = _running_broker(state_dir, state) if kafka else None
            launched = kafka and broker is None
            # Checked up front: a missing Java should fail before PostgreSQL is started in vain.
            java = kafka_mod.require_java() if launched else None
            previous_kafka, previous_pg = state.get("kafka", {}), state.get("postgres", {})
            kafka_port, controller_port, pg_port = _pick_ports(
                [previous_kafka.get("port"), previous_kafka.get("controller_port"), previous_pg.get("port")])
            # Formatting storage and booting the JVM overlap with initdb and PostgreSQL's start.
            with ThreadPoolExecutor(max_workers=1) as pool:
                launching = (pool.submit(_launch_broker, state_dir, cache_dir.expanduser(), java,
                                         (kafka_port, controller_port), say) if java else None)
                try:
                    server = (_ensure_postgres(state_dir, pg_port, durable=durable_postgres, timeout=timeout,
                                               say=say, started=started) if postgres else None)
                finally:
                    if launching is not None:
                        broker = launching.result()
                        started.append(partial(kafka_mod.stop_kafka, broker.pid, 10))
            if broker is not None:
                # Recorded before waiting so `down` can find it even if this process dies now.
                _record(state, "kafka", pid=broker.pid, port=broker.port, controller_port=broker.controller_port)
            if server is not None:
                _record(state, "postgres", pid=server.pid, port=server.port)
            _write_state(state_dir, state)
            if broker is not None:
                if launched:
                    say("Waiting for the Kafka broker to accept requests")
                kafka_mod.wait_until_ready(broker, _kafka_dir(state_dir), timeout)
                if launched:
                    kafka_mod.warm_up_group_coordinator(broker.bootstrap_servers, timeout)
        except BaseException:
            _undo(started)
            raise
        _write_state(state_dir, state)
    return _services(state_dir, broker, server)


def _services(state_dir: Path, broker: KafkaProcess | None, server: PostgresProcess | None) -> Services:
    pids = {name: proc.pid for name, proc in (("kafka", broker), ("postgres", server)) if proc is not None}
    return Services(
        kafka_bootstrap_servers=broker.bootstrap_servers if broker else None,
        database_url=server.database_url if server else None,
        state_dir=state_dir,
        pids=pids,
    )


def down(state_dir: Path) -> list[str]:
    """Stop whatever runs from this state dir (data is kept); returns what was stopped."""
    state_dir = state_dir.expanduser().resolve()
    if not state_dir.is_dir():
        return []
    stopped: list[str] = []
    with file_lock(state_dir / ".lock"):
        state = _read_state(state_dir)
        pid = kafka_mod.find_broker(_kafka_dir(state_dir), state.get("kafka", {}).get("pid"))
        if pid is not None:
            kafka_mod.stop_kafka(pid)
            stopped.append("kafka")
        if _pg_dir(state_dir).is_dir() and pg_mod.stop_postgres(_pg_dir(state_dir)):
            stopped.append("postgres")
        for entry in state.values():  # keep ports for reuse, drop pids
            if isinstance(entry, dict):
                entry.pop("pid", None)
        if state:
            _write_state(state_dir, state)
    return stopped


def status(state_dir: Path) -> dict[str, Any]:
    """What runs from ``state_dir`` and whether it answers, without changing anything."""
    state_dir = state_dir.expanduser().resolve()
    state = _read_state(state_dir)
    broker = _running_broker(state_dir, state)
    server = pg_mod.postmaster(_pg_dir(state_dir))
    return {
        "state_dir": str(state_dir),
        "kafka": {
            "running": broker is not None,
            "pid": broker.pid if broker else None,
            "address": broker.bootstrap_servers if broker else None,
            "answering": broker is not None and kafka_mod.broker_answers(broker.bootstrap_servers),
            "log": str(_kafka_dir(state_dir) / "logs" / "server.log"),
        },
        "postgres": {
            "running": server is not None,
            "pid": server.pid if server else None,
            "address": server.database_url if server else None,
            "answering": server is not None and pg_mod.postgres_answers(server.port, pg_mod.DATABASE),
            "log": str(pg_mod.log_file(_pg_dir(state_dir))),
        },
    }


def env_lines(services: Services) -> list[str]:
    """Shell lines that point the wooflow processes at these services."""
    values = {"KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
              "DATABASE_URL": services.database_url}
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items() if value]


# Runs in a separate, detached interpreter; imports happen only after the owner is
# gone so the watchdog costs nothing while it waits.
_WATCHDOG = """
import sys, time, psutil
state_dir = sys.argv[2]
def owner_alive(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE  # is_running guards pid reuse
    except psutil.Error:
        return False
try:
    owner = psutil.Process(int(sys.argv[1]))
except psutil.Error:
    owner = None
while owner is not None and owner_alive(owner):
    time.sleep(0.5)
from pathlib import Path
from wooflow.devinfra.launcher import down
down(Path(state_dir))
"""


def down_when_gone(state_dir: Path, owner_pid: int | None = None) -> int:
    """Spawn a detached watchdog that runs ``down(state_dir)`` once ``owner_pid``
    (default: this process) exits, even by SIGKILL, so throw-away services started
    by tests or demos never outlive them. Returns the watchdog's pid."""
    state_dir = state_dir.expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", _WATCHDOG, str(owner_pid or os.getpid()), str(state_dir)]
    return kafka_mod.spawn_detached(argv, state_dir / "watchdog.log", state_dir)
