"""`wooflow templates list | install NAME --store S`."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Workflow templates shipped with wooflow.", no_args_is_help=True)


@app.command("list")
def templates_list() -> None:
    """List the shipped workflow templates."""
    from rich.console import Console
    from rich.table import Table

    from wooflow.scheduler.templates import load_templates

    table = Table("name", "title", "trigger", "steps")
    for t in load_templates().values():
        table.add_row(t.name, t.title, t.rule["trigger"], ", ".join(
            f"{a.get('delay') or 'immediately'}: {a['type']}" for a in t.rule["actions"]))
    Console().print(table)


@app.command("install")
def templates_install(
    name: Annotated[str, typer.Argument(help="Template name (see `wooflow templates list`)")],
    store: Annotated[str, typer.Option("--store", help="Store to install it for")],
    rule_name: Annotated[str | None, typer.Option("--name", help="Name of the created rule")] = None,
    disabled: Annotated[bool, typer.Option(help="Create the rule disabled")] = False,
) -> None:
    """Create a rule from a template for a store."""
    from wooflow.db.engine import get_engine
    from wooflow.scheduler.templates import TemplateError, install
    from wooflow.settings import get_settings

    try:
        rule_id = install(get_engine(get_settings().database_url), store, name, rule_name=rule_name,
                          enabled=not disabled)
    except TemplateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"installed template {name!r} for store {store!r} as rule {rule_id}")
