"""`pushgen users ...`: a customer's rights: erase on request, hand over their data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import PushgenError
from ..export import write_text_atomic
from ..privacy import customer_data, forget_customer
from ..store import open_store
from .app import DEFAULT_DB, DbOption, app, sub_app
from .output import JsonOption, print_json

users = sub_app("Customers' rights: erase a customer on request, export what is held about one.")
app.add_typer(users, name="users")


@users.command("forget")
def forget_cmd(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    reason: Annotated[Optional[str], typer.Option(
        help="Why (kept with the erasure record; do not type personal data here).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Erase a customer on request (GDPR art. 17). Cannot be undone.

    Empties the customer's name, email, phone, profile and consent; deletes their events,
    recommendations and consent history; replaces the copy of their drafts and the text of
    their review history with a tombstone (counts of past campaigns stay right, nothing of
    theirs can be exported); deletes LLM cache entries that contain their data; then
    compacts the database file so the bytes are gone.
    Example: [bold]pushgen users forget C1042 --reason "request 2026-11-28" --yes[/]
    """
    store = open_store(db, create=False)
    if not yes:
        if not sys.stdin.isatty():
            raise PushgenError("erasing a customer cannot be undone: add --yes to confirm "
                               "when not running in a terminal")
        typer.confirm(f"Erase customer {external_id!r} from {db}? This cannot be undone",
                      abort=True)
    report = forget_customer(store, external_id, reason=reason)
    if as_json:      # the counts only: no personal data, not even the external id
        print_json({"user_id": report.user_id, "counts": report.counts, "notes": report.notes})
        return
    changed = ", ".join(f"{t} {n:,}" for t, n in report.counts.items() if n)
    typer.echo(f"erased customer (internal id {report.user_id}): {changed}")
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)


@users.command("export-data")
def export_data_cmd(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the JSON to this file (default: standard output).")] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Everything held about one customer as JSON (GDPR art. 15): profile, consent history,
    events, recommendations, drafts, review history and LLM cache entries naming them.

    Example: [bold]pushgen users export-data C1042 --out C1042.json[/]
    """
    data = customer_data(open_store(db, create=False), external_id)
    text = json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    if out.is_dir():
        raise PushgenError(f"{out}: is a folder; give a file name, e.g. {out / 'customer.json'}")
    if not out.parent.exists():
        raise PushgenError(f"{out}: folder {out.parent} does not exist")
    # personal data: not readable by other local users
    write_text_atomic(out, lambda fh: fh.write(text), mode=0o600)
    typer.echo(f"wrote {out} ({len(text.encode()):,} bytes)", err=True)
