"""`pushgen draft` and `pushgen templates`: write the copy for a campaign."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..campaign import DraftReport, LLMOptions, draft_campaign, dry_run
from ..config import load_campaign_config
from ..errors import PushgenError
from ..store import drafts as draft_store
from ..store import open_store
from .app import DEFAULT_DB, DbOption, app, sub_app

console = Console()


def print_draft_report(report: DraftReport, out: Console = console) -> None:
    """Summary table of one campaign run."""
    t = Table(title=f"campaign {report.campaign} ({report.channel})", show_header=False)
    t.add_row("audience (consented, not yet drafted)", str(report.audience))
    t.add_row("drafts written", str(report.drafted))
    t.add_row("passed every check", str(report.passed))
    t.add_row("failed a check (see pushgen review list)", str(report.failed))
    if report.no_items:
        t.add_row("users with no eligible item (skipped)", str(report.no_items))
    if report.ranked_by_source:
        t.add_row("users ranked by", ", ".join(f"{k.replace('_', ' ')}: {v}"
                                               for k, v in report.ranked_by_source.items()))
    if report.llm_calls or report.tokens_prompt:
        t.add_row("LLM requests sent (retries included; cache hits cost none)",
                  str(report.llm_calls))
        t.add_row("tokens prompt / completion",
                  f"{report.tokens_prompt} / {report.tokens_completion}")
        t.add_row("repaired after feedback", str(report.repaired))
        t.add_row("fell back to template", str(report.fallbacks))
    t.add_row("time", f"{report.seconds:.1f} s")
    out.print(t)


def print_examples(db, campaign: str, limit: int = 2, out: Console = console) -> None:
    """Show a few drafts as the customer would read them."""
    camp = draft_store.get_campaign(db, campaign)
    if camp is None:
        return
    for d in draft_store.sample_drafts(db, camp["id"], limit):
        body = "\n".join(f"[bold]{k}[/]: {v}" for k, v in d["content"].items()
                         if k not in ("html",))
        mark = "[green]passed[/]" if d["passed"] else "[red]failed a check[/]"
        out.print(Panel(body, title=f"draft {d['id']} · user {d['user']} · {d['locale']} · "
                        f"{d['generator']} · {mark}", expand=False))


@app.command()
def draft(
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign name.")],
    channel: Annotated[Optional[str], typer.Option(
        help="sms, push or email (default: the config file's, else sms).")] = None,
    generator: Annotated[str, typer.Option(help="template or llm.")] = "template",
    variants: Annotated[int, typer.Option(min=1, help="Drafts per user (variant n leads with the "
                                                "n-th recommended item).")] = 1,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="Campaign TOML: voice, sender, limits, audience, rank rules.")] = None,
    template: Annotated[Optional[str], typer.Option(help="Template name (default: default).")] = None,
    template_dir: Annotated[Optional[Path], typer.Option(
        help="Folder of your own templates; overrides built-ins by name.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Draft for at most N users "
                                                             "(a trial run).")] = None,
    regenerate: Annotated[bool, typer.Option(
        help="Rewrite drafts that are still unreviewed (approved/rejected ones are kept).")] = False,
    model: Annotated[Optional[str], typer.Option(help="LLM model name.", envvar="PUSHGEN_MODEL")] = None,
    base_url: Annotated[Optional[str], typer.Option(
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.",
        envvar="OPENAI_BASE_URL")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="LLM requests in flight.")] = 8,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per LLM request.")] = 30.0,
    dry: Annotated[bool, typer.Option("--dry-run", help="LLM: print prompts and a token "
                                                         "estimate, call nothing.")] = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Draft a campaign: audience -> rank -> write copy -> check -> store for review.

    Only users who consented to the channel are drafted. Interrupted runs resume where they
    stopped; a finished campaign is left alone unless --regenerate.

    Examples:

      pushgen draft --campaign spring --channel sms

      pushgen draft -c spring --channel email --config spring.toml

      pushgen draft -c spring --channel push --generator llm --model llama3 --base-url http://127.0.0.1:8080/v1
    """
    if channel is not None and channel not in ("sms", "push", "email"):
        raise PushgenError(f"--channel must be sms, push or email, not {channel!r}")
    cfg = load_campaign_config(config, name=campaign, channel=channel)
    if config is None and cfg.settings.channel == "email":
        console.print("[yellow]note:[/] no --config: using the demo sender name and postal "
                      "address; set [sender] in a campaign config before real sends.")
    if template:
        cfg.settings.template = template
    if limit is not None:
        cfg.audience.limit = limit
    store = open_store(db, create=False)
    llm = None
    if generator == "llm":
        if not model:
            raise PushgenError("--generator llm needs --model (or PUSHGEN_MODEL)")
        llm = LLMOptions(model=model, base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY"),
                         timeout=timeout, concurrency=concurrency)
    if dry:
        if llm is None:
            raise PushgenError("--dry-run shows LLM prompts: add --generator llm --model NAME")
        plan = dry_run(store, campaign, cfg, llm=llm, variants=variants)
        for i, messages in enumerate(plan.sample_prompts, 1):
            for m in messages:
                console.print(Panel(m["content"], title=f"prompt {i} · {m['role']}",
                                    expand=False))
        console.print(f"audience {plan.audience} users x {variants} variant(s); estimated "
                      f"{plan.est_prompt_tokens:,} prompt + {plan.est_completion_tokens:,} "
                      f"completion tokens (before cache hits). Nothing was called.")
        return
    with Progress(TextColumn("drafting {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(campaign, total=None)
        report = draft_campaign(
            store, campaign, cfg, generator=generator, variants=variants,
            regenerate=regenerate, llm=llm,
            template_dirs=[template_dir] if template_dir else None,
            on_audience=lambda n: bar.update(task, total=n),
            progress=lambda n: bar.advance(task, n))
    print_draft_report(report)
    if report.empty_reason:
        console.print(f"[yellow]Nothing to draft:[/] {report.empty_reason}.")
    print_examples(store, campaign)


templates_app = sub_app("List and preview message templates.")
app.add_typer(templates_app, name="templates")


@templates_app.command("list")
def templates_list(
    template_dir: Annotated[Optional[Path], typer.Option(
        help="Folder of your own templates (overrides built-ins by name).")] = None,
) -> None:
    """List templates by channel, name and locale.

    Example: pushgen templates list
    """
    from ..generate.templates import list_templates

    t = Table("channel", "name", "locale", "version", "from")
    for info in list_templates([template_dir] if template_dir else None):
        t.add_row(info.channel, info.template, info.locale, info.version, info.origin)
    console.print(t)


@templates_app.command("preview")
def templates_preview(
    name: Annotated[str, typer.Argument(help="Template name, e.g. default.")],
    user: Annotated[str, typer.Option("--user", help="User external id.")],
    channel: Annotated[str, typer.Option(help="sms, push or email.")] = "sms",
    campaign: Annotated[str, typer.Option(help="Campaign whose recommendations to use "
                                               "(ranked now if the user has none).")] = "preview",
    config: Annotated[Optional[Path], typer.Option("--config")] = None,
    template_dir: Annotated[Optional[Path], typer.Option()] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Render a template for one real user with her real recommendations, and check it.

    Example: pushgen templates preview default --user u0001 --channel email
    """
    from ..campaign import preview_message

    if channel not in ("sms", "push", "email"):
        raise PushgenError(f"--channel must be sms, push or email, not {channel!r}")
    store = open_store(db, create=False)
    cfg = load_campaign_config(config, name=campaign, channel=channel)
    cfg.settings.template = name
    message, checks, ctx = preview_message(
        store, campaign, cfg, user, template_dirs=[template_dir] if template_dir else None)
    for k, v in message.fields.items():
        console.print(Panel(v, title=k, expand=False))
    for c in checks:
        mark = "[green]✓[/]" if c.ok else ("[yellow]![/]" if c.severity == "warning" else "[red]✗[/]")
        console.print(f"{mark} {c.name} {c.message}")
