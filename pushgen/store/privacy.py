"""SQL of a customer's rights: everything held about one customer, and erasing it.

Erasure keeps the ``users`` row (so counts of past campaigns stay right) but empties every
personal field and marks it ``erased_at``; rows that only make sense for a person (events,
recommendations, consent history) are deleted; drafts and review history keep their ids,
status counts and timestamps with the copy replaced by a tombstone; LLM cache entries whose
prompt or answer contains any of the customer's identifying strings are deleted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from . import dumps, loads

# Tables (besides users) that hold rows of one customer, with the column naming them.
# Extend this when a table with per-customer rows is added.
PER_USER_TABLES: tuple[tuple[str, str], ...] = (
    ("events", "user_id"),
    ("recommendations", "user_id"),
    ("consent_events", "user_id"),
    ("outcomes", "user_id"),       # what the sending platform reported about their messages
    ("send_times", "user_id"),     # their planned send times (timezone, active hour)
)


def _dicts(db: Database, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = db.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def find_user(db: Database, external_id: str) -> dict[str, Any] | None:
    """The users row with ``external_id`` (an erased customer is not found)."""
    rows = _dicts(db, "SELECT * FROM users WHERE external_id = ? AND erased_at IS NULL",
                  [external_id])
    return rows[0] if rows else None


def _tables(db: Database) -> set[str]:
    return set(db.table_names())


def customer_rows(db: Database, user_id: int, needles: Sequence[str]) -> dict[str, Any]:
    """Every row that names or concerns ``user_id``, by table (JSON columns decoded)."""
    out: dict[str, Any] = {}
    have = _tables(db)
    for table, column in PER_USER_TABLES:
        if table in have:
            out[table] = _dicts(db, f"SELECT * FROM [{table}] WHERE [{column}] = ? ORDER BY rowid",
                                [user_id])
    drafts = _dicts(db, "SELECT d.*, c.name AS campaign FROM drafts d JOIN campaigns c "
                        "ON c.id = d.campaign_id WHERE d.user_id = ? ORDER BY d.id", [user_id])
    for d in drafts:
        for key in ("content", "items", "checks"):
            d[key] = loads(d[key], None)
    out["drafts"] = drafts
    events = _dicts(db, "SELECT r.* FROM review_events r JOIN drafts d ON d.id = r.draft_id "
                        "WHERE d.user_id = ? ORDER BY r.id", [user_id])
    for e in events:
        for key in ("before", "after"):
            e[key] = loads(e[key], None)
    out["review_events"] = events
    out["llm_cache"] = _rows_naming(db, "llm_cache",
                                    ("key", "model", "request", "response", "created_at"),
                                    ("request", "response"), needles)
    for row in out["llm_cache"]:
        row["request"] = loads(row["request"], None)
    return out


def _naming(needles: Sequence[str]) -> re.Pattern[str] | None:
    """Any of ``needles`` as a whole word: 'U1' is not inside 'U10', 'Lee' not inside
    'Fleet' (a side that is not a Latin letter or digit, e.g. a Chinese name, has no
    boundary to respect)."""
    parts = []
    for n in sorted(set(filter(None, needles)), key=len, reverse=True):
        pat = re.escape(n)
        if re.match(r"[A-Za-z0-9_]", n):
            pat = r"(?<![A-Za-z0-9_])" + pat
        if re.search(r"[A-Za-z0-9_]$", n):
            pat += r"(?![A-Za-z0-9_])"
        parts.append(pat)
    return re.compile("|".join(parts)) if parts else None


def _rows_naming(db: Database, table: str, columns: Sequence[str], text: Sequence[str],
                 needles: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of ``table`` (``columns``) whose ``text`` columns name the customer: found with
    ``instr`` in SQL, then kept only where a needle stands as a whole word."""
    pattern = _naming(needles)
    if pattern is None:
        return []
    where = " OR ".join(f"instr([{c}], ?) > 0" for c in text for _ in needles)
    rows = _dicts(db, f"SELECT {', '.join(columns)} FROM [{table}] WHERE {where}",
                  [n for c in text for n in needles])
    return [r for r in rows if any(pattern.search(r[c] or "") for c in text)]


def erase_customer(db: Database, user_id: int, *, needles: Sequence[str],
                   tombstones: dict[int, dict[str, str]], id_hash: str, reason: str | None,
                   now: str) -> dict[str, int]:
    """Erase ``user_id`` in one transaction (see the module docstring); returns rows changed
    per table. ``tombstones`` maps each of the customer's draft ids to its new content."""
    counts: dict[str, int] = {}
    have = _tables(db)
    with db.conn:
        db.execute("PRAGMA secure_delete = ON")   # deleted content is overwritten with zeros
        for table, column in PER_USER_TABLES:
            if table in have:
                counts[table] = db.execute(f"DELETE FROM [{table}] WHERE [{column}] = ?",
                                           [user_id]).rowcount
        counts["review_events"] = db.execute(
            "UPDATE review_events SET before = NULL, after = NULL, reason = '[erased]' "
            "WHERE draft_id IN (SELECT id FROM drafts WHERE user_id = ?)", [user_id]).rowcount
        for draft_id, content in tombstones.items():
            db.execute(
                "UPDATE drafts SET content = ?, items = '[]', checks = '[]', passed = 0, "
                "flag = 'erased on request', prompt_hash = NULL, updated_at = ?, "
                "version = version + 1, "
                "status = CASE status WHEN 'exported' THEN 'exported' ELSE 'erased' END "
                "WHERE id = ?", [dumps(content), now, draft_id])
        counts["drafts"] = len(tombstones)
        cached = _rows_naming(db, "llm_cache", ("key", "request", "response"),
                              ("request", "response"), needles)
        db.conn.executemany("DELETE FROM llm_cache WHERE key = ?", [[r["key"]] for r in cached])
        counts["llm_cache"] = len(cached)
        if "llm_batch_requests" in have:   # per-user batch prompts name the customer
            queued = _rows_naming(db, "llm_batch_requests", ("batch", "custom_id", "request"),
                                  ("request",), needles)
            db.conn.executemany("DELETE FROM llm_batch_requests WHERE batch = ? AND "
                                "custom_id = ?", [[r["batch"], r["custom_id"]] for r in queued])
            counts["llm_batch_requests"] = len(queued)
        db.execute(
            "UPDATE users SET external_id = 'erased-' || id, name = NULL, email = NULL, "
            "phone = NULL, timezone = NULL, push_token = NULL, attributes = '{}', "
            "consent_email = 0, consent_sms = 0, consent_push = 0, erased_at = ?, "
            "updated_at = ? WHERE id = ?", [now, now, user_id])
        counts["users"] = 1
        db.execute("INSERT INTO erasures (at, reason, id_hash, counts) VALUES (?, ?, ?, ?)",
                   [now, reason, id_hash, dumps(counts)])
    return counts


def is_erased(db: Database, id_hash: str) -> bool:
    """Whether a customer with this keyed id hash was erased on request."""
    return db.execute("SELECT 1 FROM erasures WHERE id_hash = ? LIMIT 1",
                      [id_hash]).fetchone() is not None


def compact(db: Database) -> tuple[int, int]:
    """Checkpoint the WAL into the file, VACUUM, and truncate the WAL, so deleted bytes are
    gone from disk. Returns the WAL checkpoint's (busy, frames left) (0, 0 when complete)."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")
    busy, log, done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return int(busy), max(int(log) - int(done), 0)


def erasure_count(db: Database) -> int:
    return db.execute("SELECT count(*) FROM erasures").fetchone()[0]


def erased_hashes(db: Database) -> set[str]:
    """The keyed id hashes of every erased customer."""
    return {h for (h,) in db.execute("SELECT id_hash FROM erasures")}


__all__ = ["PER_USER_TABLES", "find_user", "customer_rows", "erase_customer", "is_erased",
           "erased_hashes",
           "compact", "erasure_count"]
