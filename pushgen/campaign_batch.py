"""Drafting a campaign through a batch endpoint (OpenAI Batch API, or a JSONL file for
vLLM ``run-batch``) instead of live calls: submit, collect, draft, submit what is missing.

The drafting itself is ``campaign.draft_campaign`` with an offline LLM generator: every
customer whose answers are all in the cache is drafted, the others wait for a later run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from .campaign import LLM_BATCH, DraftReport, LLMOptions, Progress, draft_campaign
from .config import CampaignConfig
from .errors import PushgenError
from .store import drafts as store


@dataclass
class BatchRun:
    """What one batch drafting command did (``draft_campaign_batch``)."""

    report: DraftReport | None     # the drafting pass; None while a batch is still running
    running: list[Any]             # store.llm_batches.BatchRow still in progress
    submitted: list[Any]           # batches submitted by this call
    written: Any = None            # --batch-file: the file's batch row
    collected: Any = None          # generate.batch.Collected: answers brought in
    missing: int = 0               # prompts still without an answer after this call


BATCH_ACTIONS = ("submit", "collect", "file", "import")


def draft_campaign_batch(db: Database, name: str, config: CampaignConfig, *,
                         llm: LLMOptions, action: str, path: Any = None, variants: int = 1,
                         regenerate: bool = False, template_dirs: list | None = None,
                         progress: Progress | None = None,
                         on_audience: Callable[[int], None] | None = None,
                         batch_size: int = LLM_BATCH) -> BatchRun:
    """Draft ``name`` through a batch endpoint instead of live calls; safe to rerun.

    ``action``: ``submit`` (``--batch``) and ``collect`` (``--collect``) poll the campaign's
    open batches, bring finished results into the cache, draft every customer whose answers
    are all there (zero live calls), and send what is still missing (repairs included) as a
    new batch through the Files and Batches API. ``file`` (``--batch-file``) writes the
    missing requests to ``path`` instead (OpenAI batch format, e.g. for ``vllm
    run-batch``); ``import`` (``--import-batch-results``) reads a results file back, then
    drafts. Drafts still waiting for an answer are not written: a later run writes them.
    """
    from .generate import batch as batches
    from .generate.llm_client import normalize_endpoint
    from .store import llm_batches

    if action not in BATCH_ACTIONS:
        raise PushgenError(f"unknown batch action {action!r}")
    if action in ("file", "import") and not path:
        raise PushgenError(f"the {action} step needs a file path")
    camp = store.get_campaign(db, name)
    if action in ("collect", "import") and camp is None:
        raise PushgenError(f"campaign {name!r} has no batch yet: start it with --batch or "
                           "--batch-file")
    api = None
    if action in ("submit", "collect"):
        api = batches.BatchAPI(model=llm.model, base_url=llm.base_url, api_key=llm.api_key,
                               timeout=llm.timeout)
        endpoint = api.endpoint
    else:
        endpoint = normalize_endpoint(llm.base_url) if llm.base_url else batches.FILE_ENDPOINT
    gen = llm.generator(db, offline=True, endpoint=endpoint)
    try:
        collected = batches.Collected()
        if camp is not None and api is not None:
            running, collected = batches.collect(db, api, gen, camp["id"], name)
            if running:
                return BatchRun(None, running, [], collected=collected)
        if action == "import":
            assert camp is not None
            collected = batches.import_file(db, gen, camp["id"], path)
        if camp is not None:
            gen.failed_elsewhere = llm_batches.failed_often(db, camp["id"], batches.TRIES)
        report = draft_campaign(db, name, config, generator="llm", llm=llm, llm_client=gen,
                                llm_via="batch" if api is not None else "file",
                                variants=variants, regenerate=regenerate,
                                template_dirs=template_dirs, progress=progress,
                                on_audience=on_audience, batch_size=batch_size)
        price = config.llm.price(gen.model)
        settings = {"temperature": llm.temperature, "timeout": llm.timeout,
                    "price": [price.input, price.output] if price else None}
        submitted: list[Any] = []
        written = None
        camp = store.get_campaign(db, name)
        if len(gen.missing) and camp is not None:
            if api is not None:
                submitted = batches.submit(db, api, gen, camp["id"], name, gen.missing,
                                           mode=llm.mode, settings=settings)
            elif action == "file":
                written = batches.write_file(db, gen, camp["id"], gen.missing, path,
                                             mode=llm.mode, settings=settings)
        return BatchRun(report, [], submitted, written, collected, missing=len(gen.missing))
    finally:
        gen.close()
        if api is not None:
            api.close()


def batch_settings(db: Database, name: str) -> dict[str, Any] | None:
    """Model, endpoint, mode and settings of the campaign's latest batch (so ``--collect``
    needs no other option), or None."""
    from .generate.batch import FILE_ENDPOINT
    from .generate.llm_client import DEFAULT_ENDPOINT
    from .store import llm_batches

    camp = store.get_campaign(db, name)
    rows = llm_batches.rows(db, camp["id"]) if camp else []
    if not rows:
        return None
    row = rows[-1]
    base_url = None if row.endpoint in (DEFAULT_ENDPOINT, FILE_ENDPOINT) else row.endpoint
    return {"model": row.model, "base_url": base_url, "mode": row.mode, "kind": row.kind,
            "temperature": row.settings.get("temperature", 0.7),
            "timeout": row.settings.get("timeout", 30.0), "price": row.settings.get("price"),
            "config": camp["config"] if camp else {}}


__all__ = ["BatchRun", "BATCH_ACTIONS", "draft_campaign_batch", "batch_settings"]
