"""Operator commands: `wooflow lag`, `wooflow offsets reset`, `wooflow dlq ...`, `wooflow replay`,
`wooflow rules import`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from wooflow import timespec
from wooflow.settings import get_settings
from wooflow.timespec import TimeSpec, instant

if TYPE_CHECKING:
    from wooflow.dlq import Filters

offsets_app = typer.Typer(help="Consumer-group offsets.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters (automation.dlq): list, show, redrive.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _group_topics(group: str, topic: list[str] | None) -> list[str]:
    from wooflow.kafka.admin import admin_client
    from wooflow.kafka.groups import group_topics

    s = get_settings()
    if topic:
        return [s.topic(t) if not t.startswith(s.topic_prefix) else t for t in topic]
    found = sorted({tp.topic for tp in group_topics(admin_client(s), group)})
    if not found:
        _fail(f"group {group!r} has no committed offsets; name the topics with --topic")
    return found


def lag_command(group: Annotated[str | None,
                                 typer.Option(help="Consumer group (default: rules, workers and sink)")] = None,
                as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False) -> None:
    """Consumer lag per partition (high watermark − committed offset)."""
    from wooflow.kafka.groups import lag

    s = get_settings()
    groups = [group] if group else [s.rules_group, s.workers_group, s.sink_group]
    rows = [(g, p) for g in groups for p in lag(s, g)]
    if as_json:
        typer.echo(json.dumps([{"group": g, "topic": p.topic, "partition": p.partition, "committed": p.committed,
                                "high": p.high, "lag": p.lag} for g, p in rows]))
        return
    table = Table("group", "topic", "partition", "committed", "end", "lag")
    for g, p in rows:
        table.add_row(g, p.topic, str(p.partition), "-" if p.committed is None else str(p.committed), str(p.high),
                      str(p.lag))
    out.print(table)
    out.print(f"total lag: {sum(p.lag for _, p in rows)}")


@offsets_app.command("reset")
def offsets_reset(
    group: Annotated[str, typer.Option(help="Consumer group")],
    to_datetime: Annotated[TimeSpec, timespec.option(help="Move to the first message at/after this time")],
    topic: Annotated[list[str] | None, typer.Option(help="Topic(s); default: the group's topics")] = None,
    execute: Annotated[bool, typer.Option("--execute", help="Apply the plan (default: dry run)")] = False,
) -> None:
    """Move a group's offsets to the first message at/after a time (dry run unless --execute)."""
    from wooflow.ops.offsets import OffsetsError, apply_reset, plan_reset

    s = get_settings()
    when = to_datetime.at
    try:
        plan = plan_reset(s, group, _group_topics(group, topic), when)
        table = Table("topic", "partition", "current", "new")
        for p in plan:
            table.add_row(p.topic, str(p.partition), "-" if p.current is None else str(p.current), str(p.target))
        out.print(table)
        if not execute:
            out.print("[yellow]dry run[/yellow]: nothing changed; add --execute to apply")
            return
        apply_reset(s, group, plan)
    except OffsetsError as exc:
        _fail(str(exc))
    out.print(f"[green]offsets of {group} reset to {when.isoformat()}[/green]")


def _filters(reason: str | None, store: str | None, stage: str | None, since: TimeSpec | None,
             until: TimeSpec | None, dlq_id: str | None = None) -> Filters:
    from wooflow.dlq import Filters

    return Filters(reason=reason, store=store, stage=stage, since=instant(since), until=instant(until),
                   dlq_id=dlq_id)


Reason = Annotated[str | None, typer.Option(help="Only this reason (e.g. undecodable, max_attempts)")]
Store = Annotated[str | None, typer.Option(help="Only this store")]
Stage = Annotated[str | None, typer.Option(help="Only this stage (bridge, rules, workers, sink, scheduler)")]
Since = Annotated[TimeSpec | None, timespec.option(help="Failed at or after this time")]
Until = Annotated[TimeSpec | None, timespec.option(help="Failed before this time")]


@dlq_app.command("list")
def dlq_list(reason: Reason = None, store: Store = None, stage: Stage = None, since: Since = None, until: Until = None,
             limit: Annotated[int, typer.Option(help="Show at most this many")] = 100) -> None:
    """List dead letters."""
    from wooflow.dlq import read_dlq

    s = get_settings()
    table = Table("id", "failed at", "stage", "reason", "store", "source", "error")
    n = 0
    for rec in read_dlq(s, _filters(reason, store, stage, since, until)):
        n += 1
        if n <= limit:
            table.add_row(rec["dlq_id"][:12], rec["failed_at"].strftime("%Y-%m-%d %H:%M:%S"), rec["stage"],
                          rec["reason"], rec.get("store_id") or "-",
                          f"{rec['source_topic']}:{rec['source_partition']}:{rec['source_offset']}", rec["error"][:60])
    out.print(table)
    out.print(f"{n} dead letter(s){f' (first {limit} shown)' if n > limit else ''}")


@dlq_app.command("show")
def dlq_show(dlq_id: Annotated[str, typer.Argument(help="Id or a prefix of it (from `dlq list`)")]) -> None:
    """Show one dead letter in full, with the original message decoded."""
    from wooflow.dlq import describe_value, read_dlq

    s = get_settings()
    found = list(read_dlq(s, _filters(None, None, None, None, None, dlq_id)))
    if not found:
        _fail(f"no dead letter with id {dlq_id!r}")
    for rec in found:
        key = rec["key"]
        shown = {k: v for k, v in rec.items() if k not in ("value", "key")}
        shown["key"] = key.decode("utf-8", "replace") if key else None
        shown["message"] = describe_value(s, rec)
        out.print_json(json.dumps(shown, default=str))


@dlq_app.command("redrive")
def dlq_redrive(reason: Reason = None, store: Store = None, stage: Stage = None, since: Since = None,
                until: Until = None, dlq_id: Annotated[str | None, typer.Option("--id", help="One dead letter")] = None,
                force: Annotated[bool, typer.Option(help="Redrive even if redriven before")] = False,
                yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False) -> None:
    """Put dead letters back on their source topic after the cause was fixed (each once)."""
    from wooflow.db.engine import get_engine
    from wooflow.dlq import read_dlq, redrive

    s = get_settings()
    if not any((reason, store, stage, since, until, dlq_id)) and not yes:
        _fail("refusing to redrive everything without a filter; pass a filter or --yes", 2)
    records = list(read_dlq(s, _filters(reason, store, stage, since, until, dlq_id)))
    if not records:
        out.print("nothing matches")
        return
    if not yes and not typer.confirm(f"redrive {len(records)} dead letter(s)?"):
        raise typer.Exit(1)
    done, skipped = redrive(s, get_engine(s.database_url), records, force=force)
    out.print(f"redriven: {done}, skipped (already redriven or empty): {skipped}")


def _offsets(values: list[str] | None, flag: str) -> dict[int, int] | None:
    if not values:
        return None
    out = {}
    for v in values:
        part, _, off = v.partition(":")
        if not part.isdigit() or not off.isdigit():
            _fail(f"{flag} takes PARTITION:OFFSET, got {v!r}", 2)
        out[int(part)] = int(off)
    return out


def replay_command(
    topic: Annotated[str, typer.Option(
        help="Event topic (woo.orders, woo.customers, woo.products, woo.storefront)")] = "woo.orders",
    since: Annotated[TimeSpec | None, timespec.option("--from", help="Start time")] = None,
    until: Annotated[TimeSpec | None, timespec.option("--to", help="End time, exclusive (default: now)")] = None,
    from_offset: Annotated[list[str] | None, typer.Option(help="PARTITION:OFFSET to start at (repeatable)")] = None,
    to_offset: Annotated[list[str] | None, typer.Option(help="PARTITION:OFFSET to stop before (repeatable)")] = None,
    store: Annotated[str | None, typer.Option(help="Only events of this store")] = None,
    rule: Annotated[list[int] | None, typer.Option(help="Only these rule ids (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would fire; change nothing")] = False,
    live: Annotated[bool, typer.Option("--live", help="Emit commands that have not executed yet")] = False,
    workers: Annotated[int, typer.Option(
        min=1, help="Processes sharing the topic's partitions (e.g. one per core)")] = 1,
) -> None:
    """Replay a range of an event topic through the rules (dry run or live)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from wooflow.ops.replay import Replayer, ReplayError, ReplaySpec

    if dry_run == live:
        _fail("choose exactly one of --dry-run and --live", 2)
    s = get_settings()
    spec = ReplaySpec(topic=topic, start=instant(since), end=instant(until),
                      start_offsets=_offsets(from_offset, "--from-offset"),
                      end_offsets=_offsets(to_offset, "--to-offset"),
                      store=store, rules=frozenset(rule) if rule else None, live=live)
    replayer = Replayer(s)
    try:
        total = sum(end - first for _, first, end in replayer.plan(spec))
        # Refreshed from this thread only: with --workers the replay forks, and a refresh
        # thread holding the terminal's lock at that moment would leave it locked in the child.
        with Progress(TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err, auto_refresh=False) as bar:
            task = bar.add_task(s.topic(topic), total=total)

            def advance(n: int) -> None:
                bar.advance(task, n)
                bar.refresh()
            summary = replayer.run(spec, progress=advance, workers=workers)
    except ReplayError as exc:
        _fail(str(exc))
    mode = "live" if live else "dry run"
    table = Table("rule", "name", "matched", "commands", *(("emitted", "already executed") if live else ()),
                  title=f"replay ({mode}) of {s.topic(topic)}")
    for rid, t in sorted(summary.rules.items()):
        row = [str(rid), summary.names.get(rid, "?"), str(t.matched), str(t.commands)]
        if live:
            row += [str(t.emitted), str(t.already)]
        table.add_row(*row)
    out.print(table)
    out.print(f"{summary.events} events in {summary.seconds:.1f}s ({summary.rate:,.0f}/s); "
              f"{summary.skipped_store} other stores, "
              f"{summary.skipped_unwatched} with no rule listening (not decoded), "
              f"{summary.undecodable} undecodable, {summary.failed} failed")
    if not live:
        out.print("[yellow]dry run[/yellow]: nothing was emitted or written")


IMPORT_SOURCES = ("polski-pro",)


def rules_import_command(
    path: Annotated[str, typer.Argument(metavar="FILE", help="The export: Polski Pro's GET "
                                        "/polski-pro/v1/automation/rules answer saved as JSON ('-': stdin)")],
    store: Annotated[str, typer.Option(help="The store the rules are for")],
    source: Annotated[str, typer.Option("--from", help="Where the rules come from: polski-pro")],
    apply: Annotated[bool, typer.Option("--apply", help="Create the rules (default: a dry run)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Import another plugin's automation rules into a store (dry run unless --apply).

    Exit code 0: every rule maps; 1: some rules cannot be imported (listed; nothing of
    them is created); 2: the file, the store or --from is wrong."""
    import sys

    from wooflow.db.engine import get_engine
    from wooflow.ops.polski_pro import ExportError, load_export, plan_import
    from wooflow.ops.rules_import import import_plan
    from wooflow.stores import StoreCache

    if source not in IMPORT_SOURCES:
        _fail(f"--from {source!r}: one of {', '.join(IMPORT_SOURCES)}", 2)
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        plan = plan_import(load_export(text))
    except (OSError, UnicodeDecodeError, ExportError) as exc:
        _fail(f"{path}: {exc}", 2)
    engine = get_engine(get_settings().database_url)
    if StoreCache(engine).get(store) is None:
        _fail(f"no store {store!r}; register it with `wooflow stores add`", 2)
    outcomes = import_plan(engine, store, plan, apply=apply, source=source)
    if as_json:
        typer.echo(json.dumps({
            "store": store, "applied": apply,
            "rules": [{"source": o.mapped.source, "status": o.status, "rule_id": o.rule_id, "notes": o.mapped.notes,
                       "rule": o.mapped.spec.model_dump(mode="json")} for o in outcomes],
            "unmappable": [{"source": u.source, "problems": u.problems} for u in plan.unmappable],
            "notes": plan.notes}))
    else:
        _print_import(path, store, apply, outcomes, plan)
    if plan.unmappable:
        raise typer.Exit(1)


def _print_import(path: str, store: str, apply: bool, outcomes: list[Any], plan: Any) -> None:
    total = len(outcomes) + len(plan.unmappable)
    out.print(f"{path}: {total} rules — {len(outcomes)} map to wooflow rules, {len(plan.unmappable)} cannot")
    table = Table("rule", "wooflow trigger", "conditions", "actions", "enabled", "status")
    for o in outcomes:
        spec = o.mapped.spec
        status = o.status + (f" #{o.rule_id}" if o.rule_id is not None else "")
        table.add_row(o.mapped.source, spec.trigger, str(len(spec.conditions.get("conditions", []))),
                      ", ".join(a.type for a in spec.actions), "yes" if spec.enabled else "no", status)
    for u in plan.unmappable:
        table.add_row(u.source, "-", "-", "-", "-", "[red]cannot be imported[/red]")
    out.print(table)
    if plan.unmappable:
        out.print("[bold]Cannot be imported[/bold] (nothing of these rules is created):")
        for u in plan.unmappable:
            for problem in u.problems:
                out.print(f"  {u.source}: {problem}", markup=False, highlight=False)
    notes = [f"{o.mapped.source}: {n}" for o in outcomes for n in o.mapped.notes] + plan.notes
    if notes:
        out.print("[bold]Notes:[/bold]")
        for note in notes:
            out.print(f"  {note}", markup=False, highlight=False)
    new = sum(1 for o in outcomes if o.status in ("would create", "created"))
    if apply:
        out.print(f"created {new} rules in store {store} ({len(outcomes) - new} already present)")
    else:
        out.print(f"dry run: nothing written; --apply creates {new} rules in store {store} "
                  f"({len(outcomes) - new} already present)")
