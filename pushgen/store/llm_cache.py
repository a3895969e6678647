"""The LLM response cache: one row per successful chat completion, keyed by its prompt hash.

A rerun of a campaign with the same model, prompts and parameters costs no new calls.
Only responses that parsed into a valid message are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from . import dumps, now_iso


@dataclass
class CachedResponse:
    key: str
    model: str
    content: str            # the raw assistant message content
    tokens_prompt: int
    tokens_completion: int
    created_at: str


def get(db: Database, key: str) -> CachedResponse | None:
    """The cached response for ``key``, or None."""
    row = db.execute(
        "SELECT key, model, response, tokens_prompt, tokens_completion, created_at "
        "FROM llm_cache WHERE key = ?", [key]).fetchone()
    return CachedResponse(*row) if row else None


def put(db: Database, key: str, *, model: str, request: dict[str, Any], content: str,
        tokens_prompt: int = 0, tokens_completion: int = 0) -> None:
    """Store (or replace) the response for ``key``; ``request`` is kept as JSON for audit."""
    with db.conn:
        db.execute(
            "INSERT OR REPLACE INTO llm_cache "
            "(key, model, request, response, tokens_prompt, tokens_completion, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [key, model, dumps(request), content, tokens_prompt, tokens_completion, now_iso()])


def stats(db: Database) -> dict[str, Any]:
    """Entries and tokens in the cache, in total and per model."""
    rows = db.execute(
        "SELECT model, count(*), coalesce(sum(tokens_prompt), 0), "
        "coalesce(sum(tokens_completion), 0) FROM llm_cache GROUP BY model ORDER BY model"
    ).fetchall()
    models = {m: {"entries": n, "tokens_prompt": tp, "tokens_completion": tc}
              for m, n, tp, tc in rows}
    return {
        "entries": sum(v["entries"] for v in models.values()),
        "tokens_prompt": sum(v["tokens_prompt"] for v in models.values()),
        "tokens_completion": sum(v["tokens_completion"] for v in models.values()),
        "models": models,
    }


def clear(db: Database, model: str | None = None) -> int:
    """Delete cached responses (of one model, or all); returns how many were deleted."""
    with db.conn:
        if model is None:
            cur = db.execute("DELETE FROM llm_cache")
        else:
            cur = db.execute("DELETE FROM llm_cache WHERE model = ?", [model])
    return cur.rowcount
