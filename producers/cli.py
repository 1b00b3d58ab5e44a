"""The bridge's batch commands: `wooflow backfill` and `wooflow poller` (registered in wooflow/cli.py)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from wooflow import timespec
from wooflow.timespec import TimeSpec

console = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _PlainReporter:
    """One line per page when stderr is not a terminal (CI, logs, tests)."""

    def __call__(self, p: Any) -> None:
        console.print(f"backfill {p.resource}: page {p.page}/{p.total_pages} ({p.items_done}/{p.total_items} "
                      f"items) produced {p.produced} duplicates {p.duplicates} eta {_fmt_eta(p.eta_s())}",
                      highlight=False, soft_wrap=True)


def _terminal_reporter(bar: Any) -> Callable[[Any], None]:
    """A progress bar per resource (pages done / total, ETA) on a terminal."""
    tasks: dict[str, Any] = {}

    def report(p: Any) -> None:
        if p.resource not in tasks:
            tasks[p.resource] = bar.add_task(p.resource, total=p.total_pages or None)
        bar.update(tasks[p.resource], completed=p.page, total=p.total_pages or None,
                   description=f"{p.resource} (+{p.produced} / dup {p.duplicates})")
    return report


def backfill(
    store_id: Annotated[str, typer.Option("--store", help="Store id")],
    since: Annotated[TimeSpec, timespec.option(
        help="Changes modified after this time. Running the same command again (same --since as typed, "
             "same --resources) resumes an interrupted run from its checkpoint, at the instant it first "
             "meant; another --since starts another run from page 1")],
    resources: Annotated[str, typer.Option(help="Comma-separated: orders,customers,products,coupons,subscriptions")] =
        "orders,customers,products",
    restart: Annotated[bool, typer.Option(help="Ignore this request's checkpoints and start from page 1")] = False,
) -> None:
    """Backfill a store through WooCommerce REST v3 (resumable; Ctrl-C finishes the page and stops)."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from wooflow.db.engine import get_engine
    from wooflow.process import setup_logging
    from wooflow.producers.backfill import RESOURCES, backfill_resource, open_run, unfinished_runs
    from wooflow.producers.sync_ingest import SyncIngest
    from wooflow.producers.woo_rest import RestError, Transient, WooRest
    from wooflow.schemas.codec import get_codec
    from wooflow.settings import get_settings
    from wooflow.stores import StoreCache

    s = get_settings()
    setup_logging(s)
    wanted = list(dict.fromkeys(r.strip() for r in resources.split(",") if r.strip()))
    unknown = [r for r in wanted if r not in RESOURCES]
    if unknown or not wanted:
        _fail(f"--resources: unknown {unknown}; choose from {', '.join(RESOURCES)}")
    engine = get_engine(s.database_url)
    store = StoreCache(engine, ttl=0).get(store_id)
    if store is None:
        _fail(f"no store {store_id!r}; register it with `wooflow stores add`")
    if not store.consumer_key:
        _fail(f"store {store_id!r} has no REST keys (wooflow stores add {store_id} --consumer-key ...)")
    run = open_run(engine, store_id, since, wanted, restart=restart)
    state = "resuming the run started" if run.resumed else "new run started"
    console.print(f"backfill of {store_id} ({run.resources}), changes since {run.since.isoformat()} "
                  f"(--since {since.text}); {state} {run.started_at.isoformat(timespec='seconds')}", highlight=False)
    for other_since, other_resources in unfinished_runs(engine, run):
        console.print(f"note: an unfinished run of this store ({other_resources}, since {other_since}) keeps its "
                      "checkpoints; run its command again to resume it", highlight=False)

    stop = threading.Event()

    def on_sigint(*_: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.print("[yellow]interrupt: finishing the current page, then stopping (Ctrl-C again to abort)")

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    ingest = SyncIngest(s, engine, get_codec(s.schema_registry_url))
    summary = []
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("pages"),
                   TimeRemainingColumn(), console=console) if console.is_terminal else None
    try:
        with WooRest(store, timeout=s.rest_timeout_s, max_attempts=s.rest_max_attempts) as rest, \
                (bar if bar is not None else nullcontext()):
            report = _terminal_reporter(bar) if bar else _PlainReporter()
            for r in wanted:
                summary.append(backfill_resource(store, run, r, engine=engine, rest=rest, ingest=ingest,
                                                 report=report, should_stop=stop.is_set))
                if stop.is_set():
                    break
    except (RestError, Transient) as exc:
        _fail(f"WooCommerce REST: {exc} (progress is checkpointed: run the same command again to resume)")
    except KeyboardInterrupt:
        console.print("[red]aborted[/red]: run the same command again to resume from the last checkpoint")
        raise typer.Exit(130) from None
    finally:
        ingest.close()
    for p in summary:
        console.print(f"{p.resource}: {p.produced} produced, {p.duplicates} already seen, {p.invalid} invalid "
                      f"(pages {p.page}/{p.total_pages})", highlight=False)
    if stop.is_set():
        console.print("stopped: run the same command again to resume")
        raise typer.Exit(130)


def poller(
    interval: Annotated[float | None,
                        typer.Option(help="Seconds between passes (default WOOFLOW_POLL_INTERVAL_S)")] = None,
    once: Annotated[bool, typer.Option(help="One pass over every store, then exit")] = False,
    store_ids: Annotated[list[str] | None, typer.Option("--store", help="Only these stores")] = None,
    resources: Annotated[str, typer.Option(help="Comma-separated resources")] = "orders,products,coupons,customers",
) -> None:
    """Run the reconciliation poller: changes whose webhooks never arrived, from REST."""
    from sqlalchemy.exc import DBAPIError

    from wooflow.db.engine import get_engine
    from wooflow.process import setup_logging, stop_on_signals
    from wooflow.producers.poller import run_poller
    from wooflow.producers.sync_ingest import SyncIngest
    from wooflow.schemas.codec import get_codec
    from wooflow.settings import get_settings

    s = get_settings()
    if interval is not None:
        s = s.model_copy(update={"poll_interval_s": interval})
    setup_logging(s)
    stop = threading.Event()
    stop_on_signals(stop)
    if s.metrics_port:  # ready = PostgreSQL answers (watermarks, dedupe), as for every role
        from wooflow.probes import db_ready, serve_probes

        serve_probes(s.metrics_port, db_ready(s.database_url))
    ingest = SyncIngest(s, get_engine(s.database_url), get_codec(s.schema_registry_url))
    try:
        run_poller(s, get_engine(s.database_url), ingest, stop, once=once, store_ids=store_ids,
                   resources=tuple(r.strip() for r in resources.split(",") if r.strip()))
    except DBAPIError as exc:
        _fail(f"PostgreSQL: {exc.orig or exc}")
    finally:
        ingest.close()
