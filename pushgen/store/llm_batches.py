"""LLM batches of a campaign (OpenAI Batch API or a JSONL file for vLLM ``run-batch``) and
the requests in each, so any later process can collect them, any number of times."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from . import dumps, loads, now_iso

TERMINAL = ("completed", "expired", "failed", "cancelled")


@dataclass
class BatchRow:
    id: int
    campaign_id: int
    kind: str                 # api | file
    submission: str
    endpoint: str
    model: str
    mode: str
    settings: dict[str, Any]
    batch_id: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    path: str | None
    status: str
    collected: bool
    requests: int
    answered: int
    failed: int
    error: str | None
    created_at: str


_COLS = ("id, campaign_id, kind, submission, endpoint, model, mode, settings, batch_id, "
         "input_file_id, output_file_id, error_file_id, path, status, collected, requests, "
         "answered, failed, error, created_at")


def _row(r: tuple) -> BatchRow:
    values = list(r)
    values[7] = loads(values[7], {})
    values[14] = bool(values[14])
    return BatchRow(*values)


def create(db: Database, campaign_id: int, *, kind: str, submission: str, endpoint: str,
           model: str, mode: str, settings: dict[str, Any],
           requests: Iterable[tuple[str, str | None, str, dict[str, Any]]],
           path: str | None = None, status: str = "preparing") -> int:
    """A batch row and its requests ``(custom_id, block_key, prompt_hash, request)``, in one
    transaction; returns the row id."""
    now = now_iso()
    with db.conn:
        cur = db.execute(
            "INSERT INTO llm_batches (campaign_id, kind, submission, endpoint, model, mode, "
            "settings, path, status, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [campaign_id, kind, submission, endpoint, model, mode, dumps(settings), path,
             status, now, now])
        row_id = int(cur.lastrowid)
        before = db.conn.total_changes
        db.conn.executemany(
            "INSERT OR IGNORE INTO llm_batch_requests (batch, custom_id, block_key, "
            "prompt_hash, request) VALUES (?, ?, ?, ?, ?)",
            ((row_id, cid, bkey, phash, dumps(req)) for cid, bkey, phash, req in requests))
        n = db.conn.total_changes - before
        db.execute("UPDATE llm_batches SET requests = ? WHERE id = ?", [n, row_id])
    return row_id


def update(db: Database, row_id: int, **values: Any) -> None:
    """Set columns of a batch row (``settings`` as a dict)."""
    allowed = {"batch_id", "input_file_id", "output_file_id", "error_file_id", "status",
               "collected", "error", "path"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"unknown batch columns {sorted(unknown)}")
    sets = ", ".join(f"{k} = ?" for k in values)
    with db.conn:
        db.execute(f"UPDATE llm_batches SET {sets}, updated_at = ? WHERE id = ?",
                   [*values.values(), now_iso(), row_id])


def get(db: Database, row_id: int) -> BatchRow:
    return _row(db.execute(f"SELECT {_COLS} FROM llm_batches WHERE id = ?", [row_id]).fetchone())


def rows(db: Database, campaign_id: int, *, open_only: bool = False,
         kind: str | None = None) -> list[BatchRow]:
    """The campaign's batches, oldest first (``open_only``: not yet collected)."""
    where, params = ["campaign_id = ?"], [campaign_id]
    if open_only:
        where.append("collected = 0")
    if kind:
        where.append("kind = ?")
        params.append(kind)
    return [_row(r) for r in db.execute(
        f"SELECT {_COLS} FROM llm_batches WHERE {' AND '.join(where)} ORDER BY id", params)]


def requests_of(db: Database, row_id: int) -> Iterator[tuple[str, str | None, str, dict]]:
    """(custom_id, block_key, prompt_hash, request) of one batch, in order."""
    for cid, bkey, phash, req in db.execute(
            "SELECT custom_id, block_key, prompt_hash, request FROM llm_batch_requests "
            "WHERE batch = ? ORDER BY rowid", [row_id]):
        yield cid, bkey, phash, loads(req, {})


def lookup(db: Database, campaign_id: int, custom_ids: Iterable[str]
           ) -> dict[str, tuple[int, str | None, str, dict, str]]:
    """custom_id -> (batch row, block_key, prompt_hash, request, status) for requests of
    this campaign's batches: the newest unanswered one, else an answered one."""
    out: dict[str, tuple[int, str | None, str, dict, str]] = {}
    ids = list(dict.fromkeys(custom_ids))
    for start in range(0, len(ids), 900):
        chunk = ids[start:start + 900]
        marks = ", ".join("?" for _ in chunk)
        for row, cid, bkey, phash, req, status in db.execute(
                f"SELECT r.batch, r.custom_id, r.block_key, r.prompt_hash, r.request, r.status "
                f"FROM llm_batch_requests r JOIN llm_batches b ON b.id = r.batch "
                f"WHERE b.campaign_id = ? AND r.custom_id IN ({marks}) "
                f"ORDER BY r.status = 'answered', r.batch DESC",
                [campaign_id, *chunk]):
            out.setdefault(cid, (row, bkey, phash, loads(req, {}), status))
    return out


def pending_count(db: Database, row_id: int) -> int:
    """Requests of one batch still without a result."""
    return db.execute("SELECT count(*) FROM llm_batch_requests WHERE batch = ? AND "
                      "status = 'pending'", [row_id]).fetchone()[0]


def record_results(db: Database, answers: Iterable[Any],
                   marks: Iterable[tuple[int, str, str, str | None]]) -> int:
    """In one transaction: cache the answers (``llm_cache.NewAnswer``) and set each
    (batch row, custom_id) request to its status (answered | failed | invalid) and error.
    Returns how many answers were cached."""
    from .llm_cache import insert_answers

    with db.conn:
        n = insert_answers(db, answers)
        db.conn.executemany(
            "UPDATE llm_batch_requests SET status = ?, error = ? WHERE batch = ? AND "
            "custom_id = ?", ((status, err, row, cid) for row, cid, status, err in marks))
    return n


def close(db: Database, row_id: int, *, status: str, error: str | None = None) -> None:
    """Mark a batch collected: its still-pending requests failed (with ``error``), and its
    counts brought up to date."""
    with db.conn:
        db.execute("UPDATE llm_batch_requests SET status = 'failed', error = ? "
                   "WHERE batch = ? AND status = 'pending'",
                   [error or f"no result in the batch's files (batch {status})", row_id])
        answered, failed = db.execute(
            "SELECT coalesce(sum(status = 'answered'), 0), coalesce(sum(status != "
            "'answered'), 0) FROM llm_batch_requests WHERE batch = ?", [row_id]).fetchone()
        db.execute("UPDATE llm_batches SET collected = 1, status = ?, answered = ?, failed = ?, "
                   "error = coalesce(?, error), updated_at = ? WHERE id = ?",
                   [status, answered, failed, error, now_iso(), row_id])


def failed_often(db: Database, campaign_id: int, tries: int) -> dict[str, tuple[str, str]]:
    """custom_id -> (kind, last error) of requests that failed in ``tries`` or more collected
    batches and were never answered: asking a batch again would not help. Kind is
    ``output`` when the model answered with invalid JSON (a repair may help), else ``http``."""
    out: dict[str, tuple[str, str]] = {}
    for cid, n, invalid, err in db.execute(
            """SELECT r.custom_id, count(*), max(r.status = 'invalid'), max(r.error)
               FROM llm_batch_requests r JOIN llm_batches b ON b.id = r.batch
               WHERE b.campaign_id = ? AND b.collected = 1
                 AND r.status IN ('failed', 'invalid')
                 AND r.custom_id NOT IN (
                     SELECT custom_id FROM llm_batch_requests r2
                     JOIN llm_batches b2 ON b2.id = r2.batch
                     WHERE b2.campaign_id = ? AND r2.status = 'answered')
               GROUP BY r.custom_id HAVING count(*) >= ?""",
            [campaign_id, campaign_id, tries]):
        out[cid] = ("output" if invalid else "http",
                    f"no answer after {n} batch(es): {err or 'failed'}")
    return out


def replace_open_files(db: Database, campaign_id: int) -> int:
    """Mark the campaign's file batches not yet imported as replaced by a new file (their
    requests stay pending: a later import of the old file still counts)."""
    with db.conn:
        cur = db.execute("UPDATE llm_batches SET collected = 1, status = 'replaced', "
                         "updated_at = ? WHERE campaign_id = ? AND kind = 'file' "
                         "AND collected = 0", [now_iso(), campaign_id])
    return cur.rowcount


def in_flight(db: Database, campaign_id: int) -> set[str]:
    """custom_ids of requests in batches not yet collected (never submitted twice)."""
    return {r[0] for r in db.execute(
        "SELECT r.custom_id FROM llm_batch_requests r JOIN llm_batches b ON b.id = r.batch "
        "WHERE b.campaign_id = ? AND b.collected = 0 AND r.status = 'pending'",
        [campaign_id])}


__all__ = ["BatchRow", "TERMINAL", "create", "update", "get", "rows", "requests_of",
           "lookup", "pending_count", "record_results", "close", "failed_often", "in_flight", "replace_open_files"]
