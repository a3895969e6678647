"""The Typer application object and the options every command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import PushgenError


class _Group(TyperGroup):
    """Turns a PushgenError anywhere below into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PushgenError as exc:
            # Typer bundles its own click, so a click.ClickException would not be caught.
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None


def sub_app(help: str) -> typer.Typer:
    """A command group (``pushgen review ...``) with the same error handling."""
    return typer.Typer(cls=_Group, help=help, no_args_is_help=True, add_completion=False)


app = typer.Typer(
    cls=_Group,
    help="pushgen: pick products for each customer and write SMS, email and push copy.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

DbOption = Annotated[
    Path,
    typer.Option("--db", envvar="PUSHGEN_DB", help="SQLite database file.", show_default=True),
]
DEFAULT_DB = Path("pushgen.db")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pushgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """pushgen: pick products for each customer and write SMS, email and push copy.

    Typical run: [bold]pushgen import users users.csv[/], [bold]pushgen train[/],
    [bold]pushgen draft --campaign spring --channel sms[/], [bold]pushgen review serve[/],
    [bold]pushgen export email --campaign spring --out out/[/]. Try [bold]pushgen demo[/].
    """
