"""A real Prometheus server scraping wooflow's roles, and a small client of its HTTP API.

Used by the alert drill (`bench/alerts`) and the chaos run to watch the shipped alert rules
(`deploy/prometheus/rules`) and the Grafana dashboards' queries against the metrics the
roles really export, instead of promtool's synthetic series.

The binary is Debian's `prometheus` package (the one that also brings promtool; `./run
setup` installs it as root), or `prometheus` on PATH, or `<WOOFLOW_CACHE_DIR>/bin/prometheus`.
Each server gets a working directory of its own: `prometheus.yml` (generated), `targets.json`
(the scrape targets, file-based discovery: `set_targets` changes them while it runs, so a
run that scales a role or restarts it on a new port keeps being scraped), `data/` and
`prometheus.log`. A detached watchdog stops the server when the process that started it
exits, even by SIGKILL.

Every target carries the label `component` (the role), as on Kubernetes (the
ServiceMonitor's relabeling) and in `deploy/prometheus/prometheus.yml`, so the alert
rules see the same labels here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from wooflow.devinfra.kafka import LauncherError, process_alive, spawn_detached, tail_text, terminate
from wooflow.settings import Settings

READY_TIMEOUT_S = 30.0


# --- the binary ------------------------------------------------------------------------------


def find_prometheus(cache_dir: Path | None = None) -> Path:
    """The `prometheus` executable (PATH, then `<cache dir>/bin`), or a LauncherError saying how to install it."""
    cache = cache_dir if cache_dir is not None else Settings().cache_dir
    for candidate in (shutil.which("prometheus"), str(cache / "bin" / "prometheus")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise LauncherError("Prometheus not found: install Debian's `prometheus` package (`./run setup` as root "
                        "does it) or put a `prometheus` binary on PATH.")


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeTarget:
    """One process serving /metrics: its role (the `component` label) and host:port."""

    component: str
    address: str


def config_text(targets_file: Path, rule_files: Sequence[Path], *, scrape_interval_s: float,
                evaluation_interval_s: float) -> str:
    """prometheus.yml: one job over the file-discovered targets, the given rule files."""
    config = {
        "global": {"scrape_interval": _duration(scrape_interval_s),
                   "scrape_timeout": _duration(min(scrape_interval_s, 10.0)),
                   "evaluation_interval": _duration(evaluation_interval_s)},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "wooflow",
                            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}]}],
    }
    return yaml.safe_dump(config, sort_keys=False)


def targets_json(targets: Iterable[ScrapeTarget]) -> str:
    groups: dict[str, list[str]] = {}
    for t in targets:
        groups.setdefault(t.component, []).append(t.address)
    return json.dumps([{"targets": sorted(addresses), "labels": {"component": component}}
                       for component, addresses in sorted(groups.items())], indent=2)


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_atomically(path: Path, text: str) -> None:
    # file-based discovery re-reads on change: it must never see half a file
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


# --- the server ------------------------------------------------------------------------------

# Runs detached: waits for the owner, then stops the server if it still is the one started
# with this config (pid reuse guard). Imports only what it needs once the owner is gone.
_WATCHDOG = """
import sys, time, psutil
owner_pid, pid, config = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
try:
    owner = psutil.Process(owner_pid)
    server = psutil.Process(pid)
except psutil.Error:
    sys.exit(0)
while alive(owner) and alive(server):
    time.sleep(0.5)
try:
    if alive(server) and any(config in arg for arg in server.cmdline()):
        server.terminate()
        server.wait(10)
except psutil.TimeoutExpired:
    server.kill()
except psutil.Error:
    pass
"""


class PrometheusServer:
    """`with PrometheusServer(workdir, targets, rule_files) as prom:` a running Prometheus.

    Short intervals (default 1 s scrape and evaluation) make alerts and dashboards usable
    in a run of minutes; `client` talks to its HTTP API."""

    def __init__(self, workdir: Path, targets: Iterable[ScrapeTarget], rule_files: Sequence[Path], *,
                 scrape_interval_s: float = 1.0, evaluation_interval_s: float = 1.0, port: int | None = None,
                 binary: Path | None = None, targets_file: Path | None = None) -> None:
        self.workdir = workdir.resolve()
        self.rule_files = [p.resolve() for p in rule_files]
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s
        self.port = port
        self.binary = binary
        self.pid: int | None = None
        self._targets = list(targets)
        # a file_sd file someone else keeps (a chaos run rewrites its own as roles come and go)
        self._external_targets = targets_file.resolve() if targets_file is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def targets_file(self) -> Path:
        return self._external_targets or self.workdir / "targets.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / "prometheus.log"

    def set_targets(self, targets: Iterable[ScrapeTarget]) -> None:
        """Replace the scrape targets (Prometheus picks them up within about 5 s, no restart)."""
        self._targets = list(targets)
        _write_atomically(self.targets_file, targets_json(self._targets))

    def start(self, timeout: float = READY_TIMEOUT_S) -> PrometheusServer:
        binary = self.binary or find_prometheus()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = _free_port()
        if self._external_targets is None:
            self.set_targets(self._targets)
        _write_atomically(self.config_file, config_text(
            self.targets_file, self.rule_files, scrape_interval_s=self.scrape_interval_s,
            evaluation_interval_s=self.evaluation_interval_s))
        argv = [str(binary), f"--config.file={self.config_file}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
                "--web.enable-lifecycle", "--log.level=warn"]
        self.pid = spawn_detached(argv, self.log_file, self.workdir)
        spawn_detached([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.pid), str(self.config_file)],
                       self.workdir / "watchdog.log", self.workdir)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process_alive(self.pid):
                raise LauncherError(f"Prometheus exited during startup:\n{tail_text(self.log_file)}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise LauncherError(f"Prometheus did not become ready within {timeout:.0f}s:\n{tail_text(self.log_file)}")

    def stop(self) -> None:
        if self.pid is not None and process_alive(self.pid):
            terminate(self.pid, 10)
        self.pid = None

    @property
    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --- the HTTP API ----------------------------------------------------------------------------


class PrometheusError(RuntimeError):
    """The API answered an error (a bad query, a server problem); the message is Prometheus'."""


@dataclass(frozen=True)
class Alert:
    """An active alert: pending (its condition holds, not yet for its `for`) or firing."""

    name: str
    labels: Mapping[str, str]  # every label but alertname
    state: str
    active_at: datetime
    value: str

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return self.name == name and all(self.labels.get(k) == v for k, v in labels.items())


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]  # (unix time, value); NaN where the expression gave NaN


@dataclass(frozen=True)
class Target:
    labels: Mapping[str, str]
    health: str  # up | down | unknown
    last_error: str


@dataclass(frozen=True)
class RuleInfo:
    group: str
    name: str  # alert name or recorded metric
    kind: str  # alerting | recording
    query: str
    duration_s: float  # the alert's `for`
    health: str
    last_error: str


class PrometheusClient:
    """Typed answers of /api/v1/alerts, /query, /query_range, /rules and /targets."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        r = httpx.get(f"{self.base_url}{path}", params=params, timeout=self.timeout)
        body = r.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params or {})}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def alerts(self) -> list[Alert]:
        out = []
        for a in self._get("/api/v1/alerts")["alerts"]:
            labels = dict(a["labels"])
            name = labels.pop("alertname")
            out.append(Alert(name, labels, a["state"], _instant(a["activeAt"]), a.get("value", "")))
        return out

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        data = self._get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{step_s}"})
        return [Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]

    def rules(self) -> list[RuleInfo]:
        return [RuleInfo(g["name"], r["name"], r["type"], r["query"], float(r.get("duration", 0)),
                         r.get("health", ""), r.get("lastError", ""))
                for g in self._get("/api/v1/rules")["groups"] for r in g["rules"]]

    def targets(self) -> list[Target]:
        return [Target(t["labels"], t["health"], t.get("lastError", ""))
                for t in self._get("/api/v1/targets", {"state": "active"})["activeTargets"]]

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self._get(f"/api/v1/label/{label}/values", {"match[]": match}))


def _instant(text: str) -> datetime:
    # Prometheus writes nanoseconds (2026-01-31T08:00:00.123456789Z); datetime takes microseconds
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = rest[:6] if rest else "0"
    return datetime.fromisoformat(f"{head}.{fraction}+00:00")


# --- alert timelines -------------------------------------------------------------------------


@dataclass
class Episode:
    """One alert instance from pending to resolved, as seen by polling /api/v1/alerts.

    Times are unix seconds: `pending_at` is Prometheus' own activeAt; `firing_at` and
    `resolved_at` are the first poll that saw the change (at most one poll interval late)."""

    name: str
    labels: dict[str, str]
    pending_at: float
    firing_at: float | None = None
    resolved_at: float | None = None

    def key(self) -> tuple[str, tuple[tuple[str, str], ...], float]:
        return self.name, tuple(sorted(self.labels.items())), self.pending_at

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return self.name == name and all(self.labels.get(k) == v for k, v in labels.items())


@dataclass
class AlertWatch:
    """Polls a Prometheus' active alerts in a thread and keeps every episode it saw."""

    client: PrometheusClient
    interval_s: float = 0.25
    episodes: list[Episode] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: dict[tuple[str, tuple[tuple[str, str], ...], float], Episode] = {}

    def poll_once(self) -> None:
        try:
            alerts = self.client.alerts()
        except (httpx.HTTPError, PrometheusError, ValueError):
            self.errors += 1  # a missed poll only delays what the next one sees
            return
        now = time.time()
        seen = set()
        with self._lock:
            for a in alerts:
                ep = Episode(a.name, dict(a.labels), a.active_at.timestamp())
                key = ep.key()
                seen.add(key)
                if key not in self._open:
                    self._open[key] = ep
                    self.episodes.append(ep)
                if a.state == "firing" and self._open[key].firing_at is None:
                    self._open[key].firing_at = now
            for key in list(self._open):
                if key not in seen:
                    self._open.pop(key).resolved_at = now

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll_once()

    def start(self) -> AlertWatch:
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="alert-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def snapshot(self) -> list[Episode]:
        with self._lock:
            return [Episode(e.name, dict(e.labels), e.pending_at, e.firing_at, e.resolved_at)
                    for e in self.episodes]

    def find(self, name: str, labels: Mapping[str, str] | None = None, *, since: float = 0.0) -> list[Episode]:
        """Episodes of `name` whose labels include `labels`, pending at or after `since`."""
        return [e for e in self.snapshot() if e.matches(name, labels or {}) and e.pending_at >= since]

    def active(self) -> list[Episode]:
        return [e for e in self.snapshot() if e.resolved_at is None]

    def __enter__(self) -> AlertWatch:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
