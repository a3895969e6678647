"""One campaign run end to end: audience -> rank -> generate -> check -> store.

Work is done in batches of users, each committed in one transaction, so an interrupted run
(Ctrl-C, a crash, a dead endpoint) keeps every finished batch and a rerun continues with
the users that have no draft yet. Nothing is ever drafted twice for (campaign, user, variant).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from .config import CampaignConfig
from .errors import PushgenError
from .messages import CheckResult, ItemFacts, Message, MessageContext, checks_pass
from .store import drafts as store

Progress = Callable[[int], None]


@dataclass
class LLMOptions:
    """Where and how to call the LLM (any OpenAI-compatible endpoint)."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = 30.0
    concurrency: int = 8
    max_attempts: int = 4
    temperature: float = 0.7


@dataclass
class DraftReport:
    """What one ``draft_campaign`` call did."""

    campaign: str
    channel: str
    audience: int = 0
    drafted: int = 0
    passed: int = 0
    failed: int = 0
    no_items: int = 0
    fallbacks: int = 0
    repaired: int = 0
    tokens_prompt: int = 0
    tokens_completion: int = 0
    llm_calls: int = 0
    ranked_by_source: dict[str, int] = field(default_factory=dict)
    empty_reason: str = ""        # why the audience is empty, when it is
    seconds: float = 0.0


@dataclass
class DryRun:
    """What an LLM run would send, without calling anything."""

    audience: int
    sample_prompts: list[list[dict[str, str]]]
    est_prompt_tokens: int
    est_completion_tokens: int


def _campaign_json(config: CampaignConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config.settings)
    data["audience"] = dataclasses.asdict(config.audience)
    data["audience"].pop("limit")   # a per-run option (trial runs), not part of the campaign
    data["rank"] = dict(config.rank)
    return data


def _audience(db: Database, name: str, config: CampaignConfig, *, variants: int,
              include_drafted: bool = False) -> tuple[int, list[int]]:
    """Save the campaign and return its id and the users it may draft for."""
    settings, aud = config.settings, config.audience
    if not name.strip():
        raise PushgenError("a campaign needs a name (--campaign NAME)")
    campaign_id = store.save_campaign(db, name, settings.channel, _campaign_json(config),
                                      allow_config_change=include_drafted)
    user_ids = store.audience_user_ids(
        db, channel=settings.channel, campaign_id=campaign_id, variants=variants,
        profile=aud.profile, locales=aud.locales, active_within_days=aud.active_within_days,
        frequency_cap=aud.frequency_cap, frequency_days=aud.frequency_days,
        include_drafted=include_drafted, limit=aud.limit)
    return campaign_id, user_ids


def _why_empty(db: Database, campaign_id: int, config: CampaignConfig, variants: int) -> str:
    """Which step of the audience left nobody: consent, each filter, or earlier drafts."""
    channel, aud = config.settings.channel, config.audience
    steps: list[tuple[str, dict[str, Any]]] = [
        (f"consent to {channel} (and a contact for it)", {}),
        ("the profile filter", {"profile": aud.profile}),
        ("the locale filter", {"locales": aud.locales}),
        (f"activity in the last {aud.active_within_days} days",
         {"active_within_days": aud.active_within_days}),
        (f"the frequency cap ({aud.frequency_cap} per {aud.frequency_days} days)",
         {"frequency_cap": aud.frequency_cap, "frequency_days": aud.frequency_days}),
    ]
    kwargs: dict[str, Any] = {}
    for label, extra in steps:
        kwargs.update(extra)
        n = len(store.audience_user_ids(db, channel=channel, campaign_id=campaign_id,
                                        variants=variants, include_drafted=True, **kwargs))
        if n == 0:
            return f"no user is left after {label}"
    return "every user of the audience already has a draft of this campaign " \
           "(use --regenerate to redraft the unreviewed ones)"


def _rank(db: Database, name: str, config: CampaignConfig, user_ids: list[int],
          variants: int = 1):
    """Rank ``user_ids`` with the campaign's rules; enough items for every variant."""
    from .ranking import RankRules, rank_campaign

    rules = RankRules(**{k: v for k, v in config.rank.items() if k != "top_k"})
    k = int(config.rank.get("top_k", max(config.settings.items_per_message, variants)))
    return rank_campaign(db, name, k=k, rules=rules, user_ids=user_ids)


def _contexts(db: Database, campaign_id: int, config: CampaignConfig, user_ids: list[int],
              variants: int, skip: dict[int, set[int]]) -> tuple[list[MessageContext], int]:
    """Message contexts for one batch; variant v leads with the v-th recommendation."""
    from .ranking import recommendations_for

    recs = recommendations_for(db, campaign_id, user_ids)
    people = store.recipients(db, user_ids)
    k = config.settings.items_per_message
    out: list[MessageContext] = []
    no_items = 0
    for uid in user_ids:
        items: list[ItemFacts] = recs.get(uid, [])
        if not items:
            no_items += 1
            continue
        for v in range(1, variants + 1):
            if v in skip.get(uid, set()):
                continue
            shift = (v - 1) % len(items)
            chosen = (items[shift:] + items[:shift])[:k]
            out.append(MessageContext(recipient=people[uid], items=chosen,
                                      settings=config.settings, variant=v))
    return out, no_items


def _row(campaign_id: int, ctx: MessageContext, message: Message, checks: list[CheckResult],
         **provenance: Any) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id, "user_id": ctx.recipient.user_id,
        "channel": message.channel, "variant": ctx.variant, "locale": ctx.recipient.locale,
        "content": message.fields, "items": [i.to_dict() for i in ctx.items],
        "checks": [c.to_dict() for c in checks], "passed": checks_pass(checks), **provenance,
    }


class _Checker:
    """Runs channel rules + fact guards, with the catalog indexed once per run."""

    def __init__(self, db: Database) -> None:
        from .generate.guards import store_guard

        self._guard = store_guard(db)

    def __call__(self, message: Message, ctx: MessageContext, forbidden: list[str]
                 ) -> list[CheckResult]:
        return self._guard.check(message, ctx, forbidden_values=forbidden)


def _template_rows(campaign_id: int, contexts: list[MessageContext], check: _Checker,
                   forbidden: dict[int, list[str]], template_dirs: list | None) -> list[dict]:
    from .generate.templates import render

    rows = []
    for ctx in contexts:
        rendered = render(ctx, template=ctx.settings.template, template_dirs=template_dirs)
        checks = check(rendered.message, ctx, forbidden.get(ctx.recipient.user_id, []))
        rows.append(_row(campaign_id, ctx, rendered.message, checks, generator="template",
                         template_name=f"{rendered.template_name}@{rendered.template_version}"))
    return rows


def _llm_rows(campaign_id: int, contexts: list[MessageContext], check: _Checker,
              forbidden: dict[int, list[str]], llm: Any, report: DraftReport,
              template_dirs: list | None) -> list[dict]:
    """LLM drafts; a failing draft gets one repair with its failures, then the template."""
    from .generate.templates import render

    results = llm.generate_many(contexts)
    if results and all(r.message is None for r in results):
        # A dead endpoint or wrong setup: stop rather than quietly fall back for everyone.
        raise PushgenError(f"the LLM answered none of {len(results)} request(s) of this batch "
                           f"({results[0].error}); nothing of this batch was saved")
    checked: list[tuple[Any, list[CheckResult]]] = []
    retry: dict[int, list[str]] = {}
    for i, (ctx, res) in enumerate(zip(contexts, results)):
        checks = (check(res.message, ctx, forbidden.get(ctx.recipient.user_id, []))
                  if res.message is not None else [])
        checked.append((res, checks))
        if res.message is None or not checks_pass(checks):
            retry[i] = ([f"{c.name}: {c.message}" for c in checks if not c.ok]
                        or [res.error or "no valid answer"])
    if retry:
        idx = sorted(retry)
        repaired = llm.generate_many([contexts[i] for i in idx],
                                     feedback={n: retry[i] for n, i in enumerate(idx)})
        for i, res in zip(idx, repaired):
            first_res = checked[i][0]
            res.tokens_prompt += first_res.tokens_prompt
            res.tokens_completion += first_res.tokens_completion
            ctx = contexts[i]
            checks = (check(res.message, ctx, forbidden.get(ctx.recipient.user_id, []))
                      if res.message is not None else [])
            if res.message is not None and checks_pass(checks):
                report.repaired += 1
            checked[i] = (res, checks)
    rows = []
    for i, (ctx, (res, checks)) in enumerate(zip(contexts, checked)):
        prov = {"model": res.model, "prompt_hash": res.prompt_hash,
                "tokens_prompt": res.tokens_prompt, "tokens_completion": res.tokens_completion}
        report.tokens_prompt += res.tokens_prompt
        report.tokens_completion += res.tokens_completion
        if res.message is not None and checks_pass(checks):
            rows.append(_row(campaign_id, ctx, res.message, checks, generator="llm", **prov))
            continue
        why = retry.get(i, [])
        failures = [c.name for c in checks if not c.ok] or [res.error or "no valid answer"]
        rendered = render(ctx, template=ctx.settings.template, template_dirs=template_dirs)
        fb_checks = check(rendered.message, ctx, forbidden.get(ctx.recipient.user_id, []))
        report.fallbacks += 1
        rows.append(_row(
            campaign_id, ctx, rendered.message, fb_checks, generator="llm_fallback_template",
            template_name=f"{rendered.template_name}@{rendered.template_version}",
            flag=("LLM draft failed after one repair (" + "; ".join(failures)[:300]
                  + "); template copy used instead. First failures: "
                  + "; ".join(why)[:300]), **prov))
    return rows


def draft_campaign(
    db: Database,
    name: str,
    config: CampaignConfig,
    *,
    generator: str = "template",
    variants: int = 1,
    regenerate: bool = False,
    llm: LLMOptions | None = None,
    batch_size: int = 2000,
    progress: Progress | None = None,
    on_audience: Callable[[int], None] | None = None,
    llm_client: Any = None,
    template_dirs: list | None = None,
) -> DraftReport:
    """Draft ``name`` for every user of its audience who has no draft yet.

    ``generator`` is ``template`` or ``llm`` (then ``llm`` says which endpoint; the template
    is the fallback). ``template_dirs`` are folders of your own templates that override the
    bundled ones by name. Rerunning a finished campaign changes nothing; ``regenerate``
    rewrites drafts not yet reviewed. ``progress(n)`` is called after each committed batch.
    """
    if generator not in ("template", "llm"):
        raise PushgenError(f"unknown generator {generator!r}: use template or llm")
    if variants < 1:
        raise PushgenError("--variants must be at least 1")
    started = time.perf_counter()
    settings = config.settings
    report = DraftReport(campaign=name, channel=settings.channel)
    if generator == "llm" and llm_client is None:   # fail fast on a bad endpoint setup
        if llm is None:
            raise PushgenError("--generator llm needs --model (and --base-url for a "
                               "non-OpenAI endpoint)")
        from .generate.llm import LLMGenerator

        llm_client = LLMGenerator(db, **dataclasses.asdict(llm))
    campaign_id, user_ids = _audience(db, name, config, variants=variants,
                                      include_drafted=regenerate)
    report.audience = len(user_ids)
    if on_audience:
        on_audience(len(user_ids))
    if not user_ids:
        report.empty_reason = _why_empty(db, campaign_id, config, variants)
        report.seconds = time.perf_counter() - started
        return report
    report.ranked_by_source = dict(_rank(db, name, config, user_ids, variants).by_source)

    check = _Checker(db)
    for start in range(0, len(user_ids), batch_size):
        batch = user_ids[start:start + batch_size]
        skip = {} if regenerate else store.existing_variants(db, campaign_id, batch)
        contexts, no_items = _contexts(db, campaign_id, config, batch, variants, skip)
        report.no_items += no_items
        forbidden = store.contact_values(db, batch)
        if generator == "template":
            rows = _template_rows(campaign_id, contexts, check, forbidden, template_dirs)
        else:
            rows = _llm_rows(campaign_id, contexts, check, forbidden, llm_client, report,
                             template_dirs)
        report.drafted += store.write_drafts(db, rows, regenerate=regenerate)
        report.passed += sum(1 for r in rows if r["passed"])
        report.failed += sum(1 for r in rows if not r["passed"])
        if progress:
            progress(len(batch))
    if llm_client is not None:
        report.llm_calls = getattr(llm_client, "calls", 0)
    report.seconds = time.perf_counter() - started
    return report


def dry_run(db: Database, name: str, config: CampaignConfig, *, llm: LLMOptions,
            variants: int = 1, samples: int = 2) -> DryRun:
    """Rank the audience and build the LLM prompts, but call nothing and write no draft."""
    from .generate.llm import LLMGenerator

    settings = config.settings
    campaign_id, user_ids = _audience(db, name, config, variants=variants)
    if not user_ids:
        return DryRun(0, [], 0, 0)
    sample_ids = user_ids[:max(samples, 1) * 20]
    _rank(db, name, config, sample_ids)
    contexts, _ = _contexts(db, campaign_id, config, sample_ids, 1, {})
    gen = LLMGenerator(db, **dataclasses.asdict(llm))
    prompts = gen.dry_run(contexts)
    per_prompt = sum(len(m["content"]) for p in prompts for m in p) / max(len(prompts), 1) / 4
    per_answer = {"sms": 60, "push": 50, "email": 450}[settings.channel]
    n = len(user_ids) * variants
    return DryRun(audience=len(user_ids), sample_prompts=prompts[:samples],
                  est_prompt_tokens=int(per_prompt * n), est_completion_tokens=per_answer * n)


def preview_message(db: Database, name: str, config: CampaignConfig, user_external_id: str,
                    *, template_dirs: list | None = None
                    ) -> tuple[Message, list[CheckResult], MessageContext]:
    """Render ``config.settings.template`` for one user with fresh recommendations, checked."""
    from .generate.templates import render

    uid = store.user_id(db, user_external_id)
    if uid is None:
        raise PushgenError(f"no user with external id {user_external_id!r}")
    existing = store.get_campaign(db, name)
    campaign_id = (existing["id"] if existing else
                   store.save_campaign(db, name, config.settings.channel, _campaign_json(config)))
    _rank(db, name, config, [uid])
    contexts, _ = _contexts(db, campaign_id, config, [uid], 1, {})
    if not contexts:
        raise PushgenError(f"user {user_external_id!r} has no eligible item to recommend")
    ctx = contexts[0]
    rendered = render(ctx, template=config.settings.template, template_dirs=template_dirs)
    checks = _Checker(db)(rendered.message, ctx, store.contact_values(db, [uid]).get(uid, []))
    return rendered.message, checks, ctx
