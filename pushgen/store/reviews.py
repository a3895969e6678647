"""SQL for reviewing and exporting drafts: queue queries, guarded updates, review events.

Every write is ``UPDATE drafts ... WHERE id = ? AND version = ?`` and bumps ``version``,
and its ``review_events`` row is inserted in the same transaction, so the audit trail can
never disagree with the drafts table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlite_utils import Database

from . import StoreError, dumps, loads

# A failed check is an element of the drafts.checks JSON list with "ok": false.
_FAILED_CHECK = """EXISTS (SELECT 1 FROM json_each(d.checks) j
    WHERE json_extract(j.value, '$.name') = ? AND json_extract(j.value, '$.ok') = 0)"""

_DRAFT_SELECT = """
SELECT d.*, c.name AS campaign, c.config AS campaign_config,
       u.external_id AS user_external_id, u.name AS user_name, u.email AS user_email,
       u.phone AS user_phone, u.locale AS user_locale, u.attributes AS user_attributes,
       u.push_token AS user_push_token,
       u.consent_email, u.consent_sms, u.consent_push
FROM drafts d
JOIN campaigns c ON c.id = d.campaign_id
JOIN users u ON u.id = d.user_id
"""


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock up front so that what is read
    inside the block cannot change before it is written (no lock-upgrade deadlocks in WAL)."""
    if db.conn.in_transaction:
        raise StoreError("internal: a transaction is already open on this connection")
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    else:
        try:
            db.conn.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise


def campaign_row(db: Database, name: str) -> dict[str, Any] | None:
    """The campaign called ``name`` (config still as JSON text), or None."""
    rows = list(db.query("SELECT * FROM campaigns WHERE name = ?", [name]))
    return rows[0] if rows else None


def campaign_names(db: Database) -> list[str]:
    return [r["name"] for r in db.query("SELECT name FROM campaigns ORDER BY name")]


MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id names no row (and would overflow)


def fetch_draft(db: Database, draft_id: int) -> dict[str, Any] | None:
    """One draft joined with its campaign and user, or None (also for ids no row can
    have: below 1 or above SQLite's 64-bit range)."""
    if not 1 <= draft_id <= MAX_ID:
        return None
    rows = list(db.query(_DRAFT_SELECT + " WHERE d.id = ?", [draft_id]))
    return rows[0] if rows else None


def drafts_by_id(db: Database, ids: list[int]) -> list[dict[str, Any]]:
    """Drafts joined with their campaign and user, in id order."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(ids), 900):
        chunk = ids[start:start + 900]
        marks = ", ".join("?" for _ in chunk)
        out += list(db.query(_DRAFT_SELECT + f" WHERE d.id IN ({marks}) ORDER BY d.id", chunk))
    return out


def _where(campaign_id: int | None, channel: str | None, status: str | None,
           failed_check: str | None, locale: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("d.campaign_id", campaign_id), ("d.channel", channel),
                          ("d.status", status), ("d.locale", locale)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if failed_check is not None:
        clauses.append(_FAILED_CHECK)
        params.append(failed_check)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def fetch_drafts(db: Database, *, campaign_id: int | None = None, channel: str | None = None,
                 status: str | None = None, failed_check: str | None = None,
                 locale: str | None = None, limit: int = 50, offset: int = 0,
                 ) -> list[dict[str, Any]]:
    """Drafts matching every given filter, oldest first (the order they were written)."""
    where, params = _where(campaign_id, channel, status, failed_check, locale)
    sql = _DRAFT_SELECT + where + " ORDER BY d.id LIMIT ? OFFSET ?"
    return list(db.query(sql, [*params, limit, offset]))


def count_drafts(db: Database, *, campaign_id: int | None = None, channel: str | None = None,
                 status: str | None = None, failed_check: str | None = None,
                 locale: str | None = None) -> int:
    where, params = _where(campaign_id, channel, status, failed_check, locale)
    return db.execute(f"SELECT count(*) FROM drafts d{where}", params).fetchone()[0]


def draft_ids(db: Database, *, campaign_id: int | None = None, channel: str | None = None,
              status: str | None = None, failed_check: str | None = None,
              locale: str | None = None) -> list[int]:
    """Ids of matching drafts in queue order (cheap: for walking a large queue)."""
    where, params = _where(campaign_id, channel, status, failed_check, locale)
    return [r[0] for r in db.execute(f"SELECT d.id FROM drafts d{where} ORDER BY d.id", params)]


def events_for(db: Database, draft_id: int) -> list[dict[str, Any]]:
    """The draft's review events, oldest first."""
    return list(db.query("SELECT * FROM review_events WHERE draft_id = ? ORDER BY id",
                         [draft_id]))


def last_event(db: Database, draft_id: int) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM review_events WHERE draft_id = ? ORDER BY id DESC "
                         "LIMIT 1", [draft_id]))
    return rows[0] if rows else None


def update_draft(db: Database, draft_id: int, expected_version: int, changes: dict[str, Any],
                 event: dict[str, Any]) -> bool:
    """Apply ``changes`` to the draft if it is still at ``expected_version``, bump its
    version and record ``event`` (a review_events row without draft_id), all in one
    transaction. Returns False, writing nothing, when the version moved on."""
    assignments = ", ".join(f"[{k}] = ?" for k in changes)
    with write_transaction(db):
        cur = db.execute(
            f"UPDATE drafts SET {assignments}, version = version + 1 "
            "WHERE id = ? AND version = ?",
            [*changes.values(), draft_id, expected_version],
        )
        if cur.rowcount != 1:
            return False
        db.execute(*_event_insert(draft_id, event))
    return True


def _event_insert(draft_id: int, event: dict[str, Any]) -> tuple[str, list[Any]]:
    row = {"draft_id": draft_id, **event}
    for key in ("before", "after"):
        if row.get(key) is not None and not isinstance(row[key], str):
            row[key] = dumps(row[key])
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    return f"INSERT INTO review_events ({cols}) VALUES ({marks})", list(row.values())


def approvable_drafts(db: Database, campaign_id: int) -> list[dict[str, Any]]:
    """Drafts of a campaign that are waiting for review and passed their checks."""
    return list(db.query(
        "SELECT id, version, status, checks, content FROM drafts "
        "WHERE campaign_id = ? AND status = 'draft' AND passed = 1 ORDER BY id",
        [campaign_id]))


def set_status_many(db: Database, rows: list[dict[str, Any]], status: str,
                    event: dict[str, Any], extra: dict[str, Any] | None = None) -> list[int]:
    """Move each ``{id, version, status, content}`` row to ``status`` (version-guarded) with
    one review event each (content as both before and after), in the caller's transaction.
    Returns the ids actually changed."""
    changed: list[int] = []
    extra = extra or {}
    sets = "".join(f", [{k}] = ?" for k in extra)
    for row in rows:
        cur = db.execute(
            f"UPDATE drafts SET status = ?{sets}, updated_at = ?, version = version + 1 "
            "WHERE id = ? AND version = ?",
            [status, *extra.values(), event["at"], row["id"], row["version"]],
        )
        if cur.rowcount == 1:
            db.execute(*_event_insert(row["id"], {
                **event, "status_before": row["status"], "status_after": status,
                "before": row.get("content"), "after": row.get("content")}))
            changed.append(row["id"])
    return changed


def exportable_drafts(db: Database, campaign_id: int, channel: str,
                      statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """Drafts of one campaign and channel in ``statuses``, joined with their user."""
    marks = ", ".join("?" for _ in statuses)
    return list(db.query(
        _DRAFT_SELECT + f" WHERE d.campaign_id = ? AND d.channel = ? AND d.status IN ({marks})"
        " ORDER BY d.id", [campaign_id, channel, *statuses]))


def set_checks(db: Database, draft_id: int, version: int, checks: list[dict[str, Any]],
               passed: bool) -> bool:
    """Store a fresh check result on a draft still at ``version`` (the caller's transaction;
    the version is not bumped: the copy did not change)."""
    cur = db.execute("UPDATE drafts SET checks = ?, passed = ? WHERE id = ? AND version = ?",
                     [dumps(checks), int(passed), draft_id, version])
    return cur.rowcount == 1


# --- the export journal (exactly-once exports) --------------------------------------------


def insert_export(db: Database, row: dict[str, Any]) -> int:
    """Record a pending export (the caller's transaction); return its id."""
    data = {**row, "drafts": dumps(row["drafts"]), "state": "pending"}
    cols = ", ".join(data)
    marks = ", ".join("?" for _ in data)
    cur = db.execute(f"INSERT INTO exports ({cols}) VALUES ({marks})", list(data.values()))
    return int(cur.lastrowid)


def pending_exports(db: Database) -> list[dict[str, Any]]:
    """Exports recorded but never finished (their run died), oldest first."""
    rows = list(db.query("SELECT e.*, c.name AS campaign FROM exports e "
                         "JOIN campaigns c ON c.id = e.campaign_id "
                         "WHERE e.state = 'pending' ORDER BY e.id"))
    for r in rows:
        r["drafts"] = loads(r["drafts"], [])
    return rows


def pending_tmp_paths(db: Database) -> set[str]:
    return {r[0] for r in db.execute("SELECT tmp_path FROM exports WHERE state = 'pending'")}


def finish_export(db: Database, export_id: int, state: str, at: str,
                  note: str | None = None) -> None:
    """Close a pending export as ``done`` or ``undone`` (the caller's transaction)."""
    db.execute("UPDATE exports SET state = ?, finished_at = ?, note = ? "
               "WHERE id = ? AND state = 'pending'", [state, at, note, export_id])


def undo_exported(db: Database, entries: list[dict[str, Any]], event: dict[str, Any]
                  ) -> list[int]:
    """Put drafts an unfinished export had marked back to their status before it (only
    those still exactly as that export left them), one review event each."""
    undone = []
    for e in entries:
        row = db.execute("SELECT content FROM drafts WHERE id = ? AND version = ? "
                         "AND status = 'exported'", [e["id"], e["version"]]).fetchone()
        if row is None:
            continue
        db.execute("UPDATE drafts SET status = ?, exported_at = ?, updated_at = ?, "
                   "version = version + 1 WHERE id = ? AND version = ?",
                   [e["status_before"], e["exported_at_before"], event["at"], e["id"],
                    e["version"]])
        db.execute(*_event_insert(e["id"], {
            **event, "status_before": "exported", "status_after": e["status_before"],
            "before": row[0], "after": row[0]}))
        undone.append(e["id"])
    return undone


def channel_counts(db: Database, campaign_id: int) -> dict[str, int]:
    """Number of drafts per channel of one campaign."""
    return {r["channel"]: r["n"] for r in db.query(
        "SELECT channel, count(*) AS n FROM drafts WHERE campaign_id = ? GROUP BY channel",
        [campaign_id])}


def exported_drafts_by_user(db: Database, campaign_id: int, channel: str
                            ) -> dict[int, set[int]]:
    """Drafts of a campaign already exported on ``channel`` (any variant, any format), by
    user: one customer gets one message, which may still be written in another format."""
    out: dict[int, set[int]] = {}
    for uid, did in db.execute(
            "SELECT user_id, id FROM drafts WHERE campaign_id = ? AND channel = ? "
            "AND status = 'exported'", [campaign_id, channel]):
        out.setdefault(uid, set()).add(did)
    return out


def exported_in_format(db: Database, campaign_id: int, channel: str, fmt: str) -> set[int]:
    """Ids of drafts a finished export of this campaign and channel wrote in format ``fmt``
    (from the export journal)."""
    return {r[0] for r in db.execute(
        "SELECT DISTINCT json_extract(j.value, '$.id') FROM exports e, json_each(e.drafts) j "
        "WHERE e.campaign_id = ? AND e.channel = ? AND e.format = ? AND e.state = 'done'",
        [campaign_id, channel, fmt])}


def catalog_facts(db: Database, skus: list[str]) -> dict[str, dict[str, Any]]:
    """Current price, sale_price, currency, active and stock of ``skus`` by sku (absent
    skus are missing from the result)."""
    out: dict[str, dict[str, Any]] = {}
    unique = sorted(set(skus))
    for start in range(0, len(unique), 500):  # stay under SQLite's variable limit
        chunk = unique[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for r in db.query("SELECT sku, price, sale_price, currency, active, stock FROM items "
                          f"WHERE sku IN ({marks})", chunk):
            out[r["sku"]] = r
    return out


def status_counts(db: Database, campaign_id: int | None = None) -> dict[str, int]:
    where, params = _where(campaign_id, None, None, None, None)
    return {r["status"]: r["n"] for r in db.query(
        f"SELECT d.status, count(*) AS n FROM drafts d{where} GROUP BY d.status", params)}


def failed_check_counts(db: Database, campaign_id: int | None = None,
                        status: str | None = None) -> dict[str, int]:
    """Number of drafts failing each named check (errors and warnings alike)."""
    where, params = _where(campaign_id, None, status, None, None)
    glue = " AND " if where else " WHERE "
    sql = (f"SELECT json_extract(j.value, '$.name') AS name, count(DISTINCT d.id) AS n "
           f"FROM drafts d, json_each(d.checks) j{where}{glue}json_extract(j.value, '$.ok') = 0 "
           "GROUP BY name ORDER BY n DESC, name")
    return {r["name"]: r["n"] for r in db.query(sql, params)}


def distinct_values(db: Database, column: str) -> list[str]:
    """Values present in drafts.<column> (channel, locale) for filter menus."""
    if column not in ("channel", "locale", "status"):
        raise StoreError(f"internal: no filter on drafts.{column}")
    return [r[0] for r in db.execute(
        f"SELECT DISTINCT [{column}] FROM drafts WHERE [{column}] IS NOT NULL ORDER BY 1")]


def generator_totals(db: Database, campaign_id: int) -> list[dict[str, Any]]:
    """Drafts and tokens per generator for one campaign."""
    return list(db.query(
        "SELECT generator, count(*) AS drafts, sum(tokens_prompt) AS tokens_prompt, "
        "sum(tokens_completion) AS tokens_completion FROM drafts WHERE campaign_id = ? "
        "GROUP BY generator ORDER BY generator", [campaign_id]))


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns of a fetched draft row as Python objects."""
    out = dict(row)
    for key, default in (("content", {}), ("items", []), ("checks", []),
                         ("campaign_config", {}), ("user_attributes", {})):
        if key in out:
            out[key] = loads(out[key], default)
    return out


__all__ = [
    "MAX_ID", "write_transaction", "drafts_by_id", "campaign_row", "campaign_names", "fetch_draft", "fetch_drafts",
    "count_drafts", "draft_ids", "events_for", "last_event", "update_draft",
    "approvable_drafts", "set_status_many", "exportable_drafts", "status_counts",
    "channel_counts", "exported_drafts_by_user", "exported_in_format", "catalog_facts",
    "failed_check_counts", "distinct_values", "generator_totals",
    "decode_row", "set_checks", "insert_export", "pending_exports", "pending_tmp_paths",
    "finish_export", "undo_exported",
]
