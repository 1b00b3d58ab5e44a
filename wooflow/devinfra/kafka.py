"""A real single-node Apache Kafka (KRaft) broker without a Docker engine.

The broker jars come from Maven Central (see ``kafka/pom.xml``) and are cached
once per machine; each launcher state dir gets its own config, data and logs.
The broker runs detached so it outlives the CLI process that started it.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psutil

KAFKA_VERSION = "4.1.1"
MIN_JAVA_MAJOR = 17  # Kafka 4.x brokers refuse to run on older JVMs
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
MVN_TIMEOUT_S = 900.0

_COMPLETE_MARKER = ".complete"
# Kafka's own scripts use G1; for a small dev heap the serial collector starts
# faster and uses fewer threads. -XX:-UsePerfData skips the hsperfdata mmap file.
_JVM_FLAGS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# librdkafka prints every refused connection to stderr unless given a logger;
# the readiness probe expects refusals, so they go nowhere.
_PROBE_LOGGER = logging.getLogger("wooflow.devinfra.kafka.probe")
_PROBE_LOGGER.addHandler(logging.NullHandler())
_PROBE_LOGGER.propagate = False


class LauncherError(RuntimeError):
    """A local service could not be prepared or started; the message is for humans."""


# --- small shared helpers ------------------------------------------------------------


def tail_text(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, or a note that it does not exist (for error messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock; released automatically if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process_alive(pid: int | None) -> bool:
    """True for a live process; zombies count as dead (they only await reaping)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def spawn_detached(argv: Sequence[str], log: Path, cwd: Path) -> int:
    """Start ``argv`` in its own session, output appended to ``log``; return its pid.

    The intermediate ``sh`` backgrounds the command and exits at once, so the
    service is re-parented to init: it survives the CLI, never becomes a zombie
    of a long-lived caller (pytest), and no Popen object is left to warn about.
    """
    script = 'log=$1; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
    result = subprocess.run(
        ["/bin/sh", "-c", script, "sh", str(log), *argv],
        cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        start_new_session=True, check=False,
    )
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        raise LauncherError(f"could not start {argv[0]}: {result.stderr.strip()}")
    return int(result.stdout.strip())


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll rather than waitpid: detached services are not our children, and a
    zombie left behind by a non-reaping init must count as gone."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. True if it exited on SIGTERM."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return sig == signal.SIGTERM
        if wait_gone(pid, wait):
            return sig == signal.SIGTERM
    raise LauncherError(f"process {pid} survived SIGKILL")


# --- toolchain -----------------------------------------------------------------------


def _which(name: str, env: Mapping[str, str]) -> Path | None:
    """JAVA_HOME wins over PATH, as in Kafka's and Maven's own launch scripts."""
    java_home = env.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name, path=env.get("PATH", ""))
    return Path(found) if found else None


def find_java(env: Mapping[str, str] | None = None) -> Path:
    """Locate ``java``; ``env`` is injectable so tests can simulate a bare machine."""
    java = _which("java", os.environ if env is None else env)
    if java is None:
        raise LauncherError(
            f"Java not found: the local Kafka broker needs a Java {MIN_JAVA_MAJOR}+ runtime.\n"
            "Install one (e.g. `apt-get install openjdk-17-jre-headless`, `brew install openjdk@17`) "
            "and put `java` on PATH or set JAVA_HOME.\n"
            "Alternatively point KAFKA_BOOTSTRAP_SERVERS at an existing broker."
        )
    return java


def java_major_version(java: Path) -> int:
    """Major version from ``java -version`` (handles the legacy ``1.8`` scheme)."""
    try:
        result = subprocess.run([str(java), "-version"], capture_output=True, text=True,
                                timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LauncherError(f"could not run `{java} -version`: {exc}") from exc
    output = result.stderr + result.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match is None:
        raise LauncherError(f"could not read the Java version from `{java} -version`:\n{output.strip()}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java(env: Mapping[str, str] | None = None) -> Path:
    """A ``java`` executable that is new enough for Kafka 4.x, or a clear LauncherError."""
    java = find_java(env)
    major = java_major_version(java)
    if major < MIN_JAVA_MAJOR:
        raise LauncherError(
            f"{java} is Java {major}, but Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} or newer.\n"
            "Install a newer JDK/JRE and put it first on PATH or set JAVA_HOME."
        )
    return java


def find_mvn(env: Mapping[str, str] | None = None) -> Path:
    mvn = _which("mvn", os.environ if env is None else env)
    if mvn is None:
        raise LauncherError(
            f"Maven (`mvn`) not found: it is needed once to download the Kafka {KAFKA_VERSION} jars "
            "from Maven Central.\nInstall it (e.g. `apt-get install maven`, `brew install maven`), "
            "or point KAFKA_BOOTSTRAP_SERVERS at an existing broker."
        )
    return mvn


# --- jars ----------------------------------------------------------------------------


def _packaged(name: str) -> bytes:
    return (resources.files("wooflow.devinfra") / "kafka" / name).read_bytes()


def jars_dir(cache_dir: Path) -> Path:
    return cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"


def jars_ready(cache_dir: Path) -> bool:
    """Whether ensure_jars would return without downloading (lets callers say so)."""
    return (jars_dir(cache_dir).parent / _COMPLETE_MARKER).exists()


def _run_mvn(mvn: Path, workdir: Path, libs: Path) -> None:
    (workdir / "pom.xml").write_bytes(_packaged("pom.xml"))
    cmd = [str(mvn), "-q", "-B", "-f", str(workdir / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    try:
        result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                                timeout=MVN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LauncherError(f"mvn did not finish within {MVN_TIMEOUT_S:.0f}s fetching the Kafka jars") from exc
    jars = list(libs.glob("kafka_2.13-*.jar")) if libs.is_dir() else []
    if result.returncode != 0 or not jars:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise LauncherError(
            f"mvn failed to fetch the Kafka {KAFKA_VERSION} jars (exit {result.returncode}).\n"
            f"Command: {' '.join(cmd)}\nLast output:\n{output}"
        )


def ensure_jars(cache_dir: Path, *, env: Mapping[str, str] | None = None) -> Path:
    """Return ``<cache_dir>/kafka-<version>/libs``, fetching it with Maven the first time.

    Concurrent callers serialise on a lock file; the download lands in a temp dir
    that is renamed into place, so a crash never leaves a half-filled cache that
    looks complete.
    """
    final = jars_dir(cache_dir).parent
    if jars_ready(cache_dir):
        return final / "libs"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f"kafka-{KAFKA_VERSION}.lock"):
        if jars_ready(cache_dir):  # another process finished while we waited
            return final / "libs"
        mvn = find_mvn(env)
        staging = Path(tempfile.mkdtemp(prefix=f".kafka-{KAFKA_VERSION}-", dir=cache_dir))
        try:
            _run_mvn(mvn, staging, staging / "libs")
            (staging / "pom.xml").unlink()
            (staging / _COMPLETE_MARKER).write_text(KAFKA_VERSION + "\n")
            staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
            shutil.rmtree(final, ignore_errors=True)  # leftover without marker
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final / "libs"


# --- broker --------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaProcess:
    pid: int
    port: int
    controller_port: int

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def new_cluster_id() -> str:
    """Same format as ``kafka-storage random-uuid``: URL-safe base64 of 16 random bytes."""
    while True:
        encoded = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not encoded.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return encoded


def broker_properties(data_dir: Path, port: int, controller_port: int) -> str:
    listener = f"127.0.0.1:{port}"
    controller = f"127.0.0.1:{controller_port}"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Kafka 4.x dynamic quorum: formatted with --standalone, found via bootstrap servers.
        "controller.quorum.bootstrap.servers": controller,
        "listeners": f"PLAINTEXT://{listener},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{listener},CONTROLLER://{controller}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # Topics are created explicitly with the partition counts from Settings.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        # The default 50 partitions only spread coordinators over brokers we don't have.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # The default 3 s delay only helps multi-member groups joining at once; in dev it's dead time.
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def configured_broker(kafka_dir: Path, pid: int) -> KafkaProcess | None:
    """Ports of a running broker, read back from the config it was started with."""
    try:
        text = (kafka_dir / "server.properties").read_text()
    except OSError:
        return None
    ports = {name: int(port) for name, port in re.findall(r"(PLAINTEXT|CONTROLLER)://[^:,]+:(\d+)",
                                                          _property(text, "listeners"))}
    if set(ports) != {"PLAINTEXT", "CONTROLLER"}:
        return None
    return KafkaProcess(pid=pid, port=ports["PLAINTEXT"], controller_port=ports["CONTROLLER"])


def _property(text: str, key: str) -> str:
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return ""


def _format_storage(java: Path, libs: Path, config: Path, data_dir: Path, log: Path) -> None:
    """Format the KRaft log dir once; later starts reuse the data."""
    if (data_dir / "meta.properties").exists():
        return
    shutil.rmtree(data_dir, ignore_errors=True)  # a previous format died half-way
    cmd = [str(java), *_JVM_FLAGS, "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
           "--cluster-id", new_cluster_id(), "--config", str(config), "--standalone"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    with log.open("a") as handle:
        handle.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise LauncherError(f"formatting the Kafka storage failed:\n{(result.stdout + result.stderr).strip()}")


# --- class-data sharing --------------------------------------------------------------
# Loading and verifying ~8000 classes is most of the broker's start time. The first
# broker run with a given JVM records them (-XX:ArchiveClassesAtExit, written when the
# JVM exits); stop_kafka validates that dump and moves it into the jar cache, and
# later starts map it (-XX:SharedArchiveFile): ~2.2 s -> ~1.4 s on a 2-CPU VM.
# JDK 19+ has -XX:+AutoCreateSharedArchive for this, but Kafka 4.x supports 17.

_CDS_DUMP = "classes.jsa"  # in the broker's state dir until validated
_CDS_TARGET = "classes.jsa.target"


def _cds_archive(java: Path, libs: Path) -> Path:
    """Archives only fit the exact JVM build that wrote them, hence the key."""
    real = java.resolve()
    info = real.stat()
    key = hashlib.sha1(f"{real}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:12]
    return libs.parent / "cds" / f"broker-{key}.jsa"


def _cds_flags(java: Path, libs: Path, kafka_dir: Path) -> list[str]:
    archive = _cds_archive(java, libs)
    if archive.exists():
        return [f"-XX:SharedArchiveFile={archive}"]
    (kafka_dir / _CDS_TARGET).write_text(f"{java}\n{libs}\n{archive}\n")
    # -Xlog: the dump warns about every class it skips, burying real output in kafka.out.
    return [f"-XX:ArchiveClassesAtExit={kafka_dir / _CDS_DUMP}", "-Xlog:cds*=off"]


def _archive_usable(java: Path, libs: Path, archive: Path) -> bool:
    # -Xshare:on turns any mismatch into an error; a damaged file can even crash the JVM.
    result = subprocess.run([str(java), f"-XX:SharedArchiveFile={archive}", "-Xshare:on",
                             "-cp", f"{libs}/*", "-version"], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


def _promote_cds_dump(kafka_dir: Path) -> None:
    """Move a completed dump into the jar cache, atomically, if the JVM accepts it."""
    dump, target = kafka_dir / _CDS_DUMP, kafka_dir / _CDS_TARGET
    try:
        java, libs, archive = (Path(line) for line in target.read_text().splitlines())
        if dump.exists() and not archive.exists() and _archive_usable(java, libs, dump):
            archive.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dump, archive)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass  # only a speed-up: the next start simply records again
    finally:
        dump.unlink(missing_ok=True)
        target.unlink(missing_ok=True)


def broker_command(java: Path, libs: Path, kafka_dir: Path) -> list[str]:
    return [str(java), *_JVM_FLAGS, *_cds_flags(java, libs, kafka_dir),
            f"-Dlog4j2.configurationFile={kafka_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={kafka_dir / 'logs'}",
            "-cp", f"{libs}/*", "kafka.Kafka", str(kafka_dir / "server.properties")]


def launch_broker(kafka_dir: Path, libs: Path, *, port: int, controller_port: int,
                  java: Path | None = None) -> KafkaProcess:
    """Write config, format storage if needed and start the broker without waiting for it."""
    java = java or require_java()
    (kafka_dir / "logs").mkdir(parents=True, exist_ok=True)
    if (kafka_dir / "kafka.out").exists():  # keep one previous run for post-mortems
        os.replace(kafka_dir / "kafka.out", kafka_dir / "kafka.out.1")
    config = kafka_dir / "server.properties"
    config.write_text(broker_properties(kafka_dir / "data", port, controller_port))
    (kafka_dir / "log4j2.properties").write_bytes(_packaged("log4j2.properties"))
    _format_storage(java, libs, config, kafka_dir / "data", kafka_dir / "kafka.out")
    pid = spawn_detached(broker_command(java, libs, kafka_dir), kafka_dir / "kafka.out", kafka_dir)
    return KafkaProcess(pid=pid, port=port, controller_port=controller_port)


def is_broker(pid: int | None, kafka_dir: Path) -> bool:
    """Guard against pid reuse: the pid must be a live broker of *this* state dir."""
    if not process_alive(pid):
        return False
    try:
        return str(kafka_dir / "server.properties") in psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def find_broker(kafka_dir: Path, hint: int | None = None) -> int | None:
    """Pid of this state dir's broker: the recorded pid if still valid, else a process
    scan (covers a lost or stale services.json)."""
    if is_broker(hint, kafka_dir):
        return hint
    config = str(kafka_dir / "server.properties")
    for proc in psutil.process_iter(["cmdline"]):
        if config in (proc.info["cmdline"] or []) and is_broker(proc.pid, kafka_dir):
            return proc.pid
    return None


def broker_answers(bootstrap_servers: str, timeout: float = 2.0) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from wooflow.kafka.config import probe_config

    admin = AdminClient(probe_config(bootstrap_servers, _PROBE_LOGGER))
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


def _first_errors(log: Path, limit: int = 6) -> str:
    """ERROR lines with the exception line below each: on a failed start the cause
    comes first and is then buried under hundreds of shutdown lines."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    picked: list[str] = []
    for index, line in enumerate(lines):
        if " ERROR " in line or " FATAL " in line:
            picked.extend(lines[index:index + 2])
            if len(picked) >= 2 * limit:
                break
    return "\n".join(picked)


def broker_log_tail(kafka_dir: Path) -> str:
    server_log = kafka_dir / "logs" / "server.log"
    errors = _first_errors(server_log)
    return (f"--- {kafka_dir / 'kafka.out'} ---\n{tail_text(kafka_dir / 'kafka.out', 20)}\n"
            + (f"--- first errors in {server_log} ---\n{errors}\n" if errors else "")
            + f"--- end of {server_log} ---\n{tail_text(server_log, 15)}")


def wait_until_ready(broker: KafkaProcess, kafka_dir: Path, timeout: float = READY_TIMEOUT_S) -> None:
    """Block until the broker serves metadata; fail fast if the JVM exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(broker.pid):
            raise LauncherError(f"the Kafka broker exited during startup.\n{broker_log_tail(kafka_dir)}")
        # A plain TCP connect is far cheaper than building an AdminClient per attempt.
        if port_open(broker.port) and broker_answers(broker.bootstrap_servers):
            return
        time.sleep(0.1)
    raise LauncherError(
        f"the Kafka broker (pid {broker.pid}) did not become ready within {timeout:.0f}s.\n"
        f"{broker_log_tail(kafka_dir)}"
    )


def warm_up_group_coordinator(bootstrap_servers: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Create and load ``__consumer_offsets`` now (a FindCoordinator does it).

    Left to the first consumer, librdkafka's coordinator retry back-off turns the
    ~0.2 s of broker work into ~3 s; every fresh state dir (each test session)
    would pay that on its first consumer group.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from wooflow.kafka.config import probe_config

    admin = AdminClient(probe_config(bootstrap_servers, _PROBE_LOGGER))
    deadline = time.monotonic() + timeout
    while True:
        future = admin.describe_consumer_groups(["__wooflow_warm_up"], request_timeout=5)["__wooflow_warm_up"]
        try:
            future.result()
            return
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise LauncherError(f"the Kafka group coordinator did not come up: {exc}") from exc
            time.sleep(0.1)


def start_kafka(kafka_dir: Path, libs: Path, *, port: int, controller_port: int,
                java: Path | None = None, timeout: float = READY_TIMEOUT_S) -> KafkaProcess:
    """Start the broker and wait for it; a broker that never gets ready is killed."""
    broker = launch_broker(kafka_dir, libs, port=port, controller_port=controller_port, java=java)
    try:
        wait_until_ready(broker, kafka_dir, timeout)
        warm_up_group_coordinator(broker.bootstrap_servers, timeout)
    except BaseException:
        stop_kafka(broker.pid, 5)
        raise
    return broker


def _kafka_dir_of(pid: int) -> Path | None:
    """The state dir of a running broker: its config file is the last argument."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return Path(cmdline[-1]).parent if cmdline and cmdline[-1].endswith("server.properties") else None


def stop_kafka(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM triggers Kafka's controlled shutdown (clean logs, fast next start)."""
    kafka_dir = _kafka_dir_of(pid)
    graceful = terminate(pid, timeout)
    if kafka_dir is not None:
        if graceful:
            _promote_cds_dump(kafka_dir)
        else:  # a JVM killed mid-dump leaves a file that could crash the next JVM
            (kafka_dir / _CDS_DUMP).unlink(missing_ok=True)
