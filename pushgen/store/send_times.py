"""SQL of per-customer send times: what planning needs (timezone, profile, event times)
and the plan of every exported message (``send_times``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from . import loads

_CHUNK = 900


def _chunks(ids: Sequence[int]):
    ids = list(ids)
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def profiles(db: Database, user_ids: Sequence[int]) -> dict[int, tuple[str | None, dict]]:
    """user id -> (timezone, profile attributes)."""
    out: dict[int, tuple[str | None, dict]] = {}
    for chunk in _chunks(user_ids):
        marks = ", ".join("?" for _ in chunk)
        for uid, tz, attrs in db.execute(
                f"SELECT id, timezone, attributes FROM users WHERE id IN ({marks})", chunk):
            out[uid] = (tz, loads(attrs, {}) or {})
    return out


def event_times(db: Database, user_ids: Sequence[int]) -> dict[int, list[int]]:
    """user id -> the times of all their events (seconds since 1970, UTC; SQLite reads the
    ISO 8601 text and its offset): when they are active."""
    out: dict[int, list[int]] = {u: [] for u in user_ids}
    for chunk in _chunks(user_ids):
        marks = ", ".join("?" for _ in chunk)
        for uid, epoch in db.execute(
                f"SELECT user_id, CAST(strftime('%s', ts) AS INTEGER) FROM events "
                f"WHERE user_id IN ({marks})", chunk):
            if epoch is not None:
                out[uid].append(epoch)
    return out


def save_plans(db: Database, export_id: int, rows: Sequence[dict[str, Any]]) -> None:
    """Record the planned send time of each exported draft (the caller's transaction); a
    draft exported again gets its new plan."""
    db.conn.executemany(
        "INSERT OR REPLACE INTO send_times (draft_id, user_id, export_id, send_at, local_time, "
        "timezone, source, reason) VALUES (:draft_id, :user_id, :export_id, :send_at, "
        ":local_time, :timezone, :source, :reason)",
        [{**r, "export_id": export_id} for r in rows])


def plans_for(db: Database, draft_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored plan of each of ``draft_ids`` that has one."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(draft_ids):
        marks = ", ".join("?" for _ in chunk)
        cur = db.execute(f"SELECT * FROM send_times WHERE draft_id IN ({marks})", chunk)
        names = [d[0] for d in cur.description]
        for row in cur:
            rec = dict(zip(names, row))
            out[rec["draft_id"]] = rec
    return out


__all__ = ["profiles", "event_times", "save_plans", "plans_for"]
