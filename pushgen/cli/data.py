"""Data commands: ``pushgen import users|items|events|unsubscribes|outcomes``,
``pushgen demo``, ``pushgen stats``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.markup import escape
from rich.table import Table

from ..demo import DemoSummary, build_demo_shop
from ..errors import PushgenError
from ..ingest import (PRESETS, ImportOptions, ImportReport, default_reject_path, import_file,
                      presets_help)
from ..store import open_store
from ..store import catalog
from .app import DEFAULT_DB, DbOption, app, sub_app
from .output import JsonOption, print_json

IMPORT_HELP = f"""Import customers, products, events, opt-out lists, or campaign outcomes.

Files: CSV (delimiter , ; tab or | found by itself), JSON Lines, Parquet and .xlsx (the
last two need [bold]pip install 'pushgen\\[formats]'[/]). UTF-8 unless --encoding says
otherwise. An import is one transaction: a bad row stops it with file, line and column and
nothing is written, unless --skip-invalid puts bad rows in a reject file.

Presets for order exports ([bold]pushgen import events FILE --preset NAME[/]) create the
customers and products they meet and read refunds and cancellations as returns:

{presets_help()}
"""

import_app = sub_app(IMPORT_HELP)
app.add_typer(import_app, name="import")

MapOption = Annotated[
    list[str] | None,
    typer.Option("--map", metavar="TARGET=SOURCE",
                 help="Read column TARGET from the file's column SOURCE (repeatable), "
                      "e.g. --map title=product_name."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="COLUMN=VALUE",
                 help="Give every row the same value for a column the file lacks "
                      "(repeatable), e.g. --set kind=purchase."),
]
DateFormatOption = Annotated[
    list[str] | None,
    typer.Option("--date-format", metavar="FORMAT",
                 help="strptime format of the dates, e.g. '%d-%m-%Y' or '%m/%d/%Y %H:%M' "
                      "(repeatable: tried in order; 'iso' means ISO 8601). Without it dates "
                      "must be ISO 8601; an ambiguous 03-04-2015 is refused."),
]
TimezoneOption = Annotated[
    str | None,
    typer.Option("--timezone", metavar="ZONE",
                 help="IANA timezone of dates and times without an offset, e.g. "
                      "Asia/Shanghai or Europe/Berlin (the shop's local time); without it "
                      "they are taken as UTC. Times with an offset (Z, +08:00) keep it."),
]
DelimiterOption = Annotated[
    str | None,
    typer.Option("--delimiter", metavar="CHAR",
                 help="CSV delimiter: , ; | or tab (default: found from the first lines)."),
]
DecimalCommaOption = Annotated[
    bool,
    typer.Option("--decimal-comma", help="Numbers use a decimal comma: 12,5 and 1.234,50."),
]
NullOption = Annotated[
    list[str] | None,
    typer.Option("--null", metavar="TEXT",
                 help="A value that means 'missing', e.g. --null NA --null NULL (repeatable)."),
]
EncodingOption = Annotated[
    str,
    typer.Option("--encoding", help="Text encoding of a CSV or JSON Lines file, e.g. "
                                    "gb18030, big5, cp1252 for older exports."),
]
TrimOption = Annotated[
    bool,
    typer.Option("--trim/--no-trim", help="Strip spaces around ids and text, so 'cream "
                                          "cheese ' and 'cream cheese' are one product."),
]
SheetOption = Annotated[
    str | None,
    typer.Option("--sheet", help="Sheet of an .xlsx file (default: the first)."),
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
FileArgument = Annotated[Path, typer.Argument(
    help="A .csv, .tsv, .jsonl, .parquet or .xlsx file.")]


def parse_pairs(pairs: list[str] | None, option: str, example: str) -> dict[str, str]:
    """``["title=product_name"]`` -> ``{"title": "product_name"}``."""
    parsed: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or (option == "--map" and not value.strip()):
            raise PushgenError(f"{option} expects {example}, got {pair!r}")
        if name.strip() in parsed:
            raise PushgenError(f"{option}: column {name.strip()!r} is given twice")
        parsed[name.strip()] = value.strip() if option == "--map" else value
    return parsed


def parse_mapping(pairs: list[str] | None) -> dict[str, str]:
    """``["title=product_name"]`` -> ``{"title": "product_name"}``."""
    return parse_pairs(pairs, "--map", "TARGET=SOURCE (e.g. title=product_name)")


def _count(n: float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.2f}"


_COLUMNS = {
    "events": (("rows", "rows"), ("inserted", "inserted"), ("updated", "updated"),
               ("unchanged", "unchanged"), ("merged", "merged"), ("rejected", "rejected"),
               ("skipped", None)),
    "unsubscribes": (("rows", "rows"), ("recorded", "inserted"), ("switched off", "updated"),
                     ("already", "unchanged"), ("rejected", "rejected")),
    "outcomes": (("rows", "rows"), ("recorded", "inserted"), ("already", "unchanged"),
                 ("events created", "events_created"), ("opt-outs", "opt_outs"),
                 ("rejected", "rejected"), ("skipped", None)),
}
_DEFAULT_COLUMNS = (("rows read", "rows"), ("inserted", "inserted"), ("updated", "updated"),
                    ("unchanged", "unchanged"), ("rejected", "rejected"),
                    ("skipped", None))


def _print_report(console: Console, report: ImportReport) -> None:
    """The counts as a table, then one line per thing worth knowing."""
    table = Table(title=f"Imported {report.kind} from {report.source} in "
                        f"{report.seconds:.1f} s", title_justify="left")
    cells = []
    for label, name in _COLUMNS.get(report.kind, _DEFAULT_COLUMNS):
        table.add_column(label, justify="right")
        value = sum(report.skipped.values()) if name is None else getattr(report, name)
        cells.append(f"{value:,}")
    table.add_row(*cells)
    console.print(table)
    say = lambda text: console.print(text, highlight=False)  # noqa: E731
    if report.kind == "events" and report.imported:
        read = report.rows - report.rejected - sum(report.skipped.values())
        say(f"{report.imported:,} events from {read:,} rows: {report.merged:,} repeated lines "
            f"merged into their event's quantity; {_count(report.quantity)} units in all"
            + (f"; {report.returns:,} returns" if report.returns else ""))
    if report.kind == "unsubscribes" and report.rows:
        say(f"{report.inserted:,} opt-outs recorded ({report.updated:,} consents switched off), "
            f"{report.unchanged:,} already on record")
    if report.kind == "outcomes" and report.rows:
        say(f"{report.inserted:,} outcomes recorded, {report.unchanged:,} already on record; "
            f"{report.events_created:,} click/purchase events added for the next `pushgen "
            f"train`; {report.opt_outs:,} consents switched off (unsubscribed, complained, "
            "hard bounces): those customers are not drafted or exported on that channel again")
    if report.users_created or report.items_created:
        say(f"created {report.users_created:,} customers and {report.items_created:,} products "
            "that were not in the store yet (consent only where the file gives it: import "
            "the customers file to add details)")
    for reason, count in report.skipped.items():
        say(f"  skipped {count:,} rows: {reason}")
    if report.consent_kept:
        say(f"kept {report.consent_kept:,} opt-outs: the file switches consent on for customers "
            "who unsubscribed later (add consent_<channel>_at to say when they consented again)")
    if report.rejected:
        for sample in report.reject_samples[:3]:
            console.print(f"  [yellow]rejected[/] {escape(sample)}", highlight=False)
        if report.reject_path:
            say(f"{report.rejected:,} rejected rows written to {report.reject_path} "
                "(each with a _reason column)")


def _run_import(kind: str, file: Path, db: Path, *, maps: list[str] | None,
                sets: list[str] | None, date_formats: list[str] | None, delimiter: str | None,
                decimal_comma: bool, nulls: list[str] | None, encoding: str, trim: bool,
                sheet: str | None, skip_invalid: bool, rejects: Path | None,
                preset: str | None = None, create_missing: bool = False,
                as_json: bool = False, timezone: str | None = None) -> ImportReport:
    options = ImportOptions(
        mapping=parse_mapping(maps),
        constants=parse_pairs(sets, "--set", "COLUMN=VALUE (e.g. kind=purchase)"),
        preset=preset, date_formats=tuple(date_formats or ()), delimiter=delimiter,
        decimal_comma=decimal_comma, nulls=tuple(nulls or ()), encoding=encoding, trim=trim,
        create_missing=create_missing, sheet=sheet, timezone=timezone)
    reject_path = (rejects or default_reject_path(file)) if skip_invalid else None
    console = Console(stderr=as_json)       # --json: tables to stderr, the document to stdout
    store = open_store(db)
    with Progress(TextColumn(f"importing {kind}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(kind, total=None)
        report = import_file(store, kind, file, options=options,  # type: ignore[arg-type]
                             skip_invalid=skip_invalid, reject_path=reject_path,
                             progress=lambda done, total: bar.update(task, completed=done,
                                                                     total=total))
    _print_report(console, report)
    if as_json:
        print_json({"report": report})
    failure = report.failure()
    if failure is not None:
        where = f"; rejected rows are in {report.reject_path}" if report.reject_path else ""
        raise PushgenError(f"{report.source}: {failure}{where}")
    return report


@import_app.command("users")
def import_users(file: FileArgument, map: MapOption = None, set: SetOption = None,
                 date_format: DateFormatOption = None, delimiter: DelimiterOption = None,
                 decimal_comma: DecimalCommaOption = False, null: NullOption = None,
                 encoding: EncodingOption = "utf-8", trim: TrimOption = True,
                 sheet: SheetOption = None, skip_invalid: SkipOption = False,
                 rejects: RejectsOption = None, as_json: JsonOption = False,
                 timezone: TimezoneOption = None, db: DbOption = DEFAULT_DB) -> None:
    """Import or update customers (key: external_id).

    Columns: external_id (required), name, email, phone, locale, timezone,
    consent_email, consent_sms, consent_push (1/0, yes/no, true/false;
    empty = no consent), push_token (the app's device token). Every other
    column (age_band, gender, region, tier...) is kept as a profile attribute.
    A customer who opted out through [bold]import unsubscribes[/] keeps the
    opt-out unless the file has consent_<channel>_at later than it.

    Example: [bold]pushgen import users customers.csv --map external_id=customer_no[/]
    """
    _run_import("users", file, db, maps=map, sets=set, date_formats=date_format,
                delimiter=delimiter, decimal_comma=decimal_comma, nulls=null, encoding=encoding,
                trim=trim, sheet=sheet, skip_invalid=skip_invalid, rejects=rejects,
                as_json=as_json, timezone=timezone)


@import_app.command("items")
def import_items(file: FileArgument, map: MapOption = None, set: SetOption = None,
                 date_format: DateFormatOption = None, delimiter: DelimiterOption = None,
                 decimal_comma: DecimalCommaOption = False, null: NullOption = None,
                 encoding: EncodingOption = "utf-8", trim: TrimOption = True,
                 sheet: SheetOption = None, skip_invalid: SkipOption = False,
                 rejects: RejectsOption = None, as_json: JsonOption = False,
                 db: DbOption = DEFAULT_DB) -> None:
    """Import or update the catalog (key: sku).

    Columns: sku and title (required), description, category, brand, price,
    currency, sale_price, stock, url, image_url, active; tags (split on | or ,).
    Every other column is kept as an item attribute.

    Example: [bold]pushgen import items products.jsonl --map title=product_name[/]
    """
    _run_import("items", file, db, maps=map, sets=set, date_formats=date_format,
                delimiter=delimiter, decimal_comma=decimal_comma, nulls=null, encoding=encoding,
                trim=trim, sheet=sheet, skip_invalid=skip_invalid, rejects=rejects,
                as_json=as_json)


@import_app.command("events")
def import_events(
        file: FileArgument, map: MapOption = None, set: SetOption = None,
        date_format: DateFormatOption = None, delimiter: DelimiterOption = None,
        decimal_comma: DecimalCommaOption = False, null: NullOption = None,
        encoding: EncodingOption = "utf-8", trim: TrimOption = True, sheet: SheetOption = None,
        preset: Annotated[str | None, typer.Option(
            "--preset", help=f"A known order export: {', '.join(PRESETS)} (see `pushgen "
                             "import --help` for their columns).")] = None,
        create_missing: Annotated[bool, typer.Option(
            "--create-missing", help="Create the customers and products the file names that "
                                     "are not in the store yet (ids only, no consent; "
                                     "presets always do).")] = False,
        skip_invalid: SkipOption = False, rejects: RejectsOption = None,
        as_json: JsonOption = False, timezone: TimezoneOption = None,
        db: DbOption = DEFAULT_DB) -> None:
    """Import interactions (views, carts, purchases, returns...).

    Columns: user (external_id), item (sku), kind, ts (ISO 8601 date or
    datetime, or --date-format; stored as UTC; a time without an offset is
    UTC unless --timezone names the shop's zone), quantity (default 1; a negative
    quantity on a purchase is a return), value (a rating; default 1). Rows
    without a customer are skipped and counted. Lines repeated in a file are
    one event with their quantities summed; re-importing the same file adds
    nothing. Users and items must exist, unless --create-missing; with it,
    user.<field> and item.<field> columns (item.title, item.price, user.email...)
    fill in the new ones.

    Examples: [bold]pushgen import events orders.csv --map user=customer_no --map item=sku[/]

    [bold]pushgen import events Groceries_dataset.csv --set kind=purchase --date-format '%d-%m-%Y' --map user=Member_number --map item=itemDescription --map ts=Date --create-missing[/]

    [bold]pushgen import events orders_export.csv --preset shopify-orders[/]
    """
    _run_import("events", file, db, maps=map, sets=set, date_formats=date_format,
                delimiter=delimiter, decimal_comma=decimal_comma, nulls=null, encoding=encoding,
                trim=trim, sheet=sheet, skip_invalid=skip_invalid, rejects=rejects,
                as_json=as_json, timezone=timezone,
                preset=preset, create_missing=create_missing)


@import_app.command("unsubscribes")
def import_unsubscribes(file: FileArgument, map: MapOption = None, set: SetOption = None,
                        date_format: DateFormatOption = None, delimiter: DelimiterOption = None,
                        null: NullOption = None, encoding: EncodingOption = "utf-8",
                        trim: TrimOption = True, sheet: SheetOption = None,
                        skip_invalid: SkipOption = False, rejects: RejectsOption = None,
                        as_json: JsonOption = False, timezone: TimezoneOption = None,
                        db: DbOption = DEFAULT_DB) -> None:
    """Turn the sending platform's opt-out list into consent changes.

    Each row names a customer by external_id, email, phone or an unsubscribe
    link (column token, url or unsubscribe_url; links are checked against the
    shop's secret: a forged one is rejected). Optional: channel (email, sms,
    push or all), ts (when), reason. Without a channel column a link stops its
    campaign's channel, an email address email, a phone number sms, an
    external_id every channel. Opted-out customers are never exported again on
    that channel; re-importing the same list changes nothing.

    Example: [bold]pushgen import unsubscribes esp-optouts.csv --map email="Email Address" --map ts=UNSUB_TIME --skip-invalid[/]
    """
    _run_import("unsubscribes", file, db, maps=map, sets=set, date_formats=date_format,
                delimiter=delimiter, decimal_comma=False, nulls=null, encoding=encoding,
                trim=trim, sheet=sheet, skip_invalid=skip_invalid, rejects=rejects,
                as_json=as_json, timezone=timezone)


@import_app.command("outcomes")
def import_outcomes(file: FileArgument, map: MapOption = None, set: SetOption = None,
                    date_format: DateFormatOption = None, delimiter: DelimiterOption = None,
                    decimal_comma: DecimalCommaOption = False, null: NullOption = None,
                    encoding: EncodingOption = "utf-8", trim: TrimOption = True,
                    sheet: SheetOption = None, skip_invalid: SkipOption = False,
                    rejects: RejectsOption = None, as_json: JsonOption = False,
                    timezone: TimezoneOption = None, db: DbOption = DEFAULT_DB) -> None:
    """Bring back what the sending platform reports about exported messages.

    Columns: draft_id (every export has it) or campaign + user (external id);
    event: sent, delivered, bounced, opened, clicked, converted, unsubscribed,
    complained (open, click, hard_bounce, spamreport... are read too); ts;
    optional value (order value of a conversion), item (sku clicked or bought),
    bounce (hard or soft; a bounce the platform does not call hard is soft).
    Unsubscribed, complained and hard bounces switch the customer's consent for
    the channel off at once; clicks and conversions with an item become click
    and purchase events for the next train. An outcome for a message that was
    never exported is an error. Re-importing the same file changes nothing.

    Then: [bold]pushgen report --campaign NAME[/]

    Example: [bold]pushgen import outcomes esp-events.csv --map event=EventType --map ts=Timestamp[/]
    """
    _run_import("outcomes", file, db, maps=map, sets=set, date_formats=date_format,
                delimiter=delimiter, decimal_comma=decimal_comma, nulls=null,
                encoding=encoding, trim=trim, sheet=sheet, skip_invalid=skip_invalid,
                rejects=rejects, as_json=as_json, timezone=timezone)


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
        from .ranking import print_validation

        print_validation(record.validation or {}, record.blend or {})
        console.print(f"trained model {record.id} ({record.params['components']} components, "
                      f"{record.metrics.get('epochs', record.params['epochs'])} epochs) -> "
                      f"{record.path}")
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
                  "--campaign demo-email --format csv --out out/ --allow-demo-sender[/]")


DEMO_AB = "demo-ab"


def run_demo_loop(db_path: Path, console: Console) -> None:
    """``pushgen demo --simulate-outcomes``: an email campaign with a ranked variant, a
    random-pick variant and a 10% hold-out; approve, export with per-customer send times,
    play the platform's report and the shop's orders from the hidden tastes, import both
    as files, and show the results. Rerunning changes nothing."""
    import csv

    from ..campaign import draft_campaign
    from ..config import ABSettings, load_campaign_config
    from ..demo import simulate_outcomes
    from ..export import export_campaign, write_text_atomic
    from ..results.report import campaign_results
    from ..review import approve_all_passing
    from .drafting import print_draft_report
    from .report import print_results
    from .exporting import print_send_times

    store = open_store(db_path)
    cfg = load_campaign_config(None, name=DEMO_AB, channel="email")
    cfg.ab = ABSettings(weights=[0.5, 0.5], holdout=0.1, picks=["ranked", "random"])
    with Progress(TextColumn(f"drafting {DEMO_AB}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(DEMO_AB, total=None)
        drafted = draft_campaign(store, DEMO_AB, cfg,
                                 on_audience=lambda n: bar.update(task, total=n),
                                 progress=lambda n: bar.advance(task, n))
    print_draft_report(drafted, console)
    approved = approve_all_passing(store, DEMO_AB, actor="demo")
    folder = db_path.resolve().parent / "demo-exports"
    exported = export_campaign(store, DEMO_AB, "email", fmt="csv", out_dir=folder,
                               actor="demo", allow_demo_sender=True)
    if exported.path is not None:
        console.print(f"approved {approved:,} drafts of {DEMO_AB}; exported "
                      f"{exported.exported:,} emails to {exported.path}", highlight=False)
        print_send_times(exported, console)
    played = simulate_outcomes(store, DEMO_AB)
    folder.mkdir(exist_ok=True)
    for name, rows, columns, kind in (
            ("orders", played.purchases, ("user", "item", "kind", "ts"), "events"),
            ("outcomes", played.outcomes,
             ("draft_id", "event", "ts", "value", "item", "bounce"), "outcomes")):
        path = folder / f"{DEMO_AB}-{name}.csv"

        def write(fh, rows=rows, columns=columns) -> None:
            out = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
            out.writeheader()
            out.writerows(rows)

        write_text_atomic(path, write)
        report = import_file(store, kind, path)  # type: ignore[arg-type]
        console.print(f"simulated {name}: {len(rows):,} rows in {path.name}; imported "
                      f"{report.inserted:,} new, {report.unchanged:,} already there",
                      highlight=False)
    print_results(campaign_results(store, DEMO_AB), console)
    console.print(f"Next: [bold]pushgen report --campaign {DEMO_AB} --html results.html[/], "
                  "or the Results tab of [bold]pushgen review serve[/]")


@app.command("demo")
def demo(seed: Annotated[int, typer.Option(help="Random seed: the same seed builds the same shop.")] = 7,
         users: Annotated[int, typer.Option("--users", min=1, help="Number of customers.")] = 2000,
         items: Annotated[int, typer.Option("--items", min=8, help="Number of products.")] = 400,
         shop_only: Annotated[bool, typer.Option(
             "--shop-only", help="Only build the shop: no training, ranking or drafts.")] = False,
         simulate_outcomes: Annotated[bool, typer.Option(
             "--simulate-outcomes",
             help="Also run an A/B campaign (demo-ab: ranked variant, random-pick variant, "
                  "10% hold-out), export it, play the platform's results and the shop's "
                  "orders from the hidden tastes, import them and show the report.")] = False,
         db: DbOption = DEFAULT_DB) -> None:
    """Try pushgen end to end on a synthetic shop: build it, train, rank, draft.

    Builds customers, a catalog and 90 days of events (about 20 per customer), trains the
    LightFM hybrid, then ranks and drafts one template campaign per channel (demo-sms,
    demo-push, demo-email) ready for review. Re-running with the same seed changes
    nothing; a database holding other data is refused.

    With --simulate-outcomes the loop closes too: an A/B campaign with a hold-out is
    exported with per-customer send times, its results are simulated from the hidden
    tastes and imported, and the report shows the ranker against random picks and the
    hold-out.

    Examples: [bold]pushgen demo --db demo.db --seed 7[/], [bold]pushgen demo --simulate-outcomes[/]
    """
    if shop_only and simulate_outcomes:
        raise PushgenError("--simulate-outcomes needs the whole demo: drop --shop-only")
    console = Console()
    summary = run_demo(db, seed, users, items, console)
    if not shop_only:
        run_demo_pipeline(db, console, shop_changed=summary.changed > 0)
    if simulate_outcomes:
        run_demo_loop(db, console)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


@app.command("stats")
def stats(campaign: Annotated[str | None, typer.Option(
              "--campaign", "-c", help="Report on one campaign: drafts per status, check "
                                       "failures by kind, approval rate, tokens.")] = None,
          as_json: JsonOption = False,
          db: DbOption = DEFAULT_DB) -> None:
    """Show what the database holds: rows per table, consent per channel, events per kind.

    Examples: [bold]pushgen stats --db demo.db[/], [bold]pushgen stats --campaign demo-sms[/],
    [bold]pushgen stats --json[/]
    """
    store = open_store(db, create=False)
    if campaign is not None:
        from ..review import campaign_report
        from .reviewing import print_campaign_report

        report = campaign_report(store, campaign)
        print_json(report) if as_json else print_campaign_report(report)
        return
    summary = catalog.shop_summary(store)
    if as_json:
        print_json({"database": str(db), **summary})
        return
    console = Console()
    counts, extra = summary["tables"], summary["items"]
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
    for title, label, counts in (("Consent", "channel", summary["consent"]),
                                 ("Locales", "locale", summary["locales"])):
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
    for kind, v in summary["events_by_kind"].items():
        events.add_row(kind, f"{v['events']:,}", f"{v['users']:,}")
    console.print(events)
    if summary["events_from"]:
        console.print(f"events from {summary['events_from']} to {summary['events_to']}",
                      highlight=False)