"""`wooflow scheduler` (the role) and `wooflow scheduler clock ...` (simulated time)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from wooflow.clock import FileClock

app = typer.Typer(help="Workflows over time: delayed steps, carts, behaviour and calendar triggers.",
                  invoke_without_command=True)
clock_app = typer.Typer(help="The simulated clock behind WOOFLOW_CLOCK=file:PATH (tests, demos, dry runs).",
                        no_args_is_help=True)
app.add_typer(clock_app, name="clock")


@app.callback()
def scheduler(
    ctx: typer.Context,
    scan: Annotated[bool, typer.Option(help="Run the cart/behaviour/calendar trigger scan")] = True,
    activity: Annotated[bool, typer.Option(help="Read storefront/order/customer events (carts, calendar)")] = True,
) -> None:
    """Run a scheduler (scale by running more): emits due steps, scans for time triggers."""
    if ctx.invoked_subcommand is not None:
        return
    from wooflow.process import run_role, setup_logging
    from wooflow.scheduler.runner import Scheduler
    from wooflow.settings import get_settings

    s = get_settings()
    setup_logging(s)
    run_role("scheduler", Scheduler(s, scan=scan, activity=activity), s)


def _file_clock() -> FileClock:
    from wooflow.clock import FileClock, get_clock
    from wooflow.settings import get_settings

    clock = get_clock(get_settings())
    if not isinstance(clock, FileClock):
        typer.echo(f"error: WOOFLOW_CLOCK is {get_settings().clock!r}; set it to file:PATH to use a simulated clock",
                   err=True)
        raise typer.Exit(1)
    return clock


@clock_app.command("show")
def clock_show() -> None:
    """Print the current (simulated) time."""
    from wooflow.clock import get_clock
    from wooflow.settings import get_settings

    typer.echo(get_clock(get_settings()).now().isoformat())


@clock_app.command("set")
def clock_set(when: Annotated[str, typer.Argument(help="ISO-8601 instant, or 'now'")]) -> None:
    """Set the simulated time."""
    from datetime import datetime, timezone

    from wooflow.clock import parse_instant

    clock = _file_clock()
    try:
        value = datetime.now(timezone.utc) if when == "now" else parse_instant(when)
    except ValueError:
        typer.echo(f"error: {when!r} is not an ISO-8601 instant", err=True)
        raise typer.Exit(2) from None
    typer.echo(clock.set(value).isoformat())


@clock_app.command("advance")
def clock_advance(by: Annotated[str, typer.Argument(help="A delay like 'day 3', 'hour 24', '30m'")]) -> None:
    """Move the simulated time forward."""
    from wooflow.consumer.model import delay_seconds

    clock = _file_clock()
    try:
        seconds = delay_seconds(by)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(clock.advance(timedelta(seconds=seconds)).isoformat())
