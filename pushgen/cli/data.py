"""Data commands: ``pushgen import users|items|events``, ``pushgen demo``, ``pushgen stats``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

from ..demo import DemoSummary, build_demo_shop
from ..errors import PushgenError
from ..ingest import ImportReport, default_reject_path, import_file
from ..store import open_store, table_counts
from ..store import catalog
from .app import DEFAULT_DB, DbOption, app, sub_app

import_app = sub_app("Import users, items or events from CSV or JSON Lines files.")
app.add_typer(import_app, name="import")

MapOption = Annotated[
    list[str] | None,
    typer.Option("--map", metavar="TARGET=SOURCE",
                 help="Read column TARGET from the file's column SOURCE (repeatable), "
                      "e.g. --map title=product_name."),
]
SkipOption = Annotated[
    bool,
    typer.Option("--skip-invalid", help="Write the good rows and put bad ones in a reject file "
                                        "(default: any bad row aborts, nothing is written)."),
]
RejectsOption = Annotated[
    Path | None,
    typer.Option("--rejects", help="Reject file for --skip-invalid "
                                   "(default: FILE.rejects.csv / .jsonl next to FILE)."),
]
FileArgument = Annotated[Path, typer.Argument(help="A .csv, .jsonl or .ndjson file (UTF-8).")]


def parse_mapping(pairs: list[str] | None) -> dict[str, str]:
    """``["title=product_name"]`` -> ``{"title": "product_name"}``."""
    mapping: dict[str, str] = {}
    for pair in pairs or []:
        target, sep, source = pair.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise PushgenError(f"--map expects TARGET=SOURCE (e.g. title=product_name), got {pair!r}")
        if target.strip() in mapping:
            raise PushgenError(f"--map: column {target.strip()!r} is mapped twice")
        mapping[target.strip()] = source.strip()
    return mapping


def _print_report(console: Console, report: ImportReport) -> None:
    table = Table(title=f"Imported {report.kind} from {report.source}", title_justify="left")
    for column in ("rows read", "inserted", "updated", "unchanged", "rejected", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(f"{report.rows:,}", f"{report.inserted:,}", f"{report.updated:,}",
                  f"{report.unchanged:,}", f"{report.rejected:,}", f"{report.seconds:.1f}")
    console.print(table)
    if report.rejected:
        for sample in report.reject_samples[:3]:
            console.print(f"  [yellow]rejected[/] {sample}", highlight=False)
        if report.reject_path:
            console.print(f"{report.rejected:,} rejected rows written to {report.reject_path} "
                          "(each with a _reason column)", highlight=False)


def _run_import(kind: str, file: Path, maps: list[str] | None, skip_invalid: bool,
                rejects: Path | None, db: Path) -> ImportReport:
    mapping = parse_mapping(maps)
    reject_path = (rejects or default_reject_path(file)) if skip_invalid else None
    console = Console()
    store = open_store(db)
    with Progress(TextColumn(f"importing {kind}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(kind, total=None)
        report = import_file(store, kind, file, mapping=mapping,  # type: ignore[arg-type]
                             skip_invalid=skip_invalid, reject_path=reject_path,
                             progress=lambda done, total: bar.update(task, completed=done,
                                                                     total=total))
    _print_report(console, report)
    return report


@import_app.command("users")
def import_users(file: FileArgument, map: MapOption = None, skip_invalid: SkipOption = False,
                 rejects: RejectsOption = None, db: DbOption = DEFAULT_DB) -> None:
    """Import or update customers (key: external_id).

    Columns: external_id (required), name, email, phone, locale, timezone,
    consent_email, consent_sms, consent_push (1/0, yes/no, true/false;
    empty = no consent). Every other column (age_band, gender, region,
    tier...) is kept as a profile attribute.

    Example: [bold]pushgen import users customers.csv --map external_id=customer_no[/]
    """
    _run_import("users", file, map, skip_invalid, rejects, db)


@import_app.command("items")
def import_items(file: FileArgument, map: MapOption = None, skip_invalid: SkipOption = False,
                 rejects: RejectsOption = None, db: DbOption = DEFAULT_DB) -> None:
    """Import or update the catalog (key: sku).

    Columns: sku and title (required), description, category, brand, price,
    currency, sale_price, stock, url, image_url, active; tags (split on | or ,).
    Every other column is kept as an item attribute.

    Example: [bold]pushgen import items products.jsonl --map title=product_name[/]
    """
    _run_import("items", file, map, skip_invalid, rejects, db)


@import_app.command("events")
def import_events(file: FileArgument, map: MapOption = None, skip_invalid: SkipOption = False,
                  rejects: RejectsOption = None, db: DbOption = DEFAULT_DB) -> None:
    """Import interactions (views, carts, purchases...); users and items must exist.

    Columns: user (external_id), item (sku), kind, ts (ISO 8601 date or
    datetime, stored as UTC), value (default 1). Re-importing the same events
    adds nothing.

    Example: [bold]pushgen import events orders.csv --map user=customer_no --map item=sku[/]
    """
    _run_import("events", file, map, skip_invalid, rejects, db)


def run_demo(db_path: Path, seed: int, n_users: int, n_items: int, console: Console, *,
             n_events: int | None = None) -> DemoSummary:
    """Build the demo shop into ``db_path`` with a progress bar and print its summary.

    The shop step of ``pushgen demo``; later steps (train, rank, draft) append here.
    """
    store = open_store(db_path)
    with Progress(TextColumn("building demo shop"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("demo", total=None)
        summary = build_demo_shop(
            store, seed=seed, n_users=n_users, n_items=n_items,
            n_events=n_events if n_events is not None else 20 * n_users,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table(title=f"Demo shop in {db_path} (seed {seed})", title_justify="left")
    for column in ("table", "rows", "inserted", "updated", "unchanged"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for kind, count in (("users", summary.users), ("items", summary.items), ("events", summary.events)):
        report = summary.reports[kind]
        table.add_row(kind, f"{count:,}", f"{report.inserted:,}", f"{report.updated:,}",
                      f"{report.unchanged:,}")
    console.print(table)
    kinds = ", ".join(f"{n:,} {k}" for k, n in summary.events_by_kind.items())
    console.print(f"events: {kinds}; {summary.first_event[:10]} to {summary.last_event[:10]}; "
                  f"built in {summary.seconds:.1f}s", highlight=False)
    if summary.changed == 0:
        console.print("The demo shop was already there: nothing changed.")
    return summary


DEMO_CAMPAIGNS = (("demo-sms", "sms"), ("demo-push", "push"), ("demo-email", "email"))


def run_demo_pipeline(db_path: Path, console: Console, *, shop_changed: bool = True) -> None:
    """After the shop: train a model (unless the shop is unchanged since the last one),
    then rank and draft one template campaign per channel, ready for review."""
    from ..campaign import draft_campaign
    from ..config import load_campaign_config
    from ..ranking import TrainParams, train
    from ..store import ranking as ranking_store
    from .drafting import print_draft_report, print_examples

    store = open_store(db_path)
    latest = ranking_store.latest_model(store)
    if latest is None or shop_changed:
        params = TrainParams()
        with Progress(TextColumn("training LightFM hybrid"), BarColumn(), MofNCompleteColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("train", total=params.epochs)
            record = train(store, params,
                           progress=lambda epoch, total, _m: bar.update(task, completed=epoch,
                                                                         total=total))
        console.print(f"trained model {record.id} ({record.params['components']} components, "
                      f"{record.params['epochs']} epochs) -> {record.path}")
    else:
        console.print(f"model {latest['id']} is current: not retrained")
    for name, channel in DEMO_CAMPAIGNS:
        cfg = load_campaign_config(None, name=name, channel=channel)
        with Progress(TextColumn(f"drafting {name}"), BarColumn(), MofNCompleteColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(name, total=None)
            report = draft_campaign(store, name, cfg,
                                    on_audience=lambda n: bar.update(task, total=n),
                                    progress=lambda n: bar.advance(task, n))
        print_draft_report(report, console)
    print_examples(store, "demo-sms", limit=2, out=console)
    console.print("Next: [bold]pushgen review list --campaign demo-sms[/], "
                  "[bold]pushgen review serve[/], [bold]pushgen export email "
                  "--campaign demo-email --format csv --out out/[/]")


@app.command("demo")
def demo(seed: Annotated[int, typer.Option(help="Random seed: the same seed builds the same shop.")] = 7,
         users: Annotated[int, typer.Option("--users", min=1, help="Number of customers.")] = 2000,
         items: Annotated[int, typer.Option("--items", min=8, help="Number of products.")] = 400,
         shop_only: Annotated[bool, typer.Option(
             "--shop-only", help="Only build the shop: no training, ranking or drafts.")] = False,
         db: DbOption = DEFAULT_DB) -> None:
    """Try pushgen end to end on a synthetic shop: build it, train, rank, draft.

    Builds customers, a catalog and 90 days of events (about 20 per customer), trains the
    LightFM hybrid, then ranks and drafts one template campaign per channel (demo-sms,
    demo-push, demo-email) ready for review. Re-running with the same seed changes
    nothing; a database holding other data is refused.

    Example: [bold]pushgen demo --db demo.db --seed 7[/]
    """
    console = Console()
    summary = run_demo(db, seed, users, items, console)
    if not shop_only:
        run_demo_pipeline(db, console, shop_changed=summary.changed > 0)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


@app.command("stats")
def stats(campaign: Annotated[str | None, typer.Option(
              "--campaign", "-c", help="Report on one campaign: drafts per status, check "
                                       "failures by kind, approval rate, tokens.")] = None,
          db: DbOption = DEFAULT_DB) -> None:
    """Show what the database holds: rows per table, consent per channel, events per kind.

    Examples: [bold]pushgen stats --db demo.db[/], [bold]pushgen stats --campaign demo-sms[/]
    """
    store = open_store(db, create=False)
    if campaign is not None:
        from ..review import campaign_report
        from .reviewing import print_campaign_report

        print_campaign_report(campaign_report(store, campaign))
        return
    console = Console()
    counts = table_counts(store)
    extra = catalog.catalog_counts(store)
    rows = Table(title=f"Tables in {db}", title_justify="left")
    rows.add_column("table")
    rows.add_column("rows", justify="right")
    for name, n in counts.items():
        rows.add_row(name, f"{n:,}")
    rows.add_row("  items active", f"{extra['items_active']:,}")
    rows.add_row("  items on sale", f"{extra['items_on_sale']:,}")
    rows.add_row("  items out of stock", f"{extra['items_out_of_stock']:,}")
    console.print(rows)

    n_users = counts["users"]
    for title, label, counts in (("Consent", "channel", catalog.consent_counts(store)),
                                 ("Locales", "locale", catalog.locale_counts(store))):
        share = Table(title=title, title_justify="left")
        share.add_column(label)
        share.add_column("users", justify="right")
        share.add_column("% of users", justify="right")
        for key, n in counts.items():
            share.add_row(key, f"{n:,}", _pct(n, n_users))
        console.print(share)

    events = Table(title="Events by kind", title_justify="left")
    events.add_column("kind")
    events.add_column("events", justify="right")
    events.add_column("users", justify="right")
    for kind, (n, users) in catalog.event_kind_counts(store).items():
        events.add_row(kind, f"{n:,}", f"{users:,}")
    console.print(events)
    first, last = catalog.event_time_range(store)
    if first:
        console.print(f"events from {first} to {last}", highlight=False)
