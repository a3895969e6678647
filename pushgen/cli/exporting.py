"""`pushgen export ...`: approved drafts to the files a sending platform imports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..export import ExportReport, export_campaign, parse_send_at
from ..store import open_store
from .app import DEFAULT_DB, DbOption, app, sub_app
from .output import JsonOption, print_json
from .reviewing import ActorOpt, done as _done

console = Console()

export = sub_app("Export approved drafts for the sending platform (CSV, JSONL, .eml).")
app.add_typer(export, name="export")


def _nothing_reason(rep: ExportReport) -> str:
    if rep.skipped:
        return "every approved draft was skipped (see below)"
    if rep.already_exported:
        return (f"all {rep.already_exported} approved draft(s) were already exported as "
                f"{rep.fmt} (use --again to export them again)")
    return (f"nothing approved yet ({rep.not_approved} draft(s) in review or rejected; "
            f"approve with `pushgen review approve`)")


def _print_export(rep: ExportReport) -> None:
    for note in rep.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if rep.path is None:
        console.print(f"Nothing to export for campaign {escape(rep.campaign)} "
                      f"({rep.channel}): {_nothing_reason(rep)}. No file written.")
    else:
        _done(f"wrote {rep.exported} {rep.channel} message(s) to {rep.path}")
        if rep.other_format:
            console.print(f"  {rep.other_format} of them were exported before in another "
                          f"format and are now written as {rep.fmt} too (the same messages: "
                          "upload only one of the files)")
    if rep.skipped_no_consent:
        console.print(f"  skipped {rep.skipped_no_consent}: opted out of {rep.channel} "
                      "since approval")
    if rep.skipped_no_contact:
        console.print(f"  skipped {rep.skipped_no_contact}: no "
                      f"{'email address' if rep.channel == 'email' else 'phone number'}")
    if rep.skipped_bad_contact:
        console.print(f"  skipped {rep.skipped_bad_contact}: an "
                      f"{'email address' if rep.channel == 'email' else 'phone number'} no "
                      "platform can send to (spaces, line breaks, not an address)")
    if rep.skipped_failing:
        console.print(f"  skipped {rep.skipped_failing}: failing a check now; reopened for "
                      "review:")
        for why in rep.failing_reasons[:10]:
            console.print(f"    {escape(why)}", soft_wrap=True)
        if len(rep.failing_reasons) > 10:
            console.print(f"    … and {len(rep.failing_reasons) - 10} more")
    if rep.skipped_stale:
        console.print(f"  skipped {rep.skipped_stale}: catalog changed since approval; "
                      "approved ones were reopened for review:")
        for why in rep.stale_reasons[:10]:
            console.print(f"    {escape(why)}", soft_wrap=True)
        if len(rep.stale_reasons) > 10:
            console.print(f"    … and {len(rep.stale_reasons) - 10} more "
                          "(`pushgen review list --status draft`)")
    if rep.skipped_extra_variant:
        console.print(f"  skipped {rep.skipped_extra_variant}: not the customer's assigned "
                      "variant, or another variant already went out (one message per "
                      "customer per campaign)")
    if rep.skipped_holdout:
        console.print(f"  skipped {rep.skipped_holdout}: customers in the hold-out group")
    if rep.not_approved:
        console.print(f"  [dim]{rep.not_approved} draft(s) not approved (in review or "
                      "rejected) were not exported[/]")


def print_send_times(rep: ExportReport, out: Console = console) -> None:
    """Where the send times came from, the window, quiet hours and the default timezone."""
    if rep.send_window is None or not rep.exported:
        return
    start, end = rep.send_window
    sources = rep.send_sources
    out.print(f"  send times: {sources.get('own', 0):,} from the customer's own history, "
              f"{sources.get('segment', 0):,} from their segment, {sources.get('shop', 0):,} "
              f"shop-wide; window {start} to {end} (UTC)"
              + (f"; quiet hours {rep.quiet_hours} local" if rep.quiet_hours
                 else "; no quiet hours"), highlight=False, soft_wrap=True)
    if rep.shop_timezone_customers:
        out.print(f"  {rep.shop_timezone_customers:,} customer(s) have no known timezone: "
                  f"planned in the shop's default timezone {rep.shop_timezone}",
                  highlight=False)
    else:
        out.print(f"  every customer has a timezone (the shop's default would be "
                  f"{rep.shop_timezone})", highlight=False)
    busiest = sorted(range(24), key=lambda h: -rep.send_hours[h])[:3]
    out.print("  busiest local hours: " + ", ".join(
        f"{h:02d}:00 ({rep.send_hours[h]:,})" for h in busiest if rep.send_hours[h]),
        highlight=False)


def _export(channel: str, campaign: str, fmt: str, out: Path, again: bool,
            timing: dict, actor: Optional[str], db: Path,
            allow_demo_sender: bool = False, as_json: bool = False) -> None:
    parse_send_at(timing.pop("send_at", None))
    store = open_store(db, create=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("exporting", total=None)

        def on_progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        rep = export_campaign(store, campaign, channel, fmt=fmt, out_dir=out, again=again,
                              actor=actor, allow_demo_sender=allow_demo_sender,
                              progress=on_progress, **timing)
    if as_json:
        print_json(rep)
        return
    _print_export(rep)
    print_send_times(rep)


ExportCampaign = Annotated[str, typer.Option("--campaign", "-c", help="Campaign name.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for the export file "
                                                          "(created if missing).")]
AgainOpt = Annotated[bool, typer.Option("--again", help="Also export drafts exported before.")]
SendAtOpt = Annotated[Optional[str], typer.Option(
    "--send-at", hidden=True, help="Replaced by per-customer send times (--send-window).")]
WindowOpt = Annotated[Optional[str], typer.Option(
    "--send-window", metavar="START/END|DAY",
    help="When messages may go out: START/END in ISO 8601 (e.g. 2026-12-01T08:00/"
         "2026-12-01T22:00) or a day (2026-12-01); times without an offset are in the shop's "
         "timezone. Each customer gets their usual active hour inside it. Default: the "
         "campaign's [send] send_window, else the next 24 hours.")]
QuietOpt = Annotated[Optional[str], typer.Option(
    "--quiet-hours", metavar="HH:MM-HH:MM|off",
    help="No message inside these hours of the customer's local time; a preferred hour "
         "inside them moves to their end. Default: the campaign's [send] quiet_hours, else "
         "21:00-09:00 for SMS and none for email and push.")]
TimezoneOpt = Annotated[Optional[str], typer.Option(
    "--timezone", metavar="IANA",
    help="The shop's timezone, used for customers without one (e.g. America/New_York). "
         "Default: the campaign's [send] timezone, else UTC.")]
MinEventsOpt = Annotated[Optional[int], typer.Option(
    "--min-events", min=1, help="Events a customer needs for their own hour (else their "
                                "segment's, else the shop's). Default 5.")]
DemoSenderOpt = Annotated[bool, typer.Option(
    "--allow-demo-sender", help="Export although the campaign still uses pushgen's demo "
                                "sender and postal address (no [sender] in its config): for "
                                "the demo and test sends only.")]


def _timing(send_window: Optional[str], quiet_hours: Optional[str], timezone: Optional[str],
            min_events: Optional[int], send_at: Optional[str]) -> dict:
    return {"send_window": send_window, "quiet_hours": quiet_hours, "timezone": timezone,
            "min_events": min_events, "send_at": send_at}


@export.command("email")
def export_email(
    campaign: ExportCampaign,
    out: OutOpt,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, jsonl or eml.")] = "csv",
    again: AgainOpt = False,
    send_window: WindowOpt = None,
    quiet_hours: QuietOpt = None,
    timezone: TimezoneOpt = None,
    min_events: MinEventsOpt = None,
    send_at: SendAtOpt = None,
    allow_demo_sender: DemoSenderOpt = False,
    actor: ActorOpt = None,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Export approved email drafts (consent and every check run again now).

    Each message gets its own send_at (UTC): the customer's usual active hour in their
    timezone, inside --send-window, outside quiet hours (send_time_reason says why).

    Example: pushgen export email --campaign spring --format eml --out out/ --send-window 2026-12-01
    """
    _export("email", campaign, fmt, out, again, _timing(send_window, quiet_hours, timezone,
                                                         min_events, send_at),
            actor, db, allow_demo_sender, as_json)


@export.command("sms")
def export_sms(
    campaign: ExportCampaign,
    out: OutOpt,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or jsonl.")] = "csv",
    again: AgainOpt = False,
    send_window: WindowOpt = None,
    quiet_hours: QuietOpt = None,
    timezone: TimezoneOpt = None,
    min_events: MinEventsOpt = None,
    send_at: SendAtOpt = None,
    allow_demo_sender: DemoSenderOpt = False,
    actor: ActorOpt = None,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Export approved SMS drafts (phone, text) as CSV or JSONL.

    Each message gets its own send_at (UTC) at the customer's usual active hour, never in
    quiet hours (21:00-09:00 local unless --quiet-hours says otherwise).

    Example: pushgen export sms --campaign spring --out out/ --send-window 2026-12-01
    """
    _export("sms", campaign, fmt, out, again, _timing(send_window, quiet_hours, timezone,
                                                       min_events, send_at),
            actor, db, allow_demo_sender, as_json)


@export.command("push")
def export_push(
    campaign: ExportCampaign,
    out: OutOpt,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or jsonl.")] = "csv",
    again: AgainOpt = False,
    send_window: WindowOpt = None,
    quiet_hours: QuietOpt = None,
    timezone: TimezoneOpt = None,
    min_events: MinEventsOpt = None,
    send_at: SendAtOpt = None,
    allow_demo_sender: Annotated[bool, typer.Option(
        "--allow-demo-sender", hidden=True,
        help="Accepted so one command line serves every channel: a push has no sender."
    )] = False,
    actor: ActorOpt = None,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Export approved app-push drafts (external id, title, body, deep link, push token).

    Example: pushgen export push --campaign spring --format jsonl --out out/
    """
    _export("push", campaign, fmt, out, again, _timing(send_window, quiet_hours, timezone,
                                                        min_events, send_at), actor, db,
            as_json=as_json)


__all__ = ["export", "print_send_times"]
