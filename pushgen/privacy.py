"""A customer's rights: erase them on request (GDPR art. 17), hand over what is held (art. 15).

``forget_customer(db, external_id)`` empties every personal field of the customer, deletes
their events, recommendations and consent history, replaces the copy of their drafts and the
text of their review history by tombstones (ids, statuses and counts stay, so past campaign
reports stay right; nothing of theirs can be exported any more), deletes LLM cache entries
whose prompt or answer contains their name, email, phone or id, records an erasure that holds
no personal data, then checkpoints the WAL and vacuums so the bytes are gone from the file.
``customer_data(db, external_id)`` returns everything held about one customer as plain data.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from .errors import PushgenError
from .messages import CHANNEL_FIELDS
from .signing import shop_secret
from .store import loads, now_iso
from .store import privacy as store

TOMBSTONE = "[erased on request]"
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass
class ForgetReport:
    """What ``forget_customer`` changed (no personal data in it)."""

    user_id: int
    counts: dict[str, int] = field(default_factory=dict)
    wal_clean: bool = True
    notes: list[str] = field(default_factory=list)


def erased_id_hash(db: Database, external_id: str, secret: bytes | None = None) -> str:
    """Keyed hash of an external id: lets an import recognise an erased customer without the
    database keeping the id itself (``secret``: the shop's, when the caller has read it)."""
    key = secret if secret is not None else shop_secret(db)
    return hmac.new(key, f"erased\x1f{external_id}".encode("utf-8"),
                    hashlib.sha256).hexdigest()


def was_erased(db: Database, external_id: str) -> bool:
    """Whether the customer with this external id was erased on request."""
    return store.is_erased(db, erased_id_hash(db, external_id))


def identifying_strings(user: dict[str, Any], *, name_parts: bool = True) -> list[str]:
    """Strings that identify the customer in free text: id, name, email, phone, and with
    ``name_parts`` each part of the name (a per-customer prompt holds only the first name:
    erasure removes every cache entry with it; an access request gets only entries with the
    whole name, id, email or phone, never another Ann's)."""
    out: list[str] = [str(user["external_id"])]
    name = (user.get("name") or "").strip()
    if name:
        out.append(name)
        for part in re.split(r"[\s,]+", name) if name_parts else ():
            if len(part) >= 3 or (_CJK.search(part) and len(part) >= 2):
                out.append(part)
    for key in ("email", "phone"):
        value = (user.get(key) or "").strip()
        if value:
            out.append(value)
    phone = re.sub(r"\D", "", user.get("phone") or "")
    if len(phone) >= 7:
        out.append(phone)
    return list(dict.fromkeys(out))


def _user(db: Database, external_id: str) -> dict[str, Any]:
    if not external_id or not external_id.strip():
        raise PushgenError("give the customer's external id, e.g. `pushgen users forget C1042`")
    user = store.find_user(db, external_id)
    if user is None:
        raise PushgenError(f"no customer with external id {external_id!r} (already erased, or "
                           "never imported)")
    return user


def customer_data(db: Database, external_id: str) -> dict[str, Any]:
    """Everything the database holds about one customer (GDPR art. 15), as plain data."""
    user = _user(db, external_id)
    rows = store.customer_rows(db, user["id"], identifying_strings(user, name_parts=False))
    user = dict(user)
    user["attributes"] = loads(user.get("attributes"), {})
    return {"customer": user, **rows, "exported_at": now_iso()}


def forget_customer(db: Database, external_id: str, *, reason: str | None = None
                    ) -> ForgetReport:
    """Erase one customer (see the module docstring). Refuses an unknown id with one line."""
    user = _user(db, external_id)
    uid = user["id"]
    drafts = db.execute("SELECT id, channel FROM drafts WHERE user_id = ?", [uid]).fetchall()
    tombstones = {did: {f: ("" if f == "deep_link" else TOMBSTONE)
                        for f in CHANNEL_FIELDS.get(channel, ("text",))}
                  for did, channel in drafts}
    counts = store.erase_customer(db, uid, needles=identifying_strings(user),
                                  tombstones=tombstones, id_hash=erased_id_hash(db, external_id),
                                  reason=reason, now=now_iso())
    busy, left = store.compact(db)
    report = ForgetReport(uid, counts, wal_clean=not busy and not left)
    if not report.wal_clean:
        report.notes.append("another program (e.g. `pushgen review serve`) holds the database "
                            "open, so the write-ahead log could not be emptied: close it and "
                            "run `pushgen users forget` again or `sqlite3 FILE 'VACUUM'`")
    report.notes.append("a trained model keeps an anonymous vector for this customer's "
                        f"internal id {uid} until the next `pushgen train`")
    return report


__all__ = ["ForgetReport", "forget_customer", "customer_data", "was_erased",
           "erased_id_hash", "identifying_strings", "TOMBSTONE"]
