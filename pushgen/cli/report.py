"""`pushgen report`: what a campaign achieved, as tables, JSON or a shareable HTML page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..results.page import pct, points, reported_stages, write_html
from ..results.report import CampaignResults, campaign_results
from ..store import open_store
from .app import DEFAULT_DB, DbOption, app

console = Console()


def _compact(rate) -> str:
    """``33.3% (6.1-79.2)``: the rate and its 95% interval in points, narrow for a table."""
    return f"{pct(rate.rate)} ({rate.low * 100:.1f}-{rate.high * 100:.1f})"


def _p(diff) -> str:
    """The p-value, and the adjusted one the verdict is judged on when there is one."""
    if diff.p_adjusted is None:
        return f"{diff.p_value:.3g}"
    return f"{diff.p_value:.3g} ({diff.p_adjusted:.3g} adj.)"


def _split_line(r: CampaignResults) -> str:
    parts = []
    for v, n in sorted(r.split.items()):
        name = "hold-out" if v == 0 else f"variant {v}" + (
            " (random pick)" if r.picks.get(v) == "random" else "")
        parts.append(f"{name} {n:,}")
    return " · ".join(parts)


def print_results(r: CampaignResults, out: Console = console) -> None:
    """The report as tables: funnel, groups with their differences, uplift, notes."""
    say = lambda text: out.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"[bold]Results of {escape(r.campaign)}[/] ({r.channel}): {r.recipients:,} messages "
        f"exported, {r.outcomes:,} outcomes imported")
    if r.split:
        say(f"A/B split (customers): {_split_line(r)}")
    if r.window:
        say(f"campaign window: {r.window['start'][:16]} to {r.window['end'][:16]} UTC "
            f"(last send + {r.window['attribution_days']} days)")
    stages = reported_stages(r)
    funnel = Table("stage", "messages", "share of recipients", title="Funnel",
                   title_justify="left")
    funnel.add_row("recipients (exported)", f"{r.recipients:,}", "100%")
    for s in ("sent", "delivered", "opened", "clicked", "converted", "bounced",
              "unsubscribed", "complained"):
        if s in stages or s in ("bounced", "unsubscribed", "complained"):
            share = pct(r.funnel[s] / r.recipients) if r.recipients else "-"
            funnel.add_row(s, f"{r.funnel[s]:,}", share)
        else:
            funnel.add_row(s, "-", "not reported")
    funnel.add_row("revenue", f"{r.revenue:,.2f}",
                   f"{r.revenue / r.recipients:,.2f} per recipient" if r.recipients else "-")
    out.print(funnel)
    for dim, title in (("variant", "By variant"), ("generator", "By generator"),
                       ("version", "By template or prompt version"), ("locale", "By locale"),
                       ("segment", "By segment")):
        groups = r.groups.get(dim) or []
        if not groups or (dim not in ("variant", "generator") and len(groups) < 2):
            continue
        t = Table(dim, "recipients", *[f"{s} (95% CI)" for s in stages], "revenue/recipient",
                  title=title, title_justify="left")
        for g in groups:
            t.add_row(escape(g.label), f"{g.recipients:,}",
                      *[_compact(g.rates[s]) for s in stages],
                      f"{g.revenue_per_recipient:,.2f}")
        out.print(t)
        shown, hidden = r.verdicts(dim)
        for c in shown:
            mark = "[green]●[/]" if c.diff.significant else "○"
            out.print(f"  {mark} {escape(c.verdict)}", highlight=False, soft_wrap=True)
        if hidden:
            out.print(f"  ○ {hidden} other difference(s) by {dim}: none significant "
                      "(could be chance)", highlight=False)
    if r.uplift:
        t = Table("group", "customers", "bought in window", "purchase rate [95% CI]",
                  "uplift [95% CI]", "p-value", title="Uplift over the hold-out",
                  title_justify="left")
        hold = r.uplift[0].holdout
        t.add_row("hold-out", f"{hold.trials:,}", f"{hold.successes:,}", _compact(hold), "-",
                  "-")
        for u in r.uplift:
            t.add_row(escape(u.label), f"{u.treated.trials:,}", f"{u.treated.successes:,}",
                      _compact(u.treated),
                      f"{points(u.diff.diff)} [{points(u.diff.low)}, {points(u.diff.high)}]",
                      _p(u.diff))
        out.print(t)
        for u in r.uplift:
            mark = "[green]●[/]" if u.diff.significant else "○"
            out.print(f"  {mark} {escape(u.verdict)}", highlight=False, soft_wrap=True)
    for note in r.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    out.print("[dim]" + escape(" ".join(r.definitions)) + "[/]", soft_wrap=True)


@app.command("report")
def report(
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign name.")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report as JSON (every rate with its interval).")] = False,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Also write the results page (charts included) as one self-contained "
                       "HTML file to share.", dir_okay=False)] = None,
    attribution_days: Annotated[Optional[int], typer.Option(
        "--attribution-days", min=1, max=365,
        help="Purchases up to N days after the last send count for the uplift (default: the "
             "campaign's [results] attribution_days, else 7).")] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """What a campaign achieved: per variant, generator, version, locale and segment the
    sent, delivered, open, click and conversion rates with 95% intervals, revenue per
    recipient, the differences between variants (two-proportion test, p-value), and the
    uplift over the hold-out group. It says plainly when a difference is not significant.

    Import the platform's report first: [bold]pushgen import outcomes FILE[/].

    Examples: [bold]pushgen report -c spring[/], [bold]pushgen report -c spring --json[/],
    [bold]pushgen report -c spring --html spring-results.html[/]
    """
    results = campaign_results(open_store(db, create=False), campaign,
                               attribution_days=attribution_days)
    if as_json:
        typer.echo(json.dumps(results.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_results(results)
    if html is not None:
        path = write_html(results, html)
        # With --json, stdout holds only the JSON document.
        typer.echo(f"wrote the results page to {path}", err=as_json)


__all__ = ["report", "print_results"]
