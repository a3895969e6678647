"""SQL of campaign outcomes (what the sending platform reports about exported messages) and
of the numbers ``pushgen report`` is built from.

Outcomes are keyed by (draft, event, time, item): importing the same file again inserts
nothing. A click or conversion that names an item also becomes a ``click`` / ``purchase``
event for the next training run; the outcome row keeps the id of the event it created, so
results can tell the shop's own purchases from ones known only from the platform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from . import loads

_CHUNK = 900


def _rows(db: Database, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = db.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


# --- import --------------------------------------------------------------------------------

def draft_target(db: Database, draft_id: int) -> dict[str, Any] | None:
    """What an outcome needs to know about its draft: campaign, customer, channel, status,
    whether it was ever exported, and whether the customer was erased."""
    rows = _rows(db, "SELECT d.id, d.user_id, d.channel, d.status, d.exported_at, "
                     "c.name AS campaign, u.external_id, u.erased_at FROM drafts d "
                     "JOIN campaigns c ON c.id = d.campaign_id JOIN users u ON u.id = d.user_id "
                     "WHERE d.id = ?", [draft_id])
    return rows[0] if rows else None


def exported_draft_of(db: Database, campaign: str, external_id: str) -> list[int]:
    """Ids of the exported drafts of ``campaign`` for the customer ``external_id``."""
    return [r[0] for r in db.execute(
        "SELECT d.id FROM drafts d JOIN campaigns c ON c.id = d.campaign_id "
        "JOIN users u ON u.id = d.user_id WHERE c.name = ? AND u.external_id = ? "
        "AND d.exported_at IS NOT NULL ORDER BY d.id", [campaign, external_id])]


def campaign_exists(db: Database, name: str) -> bool:
    return db.execute("SELECT 1 FROM campaigns WHERE name = ?", [name]).fetchone() is not None


def insert_outcome(db: Database, row: dict[str, Any]) -> int | None:
    """Insert one outcome (the caller's transaction); its id, or None when it is already
    on record."""
    cur = db.execute(
        "INSERT OR IGNORE INTO outcomes (draft_id, user_id, event, ts, detail, value, item_id, "
        "source, imported_at) VALUES (:draft_id, :user_id, :event, :ts, :detail, :value, "
        ":item_id, :source, :imported_at)", row)
    return int(cur.lastrowid) if cur.rowcount == 1 else None


def add_outcome_event(db: Database, outcome_id: int, user_id: int, item_id: int, kind: str,
                      ts: str) -> bool:
    """The ``click`` / ``purchase`` event of a click or conversion (one unit); False when
    the shop's data already has that event (then it is the shop's, not the outcome's)."""
    cur = db.execute("INSERT OR IGNORE INTO events (user_id, item_id, kind, value, quantity, ts) "
                     "VALUES (?, ?, ?, 1, 1, ?)", [user_id, item_id, kind, ts])
    if cur.rowcount != 1:
        return False
    db.execute("UPDATE outcomes SET event_id = ? WHERE id = ?", [cur.lastrowid, outcome_id])
    return True


# --- why a consent changed ---------------------------------------------------------------

def consent_reasons(db: Database, user_id: int) -> dict[str, dict[str, Any]]:
    """channel -> the newest consent event of the customer (consent, source, reason, at)."""
    out: dict[str, dict[str, Any]] = {}
    for r in _rows(db, "SELECT channel, consent, source, reason, at FROM consent_events "
                       "WHERE user_id = ? ORDER BY at, id", [user_id]):
        out[r["channel"]] = r
    return out


def consent_note(db: Database, user_id: int, channel: str) -> str | None:
    """Why the customer's consent for ``channel`` is off, for reviewers: "unsubscribed
    (esp-events.csv:14, 2026-12-01)", or None when no consent event says."""
    last = consent_reasons(db, user_id).get(channel)
    if last is None or last["consent"]:
        return None
    return f"{last['reason'] or 'opted out'} ({last['source']}, {str(last['at'])[:10]})"


# --- results ---------------------------------------------------------------------------------

def campaign_meta(db: Database, name: str) -> dict[str, Any] | None:
    rows = _rows(db, "SELECT id, name, channel, config FROM campaigns WHERE name = ?", [name])
    if not rows:
        return None
    rows[0]["config"] = loads(rows[0]["config"], {}) or {}
    return rows[0]


def exported_messages(db: Database, campaign_id: int) -> list[dict[str, Any]]:
    """One row per exported draft of the campaign: variant, generator and its version,
    locale, the customer's profile, and which outcome events it had (0/1 each) with the
    revenue of its conversions."""
    rows = _rows(db, """
        SELECT d.id AS draft_id, d.user_id, d.variant, d.generator, d.template_name, d.model,
               d.prompt_hash, d.llm_meta, d.locale, u.attributes,
               max(o.event = 'sent') AS sent, max(o.event = 'delivered') AS delivered,
               max(o.event = 'bounced') AS bounced, max(o.event = 'opened') AS opened,
               max(o.event = 'clicked') AS clicked, max(o.event = 'converted') AS converted,
               max(o.event = 'unsubscribed') AS unsubscribed,
               max(o.event = 'complained') AS complained,
               coalesce(sum(CASE WHEN o.event = 'converted' THEN o.value END), 0) AS revenue
        FROM drafts d JOIN users u ON u.id = d.user_id
        LEFT JOIN outcomes o ON o.draft_id = d.id
        WHERE d.campaign_id = ? AND d.exported_at IS NOT NULL
        GROUP BY d.id ORDER BY d.id""", [campaign_id])
    for r in rows:
        r["attributes"] = loads(r["attributes"], {}) or {}
        r["llm_meta"] = loads(r["llm_meta"], {}) or {}
        for k in ("sent", "delivered", "bounced", "opened", "clicked", "converted",
                  "unsubscribed", "complained"):
            r[k] = int(r[k] or 0)
    return rows


def send_range(db: Database, campaign_id: int) -> tuple[str | None, str | None]:
    """First and last planned send time (UTC) of the campaign's exported messages; the
    export time stands in for messages exported without a plan."""
    row = db.execute(
        "SELECT min(coalesce(s.send_at, d.exported_at)), max(coalesce(s.send_at, d.exported_at)) "
        "FROM drafts d LEFT JOIN send_times s ON s.draft_id = d.id "
        "WHERE d.campaign_id = ? AND d.exported_at IS NOT NULL", [campaign_id]).fetchone()
    return (row[0], row[1]) if row else (None, None)


def purchasers_by_variant(db: Database, campaign_id: int, start: str, end: str
                          ) -> dict[int, tuple[int, int]]:
    """variant (0 = hold-out) -> (customers assigned, customers with a purchase event in
    [start, end)). Purchase events created only from the platform's conversions are left
    out, so every group is measured from the shop's own purchase data alike."""
    return {v: (n, buyers) for v, n, buyers in db.execute("""
        SELECT a.variant, count(*),
               sum(EXISTS (SELECT 1 FROM events e WHERE e.user_id = a.user_id
                           AND e.kind = 'purchase' AND e.ts >= ? AND e.ts < ?
                           AND e.id NOT IN (SELECT event_id FROM outcomes
                                            WHERE event_id IS NOT NULL)))
        FROM assignments a WHERE a.campaign_id = ? GROUP BY a.variant ORDER BY a.variant""",
        [start, end, campaign_id])}


def platform_only_purchases(db: Database, campaign_id: int) -> int:
    """Purchase events of this campaign's customers that exist only because the platform
    reported a conversion (the shop's own order data did not have them)."""
    return db.execute(
        "SELECT count(*) FROM outcomes o JOIN drafts d ON d.id = o.draft_id "
        "WHERE d.campaign_id = ? AND o.event = 'converted' AND o.event_id IS NOT NULL",
        [campaign_id]).fetchone()[0]


def local_send_hours(db: Database, campaign_id: int) -> list[int]:
    """Exported messages per local hour (0-23) of their planned send time."""
    counts = [0] * 24
    for hour, n in db.execute(
            "SELECT CAST(substr(s.local_time, 12, 2) AS INTEGER), count(*) FROM send_times s "
            "JOIN drafts d ON d.id = s.draft_id WHERE d.campaign_id = ? "
            "AND d.exported_at IS NOT NULL GROUP BY 1", [campaign_id]):
        if hour is not None and 0 <= hour < 24:
            counts[hour] = n
    return counts


def messages_to_simulate(db: Database, campaign: str) -> list[dict[str, Any]]:
    """Exported messages of ``campaign`` (the demo's simulation): draft, customer, lead
    item and planned send time, in draft order."""
    rows = _rows(db, """
        SELECT d.id AS draft_id, u.external_id, json_extract(d.items, '$[0].sku') AS sku,
               coalesce(s.send_at, d.exported_at) AS send_at
        FROM drafts d JOIN campaigns c ON c.id = d.campaign_id JOIN users u ON u.id = d.user_id
        LEFT JOIN send_times s ON s.draft_id = d.id
        WHERE c.name = ? AND d.exported_at IS NOT NULL ORDER BY d.id""", [campaign])
    return [r for r in rows if r["sku"]]


def assigned_customers(db: Database, campaign: str) -> list[str]:
    """External ids of every customer assigned to ``campaign`` (hold-out included)."""
    return [r[0] for r in db.execute(
        "SELECT u.external_id FROM assignments a JOIN campaigns c ON c.id = a.campaign_id "
        "JOIN users u ON u.id = a.user_id WHERE c.name = ? ORDER BY a.user_id", [campaign])]


def outcome_count(db: Database, campaign_id: int) -> int:
    return db.execute("SELECT count(*) FROM outcomes o JOIN drafts d ON d.id = o.draft_id "
                      "WHERE d.campaign_id = ?", [campaign_id]).fetchone()[0]


__all__ = ["draft_target", "exported_draft_of", "campaign_exists", "insert_outcome",
           "add_outcome_event", "consent_reasons", "consent_note", "campaign_meta", "exported_messages",
           "send_range", "purchasers_by_variant", "platform_only_purchases",
           "local_send_hours", "outcome_count", "messages_to_simulate", "assigned_customers"]
