"""`pushgen unsubscribe ...`: check unsubscribe links against the shop's secret."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import PushgenError
from ..signing import verify_unsubscribe
from ..store import open_store
from .app import DEFAULT_DB, DbOption, app, sub_app
from .output import JsonOption, print_json

unsubscribe = sub_app("Unsubscribe links: say whose a link is, or that it is forged.")
app.add_typer(unsubscribe, name="unsubscribe")


@unsubscribe.command("verify")
def verify_cmd(token: Annotated[str, typer.Argument(
                   help="An unsubscribe URL from an email, or just its token.")],
               as_json: JsonOption = False, db: DbOption = DEFAULT_DB) -> None:
    """Say which campaign and customer an unsubscribe link was made for.

    A link whose signature does not match this shop's secret is reported as forged
    (exit code 1; with --json: {"valid": false, "reason": ...}). Example: [bold]pushgen unsubscribe verify 'https://shop.example/unsubscribe?t=3-17-9f...'[/]
    """
    store = open_store(db, create=False)
    try:
        found = verify_unsubscribe(store, token)
    except PushgenError as exc:
        if not as_json:
            raise
        print_json({"valid": False, "reason": str(exc)})
        raise typer.Exit(1) from None
    if as_json:
        print_json({"valid": True, "campaign": found.campaign, "campaign_id": found.campaign_id,
                    "external_id": found.external_id, "user_id": found.user_id})
        return
    typer.echo(f"valid: campaign {found.campaign!r} (id {found.campaign_id}), customer "
               f"{found.external_id!r} (id {found.user_id})")
