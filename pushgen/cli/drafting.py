"""`pushgen draft` and `pushgen templates`: write the copy for a campaign."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..campaign import DraftReport, LLMOptions, draft_campaign, dry_run
from ..campaign_batch import BatchRun, batch_settings, draft_campaign_batch
from ..config import LLMPrice, config_from_json, demo_sender_fields, load_campaign_config
from ..drafting_pool import MIN_PARALLEL_USERS
from ..errors import PushgenError
from ..store import drafts as draft_store
from ..store import open_store
from .app import DEFAULT_DB, DbOption, app, sub_app
from .output import JsonOption, print_json

console = Console()


def _money(value: float) -> str:
    return f"{value:,.4f}" if value < 1 else f"{value:,.2f}"


def llm_cost_rows(t: Table, *, calls: int, requests: int, cache_hits: int, saved: int,
                  tokens_prompt: int, tokens_completion: int, cost: float | None,
                  price_note: str, formats: dict[str, int]) -> None:
    """The LLM cost lines shared by the draft summary and ``stats --campaign``."""
    t.add_row("LLM requests sent (retries included)", f"{calls:,}")
    t.add_row("prompts needed / answered from cache", f"{requests:,} / {cache_hits:,}")
    if saved:
        t.add_row("calls saved by copy blocks", f"{saved:,}")
    t.add_row("LLM tokens prompt / completion", f"{tokens_prompt:,} / {tokens_completion:,}")
    t.add_row("estimated cost", f"{_money(cost)} {price_note}" if cost is not None
              else price_note)
    if formats:
        t.add_row("structured output", ", ".join(f"{k}: {v:,}" for k, v in formats.items()))


def print_draft_report(report: DraftReport, out: Console = console) -> None:
    """Summary table of one campaign run (LLM runs: cost and cache use, even when every
    answer came from the cache)."""
    t = Table(title=f"campaign {report.campaign} ({report.channel})", show_header=False)
    t.add_row("audience (consented, not yet drafted)", str(report.audience))
    if report.holdout:
        t.add_row("hold-out group (no draft, measured for uplift)", str(report.holdout))
    if len(report.split) > 1 or 0 in report.split:
        t.add_row("A/B split of the campaign (customers)", " · ".join(
            f"{'hold-out' if v == 0 else f'variant {v}'} {n:,}"
            for v, n in sorted(report.split.items())))
    t.add_row("drafts written", str(report.drafted))
    t.add_row("passed every check", str(report.passed))
    t.add_row("failed a check (see pushgen review list)", str(report.failed))
    if report.no_items:
        t.add_row("users with no eligible item (skipped)", str(report.no_items))
    if report.ranked_by_source:
        t.add_row("users ranked by", ", ".join(f"{k.replace('_', ' ')}: {v}"
                                               for k, v in report.ranked_by_source.items()))
    if report.rank_repeat:
        t.add_row("bought items", f"repeat = {report.rank_repeat}")
    if report.llm_mode:
        t.add_row("LLM", f"{report.llm_model}, {report.llm_mode} mode")
        price = report.llm_price
        note = (f"(at {price.input:g} / {price.output:g} per 1M tokens in / out)" if price
                else f"unknown: no price for {report.llm_model} in the config's "
                     "\\[llm.prices] (tokens only)")
        llm_cost_rows(t, calls=report.llm_calls, requests=report.llm_requests,
                      cache_hits=report.llm_cache_hits, saved=report.llm_saved_by_blocks,
                      tokens_prompt=report.tokens_prompt,
                      tokens_completion=report.tokens_completion, cost=report.llm_cost,
                      price_note=note, formats=report.llm_formats)
        t.add_row("drafts written by the LLM", str(report.llm_drafts))
        t.add_row("repaired after feedback", str(report.repaired))
        t.add_row("fell back to template", str(report.fallbacks))
        if report.llm_waiting:
            t.add_row("waiting for batch answers (not written yet)", str(report.llm_waiting))
    processes = f" ({report.workers} processes)" if report.workers > 1 else ""
    t.add_row("time", f"{report.seconds:.1f} s{processes}")
    out.print(t)
    for note in ([report.rank_note] if report.rank_note else []) + report.notes:
        out.print(f"[yellow]{escape(note)}[/]", soft_wrap=True)


def print_batch_run(run: BatchRun, campaign: str, out: Console = console) -> None:
    """What a --batch / --collect / --batch-file / --import-batch-results step did."""
    got = run.collected
    if got is not None and (got.answered or got.failed or got.already):
        out.print(f"Collected {got.answered:,} answer(s)"
                  + (f", {got.failed:,} failed (asked again in the next batch)"
                     if got.failed else "")
                  + (f", {got.already:,} already imported" if got.already else "")
                  + (f", {got.unknown:,} line(s) not of this campaign skipped"
                     if got.unknown else "") + ".")
    for row in run.running:
        out.print(f"Batch {row.batch_id} is {row.status} ({row.requests:,} requests). "
                  f"Nothing drafted yet: run [bold]pushgen draft -c {campaign} --collect[/] "
                  "again later.")
    if run.report is not None:
        print_draft_report(run.report, out)
    for row in run.submitted:
        out.print(f"Submitted batch [bold]{row.batch_id}[/] with {row.requests:,} request(s). "
                  f"Collect it with [bold]pushgen draft -c {campaign} --collect[/] (the "
                  "provider finishes within 24 h).")
    if run.written is not None:
        row = run.written
        out.print(f"Wrote {row.requests:,} request(s) to [bold]{row.path}[/]. Run them, e.g. "
                  f"[bold]vllm run-batch -i {row.path} -o results.jsonl --model {row.model}[/],"
                  f" then [bold]pushgen draft -c {campaign} --generator llm --model "
                  f"{row.model} --import-batch-results results.jsonl[/].")
    elif run.report is not None and not run.missing and not run.running:
        out.print("Every prompt has its answer: nothing left to send.")


def print_examples(db, campaign: str, limit: int = 2, out: Console = console,
                   since_id: int = 0) -> None:
    """Show a few drafts as the customer would read them (only drafts written after draft
    ``since_id``, so a rerun never shows old drafts as if they were new)."""
    camp = draft_store.get_campaign(db, campaign)
    if camp is None:
        return
    for d in draft_store.sample_drafts(db, camp["id"], limit, since_id=since_id):
        # Copy is data (catalog titles, names, model text): never read as rich markup.
        body = "\n".join(f"[bold]{k}[/]: {escape(v)}" for k, v in d["content"].items()
                         if k not in ("html",))
        mark = "[green]passed[/]" if d["passed"] else "[red]failed a check[/]"
        out.print(Panel(body, title=f"draft {d['id']} · user {escape(d['user'])} · {d['locale']} · "
                        f"{d['generator']} · {mark}", expand=False))


@app.command()
def draft(
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="Campaign name.")],
    channel: Annotated[Optional[str], typer.Option(
        help="sms, push or email (default: the config file's, else sms).")] = None,
    generator: Annotated[str, typer.Option(help="template or llm.")] = "template",
    variants: Annotated[int, typer.Option(min=1, help="A/B variants: each customer is assigned "
                                                "one at random (stored, reproducible) and gets "
                                                "only that one; variant n leads with the n-th "
                                                "recommended item. [ab] in --config sets "
                                                "weights, a hold-out share, random-pick or "
                                                "template variants.")] = 1,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="Campaign TOML: voice, sender, limits, audience, rank rules, "
                         "LLM prices.")] = None,
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
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="OPENAI_API_KEY", show_default=False,
        help="API key of the endpoint (prefer the OPENAI_API_KEY variable: a key on the "
             "command line is visible to other local users in `ps`).")] = None,
    llm_mode: Annotated[str, typer.Option(
        "--llm-mode", help="blocks: the model writes reusable copy blocks per item, locale "
                           "and segment, never sees a name (calls grow with the catalog, not "
                           "the customers); per-user: one prompt per customer.")] = "blocks",
    prompt_dir: Annotated[Optional[Path], typer.Option(
        "--prompt-dir", help="Folder of your own LLM prompts; overrides the bundled ones by "
                             "file name (see prompts/README.md).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="LLM requests in flight.")] = 8,
    timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds per LLM request, whole answer included (not per read).")] = 30.0,
    max_failures: Annotated[int, typer.Option(
        "--max-failures", min=1, help="Stop the run after this many consecutive failed LLM "
                                      "requests (a dead or broken endpoint).")] = 10,
    batch: Annotated[bool, typer.Option(
        "--batch", help="LLM: send the prompts as an OpenAI Batch (Files + Batches API) and "
                        "return at once; rerun (or --collect) to collect and draft.")] = False,
    collect: Annotated[bool, typer.Option(
        "--collect", help="Collect the campaign's batch: poll, download answers, draft "
                          "everyone answered, send what is still missing. Safe to repeat.")] = False,
    batch_file: Annotated[Optional[Path], typer.Option(
        "--batch-file", help="LLM: write the prompts to this JSONL file (OpenAI batch format, "
                             "e.g. for `vllm run-batch`) instead of calling.")] = None,
    import_results: Annotated[Optional[Path], typer.Option(
        "--import-batch-results", help="Read a batch results JSONL (vLLM run-batch output "
                                       "or OpenAI output file), then draft.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, show_default="one per CPU",
        help="Processes drafting template copy: worker processes render and check while "
             "this one ranks and writes (1: everything in this process). Audiences under "
             f"{MIN_PARALLEL_USERS:,} users use one process unless you give this.")] = None,
    dry: Annotated[bool, typer.Option("--dry-run", help="LLM: print prompts, the number of "
                                                         "requests and a token estimate; call "
                                                         "nothing (no endpoint needed).")] = False,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Draft a campaign: audience -> rank -> write copy -> check -> store for review.

    Only users who consented to the channel are drafted. Interrupted runs resume where they
    stopped; a finished campaign is left alone unless --regenerate.

    Examples:

      pushgen draft --campaign spring --channel sms

      pushgen draft -c spring --channel email --config spring.toml

      pushgen draft -c spring --channel push --generator llm --model llama3 --base-url http://127.0.0.1:8080/v1

      pushgen draft -c spring --channel email --generator llm --model gpt-4o-mini --batch

      pushgen draft -c spring --collect
    """
    if not campaign.strip():
        raise PushgenError("a campaign needs a name (--campaign NAME)")
    if channel is not None and channel not in ("sms", "push", "email"):
        raise PushgenError(f"--channel must be sms, push or email, not {channel!r}")
    if generator not in ("template", "llm"):
        raise PushgenError(f"--generator must be template or llm, not {generator!r}")
    if llm_mode not in ("blocks", "per-user"):
        raise PushgenError(f"--llm-mode must be blocks or per-user, not {llm_mode!r}")
    actions = [name for name, on in (("submit", batch), ("collect", collect),
                                     ("file", batch_file is not None),
                                     ("import", import_results is not None)) if on]
    if len(actions) > 1:
        raise PushgenError("use one of --batch, --collect, --batch-file, "
                           "--import-batch-results at a time")
    if actions and dry:
        raise PushgenError("--dry-run calls nothing; drop the batch option to see the plan")
    if actions or dry:
        generator = "llm" if collect or generator == "template" and actions else generator
    store = open_store(db, create=False)
    saved = batch_settings(store, campaign) if collect else None
    if collect and saved is None:
        raise PushgenError(f"campaign {campaign!r} has no batch to collect: start one with "
                           "--generator llm --batch")
    if saved is not None and saved["kind"] == "file":
        raise PushgenError(f"campaign {campaign!r} was written to a batch file: run it, then "
                           "read the answers back with --import-batch-results FILE")
    if saved is not None:
        model = model or saved["model"]
        base_url = base_url or saved["base_url"]
        if llm_mode == "blocks" and saved["mode"] != llm_mode:
            llm_mode = saved["mode"]
    if config is None and saved is not None:
        cfg = config_from_json(saved["config"], name=campaign, channel=channel)
        if saved["price"] and model:
            cfg.llm.prices[model] = LLMPrice(*saved["price"])
    else:
        cfg = load_campaign_config(config, name=campaign, channel=channel)
    if template:
        cfg.settings.template = template
    if limit is not None:
        cfg.audience.limit = limit
    llm = None
    if generator == "llm" or dry:
        if not model and not dry:
            raise PushgenError("--generator llm needs --model (or PUSHGEN_MODEL)")
        llm = LLMOptions(model=model or "unset", base_url=base_url, api_key=api_key,
                         timeout=timeout, concurrency=concurrency, mode=llm_mode,
                         max_failures=max_failures,
                         prompt_dirs=[prompt_dir] if prompt_dir else None)
    out = Console(stderr=True) if as_json else console
    if workers is not None and generator == "llm":
        out.print("[yellow]note:[/] --workers applies to template drafting; LLM drafting runs "
                  "in this process (its calls run concurrently, --concurrency)")
    demo = demo_sender_fields(cfg.settings)
    if demo and saved is None:      # after every argument check: a note, not an error's prelude
        out.print(f"[yellow]note:[/] the demo shop's sender is still in use "
                  f"({', '.join(demo)}; {'no --config' if config is None else config}): set "
                  "\\[sender] in the campaign config before real sends (export refuses it "
                  "without --allow-demo-sender).")
    template_dirs = [template_dir] if template_dir else None
    if dry:
        assert llm is not None
        plan = dry_run(store, campaign, cfg, llm=llm, variants=variants,
                       template_dirs=template_dirs)
        if as_json:
            print_json({"dry_run": True, **dataclasses.asdict(plan)})
            return
        for i, messages in enumerate(plan.sample_prompts, 1):
            for m in messages:
                console.print(Panel(Text(m["content"]), title=f"prompt {i} · {m['role']}",
                                    expand=False))
        cost = (f"; estimated cost {_money(plan.est_cost)}" if plan.est_cost is not None
                else "")
        split = f" in {variants} variants" if variants > 1 else ""
        console.print(f"{plan.mode} mode: {plan.audience:,} customers{split} (one draft each) "
                      f"= {plan.drafts:,} drafts need {plan.requests:,} prompt(s), "
                      f"{plan.cached:,} already cached; estimated {plan.est_prompt_tokens:,} "
                      f"prompt + {plan.est_completion_tokens:,} completion tokens{cost}. "
                      "Nothing was called.")
        return
    first_new = draft_store.last_draft_id(store)
    with Progress(TextColumn("drafting {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=out,
                  transient=True) as bar:
        task = bar.add_task(campaign, total=None)
        common = dict(variants=variants, regenerate=regenerate, template_dirs=template_dirs,
                      on_audience=lambda n: bar.update(task, total=n),
                      progress=lambda n: bar.advance(task, n))
        if actions:
            assert llm is not None
            run = draft_campaign_batch(store, campaign, cfg, llm=llm, action=actions[0],
                                       path=batch_file or import_results, **common)
            report = run.report
        else:
            report = draft_campaign(store, campaign, cfg, generator=generator, llm=llm,
                                    workers=workers, **common)
    if as_json:
        print_json({"report": report, "batch": run if actions else None})
        return
    if actions:
        print_batch_run(run, campaign)
    else:
        print_draft_report(report)
    if report is not None and report.empty_reason and not actions:
        console.print(f"[yellow]Nothing to draft:[/] {report.empty_reason}.")
    if report is not None and report.drafted:
        print_examples(store, campaign, since_id=first_new)


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
    campaign: Annotated[str, typer.Option(help="Campaign whose unsubscribe link to show "
                                               "(nothing is stored either way).")] = "preview",
    config: Annotated[Optional[Path], typer.Option("--config")] = None,
    template_dir: Annotated[Optional[Path], typer.Option()] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Render a template for one real user with fresh recommendations, and check it.

    The customer is ranked in memory with the config's [rank] rules; nothing is written.

    Example: pushgen templates preview default --user u0001 --channel email
    """
    from ..preview import preview_message

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
