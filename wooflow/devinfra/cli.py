"""`wooflow dev up|down|status`: local Kafka + PostgreSQL without Docker.

Progress and hints go to stderr and only the ``export`` lines to stdout, so
``eval "$(wooflow dev up)"`` configures the current shell directly.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from wooflow.devinfra import launcher
from wooflow.devinfra.kafka import LauncherError
from wooflow.settings import Settings

app = typer.Typer(help="Local Kafka broker and PostgreSQL for development (no Docker needed).",
                  no_args_is_help=True)
out = Console()
err = Console(stderr=True)

T = TypeVar("T")

StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Data, logs and pids of the local services "
                                     "[default: <WOOFLOW_STATE_DIR>/dev]"),
]


def _state_dir(option: Path | None) -> Path:
    return option if option is not None else Settings().state_dir / "dev"


@contextmanager
def _launcher_errors() -> Iterator[None]:
    """LauncherError messages are written for humans; a traceback would bury them."""
    try:
        yield
    except LauncherError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _run(action: Callable[[], T]) -> T:
    with _launcher_errors():
        return action()


@app.command()
def up(
    state_dir: StateDirOption = None,
    kafka: Annotated[bool, typer.Option("--kafka/--no-kafka", help="Start the Kafka broker")] = True,
    postgres: Annotated[bool, typer.Option("--postgres/--no-postgres", help="Start PostgreSQL")] = True,
    durable: Annotated[bool, typer.Option(
        "--durable", help="Keep PostgreSQL fsync on (default off: faster, but an OS crash can corrupt dev data)",
    )] = False,
) -> None:
    """Start the local services (idempotent) and print the environment to use them."""
    directory = _state_dir(state_dir)
    started = time.monotonic()
    with err.status("Starting local services...") as spinner:
        def progress(message: str) -> None:
            spinner.update(message + "...")
            err.print(f"[dim]•[/] {message}")

        services = _run(lambda: launcher.up(directory, Settings().cache_dir, kafka=kafka, postgres=postgres,
                                            durable_postgres=durable, progress=progress))
    err.print(f"[green]✓[/] Local services ready in {time.monotonic() - started:.1f}s "
              f"(state: {services.state_dir})")
    for line in launcher.env_lines(services):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    suffix = f" --state-dir {shlex.quote(str(state_dir))}" if state_dir is not None else ""
    err.print(f'[dim]Use them in this shell with:[/] eval "$(wooflow dev up{suffix})"   '
              f"[dim]· stop with:[/] wooflow dev down{suffix}", markup=True, highlight=False)


@app.command()
def down(state_dir: StateDirOption = None) -> None:
    """Stop the local services; their data is kept for the next `up`."""
    stopped = _run(lambda: launcher.down(_state_dir(state_dir)))
    err.print(f"[green]✓[/] Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")


def _status_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"wooflow dev services ({report['state_dir']})")
    for column in ("service", "state", "pid", "address", "log"):
        table.add_column(column, overflow="fold")
    for name in ("kafka", "postgres"):
        info = report[name]
        state = ("[green]running[/]" if info["answering"]
                 else "[yellow]not answering[/]" if info["running"] else "[dim]stopped[/]")
        table.add_row(name, state, str(info["pid"] or "-"), info["address"] or "-", info["log"])
    return table


@app.command()
def status(state_dir: StateDirOption = None) -> None:
    """Show whether the local services run and answer."""
    report = _run(lambda: launcher.status(_state_dir(state_dir)))
    out.print(_status_table(report))


@app.command()
def fetch() -> None:
    """Fetch the Apache Kafka jars from Maven Central into the cache (no-op when cached)."""
    from wooflow.devinfra.kafka import ensure_jars, jars_ready

    cache_dir = Settings().cache_dir
    if jars_ready(cache_dir):
        err.print(f"Kafka jars already cached in {ensure_jars(cache_dir)}")
        return
    err.print("fetching Apache Kafka jars with Maven (first run only)...")
    started = time.monotonic()
    libs = _run(lambda: ensure_jars(cache_dir))
    err.print(f"Kafka jars in {libs} ({time.monotonic() - started:.1f}s)")
