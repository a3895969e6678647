"""The Typer application object and the options every command shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

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
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    db: Annotated[Optional[Path], typer.Option(
        "--db", help="SQLite database file for the command that follows (a --db after the "
                     "command wins; default $PUSHGEN_DB, else ./pushgen.db).")] = None,
) -> None:
    """pushgen: pick products for each customer and write SMS, email and push copy.

    Typical run: [bold]pushgen import users users.csv[/], [bold]pushgen train[/],
    [bold]pushgen draft --campaign spring --channel sms[/], [bold]pushgen review serve[/],
    [bold]pushgen export email --campaign spring --out out/[/]. Try [bold]pushgen demo[/].
    """
    if db is not None:
        # Every command's own --db reads $PUSHGEN_DB as its default, and click resolves the
        # command's options after this callback: so `pushgen --db shop.db stats` works for
        # every command, and `pushgen stats --db other.db` still wins.
        previous = os.environ.get("PUSHGEN_DB")
        os.environ["PUSHGEN_DB"] = str(db)

        def restore() -> None:
            if previous is None:
                os.environ.pop("PUSHGEN_DB", None)
            else:
                os.environ["PUSHGEN_DB"] = previous

        ctx.call_on_close(restore)
