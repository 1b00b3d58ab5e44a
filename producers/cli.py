"""The bridge's batch commands: `wooflow backfill` and `wooflow poller` (registered in wooflow/cli.py)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def parse_since(value: str) -> datetime:
    """`2026-01-31`, `2026-01-31T10:00`, with or without offset (UTC when none), or `7d`/`12h`."""
    value = value.strip()
    if value[:-1].isdigit() and value[-1:] in ("d", "h"):
        n = int(value[:-1])
        return datetime.now(timezone.utc) - (timedelta(days=n) if value[-1] == "d" else timedelta(hours=n))
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


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


def backfill(
    store_id: Annotated[str, typer.Option("--store", help="Store id")],
    since: Annotated[str, typer.Option(help="Changes modified after this (ISO date/time, UTC unless an offset "
                                            "is given; or 30d / 12h)")],
    resources: Annotated[str, typer.Option(help="Comma-separated: orders,customers,products,coupons")] =
        "orders,customers,products",
    restart: Annotated[bool, typer.Option(help="Ignore checkpoints and start from page 1")] = False,
) -> None:
    """Backfill a store through WooCommerce REST v3 (resumable; Ctrl-C finishes the page and stops)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from wooflow.db.engine import get_engine
    from wooflow.producers.backfill import RESOURCES, backfill_resource
    from wooflow.producers.sync_ingest import SyncIngest
    from wooflow.producers.woo_rest import RestError, Transient, WooRest
    from wooflow.schemas.codec import get_codec
    from wooflow.settings import get_settings
    from wooflow.stores import StoreCache

    s = get_settings()
    logging.basicConfig(level=s.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        since_at = parse_since(since)
    except ValueError:
        _fail(f"--since: not a date/time: {since!r}")
    wanted = [r.strip() for r in resources.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in RESOURCES]
    if unknown or not wanted:
        _fail(f"--resources: unknown {unknown}; choose from {', '.join(RESOURCES)}")
    engine = get_engine(s.database_url)
    store = StoreCache(engine, ttl=0).get(store_id)
    if store is None:
        _fail(f"no store {store_id!r}; register it with `wooflow stores add`")
    if not store.consumer_key:
        _fail(f"store {store_id!r} has no REST keys (wooflow stores add {store_id} --consumer-key ...)")

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
    try:
        with WooRest(store, timeout=s.rest_timeout_s, max_attempts=s.rest_max_attempts) as rest:
            if console.is_terminal:
                with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("pages"), TimeRemainingColumn(), console=console) as bar:
                    tasks: dict[str, Any] = {}

                    def report(p: Any) -> None:
                        if p.resource not in tasks:
                            tasks[p.resource] = bar.add_task(p.resource, total=p.total_pages or None)
                        bar.update(tasks[p.resource], completed=p.page, total=p.total_pages or None,
                                   description=f"{p.resource} (+{p.produced} / dup {p.duplicates})")

                    for r in wanted:
                        summary.append(backfill_resource(store, r, since_at, engine=engine, rest=rest, ingest=ingest,
                                                         report=report, should_stop=stop.is_set, restart=restart))
                        if stop.is_set():
                            break
            else:
                plain = _PlainReporter()
                for r in wanted:
                    summary.append(backfill_resource(store, r, since_at, engine=engine, rest=rest, ingest=ingest,
                                                     report=plain, should_stop=stop.is_set, restart=restart))
                    if stop.is_set():
                        break
    except (RestError, Transient) as exc:
        _fail(f"WooCommerce REST: {exc} (progress is checkpointed: run the same command again to resume)")
    except KeyboardInterrupt:
        console.print("[red]aborted[/red]: run the same command again to resume from the last checkpoint")
        raise typer.Exit(130)
    finally:
        ingest.close()
    for p in summary:
        console.print(f"{p.resource}: {p.produced} produced, {p.duplicates} already seen, {p.invalid} invalid "
                      f"(pages {p.page}/{p.total_pages})", highlight=False)
    if stop.is_set():
        console.print("stopped: run the same command again to resume")
        raise typer.Exit(130)


def poller(
    interval: Annotated[Optional[float], typer.Option(help="Seconds between passes (default WOOFLOW_POLL_INTERVAL_S)")] = None,
    once: Annotated[bool, typer.Option(help="One pass over every store, then exit")] = False,
    store_ids: Annotated[Optional[list[str]], typer.Option("--store", help="Only these stores")] = None,
    resources: Annotated[str, typer.Option(help="Comma-separated resources")] = "orders,products,coupons,customers",
) -> None:
    """Run the reconciliation poller: changes whose webhooks never arrived, from REST."""
    from wooflow.db.engine import get_engine
    from wooflow.kafka.loop import stop_on_signals
    from wooflow.producers.poller import run_poller
    from wooflow.producers.sync_ingest import SyncIngest
    from wooflow.schemas.codec import get_codec
    from wooflow.settings import get_settings

    s = get_settings()
    if interval is not None:
        s = s.model_copy(update={"poll_interval_s": interval})
    logging.basicConfig(level=s.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()
    stop_on_signals(stop)
    if s.metrics_port:
        from wooflow.probes import serve_probes

        serve_probes(s.metrics_port, lambda: True)
    ingest = SyncIngest(s, get_engine(s.database_url), get_codec(s.schema_registry_url))
    try:
        run_poller(s, get_engine(s.database_url), ingest, stop, once=once, store_ids=store_ids,
                   resources=tuple(r.strip() for r in resources.split(",") if r.strip()))
    finally:
        ingest.close()
