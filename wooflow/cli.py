"""`wooflow`: one CLI for every role and every operator task."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from wooflow.devinfra import cli as devinfra_cli
from wooflow.ops import cli as _ops
from wooflow.ops.chaos.cli import chaos_command
from wooflow.process import run_role, setup_logging
from wooflow.producers import cli as producers_cli
from wooflow.producers import stores_cli
from wooflow.scheduler import cli as scheduler_cli
from wooflow.scheduler.templates import cli as templates_cli
from wooflow.settings import get_settings
from wooflow.simulator import cli as simulator_cli

app = typer.Typer(help="wooflow: WooCommerce marketing & operations automation on Kafka and PostgreSQL.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

console = Console(stderr=True)

app.add_typer(devinfra_cli.app, name="dev", help="Local Kafka + PostgreSQL for development, tests and the demo.")
app.add_typer(simulator_cli.app, name="simulator", help="A simulated WooCommerce store (REST v3 + webhooks).")
app.add_typer(scheduler_cli.app, name="scheduler", help="Run a scheduler (delayed steps, carts, time triggers); "
              "`scheduler clock` moves simulated time.")
app.add_typer(templates_cli.app, name="templates", help="Workflow templates shipped with wooflow.")
app.add_typer(stores_cli.app, name="stores", help="Stores (tenants) and their WooCommerce webhooks.")
app.command("backfill")(producers_cli.backfill)
app.command("poller")(producers_cli.poller)
app.add_typer(_ops.offsets_app, name="offsets")
app.add_typer(_ops.dlq_app, name="dlq")
app.command("lag")(_ops.lag_command)
app.command("replay")(_ops.replay_command)
app.command("chaos")(chaos_command)


def fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) up to the latest revision."""
    from wooflow.db import migrate as m

    s = get_settings()
    try:
        m.upgrade(s.database_url)
    except Exception as exc:  # connection errors deserve a sentence, not a traceback
        fail(f"migration failed: {exc}")
    console.print(f"database at revision [bold]{m.current(s.database_url)}[/bold]")


@topics_app.command("create")
def topics_create() -> None:
    """Create every wooflow topic (idempotent: existing topics are left as they are)."""
    from confluent_kafka import KafkaException

    from wooflow.kafka.admin import create_topics

    s = get_settings()
    try:
        results = create_topics(s)
    except (KafkaException, TimeoutError) as exc:
        fail(f"could not create topics on {s.kafka_bootstrap_servers}: {exc}")
    table = Table("topic", "status", "partitions")
    for r in results:
        table.add_row(r.name, r.status, str(r.partitions))
    Console().print(table)


@app.command()
def bridge(host: Annotated[str | None, typer.Option(help="Listen address")] = None,
           port: Annotated[int | None, typer.Option(help="Listen port")] = None) -> None:
    """Run the WooCommerce bridge: webhooks → Kafka."""
    import uvicorn

    from wooflow.gc_tuning import BRIDGE_THRESHOLDS, tune_gc
    from wooflow.producers.app import create_app

    s = get_settings()
    setup_logging(s)
    app = create_app(s)
    tune_gc(BRIDGE_THRESHOLDS)  # the modules, schemas and app built so far live as long as the process
    uvicorn.run(app, host=host or s.bridge_host, port=port or s.bridge_port, log_level="warning",
                access_log=False, proxy_headers=False)  # the app applies X-Forwarded-For where it matters


rules_app = typer.Typer(invoke_without_command=True)
app.add_typer(rules_app, name="rules")
rules_app.command("import")(_ops.rules_import_command)


@rules_app.callback()
def rules(ctx: typer.Context) -> None:
    """Run a rule consumer (scale by running more); `wooflow rules import` imports another plugin's rules."""
    if ctx.invoked_subcommand is not None:
        return
    from wooflow.consumer.runner import RuleConsumer
    from wooflow.scheduler import triggers as _scheduled  # noqa: F401 - rules naming them compile here too
    from wooflow.scheduler.steps import store_delayed  # delayed steps wait in the scheduler's table

    s = get_settings()
    setup_logging(s)
    run_role("rules", RuleConsumer(s, store_delayed=store_delayed), s)


@app.command()
def workers() -> None:
    """Run an action worker (scale by running more)."""
    from wooflow.workers.leases import LeaseLost, settings_problem
    from wooflow.workers.runner import Worker

    s = get_settings()
    setup_logging(s)
    problem = settings_problem(s)
    if problem is not None:
        fail(problem, 2)
    try:
        run_role("workers", Worker(s), s)
    except LeaseLost as exc:  # PostgreSQL was away for longer than a lease: stopped on purpose
        fail(str(exc), 3)


@app.command()
def sink(retention_days: Annotated[int | None,
                                   typer.Option(help="Delete execution logs older than this")] = None) -> None:
    """Run the log sink: automation.logs → execution_logs."""
    from wooflow.sink.runner import LogSink

    s = get_settings()
    setup_logging(s)
    run_role("sink", LogSink(s, retention_days=retention_days), s)


@app.command()
def api(host: Annotated[str | None, typer.Option(help="Listen address")] = None,
        port: Annotated[int | None, typer.Option(help="Listen port")] = None) -> None:
    """Run the admin REST API (OpenAPI at /docs)."""
    import uvicorn

    from wooflow.api.app import create_app

    s = get_settings()
    setup_logging(s)
    # the tracking links read X-Forwarded-For themselves, from WOOFLOW_API_FORWARDED_ALLOW_IPS only
    # (uvicorn's middleware cost more per tracking hit than the hit's own work)
    uvicorn.run(create_app(s), host=host or s.api_host, port=port or s.api_port, log_level="warning",
                access_log=False, proxy_headers=False)


@app.command("token")
def token_create(
    store_id: Annotated[str | None, typer.Option("--store", help="Store the token is scoped to")] = None,
    operator: Annotated[bool, typer.Option(help="A token for every store (operators)")] = False,
    name: Annotated[str, typer.Option(help="What the token is for")] = "",
) -> None:
    """Create an API token (printed once; only its hash is stored)."""
    from wooflow.api.auth import create_token
    from wooflow.db.engine import get_engine
    from wooflow.stores import StoreCache

    if not store_id and not operator:
        fail("name a store with --store, or pass --operator for a token that can act on every store")
    engine = get_engine(get_settings().database_url)
    if store_id and StoreCache(engine).get(store_id) is None:
        fail(f"no store {store_id!r}; register it with `wooflow stores add`")
    typer.echo(create_token(engine, None if operator else store_id, name))


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C)")] = None,
    orders_per_second: Annotated[float, typer.Option(help="Simulated store traffic")] = 2.0,
    seed: Annotated[int, typer.Option(help="Traffic generator seed")] = 42,
) -> None:
    """Run the whole pipeline against a simulated store, with a live summary."""
    from wooflow.demo import run_demo

    raise typer.Exit(run_demo(duration=duration, orders_per_second=orders_per_second, seed=seed))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
