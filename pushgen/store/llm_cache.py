"""The LLM answer cache and what pushgen remembers per endpoint.

One row per valid chat completion, keyed by ``cache_key(endpoint, prompt_hash)``: the same
prompt sent to another endpoint (another server with the same model name) is another
entry. Only answers that parsed into the fields the prompt asked for are stored, and never
one over ``MAX_CACHED_CHARS``. A rerun or a resumed campaign costs no new call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from . import dumps, now_iso

MAX_CACHED_CHARS = 100_000   # an answer this long is not marketing copy: never kept


@dataclass
class CachedResponse:
    key: str
    model: str
    content: str            # the raw assistant message content
    tokens_prompt: int
    tokens_completion: int
    created_at: str
    response_format: str | None = None
    source: str | None = None   # live | batch | import


def cache_key(endpoint: str, prompt_hash: str) -> str:
    """The cache key of one prompt (hash of model + messages + parameters) at one endpoint."""
    return hashlib.sha256(f"{endpoint}\x1f{prompt_hash}".encode("utf-8")).hexdigest()


_COLUMNS = ("key, model, response, tokens_prompt, tokens_completion, created_at, "
            "response_format, source")


def get(db: Database, key: str) -> CachedResponse | None:
    """The cached response for ``key``, or None."""
    row = db.execute(f"SELECT {_COLUMNS} FROM llm_cache WHERE key = ?", [key]).fetchone()
    return CachedResponse(*row) if row else None


def get_many(db: Database, keys: Sequence[str]) -> dict[str, CachedResponse]:
    """Cached responses for ``keys`` (those that exist)."""
    out: dict[str, CachedResponse] = {}
    keys = list(keys)
    for start in range(0, len(keys), 900):
        chunk = keys[start:start + 900]
        marks = ", ".join("?" for _ in chunk)
        for row in db.execute(f"SELECT {_COLUMNS} FROM llm_cache WHERE key IN ({marks})", chunk):
            out[row[0]] = CachedResponse(*row)
    return out


@dataclass
class NewAnswer:
    """One answer to store."""

    key: str
    model: str
    endpoint: str
    prompt_hash: str
    request: dict[str, Any]
    content: str
    tokens_prompt: int = 0
    tokens_completion: int = 0
    block_key: str | None = None
    response_format: str | None = None
    source: str = "live"


def insert_answers(db: Database, answers: Iterable[NewAnswer]) -> int:
    """Write answers inside the caller's transaction (answers over MAX_CACHED_CHARS are
    skipped); returns how many were written."""
    rows = [(a.key, a.model, dumps(a.request), a.content, a.tokens_prompt, a.tokens_completion,
             now_iso(), a.endpoint, a.block_key, a.prompt_hash, a.response_format, a.source)
            for a in answers if len(a.content) <= MAX_CACHED_CHARS]
    if rows:
        db.conn.executemany(
            "INSERT OR REPLACE INTO llm_cache (key, model, request, response, tokens_prompt,"
            " tokens_completion, created_at, endpoint, block_key, prompt_hash, "
            "response_format, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def put_many(db: Database, answers: Iterable[NewAnswer]) -> int:
    """Store (or replace) answers in one transaction; answers over MAX_CACHED_CHARS are
    skipped. Returns how many were stored."""
    with db.conn:
        return insert_answers(db, answers)


def put(db: Database, key: str, *, model: str, request: dict[str, Any], content: str,
        tokens_prompt: int = 0, tokens_completion: int = 0, endpoint: str | None = None,
        prompt_hash: str | None = None, block_key: str | None = None,
        response_format: str | None = None, source: str = "live") -> bool:
    """Store (or replace) one answer; False when it was too large to keep."""
    return put_many(db, [NewAnswer(key=key, model=model, endpoint=endpoint or "",
                                   prompt_hash=prompt_hash or "", request=request,
                                   content=content, tokens_prompt=tokens_prompt,
                                   tokens_completion=tokens_completion, block_key=block_key,
                                   response_format=response_format, source=source)]) == 1


def endpoint_format(db: Database, endpoint: str, model: str) -> str | None:
    """The structured-output kind this endpoint accepted for this model, if known."""
    row = db.execute("SELECT response_format FROM llm_endpoints WHERE endpoint = ? AND model = ?",
                     [endpoint, model]).fetchone()
    return row[0] if row else None


def remember_format(db: Database, endpoint: str, model: str, response_format: str) -> None:
    with db.conn:
        db.execute("INSERT INTO llm_endpoints (endpoint, model, response_format, updated_at) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT(endpoint, model) DO UPDATE SET "
                   "response_format = excluded.response_format, "
                   "updated_at = excluded.updated_at",
                   [endpoint, model, response_format, now_iso()])


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
