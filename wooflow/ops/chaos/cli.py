"""`wooflow chaos`: a chaos run from the command line (registered in wooflow/cli.py)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)


def chaos_command(
    profile: Annotated[str, typer.Option(help="short (CI: ≤ 4 minutes, 3 faults of each kind) or long (50+ "
                                              "faults over twenty minutes)")] = "short",
    seed: Annotated[int | None, typer.Option(help="Seed of the fault plan and the traffic (default: random, "
                                                  "printed)")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second the traffic aims at (default 200)")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where logs, state.json and report.json go (default: "
                                                      "WOOFLOW_STATE_DIR/chaos/<time>-<seed>)")] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the JSON report here")] = None,
    durable_postgres: Annotated[bool, typer.Option(help="PostgreSQL with fsync and synchronous commits, as in "
                                                       "production; without it an immediate shutdown loses "
                                                       "transactions it had already acknowledged")] = True,
) -> None:
    """Run the whole pipeline on its own broker and PostgreSQL under random faults, then check
    that every effect happened exactly once. Exit code 0: passed; 1: a check failed."""
    from wooflow.devinfra.kafka import LauncherError
    from wooflow.ops.chaos.plan import PROFILES
    from wooflow.ops.chaos.run import Options, run
    from wooflow.settings import get_settings

    if profile not in PROFILES:
        err.print(f"[red]error:[/red] unknown profile {profile!r}: {' or '.join(PROFILES)}")
        raise typer.Exit(2)
    try:
        import aiosmtpd  # noqa: F401 - the run's SMTP server
    except ImportError:
        err.print("[red]error:[/red] a chaos run needs aiosmtpd for its SMTP server: pip install 'wooflow[dev]'")
        raise typer.Exit(2) from None
    seed = seed if seed is not None else random.SystemRandom().randrange(1, 10**6)
    s = get_settings()
    where = run_dir or s.state_dir / "chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}"
    err.print(f"chaos run: profile {profile}, seed {seed} (repeat with --seed {seed})")
    try:
        result = run(Options(PROFILES[profile], seed, where, s.cache_dir, rate=rate,
                             durable_postgres=durable_postgres), say=lambda m: err.print(m, soft_wrap=True))
    except LauncherError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    text = json.dumps(result, indent=2, default=str)
    if report is not None:
        report.write_text(text + "\n")
    print(text)
    verdict = "[green]passed[/green]" if result["passed"] else "[red]FAILED[/red]: " + "; ".join(result["problems"])
    err.print(f"chaos run {verdict} — lost {result['lost']}, duplicated {result['duplicated']}, "
              f"{result['rounds']} faults, report in {where / 'report.json'}")
    raise typer.Exit(0 if result["passed"] else 1)
