"""SQL for campaigns' audiences and drafts (written by ``pushgen.campaign``)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlite_utils import Database

from ..errors import PushgenError
from ..messages import CHANNELS, Recipient
from . import dumps, loads, now_iso

_CONTACT = {"sms": "phone", "email": "email", "push": None}


def same_config(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Two campaign configs say the same, a key one of them lacks counting as its default
    (a config stored by an older pushgen has no key for a setting added since). The
    [send] and [results] sections are read at export and report time and never change the
    copy, so they may differ."""
    import dataclasses

    from ..messages import CampaignSettings

    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING
                         else f.default_factory())  # type: ignore[misc]
                for f in dataclasses.fields(CampaignSettings) if f.name != "name"}
    keys = (set(old) | set(new)) - {"send", "results"}
    missing = object()
    for k in keys:
        a, b = old.get(k, missing), new.get(k, missing)
        if a is missing:
            a = defaults.get(k, missing)
        if b is missing:
            b = defaults.get(k, missing)
        if a != b:
            return False
    return True


def save_campaign(db: Database, name: str, channel: str, config: dict[str, Any], *,
                  allow_config_change: bool = False) -> int:
    """Create or update campaign ``name`` with its channel and config; return its id.

    Once a campaign has drafts its channel is fixed, and its config changes only with
    ``allow_config_change`` (a regenerate): export reads the sender and unsubscribe URL
    from it, so it must match the copy that was approved.
    """
    if channel not in CHANNELS:
        raise ValueError(channel)
    row = db.execute(
        "SELECT c.channel, c.config, (SELECT count(*) FROM drafts d WHERE d.campaign_id = c.id) "
        "FROM campaigns c WHERE c.name = ?", [name]).fetchone()
    if row is not None and row[2]:
        old_channel, old_config, n = row
        if old_channel != channel:
            raise PushgenError(
                f"campaign {name!r} already has {n} {old_channel} draft(s); a campaign has one "
                f"channel: use another name for the {channel} version")
        if not same_config(loads(old_config, {}), config) and not allow_config_change:
            raise PushgenError(
                f"campaign {name!r} was drafted with a different config; rerun with the same "
                f"config, add --regenerate to redraft its unreviewed drafts with this one, "
                f"or use another campaign name")
    now = now_iso()
    with db.conn:
        db.execute(
            """INSERT INTO campaigns (name, channel, config, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET channel = excluded.channel,
                   config = excluded.config, updated_at = excluded.updated_at""",
            [name, channel, dumps(config), now, now],
        )
    return db.execute("SELECT id FROM campaigns WHERE name = ?", [name]).fetchone()[0]


def get_campaign(db: Database, name: str) -> dict[str, Any] | None:
    row = db.execute("SELECT id, name, channel, config, model_id FROM campaigns WHERE name = ?",
                     [name]).fetchone()
    if row is None:
        return None
    return {"id": row[0], "name": row[1], "channel": row[2], "config": loads(row[3], {}),
            "model_id": row[4]}


def audience_user_ids(
    db: Database,
    *,
    channel: str,
    campaign_id: int,
    variants: int,
    profile: dict[str, list[str]] | None = None,
    locales: Sequence[str] = (),
    active_within_days: int | None = None,
    frequency_cap: int | None = None,
    frequency_days: int = 7,
    include_drafted: bool = False,
    limit: int | None = None,
    now: _dt.datetime | None = None,
) -> list[int]:
    """Ids of users this campaign may draft for, in id order.

    Consent for ``channel`` is mandatory, and so is the contact the channel needs (a phone
    for SMS, an address for email). Users who already have all ``variants`` drafts of the
    campaign are left out unless ``include_drafted`` (so a rerun resumes where it stopped).
    """
    if channel not in CHANNELS:
        raise ValueError(channel)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    where = [f"u.consent_{channel} = 1"]
    params: list[Any] = []
    contact = _CONTACT[channel]
    if contact:
        where.append(f"coalesce(trim(u.{contact}), '') != ''")
    for field, values in (profile or {}).items():
        marks = ", ".join("?" for _ in values)
        where.append(f"json_extract(u.attributes, ?) IN ({marks})")
        params.append(f'$."{field}"')
        params.extend(values)
    if locales:
        where.append(f"u.locale IN ({', '.join('?' for _ in locales)})")
        params.extend(locales)
    if active_within_days is not None:
        cutoff = (now - _dt.timedelta(days=active_within_days)).isoformat()
        where.append("EXISTS (SELECT 1 FROM events e WHERE e.user_id = u.id AND e.ts >= ?)")
        params.append(cutoff)
    if frequency_cap is not None:
        cutoff = (now - _dt.timedelta(days=frequency_days)).isoformat()
        where.append(
            """(SELECT count(*) FROM drafts s WHERE s.user_id = u.id AND s.channel = ?
                AND s.exported_at IS NOT NULL AND s.exported_at >= ?) < ?""")
        params.extend([channel, cutoff, frequency_cap])
    if not include_drafted:
        where.append("(SELECT count(*) FROM drafts d WHERE d.user_id = u.id "
                     "AND d.campaign_id = ?) < ?")
        params.extend([campaign_id, variants])
    sql = f"SELECT u.id FROM users u WHERE {' AND '.join(where)} ORDER BY u.id"
    if limit is not None:
        if limit < 1:
            raise PushgenError("--limit must be at least 1")
        sql += f" LIMIT {int(limit)}"
    return [r[0] for r in db.execute(sql, params)]


def recipients(db: Database, user_ids: Sequence[int]) -> dict[int, Recipient]:
    """Recipients for ``user_ids`` (name, locale, profile attributes; never email or phone)."""
    out: dict[int, Recipient] = {}
    for start in range(0, len(user_ids), 900):
        chunk = list(user_ids[start:start + 900])
        marks = ", ".join("?" for _ in chunk)
        for uid, ext, name, locale, attrs in db.execute(
                f"SELECT id, external_id, name, locale, attributes FROM users "
                f"WHERE id IN ({marks})", chunk):
            out[uid] = Recipient(user_id=uid, external_id=ext, name=name,
                                 locale=locale or "en-US", attributes=loads(attrs, {}))
    return out


def contact_values(db: Database, user_ids: Sequence[int]) -> dict[int, list[str]]:
    """Email and phone of each user: values that must never appear in copy or prompts."""
    out: dict[int, list[str]] = {}
    for start in range(0, len(user_ids), 900):
        chunk = list(user_ids[start:start + 900])
        marks = ", ".join("?" for _ in chunk)
        for uid, email, phone in db.execute(
                f"SELECT id, email, phone FROM users WHERE id IN ({marks})", chunk):
            out[uid] = [v for v in (email, phone) if v]
    return out


_DRAFT_COLUMNS = ("campaign_id", "user_id", "channel", "variant", "locale", "content", "items",
                  "generator", "template_name", "model", "prompt_hash", "tokens_prompt",
                  "tokens_completion", "checks", "passed", "flag", "status", "version",
                  "created_at", "updated_at", "llm_meta")


# Review actions that mean a person looked at a draft: --regenerate never rewrites it.
TOUCHED_ACTIONS = ("edit", "approve", "reject")


def _regenerate_actor() -> str:
    """Who regenerates (for the audit trail): $USER, else the login name, else 'pushgen'."""
    import getpass
    import os
    import re

    name = os.environ.get("USER") or ""
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # no passwd entry in some containers
            name = ""
    return name if re.fullmatch(r"[^\W_][\w .@+'-]{0,63}", name or "") else "pushgen"


def _json(value: Any) -> str:
    """A JSON column of a draft row: its value, or the value's ``dumps`` text already made
    (drafting workers encode their rows themselves)."""
    return value if isinstance(value, str) else dumps(value)


def write_drafts(db: Database, rows: Iterable[dict[str, Any]], *, regenerate: bool = False,
                 actor: str | None = None) -> int:
    """Write drafts in one transaction; return how many rows were inserted or rewritten.

    A draft that already exists for (campaign, user, variant) is kept as it is, so a resumed
    run never duplicates. With ``regenerate`` an existing draft is rewritten only while no
    person has touched it: it is still ``draft`` and has no edit, approve or reject in its
    review history (``TOUCHED_ACTIONS``); edited, approved, rejected or exported work is
    never lost. Each rewrite bumps the version and writes a ``regenerate`` review event
    with the text before and after (``actor``: default the current user).
    """
    now = now_iso()
    values = []
    for r in rows:
        values.append((
            r["campaign_id"], r["user_id"], r["channel"], r.get("variant", 1), r["locale"],
            _json(r["content"]), _json(r["items"]), r["generator"], r.get("template_name"),
            r.get("model"), r.get("prompt_hash"), r.get("tokens_prompt", 0),
            r.get("tokens_completion", 0), _json(r["checks"]), int(r["passed"]), r.get("flag"),
            "draft", 1, now, now, _json(r["llm_meta"]) if r.get("llm_meta") else None))
    cols = ", ".join(_DRAFT_COLUMNS)
    marks = ", ".join("?" for _ in _DRAFT_COLUMNS)
    insert = f"INSERT OR IGNORE INTO drafts ({cols}) VALUES ({marks})"
    index = {c: i for i, c in enumerate(_DRAFT_COLUMNS)}
    with db.conn:
        existing: dict[tuple[int, int, int], tuple[int, int, str, str, bool]] = {}
        if regenerate:
            touched = ", ".join("?" for _ in TOUCHED_ACTIONS)
            for v in values:
                key = (v[index["campaign_id"]], v[index["user_id"]], v[index["variant"]])
                row = db.conn.execute(
                    f"""SELECT d.id, d.version, d.content, d.status,
                           EXISTS (SELECT 1 FROM review_events e WHERE e.draft_id = d.id
                                   AND e.action IN ({touched}))
                        FROM drafts d
                        WHERE d.campaign_id = ? AND d.user_id = ? AND d.variant = ?""",
                    [*TOUCHED_ACTIONS, *key]).fetchone()
                if row is not None:
                    existing[key] = (row[0], row[1], row[2], row[3], bool(row[4]))
        before = db.conn.total_changes
        db.conn.executemany(insert, values)
        written = db.conn.total_changes - before
        if not existing:
            return written
        rewrite_cols = [c for c in _DRAFT_COLUMNS if c not in (
            "campaign_id", "user_id", "variant", "created_at", "status", "version")]
        sets = ", ".join(f"{c} = ?" for c in rewrite_cols)
        who = actor or _regenerate_actor()
        for v in values:
            key = (v[index["campaign_id"]], v[index["user_id"]], v[index["variant"]])
            if key not in existing:
                continue
            draft_id, version, old_content, status, was_touched = existing[key]
            if status != "draft" or was_touched:
                continue  # a person's work: kept as it is
            cur = db.conn.execute(
                f"UPDATE drafts SET {sets}, version = version + 1 "
                "WHERE id = ? AND version = ? AND status = 'draft'",
                [*(v[index[c]] for c in rewrite_cols), draft_id, version])
            if cur.rowcount != 1:
                continue
            db.conn.execute(
                "INSERT INTO review_events (draft_id, actor, action, at, status_before, "
                "status_after, before, after, reason) VALUES (?, ?, 'regenerate', ?, "
                "'draft', 'draft', ?, ?, ?)",
                [draft_id, who, now, old_content, v[index["content"]],
                 "regenerated with "
                 + (v[index["template_name"]] or v[index["model"]] or v[index["generator"]])])
            written += 1
        return written


def campaign_draft_counts(db: Database, campaign_id: int) -> dict[str, Any]:
    """Drafts per status and generator, passed count and tokens of one campaign."""
    by_status = {s: n for s, n in db.execute(
        "SELECT status, count(*) FROM drafts WHERE campaign_id = ? GROUP BY status",
        [campaign_id])}
    by_generator = {g: n for g, n in db.execute(
        "SELECT generator, count(*) FROM drafts WHERE campaign_id = ? GROUP BY generator",
        [campaign_id])}
    total, passed, tp, tc = db.execute(
        "SELECT count(*), coalesce(sum(passed), 0), coalesce(sum(tokens_prompt), 0), "
        "coalesce(sum(tokens_completion), 0) FROM drafts WHERE campaign_id = ?",
        [campaign_id]).fetchone()
    return {"total": total, "passed": passed, "by_status": by_status,
            "by_generator": by_generator, "tokens_prompt": tp, "tokens_completion": tc}


def last_draft_id(db: Database) -> int:
    """The highest draft id so far (0 for none): drafts written later have higher ids."""
    return db.execute("SELECT coalesce(max(id), 0) FROM drafts").fetchone()[0]


def sample_drafts(db: Database, campaign_id: int, limit: int = 3, *, since_id: int = 0
                  ) -> list[dict[str, Any]]:
    """A few drafts of a campaign with id above ``since_id``, the first of each locale
    first, for printing examples."""
    rows = db.execute(
        """SELECT d.id, u.external_id, d.locale, d.content, d.passed, d.generator
           FROM drafts d JOIN users u ON u.id = d.user_id
           WHERE d.id IN (SELECT min(id) FROM drafts WHERE campaign_id = ? AND id > ?
                          GROUP BY locale)
              OR d.id IN (SELECT id FROM drafts WHERE campaign_id = ? AND id > ?
                          ORDER BY id LIMIT ?)
           ORDER BY d.id IN (SELECT min(id) FROM drafts WHERE campaign_id = ? AND id > ?
                             GROUP BY locale) DESC, d.id""",
        [campaign_id, since_id, campaign_id, since_id, limit, campaign_id,
         since_id]).fetchall()
    return [{"id": r[0], "user": r[1], "locale": r[2], "content": loads(r[3], {}),
             "passed": bool(r[4]), "generator": r[5]} for r in rows[:limit]]


def token_owner(db: Database, campaign_id: int, user_id: int) -> tuple[str, str] | None:
    """(campaign name, customer external id) of an unsubscribe token's ids, if both exist."""
    row = db.execute("SELECT c.name, u.external_id FROM campaigns c, users u "
                     "WHERE c.id = ? AND u.id = ?", [campaign_id, user_id]).fetchone()
    return (row[0], row[1]) if row else None


def user_id(db: Database, external_id: str) -> int | None:
    """Internal id of the user with ``external_id``."""
    row = db.execute("SELECT id FROM users WHERE external_id = ?", [external_id]).fetchone()
    return row[0] if row else None
