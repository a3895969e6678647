"""One campaign run end to end: audience -> rank -> generate -> check -> store.

Work is done in batches of users, each committed in one transaction, so an interrupted run
(Ctrl-C, a crash, a dead endpoint) keeps every finished batch and a rerun continues with
the users that have no draft yet. Nothing is ever drafted twice for (campaign, user, variant).
"""

from __future__ import annotations

import dataclasses
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from .assign import Split, assign_audience, random_pick, split_for
from .config import CampaignConfig
from .drafting_pool import Checker, plan_workers, template_rows
from .drafting_pool import draft_row as _row
from .errors import PushgenError
from .messages import ItemFacts, MessageContext
from .signing import recipient_unsubscribe_url, shop_secret
from .store import assignments
from .store import drafts as store

Progress = Callable[[int], None]

# Users per batch (one transaction each). Template batches are smaller: with a drafting
# worker, two of them are in flight while the next is ranked (peak memory of a 100k-user
# run, workers included: 282 MB with 1,000, 311 MB with 2,000, at the same speed).
TEMPLATE_BATCH = 1000
LLM_BATCH = 2000


@dataclass
class LLMOptions:
    """Where and how to call the LLM (any OpenAI-compatible endpoint).

    ``mode``: ``blocks`` (reusable copy blocks, no names in prompts; the default) or
    ``per-user`` (one prompt per customer with the profile fields the campaign allows).
    ``max_failures``: consecutive failed requests that stop the run (circuit breaker).
    """

    model: str
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = 30.0
    concurrency: int = 8
    max_attempts: int = 4
    temperature: float = 0.7
    mode: str = "blocks"
    max_failures: int = 10
    max_response_bytes: int = 1_000_000
    prompt_dirs: list | None = None

    def generator(self, db: Database, *, offline: bool = False, endpoint: str | None = None):
        """The LLMGenerator for these options (``offline``: never calls, needs no key)."""
        from .generate.blocks import MODES
        from .generate.llm import LLMGenerator

        if self.mode not in MODES:
            raise PushgenError(f"unknown LLM mode {self.mode!r}: use blocks or per-user")
        kwargs = {k: v for k, v in dataclasses.asdict(self).items() if k != "mode"}
        return LLMGenerator(db, offline=offline, endpoint=endpoint, **kwargs)


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
    llm_calls: int = 0            # HTTP requests sent (retries included)
    ranked_by_source: dict[str, int] = field(default_factory=dict)
    rank_note: str = ""           # the model's line when popularity ranks as well as it
    rank_repeat: str = ""         # buy-again mode used: never | due | always
    empty_reason: str = ""        # why the audience is empty, when it is
    holdout: int = 0              # audience members in the hold-out group (no draft)
    split: dict[int, int] = field(default_factory=dict)  # campaign's customers per variant
                                                          # (0 = hold-out), all runs
    seconds: float = 0.0
    workers: int = 1              # processes that rendered and checked the drafts
    notes: list[str] = field(default_factory=list)   # anything else the user should know
    # LLM runs only
    llm_mode: str = ""            # blocks | per-user
    llm_model: str = ""
    llm_drafts: int = 0           # drafts whose copy the model wrote
    llm_requests: int = 0         # distinct prompts the drafts needed (repairs included)
    llm_cache_hits: int = 0       # ... answered from the cache (no call)
    llm_saved_by_blocks: int = 0  # drafts minus distinct prompts: calls blocks made unneeded
    llm_formats: dict[str, int] = field(default_factory=dict)   # json_schema / json_object
    llm_waiting: int = 0          # batch drafting: drafts held back until their answers arrive
    llm_price: Any = None         # config.LLMPrice of the model, None when unknown
    llm_cost: float | None = None # estimated, from the [llm] price table
    llm_seconds: float = 0.0      # wall time spent waiting on live requests


@dataclass
class DryRun:
    """What an LLM run would send, without calling anything."""

    audience: int
    sample_prompts: list[list[dict[str, str]]]
    est_prompt_tokens: int
    est_completion_tokens: int
    mode: str = "blocks"
    drafts: int = 0           # drafts the run would write
    requests: int = 0         # distinct prompts they need (blocks: exact; per-user: one each)
    cached: int = 0           # ... already answered in the cache
    price: Any = None         # config.LLMPrice, None when the model has none
    est_cost: float | None = None


def _campaign_json(config: CampaignConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config.settings)
    data["audience"] = dataclasses.asdict(config.audience)
    data["audience"].pop("limit")   # a per-run option (trial runs), not part of the campaign
    data["rank"] = dict(config.rank)
    data.update(config.extra_json())
    return data


def _audience(db: Database, name: str, config: CampaignConfig, *, split: Split,
              include_drafted: bool = False, persist: bool = True) -> tuple[int, list[int]]:
    """Save the campaign, assign every eligible customer one variant or the hold-out group
    (stored and reproducible: ``assign``), and return the campaign id and the customers it
    drafts for: one draft each, of their own variant; none for the hold-out."""
    settings, aud = config.settings, config.audience
    if not name.strip():
        raise PushgenError("a campaign needs a name (--campaign NAME)")
    campaign_id = store.save_campaign(db, name, settings.channel, _campaign_json(config),
                                      allow_config_change=include_drafted)
    user_ids = store.audience_user_ids(
        db, channel=settings.channel, campaign_id=campaign_id, variants=1,
        profile=aud.profile, locales=aud.locales, active_within_days=aud.active_within_days,
        frequency_cap=aud.frequency_cap, frequency_days=aud.frequency_days,
        include_drafted=include_drafted, limit=aud.limit)
    return campaign_id, assign_audience(db, campaign_id, name, user_ids, split,
                                        persist=persist)


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
          variants: int = 1, ranker: Any = None, keep: bool = False):
    """Rank ``user_ids`` with the campaign's rules; enough items for every variant
    (``ranker``: a ``ranking.load_ranker`` result reused across batches; ``keep``: the
    summary holds the stored lists)."""
    from .ranking import rank_campaign

    rules, k = config.rank_rules(variants)
    return rank_campaign(db, name, k=k, rules=rules, user_ids=user_ids, ranker=ranker,
                         keep=keep)


class _BlasLimit:
    """One BLAS thread while a batch is ranked: a batch's matrix product is small, and
    OpenBLAS's extra threads spin, costing a core that drafting workers need (measured:
    ranking 16k users in batches of 1,000 took twice the CPU time with two BLAS threads).
    The ranker still runs its own threads, one per block of users."""

    def __init__(self) -> None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a dependency, but optional for the ranker
            self._controller = None
        else:
            self._controller = ThreadpoolController()
        self._limit: Any = None

    def __enter__(self) -> None:
        if self._controller is not None:
            self._limit = self._controller.limit(limits=1, user_api="blas")

    def __exit__(self, *exc: Any) -> None:
        if self._limit is not None:
            self._limit.restore_original_limits()
            self._limit = None


class _BatchRanking:
    """Ranks the audience one batch at a time, so memory does not grow with its size: the
    model and the catalog are loaded once, each batch reads only its users' profiles and
    events. A batch whose users all have no eligible item left is not an error while a
    later batch may still have some (the run fails, as one ranking would, only when no
    batch had any)."""

    def __init__(self, db: Database, name: str, config: CampaignConfig, variants: int) -> None:
        from .ranking import load_ranker

        self.db, self.name, self.config, self.variants = db, name, config, variants
        self.ranker = load_ranker(db)
        self._blas = _BlasLimit()
        self.by_source: dict[str, int] = {}
        self.note, self.repeat = "", ""
        self.empty_error: PushgenError | None = None   # set while no batch had an item
        self.ranked_any = False
        self.lists: dict[int, list[ItemFacts]] = {}    # the last batch's, as stored

    def __call__(self, batch: list[int]) -> bool:
        """Rank ``batch`` (its lists in ``lists``); False when none of its users has an
        eligible item."""
        from .ranking.rules import NoEligibleItems

        self.lists = {}
        try:
            with self._blas:
                summary = _rank(self.db, self.name, self.config, batch, self.variants,
                                self.ranker, keep=True)
        except NoEligibleItems as exc:
            self.empty_error = self.empty_error or exc
            return False     # nothing was written for these users: none of them is drafted
        self.lists = summary.lists or {}
        self.ranked_any = True
        for source, n in summary.by_source.items():
            self.by_source[source] = self.by_source.get(source, 0) + n
        self.note, self.repeat = summary.note, summary.repeat
        return True

    def finish(self) -> None:
        """The ranking's own error when no batch had any eligible item."""
        if not self.ranked_any and self.empty_error is not None:
            raise self.empty_error


def _random_pool(db: Database, config: CampaignConfig) -> list[ItemFacts]:
    """Every item the campaign's [rank] rules allow (active, in stock, categories, prices),
    for variants that pick at random: the control arm that measures what ranking adds."""
    from .ranking.rules import item_facts, item_mask
    from .store.ranking import item_rows

    rules, _ = config.rank_rules()
    items = item_rows(db)
    mask = item_mask(items, rules)
    reason = "Random pick (control variant: measures what the ranking adds)"
    return [item_facts(it, 0.0, reason) for it, ok in zip(items, mask) if ok]


def _contexts(db: Database, campaign_id: int, config: CampaignConfig, user_ids: list[int],
              split: Split, pool: Callable[[], list[ItemFacts]] | None = None,
              secret: bytes | None = None, recs: dict[int, list[ItemFacts]] | None = None
              ) -> tuple[list[MessageContext], int]:
    """Message contexts for one batch: each customer's own variant only. A "ranked" variant
    v leads with the v-th recommendation; a "random" one shows random eligible items
    (``pool()``, the same for every customer, drawn reproducibly per customer). ``secret``:
    the shop's (``signing.shop_secret``), read once per run by the caller. ``recs``: the
    batch's stored recommendations when the caller has them (else they are read back)."""
    from .ranking import recommendations_for

    if recs is None:
        recs = recommendations_for(db, campaign_id, user_ids)
    people = store.recipients(db, user_ids)
    secret = secret if secret is not None else shop_secret(db)
    k = config.settings.items_per_message
    name = config.settings.name
    out: list[MessageContext] = []
    no_items = 0
    for uid in user_ids:
        items: list[ItemFacts] = recs.get(uid, [])
        if not items:   # also for the random arm, so both arms hold the same customers
            no_items += 1
            continue
        v = split.variant_of(uid)
        person = people[uid]
        if split.pick(v) == "random":
            if pool is None:
                raise PushgenError("internal: a random-pick variant needs the item pool")
            chosen = random_pick(pool(), k, name, person.external_id, split.seed)
        else:
            shift = (v - 1) % len(items)
            chosen = (items[shift:] + items[:shift])[:k]
        template = split.template(v)
        settings = (config.settings if template is None
                    else dataclasses.replace(config.settings, template=template))
        out.append(MessageContext(
            recipient=person, items=chosen, settings=settings, variant=v,
            unsubscribe_url=recipient_unsubscribe_url(
                secret, settings, campaign_id, uid, person.external_id)))
    return out, no_items


class _Pool:
    """The random arm's item pool, read from the catalog once per run and only if needed."""

    def __init__(self, db: Database, config: CampaignConfig) -> None:
        self.db, self.config, self.items = db, config, None

    def __call__(self) -> list[ItemFacts]:
        if self.items is None:
            self.items = _random_pool(self.db, self.config)
            if not self.items:
                raise PushgenError("a variant picks at random ([ab] picks), but the [rank] "
                                   "rules leave no eligible item to pick from")
        return self.items


def _checker(db: Database) -> Checker:
    """Channel rules + fact guards over the store's catalog (indexed once per run)."""
    from .generate.guards import store_guard

    return Checker(store_guard(db))


def _llm_rows(campaign_id: int, contexts: list[MessageContext], check: Checker,
              forbidden: dict[int, list[str]], drafter: Any) -> list[dict]:
    """LLM drafts (``generate.llm_drafts``): assembled, checked, repaired once when a model
    can fix the failure, else the template; drafts still waiting for a batch are skipped."""
    drafted = drafter.draft(contexts, check, forbidden)
    return [_row(campaign_id, d.ctx, d.message, d.checks, **d.provenance)
            for d in drafted if d is not None]


class _LLMRun:
    """The LLM side of one ``draft_campaign`` call: the drafter, and its cost written to
    ``llm_runs`` after every batch and to the report at the end."""

    def __init__(self, db: Database, config: CampaignConfig, llm: LLMOptions | None,
                 client: Any, template_dirs: list | None, via: str) -> None:
        from .generate.llm_drafts import LLMDrafter

        if client is None:
            if llm is None:
                raise PushgenError("--generator llm needs --model (and --base-url for a "
                                   "non-OpenAI endpoint)")
            client = llm.generator(db)
        self.db, self.gen, self.via = db, client, via
        self.mode = llm.mode if llm is not None else "blocks"
        self.drafter = LLMDrafter(client, self.mode, template_dirs=template_dirs)
        self.price = config.llm.price(client.model)
        self.run_id: int | None = None
        # Live counters are per generator life (a bench reuses one); batch results imported
        # by this generator all belong to this run.
        self._base = (client.live_calls, client.requests, client.cache_hits,
                      client.live_seconds, *client.live_tokens)

    def start(self, campaign_id: int) -> None:
        from .store import llm_usage

        self.run_id = llm_usage.start_run(
            self.db, campaign_id, mode=self.mode, via=self.via, model=self.gen.model,
            endpoint=self.gen.endpoint, price_input=self.price.input if self.price else None,
            price_output=self.price.output if self.price else None)

    def rows(self, campaign_id: int, contexts: list[MessageContext], check: Checker,
             forbidden: dict[int, list[str]]) -> list[dict]:
        return _llm_rows(campaign_id, contexts, check, forbidden, self.drafter)

    def report(self, report: DraftReport) -> None:
        """Copy the run's numbers into ``report`` and ``llm_runs``."""
        from .store import llm_usage

        st, gen = self.drafter.stats, self.gen
        calls0, requests0, hits0, seconds0, tp0, tc0 = self._base
        report.llm_mode, report.llm_model = self.mode, gen.model
        imported, itp, itc = gen.imported_counts
        report.llm_calls = gen.live_calls - calls0 + imported
        report.llm_requests = gen.requests - requests0
        report.llm_cache_hits = gen.cache_hits - hits0
        report.llm_seconds = gen.live_seconds - seconds0
        report.llm_drafts, report.repaired = st.llm_drafts, st.repaired
        report.fallbacks, report.llm_waiting = st.fallbacks, st.waiting
        tp, tc = gen.live_tokens
        report.tokens_prompt, report.tokens_completion = tp - tp0 + itp, tc - tc0 + itc
        first_round = report.llm_requests - st.repair_requests
        report.llm_saved_by_blocks = (max(st.passed_through - st.waiting - first_round, 0)
                                      if self.mode == "blocks" else 0)
        report.llm_formats = dict(gen.formats)
        report.llm_price = self.price
        report.llm_cost = (self.price.cost(report.tokens_prompt, report.tokens_completion)
                           if self.price else None)
        if self.run_id is not None:
            llm_usage.update_run(
                self.db, self.run_id, formats=report.llm_formats,
                drafts=report.llm_drafts, requests=report.llm_requests,
                cache_hits=report.llm_cache_hits, calls=report.llm_calls,
                saved_by_blocks=report.llm_saved_by_blocks, repaired=report.repaired,
                fallbacks=report.fallbacks, tokens_prompt=report.tokens_prompt,
                tokens_completion=report.tokens_completion)


def draft_campaign(
    db: Database,
    name: str,
    config: CampaignConfig,
    *,
    generator: str = "template",
    variants: int = 1,
    regenerate: bool = False,
    llm: LLMOptions | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    on_audience: Callable[[int], None] | None = None,
    llm_client: Any = None,
    template_dirs: list | None = None,
    llm_via: str = "live",
    workers: int | None = None,
) -> DraftReport:
    """Draft ``name`` for every user of its audience who has no draft yet.

    ``generator`` is ``template`` or ``llm`` (then ``llm`` says which endpoint and mode, or
    ``llm_client`` is a ready ``LLMGenerator``; the template is the fallback; batch
    endpoints: ``campaign_batch.draft_campaign_batch``). ``template_dirs`` are folders of
    your own templates that override the bundled ones by name. Rerunning a finished
    campaign changes nothing; ``regenerate`` rewrites drafts not yet reviewed.
    ``progress(n)`` is called after each committed batch.

    A/B: every eligible customer is assigned one variant (``variants`` drawn evenly, or the
    config's ``[ab] weights``) or, with ``[ab] holdout``, the hold-out group; the draw is
    stored and reproducible (``pushgen.assign``) and each customer gets a draft of their own
    variant only (hold-out: none).

    The audience is ranked, drafted and committed ``batch_size`` users at a time (default
    1,000 for templates, 2,000 for the LLM), each batch in one transaction, so memory stays
    flat however large the audience is. Template drafts are rendered and checked by
    ``workers`` processes (None: one per CPU, but one for small audiences; 1: all in this
    process): ``workers - 1`` worker processes, and this one while it is not ranking or
    writing, with the same drafts committed in the same order as one process
    (``drafting_pool``). LLM drafting stays in this process.
    """
    if generator not in ("template", "llm"):
        raise PushgenError(f"unknown generator {generator!r}: use template or llm")
    if variants < 1:
        raise PushgenError("--variants must be at least 1")
    started = time.perf_counter()
    settings = config.settings
    report = DraftReport(campaign=name, channel=settings.channel)
    # --- LLM hook: the generator is chosen (and its endpoint set up) before any ranking ---
    llm_run = (_LLMRun(db, config, llm, llm_client, template_dirs, llm_via)
               if generator == "llm" else None)
    split = split_for(config.ab, variants)
    campaign_id, audience = _audience(db, name, config, split=split,
                                      include_drafted=regenerate)
    user_ids = array("q", audience)     # 8 bytes a customer, not 36 (an int in a list)
    del audience
    report.audience, report.holdout = len(user_ids), split.held_out
    report.split = assignments.split(db, campaign_id)
    if on_audience:
        on_audience(len(user_ids))
    if not user_ids:
        report.empty_reason = (
            f"all {split.held_out} customers of the audience are in the hold-out group"
            if split.held_out else _why_empty(db, campaign_id, config, 1))
        report.seconds = time.perf_counter() - started
        return report
    if batch_size is None:
        batch_size = TEMPLATE_BATCH if llm_run is None else LLM_BATCH
    n_workers = 1 if llm_run is not None else plan_workers(workers, len(user_ids), batch_size)
    pool = _template_pool(db, n_workers, template_dirs) if n_workers > 1 else None
    random_pool, secret = _Pool(db, config), shop_secret(db)
    report.workers = n_workers if pool is not None else 1

    def commit(rows: list[dict], users: int) -> None:
        report.drafted += store.write_drafts(db, rows, regenerate=regenerate)
        report.passed += sum(1 for r in rows if r["passed"])
        report.failed += sum(1 for r in rows if not r["passed"])
        if llm_run is not None:
            llm_run.report(report)
        if progress:
            progress(users)

    try:
        ranking = _BatchRanking(db, name, config, split.variants)
        check = _checker(db) if pool is None else pool.check
        for start in range(0, len(user_ids), batch_size):
            batch = user_ids[start:start + batch_size].tolist()
            contexts: list[MessageContext] = []
            forbidden: dict[int, list[str]] = {}
            if ranking(batch):
                if llm_run is not None and llm_run.run_id is None:
                    llm_run.start(campaign_id)
                contexts, no_items = _contexts(db, campaign_id, config, batch, split,
                                               random_pool, secret, ranking.lists)
                report.no_items += no_items
                forbidden = store.contact_values(db, batch)
            else:
                report.no_items += len(batch)
            if pool is not None:      # commit finished batches, oldest first
                pool.submit(campaign_id, contexts, forbidden, tag=len(batch))
                while (done := pool.next_done(wait=pool.full)) is not None:
                    commit(*done)
            elif llm_run is None:
                commit(template_rows(campaign_id, contexts, check, forbidden, template_dirs),
                       len(batch))
            else:
                commit(llm_run.rows(campaign_id, contexts, check, forbidden), len(batch))
        while pool is not None and (done := pool.next_done(wait=True)) is not None:
            commit(*done)
    finally:
        if pool is not None:
            pool.close()
            report.notes += pool.notes
    ranking.finish()
    report.ranked_by_source = ranking.by_source
    report.rank_note, report.rank_repeat = ranking.note, ranking.repeat
    report.seconds = time.perf_counter() - started
    return report


def _template_pool(db: Database, workers: int, template_dirs: list | None):
    """``workers - 1`` worker processes (this one drafts too while it would wait), started
    before ranking so that their start-up overlaps it."""
    from .drafting_pool import TemplatePool
    from .store.catalog import catalog_titles

    try:
        return TemplatePool(workers - 1, catalog_titles(db), template_dirs, _checker(db))
    except OSError:          # no way to start a Python here (an embedded interpreter...)
        return None


# Typical answer sizes (tokens) for the estimate: per-user message, lead block, item block.
_ANSWER_TOKENS = {"user": {"sms": 60, "push": 50, "email": 250},
                  "lead": {"sms": 50, "push": 45, "email": 110}, "item": {"email": 45}}


def dry_run(db: Database, name: str, config: CampaignConfig, *, llm: LLMOptions,
            variants: int = 1, samples: int = 2, template_dirs: list | None = None,
            batch_size: int = LLM_BATCH) -> DryRun:
    """Rank the audience and build the LLM prompts, but call nothing and write no draft.

    Needs no endpoint or key. Blocks mode plans every draft (exact number of distinct
    prompts and cache hits); per-user mode builds a sample and extrapolates."""
    from .generate.blocks import Planner
    from .generate.llm import estimate_tokens
    from .store import llm_cache

    settings = config.settings
    gen = llm.generator(db, offline=True)
    planner = Planner(gen.prompts, llm.mode, template_dirs)
    split = split_for(config.ab, variants)
    campaign_id, user_ids = _audience(db, name, config, split=split, persist=False)
    price = config.llm.price(gen.model)
    if not user_ids:
        return DryRun(0, [], 0, 0, mode=llm.mode, price=price)
    if llm.mode == "per-user":
        user_ids_ranked = user_ids[:max(samples, 1) * 20]
    else:
        user_ids_ranked = user_ids
    ranking = _BatchRanking(db, name, config, split.variants)
    requests: dict[str, Any] = {}
    drafts = 0
    random_pool, secret = _Pool(db, config), shop_secret(db)
    for start in range(0, len(user_ids_ranked), batch_size):
        batch = user_ids_ranked[start:start + batch_size]
        if not ranking(batch):
            continue
        contexts, _ = _contexts(db, campaign_id, config, batch, split, random_pool, secret)
        drafts += len(contexts)
        for ctx in contexts:
            for slot in planner.slots(ctx):
                requests.setdefault(gen.key(slot.request), slot)
    ranking.finish()
    hits = set(llm_cache.get_many(db, list(requests)))
    todo = [slot for key, slot in requests.items() if key not in hits]
    prompt_tokens = sum(estimate_tokens(s.request.messages) for s in todo)
    completion = sum(_ANSWER_TOKENS[s.role].get(settings.channel, 50) for s in todo)
    if llm.mode == "per-user" and drafts:      # a sample: scale to the audience
        scale = len(user_ids) / drafts
        n_requests, n_cached = int(len(requests) * scale), int(len(hits) * scale)
        prompt_tokens, completion = int(prompt_tokens * scale), int(completion * scale)
        drafts = len(user_ids)
    else:
        n_requests, n_cached = len(requests), len(hits)
    sample = [s.request.messages for s in list(requests.values())[:max(samples, 1)]]
    return DryRun(audience=len(user_ids), sample_prompts=sample,
                  est_prompt_tokens=prompt_tokens, est_completion_tokens=completion,
                  mode=llm.mode, drafts=drafts, requests=n_requests, cached=n_cached,
                  price=price, est_cost=price.cost(prompt_tokens, completion) if price else None)
