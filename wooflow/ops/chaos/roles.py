"""The roles of a chaos run as OS processes: started, killed, restarted, scaled — and
supervised like an orchestrator would: an instance that exits on its own is counted
(with its exit code and last log lines) and started again.

Each instance has a port of its own for `/metrics`, `/healthz` and `/readyz`
(`WOOFLOW_METRICS_PORT`; the bridge serves them on its HTTP port), kept across its
restarts. The run's state file lists them (`state.json`), and `prometheus-targets.json`
holds the same in Prometheus' file-based service discovery format, rewritten whenever an
instance starts or stops — a Prometheus pointed at it scrapes the run as it changes.

Every process is spawned from one long-lived thread with PR_SET_PDEATHSIG (Linux), so
the roles die with the run even when the run is SIGKILLed.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("bridge", "rules", "workers", "sink", "scheduler", "poller")
STOP_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the run's finally block still stops every role


@dataclass(frozen=True)
class Exit:
    """An instance that exited although nobody stopped it."""

    instance: str
    code: int
    at: float  # seconds since the run started
    last_lines: str


@dataclass
class Instance:
    role: str
    index: int
    port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    held: bool = False  # stopped on purpose: the supervisor leaves it down
    retired: bool = False  # scaled away

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Roles:
    run_dir: Path
    env: dict[str, str]
    bridge_port: int
    started: float = field(default_factory=time.monotonic)
    instances: list[Instance] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    on_change: Callable[[], None] | None = None
    about: dict[str, Any] = field(default_factory=dict)  # what else the state file says about the run

    def __post_init__(self) -> None:
        self.log_dir = self.run_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="chaos-spawner")
        self._next_index: dict[str, int] = {}

    # --- starting -------------------------------------------------------------------------
    def add(self, role: str) -> Instance:
        with self._lock:
            index = self._next_index.get(role, 0) + 1
            self._next_index[role] = index
            inst = Instance(role, index, self.bridge_port if role == "bridge" else free_port())
            self.instances.append(inst)
            self._start(inst)
            return inst

    def log_path(self, inst: Instance) -> Path:
        return self.log_dir / f"{inst.name}.log"

    def _start(self, inst: Instance) -> None:
        args = ["--host", "127.0.0.1", "--port", str(inst.port)] if inst.role == "bridge" else []
        env = dict(self.env)
        if inst.role != "bridge":
            env["WOOFLOW_METRICS_PORT"] = str(inst.port)
        inst.starts += 1
        log = self.log_path(inst)
        with open(log, "ab") as out:
            out.write(f"\n=== chaos: start #{inst.starts} of {inst.name} ===\n".encode())
            out.flush()
            argv = [sys.executable, "-m", "wooflow.cli", inst.role, *args]
            inst.proc = self._spawner.submit(
                subprocess.Popen, argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent).result()
        inst.held = False
        self._changed()

    def _changed(self) -> None:
        self.write_state()
        if self.on_change is not None:
            self.on_change()

    # --- faults ------------------------------------------------------------------------------
    def running(self, role: str | None = None) -> list[Instance]:
        with self._lock:
            return [i for i in self.instances if not i.retired and (role is None or i.role == role)]

    def kill(self, inst: Instance) -> None:
        """SIGKILL: no shutdown hooks, no final commit. The supervisor leaves it down."""
        with self._lock:
            inst.held = True
            if inst.alive():
                assert inst.proc is not None
                inst.proc.send_signal(signal.SIGKILL)
                inst.proc.wait(10)
            self._changed()

    def restart(self, inst: Instance) -> None:
        with self._lock:
            if not inst.retired and not inst.alive():
                self._start(inst)

    def scale(self, role: str, n: int) -> None:
        """Run `n` instances of `role`: extra ones get SIGTERM (newest first), like a scale-down."""
        with self._lock:
            live = self.running(role)
            for inst in live[n:][::-1]:
                inst.retired = inst.held = True
        for inst in live[n:][::-1]:
            _terminate(inst)
        with self._lock:
            self.instances = [i for i in self.instances if not i.retired]
            for _ in range(n - len(live)):
                self.add(role)
            self._changed()

    # --- supervision --------------------------------------------------------------------------
    def supervise(self) -> list[Exit]:
        """Restart instances that exited on their own; returns those exits."""
        found: list[Exit] = []
        with self._lock:
            for inst in self.instances:
                if inst.retired or inst.held or inst.proc is None or inst.proc.poll() is None:
                    continue
                code = int(inst.proc.returncode)
                found.append(Exit(inst.name, code, round(time.monotonic() - self.started, 1),
                                  _tail(self.log_path(inst))))
                self._start(inst)
            self.exits += found
        return found

    def stop_all(self) -> None:
        with self._lock:
            for inst in self.instances:
                inst.held = True
            live = [i for i in self.instances if i.alive()]
        for inst in live:
            assert inst.proc is not None
            inst.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for inst in live:
            assert inst.proc is not None
            try:
                inst.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait(10)
        self._spawner.shutdown(wait=False)

    # --- what a Prometheus scrapes ---------------------------------------------------------------
    def endpoints(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"role": i.role, "instance": i.name, "address": f"127.0.0.1:{i.port}",
                     "pid": i.proc.pid if i.proc else None, "up": i.alive(), "starts": i.starts}
                    for i in self.instances if not i.retired]

    def write_state(self) -> None:
        eps = self.endpoints()
        # `component`: the role, as deploy/prometheus/prometheus.yml and the ServiceMonitor label it
        targets = [{"targets": [e["address"]], "labels": {"component": e["role"], "instance_name": e["instance"]}}
                   for e in eps]
        _write_json(self.run_dir / "prometheus-targets.json", targets)
        _write_json(self.run_dir / "state.json", {**self.about, "pid": os.getpid(), "roles": eps,
                                                  "prometheus_file_sd": str(self.run_dir / "prometheus-targets.json"),
                                                  "updated_at": time.time()})


def _terminate(inst: Instance) -> None:
    if inst.alive():
        assert inst.proc is not None
        inst.proc.send_signal(signal.SIGTERM)
        try:
            inst.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            inst.proc.kill()
            inst.proc.wait(10)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
