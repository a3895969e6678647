"""SQL of A/B and hold-out assignments (written by ``pushgen.assign``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlite_utils import Database

_CHUNK = 900


def assigned(db: Database, campaign_id: int, user_ids: Sequence[int]) -> dict[int, int]:
    """Stored variant (0 = hold-out) of each of ``user_ids`` that has one."""
    out: dict[int, int] = {}
    ids = list(user_ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        out.update(db.execute(
            f"SELECT user_id, variant FROM assignments WHERE campaign_id = ? "
            f"AND user_id IN ({marks})", [campaign_id, *chunk]).fetchall())
    return out


def store_assignments(db: Database, campaign_id: int, rows: Sequence[tuple[int, int]],
                      at: str) -> int:
    """Insert (user_id, variant) rows that do not exist yet; returns how many were new."""
    with db.conn:
        before = db.conn.total_changes
        db.conn.executemany(
            "INSERT OR IGNORE INTO assignments (campaign_id, user_id, variant, at) "
            "VALUES (?, ?, ?, ?)", [(campaign_id, u, v, at) for u, v in rows])
        return db.conn.total_changes - before


def external_ids(db: Database, user_ids: Sequence[int]) -> dict[int, str]:
    """External id of each of ``user_ids`` (the key the draw is made on)."""
    out: dict[int, str] = {}
    ids = list(user_ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        out.update(db.execute(f"SELECT id, external_id FROM users WHERE id IN ({marks})",
                              chunk).fetchall())
    return out


def variant_of(db: Database, campaign_id: int) -> dict[int, int]:
    """Every stored assignment of a campaign: user id -> variant (0 = hold-out)."""
    return dict(db.execute("SELECT user_id, variant FROM assignments WHERE campaign_id = ?",
                           [campaign_id]).fetchall())


def split(db: Database, campaign_id: int) -> dict[int, int]:
    """Customers per variant (0 = hold-out) of a campaign."""
    return dict(db.execute("SELECT variant, count(*) FROM assignments WHERE campaign_id = ? "
                           "GROUP BY variant ORDER BY variant", [campaign_id]).fetchall())


__all__ = ["assigned", "store_assignments", "split", "external_ids", "variant_of"]
