"""What LLM drafting cost, per run and per campaign (``llm_runs``).

A run's row is written when it starts and updated after every committed batch, so an
interrupted run still shows what it spent. Cache hits are counted, not dropped: a fully
cached rerun is a row with 0 calls and its hits.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from . import dumps, loads, now_iso

_COUNTERS = ("drafts", "requests", "cache_hits", "calls", "saved_by_blocks", "repaired",
             "fallbacks", "tokens_prompt", "tokens_completion")


def start_run(db: Database, campaign_id: int, *, mode: str, via: str, model: str,
              endpoint: str, price_input: float | None, price_output: float | None) -> int:
    """A new run row; returns its id."""
    now = now_iso()
    with db.conn:
        cur = db.execute(
            "INSERT INTO llm_runs (campaign_id, mode, via, model, endpoint, price_input, "
            "price_output, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [campaign_id, mode, via, model, endpoint, price_input, price_output, now, now])
    return int(cur.lastrowid)


def update_run(db: Database, run_id: int, *, formats: dict[str, int] | None = None,
               **counts: int) -> None:
    """Set the run's counters (totals so far, not increments)."""
    unknown = set(counts) - set(_COUNTERS)
    if unknown:
        raise ValueError(f"unknown counters {sorted(unknown)}")
    sets = ", ".join(f"{k} = ?" for k in counts)
    params: list[Any] = [int(v) for v in counts.values()]
    if formats is not None:
        sets += (", " if sets else "") + "formats = ?"
        params.append(dumps(formats))
    with db.conn:
        db.execute(f"UPDATE llm_runs SET {sets}{', ' if sets else ''}updated_at = ? WHERE id = ?",
                   params + [now_iso(), run_id])


def campaign_totals(db: Database, campaign_id: int) -> dict[str, Any] | None:
    """Sums over every LLM run of a campaign, with the estimated cost (None when a run's
    model had no price); None when the campaign never used the LLM."""
    rows = db.execute(
        f"SELECT model, mode, via, price_input, price_output, formats, {', '.join(_COUNTERS)} "
        "FROM llm_runs WHERE campaign_id = ? ORDER BY id", [campaign_id]).fetchall()
    if not rows:
        return None
    totals: dict[str, Any] = {k: 0 for k in _COUNTERS}
    cost: float | None = 0.0
    formats: dict[str, int] = {}
    models, unpriced = [], []
    for model, mode, via, p_in, p_out, fmts, *counts in rows:
        values = dict(zip(_COUNTERS, counts))
        for k, v in values.items():
            totals[k] += v
        for f, n in (loads(fmts, {}) or {}).items():
            formats[f] = formats.get(f, 0) + n
        if model not in models:
            models.append(model)
        if p_in is None or p_out is None:
            if values["tokens_prompt"] or values["tokens_completion"]:
                unpriced.append(model)
        elif cost is not None:
            cost += (values["tokens_prompt"] * p_in + values["tokens_completion"] * p_out) / 1e6
    if unpriced:
        cost = None
    return {**totals, "runs": len(rows), "models": models, "formats": formats,
            "estimated_cost": cost, "unpriced_models": sorted(set(unpriced)),
            "modes": sorted({r[1] for r in rows})}


__all__ = ["start_run", "update_run", "campaign_totals"]
