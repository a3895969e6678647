"""`pushgen review ...` and `pushgen export ...`: human review of drafts, then export."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .. import review as rv
from ..channels import sms_info
from ..errors import PushgenError
from ..messages import CHANNEL_FIELDS
from ..store import open_store
from ..store.assignments import split as split_counts
from ..store.outcomes import consent_note
from .app import DEFAULT_DB, DbOption, app, sub_app
from .output import JsonOption, print_json

console = Console()

review = sub_app("Review drafts: list, show, approve, reject, edit, or open the web page.")
app.add_typer(review, name="review")

CampaignOpt = Annotated[Optional[str], typer.Option("--campaign", "-c", help="Campaign name.")]
ActorOpt = Annotated[Optional[str], typer.Option(
    "--actor", help="Who is reviewing (default: $USER).", envvar="PUSHGEN_ACTOR")]
VersionOpt = Annotated[Optional[int], typer.Option(
    "--version", help="Refuse if the draft changed since this version (optimistic lock).")]


def _open(db: Path):
    return open_store(db, create=False)


# --- rendering ---------------------------------------------------------------------------


def _status_style(status: str) -> str:
    return {"draft": "yellow", "approved": "green", "rejected": "red",
            "exported": "blue"}.get(status, "white")


def _segment(d: rv.DraftView) -> str:
    return " · ".join(f"{k} {v}" for k, v in d.segment.items() if v not in (None, ""))


def copy_panel(d: rv.DraftView) -> Panel:
    """The copy as the customer will see it."""
    c = d.content
    body = Text()
    if d.channel == "sms":
        info = sms_info(c.get("text", ""))
        body.append(c.get("text", ""))
        title = (f"SMS · {info.encoding} · {info.segments} segment"
                 f"{'s' if info.segments != 1 else ''} · {info.length}/{info.limit}")
    elif d.channel == "push":
        body.append(c.get("title", ""), style="bold")
        body.append("\n" + c.get("body", ""))
        body.append(f"\n→ {c.get('deep_link', '')}", style="dim")
        title = "App push"
    else:
        s = d.settings
        body.append("From: ", style="dim")
        body.append(f"{s.sender_name} <{s.sender_email}>\n")
        body.append("To: ", style="dim")
        body.append(f"{d.user_email or '(no address)'}\n")
        body.append("Subject: ", style="dim")
        body.append(c.get("subject", "") + "\n", style="bold")
        body.append("Preheader: ", style="dim")
        body.append(c.get("preheader", "") + "\n\n")
        body.append(c.get("text", ""))
        title = "Email (plain-text part; HTML in `pushgen review serve`)"
    return Panel(body, title=title, title_align="left", expand=False)


def print_draft(d: rv.DraftView, out: Console = console, db=None) -> None:
    """Everything a reviewer needs about one draft (``db``: also why a consent is off)."""
    out.print(f"[bold]Draft {d.id}[/] · campaign {escape(d.campaign)} · {d.channel} · "
              f"variant {d.variant} · [{_status_style(d.status)}]{d.status}[/] · "
              f"version {d.version}")
    who = escape(d.user_name or "(no name)")
    why = consent_note(db, d.user_id, d.channel) if db is not None and not d.consent else None
    out.print(f"To {who} ({escape(d.user_external_id)}) · {escape(_segment(d))}"
              + ("" if d.consent else f" · [red]no {d.channel} consent now"
                 + (f": {escape(why)}" if why else "") + " (skipped at export)[/]"))
    gen = d.generator + (f" {d.template_name}" if d.template_name else "") \
        + (f" · model {d.model} · tokens {d.tokens_prompt}+{d.tokens_completion}"
           if d.model else "")
    out.print(f"[dim]Generator: {escape(gen)}[/]")
    if d.flag:
        out.print(f"[yellow]⚑ {escape(d.flag)}[/]")
    out.print(copy_panel(d))
    items = Table("sku", "title", "price", "score", "reason", title="Recommended items",
                  title_justify="left")
    for it in d.items:
        price = "" if it.price is None else f"{it.current_price:.2f} {it.currency}"
        if it.discount_pct:
            price += f" (-{it.discount_pct}%)"
        items.add_row(escape(it.sku), escape(it.title), price, f"{it.score:.3f}",
                      escape(it.reason))
    out.print(items)
    out.print("[bold]Checks[/]")
    for c in d.checks:
        if c.ok:
            out.print(f"  [green]✓[/] {c.name} [dim]{escape(c.message)}[/]")
        else:
            colour = "red" if c.severity == "error" else "yellow"
            out.print(f"  [{colour}]✗ {c.name}[/] {escape(c.message)}"
                      + (" [dim](warning)[/]" if c.severity == "warning" else ""))
    if d.history:
        out.print("[bold]History[/]")
        for e in d.history:
            reason = f" — {escape(e.reason)}" if e.reason else ""
            out.print(f"  {e.at} {escape(e.actor)} {e.action} "
                      f"{e.status_before}→{e.status_after}{reason}")


def done(msg: str) -> None:
    """A finished action's one line, ticked."""
    console.print(f"[green]✓[/] {msg}")


def _state(d: rv.DraftView) -> dict:
    """A draft's review state for ``--json``: id, status, version, passed."""
    return {"id": d.id, "status": d.status, "version": d.version, "passed": d.passed}


# --- editing through $EDITOR --------------------------------------------------------------

_MARK = "--- {} ---"


def edit_form(d: rv.DraftView) -> str:
    """The draft's fields as text for $EDITOR: each field runs from its marker to the next."""
    head = (f"# pushgen draft {d.id} ({d.channel}), version {d.version}.\n"
            "# Change the text under each '--- field ---' line, save and close.\n"
            "# Lines starting with '#' are ignored only above the first field.\n")
    parts = [head]
    for f in CHANNEL_FIELDS[d.channel]:
        parts.append(_MARK.format(f) + "\n" + d.content.get(f, "") + "\n")
    return "".join(parts)


def parse_edit_form(text: str, channel: str) -> dict[str, str]:
    """Inverse of ``edit_form``; refuses unknown or missing field markers."""
    fields: dict[str, list[str]] = {}
    current: str | None = None
    known = {_MARK.format(f): f for f in CHANNEL_FIELDS[channel]}
    for n, line in enumerate(text.splitlines(), 1):
        marker = known.get(line.strip())
        if marker is not None:
            current = marker
            fields[current] = []
        elif current is None:
            if line.strip() and not line.startswith("#"):
                raise PushgenError(f"edit form line {n}: text before the first "
                                   "'--- field ---' line")
        else:
            fields[current].append(line)
    if not fields:
        raise PushgenError("edit form has no '--- field ---' line; nothing changed")
    return {k: "\n".join(v).rstrip("\n") for k, v in fields.items()}


def _parse_sets(sets: list[str]) -> dict[str, str]:
    changes: dict[str, str] = {}
    for s in sets:
        name, eq, value = s.partition("=")
        if not eq or not name.strip():
            raise PushgenError(f"--set {s!r}: use --set field=value, e.g. --set subject=Hello")
        changes[name.strip()] = value.replace("\\n", "\n")
    return changes


def _print_edit(result: rv.EditResult) -> None:
    d = result.draft
    if not result.changed:
        console.print(f"Draft {d.id}: nothing changed.")
        return
    done(f"edited draft {d.id} ({', '.join(result.changed)}); now version {d.version}, "
          f"status {d.status}")
    for c in d.blocking_checks:
        new = " (new)" if c in result.new_failures else ""
        console.print(f"  [red]✗ {c.name}{new}[/] {escape(c.message)}")
    for c in result.new_failures:
        if c not in d.blocking_checks:     # a new warning: worth reading, not blocking
            console.print(f"  [yellow]! {c.name} (new)[/] {escape(c.message)}")
    if d.blocking_checks:
        console.print("  [red]It cannot be approved until every check passes.[/]")
    elif d.channel == "sms":
        info = sms_info(d.content.get("text", ""))
        console.print(f"  SMS: {info.encoding}, {info.segments} segment(s), "
                      f"{info.length}/{info.limit}")


def _edit_in_editor(db, d: rv.DraftView, actor: str | None, reason: str | None
                    ) -> rv.EditResult | None:
    try:
        text = click.edit(edit_form(d), extension=".txt", require_save=True)
    except click.ClickException as exc:  # editor missing or exited with an error
        raise PushgenError(f"could not open an editor ({exc.format_message()}); set $EDITOR, "
                           f"or edit without one: pushgen review edit {d.id} "
                           "--set field=value") from None
    if text is None:
        console.print(f"Draft {d.id}: editor closed without saving; nothing changed.")
        return None
    changes = parse_edit_form(text, d.channel)
    return rv.edit(db, d.id, changes, actor=actor, expected_version=d.version, reason=reason)


class _Keys:
    """Single key presses from the terminal; without one (stdin piped, no /dev/tty) the
    keys are read from stdin lines instead, and end of input means quit."""

    def __init__(self) -> None:
        self._line_mode = False
        self._buffer = ""

    def get(self) -> str:
        if not self._line_mode:
            try:
                return typer.getchar()
            except OSError:
                self._line_mode = True
        while not self._buffer:
            line = sys.stdin.readline()
            if not line:
                return "q"
            self._buffer = line
        key, self._buffer = self._buffer[0], self._buffer[1:]
        return key


# --- review commands ----------------------------------------------------------------------


@review.command("list")
def list_cmd(
    campaign: CampaignOpt = None,
    channel: Annotated[Optional[str], typer.Option(help="sms, push or email.")] = None,
    status: Annotated[Optional[str], typer.Option(
        help="draft, approved, rejected or exported.")] = None,
    failed_check: Annotated[Optional[str], typer.Option(
        "--failed-check", help="Only drafts failing this check, e.g. sms.segments.")] = None,
    locale: Annotated[Optional[str], typer.Option(help="e.g. zh-CN.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show.", min=1)] = 50,
    offset: Annotated[int, typer.Option(help="Rows to skip.", min=0)] = 0,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """List drafts with the item each one recommends, its status and failed checks.

    Example: pushgen review list --campaign spring --status draft --failed-check sms.segments
    """
    store = _open(db)
    filters = dict(campaign=campaign, channel=channel, status=status,
                   failed_check=failed_check, locale=locale)
    total = rv.count_drafts(store, **filters)
    rows = _with_progress(lambda: rv.list_drafts(store, **filters, limit=limit, offset=offset),
                          f"reading {min(limit, max(total - offset, 0)):,} drafts",
                          quiet=as_json or limit < 2000)
    split = split_counts(store, rv.campaign_id(store, campaign)) if campaign else {}
    if as_json:
        print_json({"total": total, "offset": offset, "limit": limit,
                    "drafts": [d.to_dict(full=False) for d in rows],
                    **({"split": {("holdout" if v == 0 else f"variant {v}"): n
                                  for v, n in sorted(split.items())}} if split else {})})
        return
    t = Table(title=f"{len(rows)} of {total} drafts", title_justify="left")
    # With --campaign the campaign (and its one channel) need no column: room for the item.
    names = ["id", "user", "locale", "status", "v", "checks", "item"]
    if not campaign:
        names[1:1] = ["campaign", "ch"]
    table_rows = []
    for d in rows:
        failed = d.failed_checks
        checks = ("✓ all" if not failed else ", ".join(c.name for c in failed))
        lead = d.lead_item
        cells = {"id": str(d.id), "campaign": d.campaign, "ch": d.channel,
                 "user": d.user_external_id, "locale": d.locale, "status": d.status,
                 "v": str(d.version), "checks": checks,
                 "item": f"{lead.sku} {lead.title}" if lead else "-"}
        table_rows.append((d, cells))
    # Every column as wide as its content; the item gets what is left (cut with "…").
    width = {n: max([len(n)] + [len(c[n]) for _, c in table_rows]) for n in names}
    width["checks"] = min(width["checks"], 24)
    used = sum(width[n] + 3 for n in names if n != "item") + 4
    for n in names:
        if n == "item":
            t.add_column(n, no_wrap=True, overflow="ellipsis",
                         max_width=max(console.width - used, 8))
        else:
            t.add_column(n, no_wrap=n != "checks", min_width=width[n])
    for d, cells in table_rows:
        failed = d.failed_checks
        cells["checks"] = ("[green]✓ all[/]" if not failed else ", ".join(
            f"[{'red' if c.severity == 'error' else 'yellow'}]{c.name}[/]" for c in failed))
        cells["status"] = f"[{_status_style(d.status)}]{d.status}[/]"
        t.add_row(*[cells[n] if n in ("checks", "status") else escape(cells[n])
                    for n in names])
    console.print(t)
    if split:
        console.print("A/B split: " + " · ".join(
            f"{'hold-out (no message)' if v == 0 else f'variant {v}'} {n:,}"
            for v, n in sorted(split.items())), highlight=False)
    if total > offset + len(rows):
        console.print(f"[dim]{total - offset - len(rows)} more: use --offset "
                      f"{offset + len(rows)}[/]")


def _with_progress(work, label: str, *, quiet: bool):
    """Run ``work()`` with a spinner on stderr unless ``quiet`` (small or --json runs)."""
    if quiet:
        return work()
    with Console(stderr=True).status(label):
        return work()


@review.command("show")
def show_cmd(draft_id: Annotated[int, typer.Argument(help="Draft id.")],
             as_json: JsonOption = False,
             db: DbOption = DEFAULT_DB) -> None:
    """Show a draft as the customer will see it, with its items, checks and history.

    Example: pushgen review show 12
    """
    store = _open(db)
    d = rv.get_draft(store, draft_id)
    if as_json:
        data = d.to_dict()
        if not d.consent:
            data["consent_note"] = consent_note(store, d.user_id, d.channel)
        print_json(data)
        return
    print_draft(d, db=store)


@review.command("approve")
def approve_cmd(
    draft_id: Annotated[Optional[int], typer.Argument(help="Draft id.")] = None,
    all_passing: Annotated[bool, typer.Option(
        "--all-passing", help="Approve every draft of --campaign that passes every check.")
    ] = False,
    campaign: CampaignOpt = None,
    version: VersionOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Approve a draft (refused while any check fails), or all passing drafts of a campaign.

    Examples: pushgen review approve 12 |
    pushgen review approve --all-passing --campaign spring
    """
    store = _open(db)
    if all_passing:
        if not campaign or draft_id is not None:
            raise PushgenError("--all-passing needs --campaign NAME and no draft id")
        n = rv.approve_all_passing(store, campaign, actor=actor)
        counts = rv.queue_counts(store, campaign)
        if as_json:
            print_json({"campaign": campaign, "approved": n,
                        "waiting": counts.by_status["draft"]})
            return
        done(f"approved {n} draft(s) of campaign {campaign} that pass every check; "
              f"{counts.by_status['draft']} still waiting for review")
        return
    if draft_id is None:
        raise PushgenError("give a draft id, or --all-passing --campaign NAME")
    before = rv.get_draft(store, draft_id)
    d = rv.approve(store, draft_id, actor=actor, expected_version=version)
    if as_json:
        print_json({"draft": _state(d), "changed": before.status != "approved"})
        return
    if before.status == "approved":
        done(f"draft {d.id} is already approved (version {d.version}); nothing changed")
        return
    done(f"approved draft {d.id} (version {d.version})")


@review.command("reject")
def reject_cmd(
    draft_id: Annotated[int, typer.Argument(help="Draft id.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).",
                                        prompt="Reason")],
    version: VersionOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Reject a draft with a reason; it will not be exported.

    Example: pushgen review reject 12 --reason "wrong size advertised"
    """
    d = rv.reject(_open(db), draft_id, actor=actor, reason=reason, expected_version=version)
    if as_json:
        print_json({"draft": _state(d)})
        return
    done(f"rejected draft {d.id} (version {d.version}): {reason}")


@review.command("reopen")
def reopen_cmd(
    draft_id: Annotated[int, typer.Argument(help="Draft id.")],
    reason: Annotated[Optional[str], typer.Option("--reason", "-r", help="Why.")] = None,
    version: VersionOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Put an approved or rejected draft back in the review queue.

    Example: pushgen review reopen 12 --reason "price changed"
    """
    d = rv.reopen(_open(db), draft_id, actor=actor, reason=reason, expected_version=version)
    if as_json:
        print_json({"draft": _state(d)})
        return
    done(f"reopened draft {d.id}: status draft (version {d.version})")


@review.command("edit")
def edit_cmd(
    draft_id: Annotated[int, typer.Argument(help="Draft id.")],
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="field=value (repeatable; \\n for a new line). Without --set, "
                      "opens $EDITOR.")] = None,
    reason: Annotated[Optional[str], typer.Option("--reason", "-r", help="Why.")] = None,
    version: VersionOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Edit a draft's copy; every check runs again on the new text.

    Examples: pushgen review edit 12 --set subject="Your spring picks" |
    pushgen review edit 12   (opens $EDITOR)
    """
    store = _open(db)
    if set_:
        result = rv.edit(store, draft_id, _parse_sets(set_), actor=actor,
                         expected_version=version, reason=reason)
    else:
        d = rv.get_draft(store, draft_id)
        if version is not None:
            d.version = version  # the editor's result is checked against this version
        result = _edit_in_editor(store, d, actor, reason)
        if result is None:
            return
    if as_json:
        print_json({"draft": _state(result.draft), "changed": result.changed,
                    "blocking_checks": [c.to_dict() for c in result.draft.blocking_checks],
                    "new_failures": [c.name for c in result.new_failures]})
        return
    _print_edit(result)


@review.command("next")
def next_cmd(
    campaign: CampaignOpt = None,
    channel: Annotated[Optional[str], typer.Option(help="sms, push or email.")] = None,
    failed_check: Annotated[Optional[str], typer.Option("--failed-check")] = None,
    locale: Annotated[Optional[str], typer.Option()] = None,
    actor: ActorOpt = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Walk the review queue one draft at a time with single keys.

    a approve · r reject (asks a reason) · e edit in $EDITOR · s skip · q quit.
    Example: pushgen review next --campaign spring
    """
    store = _open(db)
    ids = rv.queue_ids(store, campaign=campaign, channel=channel, status="draft",
                       failed_check=failed_check, locale=locale)
    tally = {"approved": 0, "rejected": 0, "edited": 0, "skipped": 0}
    if not ids:
        console.print("Nothing waiting for review.")
        return
    quit_ = False
    keys = _Keys()
    for n, draft_id in enumerate(ids, 1):
        d = rv.get_draft(store, draft_id)
        if d.status != "draft":
            continue  # decided by someone else meanwhile
        console.rule(f"{n} of {len(ids)}")
        print_draft(d, db=store)
        while True:
            console.print("[bold]a[/]pprove  [bold]r[/]eject  [bold]e[/]dit  [bold]s[/]kip  "
                          "[bold]q[/]uit > ", end="")
            key = keys.get()
            if key.isspace():
                continue
            console.print(key)
            try:
                if key == "a":
                    d = rv.approve(store, d.id, actor=actor, expected_version=d.version)
                    done(f"approved draft {d.id}")
                    tally["approved"] += 1
                    break
                if key == "r":
                    reason = typer.prompt("Reason")
                    d = rv.reject(store, d.id, actor=actor, reason=reason,
                                  expected_version=d.version)
                    done(f"rejected draft {d.id}: {reason}")
                    tally["rejected"] += 1
                    break
                if key == "e":
                    result = _edit_in_editor(store, d, actor, None)
                    if result is not None:
                        _print_edit(result)
                        tally["edited"] += 1
                        d = result.draft
                        if d.status != "draft":
                            break
                    continue
                if key == "s":
                    tally["skipped"] += 1
                    break
                if key == "q":
                    quit_ = True
                    break
                console.print(f"[dim]unknown key {key!r}[/]")
            except PushgenError as exc:
                console.print(f"[red]{escape(str(exc))}[/]")
                if "reload" in str(exc):
                    d = rv.get_draft(store, d.id)
                    print_draft(d)
        if quit_:
            break
    console.print(", ".join(f"{k} {v}" for k, v in tally.items()))


@review.command("stats")
def stats_cmd(campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign name.")],
              db: DbOption = DEFAULT_DB) -> None:
    """Review progress, check failures and tokens of one campaign.

    Example: pushgen review stats --campaign spring
    """
    print_campaign_report(rv.campaign_report(_open(db), campaign))


def _rate(rate: float) -> str:
    """One decimal, never rounded up to 100% (or down to 0%) unless exactly so."""
    pct = rate * 100
    text = f"{pct:.1f}%"
    if text == "100.0%" and rate < 1:
        text = "99.9%"
    elif text == "0.0%" and rate > 0:
        text = "0.1%"
    return text


def print_campaign_report(rep: dict, out: Console = console) -> None:
    """The ``campaign_report`` dict as tables (also used by ``pushgen stats``)."""
    t = Table(title=f"campaign {rep['campaign']}: {rep['drafts']} drafts", show_header=False,
              title_justify="left")
    for status, n in rep["by_status"].items():
        t.add_row(status, str(n))
    rate = rep["approval_rate"]
    t.add_row("approval rate (of reviewed)",
              "—" if rate is None else _rate(rate) + f" of {rep['reviewed']}")
    t.add_row("tokens prompt / completion", f"{rep['tokens_prompt']} / {rep['tokens_completion']}")
    for g, v in rep["by_generator"].items():
        t.add_row(f"generator {g}", f"{v['drafts']} drafts, tokens {v['tokens_prompt']} / "
                                    f"{v['tokens_completion']}")
    llm = rep.get("llm")
    if llm:   # every LLM run of the campaign, cached reruns included
        from .drafting import llm_cost_rows

        t.add_row("LLM runs", f"{llm['runs']} ({', '.join(llm['modes'])}; "
                              f"{', '.join(llm['models'])})")
        note = ("" if llm["estimated_cost"] is not None else
                "unknown: no price for " + ", ".join(llm["unpriced_models"]) +
                " in the config's \\[llm.prices] (tokens only)")
        llm_cost_rows(t, calls=llm["calls"], requests=llm["requests"],
                      cache_hits=llm["cache_hits"], saved=llm["saved_by_blocks"],
                      tokens_prompt=llm["tokens_prompt"],
                      tokens_completion=llm["tokens_completion"],
                      cost=llm["estimated_cost"], price_note=note, formats=llm["formats"])
    out.print(t)
    if rep["check_failures"]:
        f = Table("check", "drafts failing", title="Check failures", title_justify="left")
        for name, n in rep["check_failures"].items():
            f.add_row(name, str(n))
        out.print(f)


@review.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to bind: loopback only (127.0.0.1, ::1, "
                                           "localhost) unless --allow-remote.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (1-65535).")] = 8765,
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", help="Read the write token from this file (else $PUSHGEN_TOKEN, else "
                             "a new random one, printed). Never on the command line: `ps` "
                             "would show it.", dir_okay=False)] = None,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow a non-loopback --host. Every page then needs the token "
                               "link (reads too), and it travels unencrypted: use an HTTPS "
                               "proxy.")] = False,
    token: Annotated[Optional[str], typer.Option(
        "--token", hidden=True, help="Refused: use $PUSHGEN_TOKEN or --token-file.")] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Open the review web page on this machine (approve, reject, edit in the browser).

    Example: pushgen review serve --port 8765   then open the printed URL.
    """
    import os

    from ..web.server import check_bind, serve

    if token is not None:
        raise PushgenError("--token would show the write token to every user of this machine "
                           "(`ps`); set PUSHGEN_TOKEN or use --token-file FILE instead")
    check_bind(host, port, allow_remote=allow_remote)
    secret = os.environ.get("PUSHGEN_TOKEN") or None
    if token_file is not None:
        try:
            secret = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise PushgenError(f"{token_file}: cannot read the token file "
                               f"({getattr(exc, 'strerror', None) or exc})") from None
    _open(db).close()  # a clear error now rather than on the first request
    serve(db, host, port, secret, allow_remote=allow_remote)


__all__ = ["review", "print_draft", "print_campaign_report", "edit_form",
           "parse_edit_form"]
