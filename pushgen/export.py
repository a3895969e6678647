"""Export approved drafts as files a sending platform imports: CSV, JSONL or .eml.

Only approved drafts leave (``again=True`` adds ones exported before), and consent is read
again at export time: a customer who opted out after approval is skipped and counted.
Files are written atomically (temp file in the same folder, fsync, ``os.replace``; .eml into
a temp folder renamed at the end) and each export gets a new name
``<campaign>-<channel>-<UTC timestamp>.<ext>``, so an earlier batch is never overwritten.
The drafts are marked ``exported`` only after the file is complete, in the same database
transaction that holds the write lock for the whole export, so no reviewer can change a
draft between the moment it is read and the moment it is marked.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from sqlite_utils import Database

from .channels import unsubscribe_url_for
from .errors import PushgenError
from .messages import CHANNEL_FIELDS, CampaignSettings, Recipient, checks_pass
from .review import campaign_id, campaign_settings, check_result, default_actor
from .store import now_iso
from .store import reviews as store

FORMATS: dict[str, tuple[str, ...]] = {"email": ("csv", "jsonl", "eml"),
                                       "sms": ("csv", "jsonl"), "push": ("csv", "jsonl")}

# Exact CSV header per channel (the email one is what ESP importers map to merge fields).
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "email": ("email", "first_name", "subject", "preheader", "html", "text", "campaign",
              "draft_id", "send_at"),
    "sms": ("phone", "external_id", "text", "campaign", "draft_id", "send_at"),
    "push": ("external_id", "title", "body", "deep_link", "campaign", "draft_id", "send_at"),
}
_CONTACT = {"email": "user_email", "sms": "user_phone", "push": "user_external_id"}


@dataclass
class ExportReport:
    """What one export wrote and what it left out, and why."""

    campaign: str
    channel: str
    fmt: str
    path: Path | None = None            # the file (or .eml folder); None when nothing to write
    exported: int = 0
    draft_ids: list[int] = field(default_factory=list)
    skipped_no_consent: int = 0         # opted out of the channel since approval
    skipped_no_contact: int = 0         # no email address / phone number
    skipped_failing: int = 0            # approved but failing a check (should not happen)
    not_approved: int = 0               # drafts of the campaign still in review or rejected

    @property
    def skipped(self) -> int:
        return self.skipped_no_consent + self.skipped_no_contact + self.skipped_failing


@dataclass
class _Outgoing:
    draft_id: int
    version: int
    status: str
    content: dict[str, str]
    recipient: Recipient
    email: str | None
    phone: str | None
    locale: str


def parse_send_at(value: str | None) -> str | None:
    """Validate an ISO 8601 send time; a time without zone is refused (ambiguous)."""
    if value is None or value == "":
        return None
    try:
        when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PushgenError(f"--send-at {value!r} is not an ISO 8601 time "
                           "(e.g. 2026-12-01T09:00:00+08:00)") from None
    if when.tzinfo is None:
        raise PushgenError(f"--send-at {value!r} has no time zone; add one, e.g. "
                           f"{value}+00:00 or {value}Z")
    return when.isoformat()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "campaign"


def _target(out_dir: Path, campaign: str, channel: str, fmt: str) -> Path:
    """A new, unused name for this export: campaign, channel and UTC time to the second."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{_slug(campaign)}-{channel}-{stamp}"
    suffix = "" if fmt == "eml" else f".{fmt}"
    path, n = out_dir / f"{stem}{suffix}", 2
    while path.exists():
        path, n = out_dir / f"{stem}-{n}{suffix}", n + 1
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write via ``write(fh)`` into a temp file beside ``path``, fsync, then rename over.

    A crash at any point leaves either no file or the complete file, never a partial one.
    Text is plain UTF-8 without BOM (what ESP importers expect)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_folder_atomic(path: Path, files: Iterable[tuple[str, bytes]]) -> None:
    """Write every (name, bytes) into a temp folder beside ``path``, then rename it."""
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        for name, data in files:
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


# --- rows per format -----------------------------------------------------------------------


def _record(msg: _Outgoing, channel: str, campaign: str, send_at: str | None) -> dict[str, Any]:
    """One exported message as a flat dict (the CSV columns are a subset of it)."""
    base: dict[str, Any] = {"campaign": campaign, "draft_id": msg.draft_id,
                            "send_at": send_at or ""}
    if channel == "email":
        return {"email": msg.email, "first_name": msg.recipient.first_name or "",
                **{k: msg.content.get(k, "") for k in CHANNEL_FIELDS["email"]}, **base}
    if channel == "sms":
        return {"phone": msg.phone, "external_id": msg.recipient.external_id,
                "text": msg.content.get("text", ""), **base}
    return {"external_id": msg.recipient.external_id,
            **{k: msg.content.get(k, "") for k in CHANNEL_FIELDS["push"]}, **base}


def _write_csv(fh: TextIO, channel: str, records: list[dict[str, Any]]) -> None:
    # QUOTE_ALL: every field quoted, so HTML with commas, quotes and newlines, phone numbers
    # with a leading '+' and Chinese text all survive any RFC 4180 reader unchanged.
    writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS[channel], quoting=csv.QUOTE_ALL,
                            extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(records)


def _write_jsonl(fh: TextIO, channel: str, records: list[dict[str, Any]],
                 outgoing: list[_Outgoing]) -> None:
    for rec, msg in zip(records, outgoing):
        line = {"channel": channel, "external_id": msg.recipient.external_id,
                "name": msg.recipient.name, "locale": msg.locale, **rec}
        fh.write(json.dumps(line, ensure_ascii=False, sort_keys=False) + "\n")


def build_eml(msg: _Outgoing, settings: CampaignSettings, *, date: _dt.datetime) -> bytes:
    """One RFC 5322 message: multipart/alternative (text/plain, then text/html), UTF-8,
    with one-click List-Unsubscribe (RFC 8058)."""
    unsubscribe = unsubscribe_url_for(settings, msg.recipient.external_id)
    domain = settings.sender_email.rpartition("@")[2] or "pushgen.local"
    em = EmailMessage(policy=policy.SMTP)
    em["From"] = formataddr((settings.sender_name, settings.sender_email))
    em["To"] = formataddr((msg.recipient.name or "", msg.email or ""))
    em["Subject"] = msg.content.get("subject", "")
    em["Date"] = format_datetime(date)
    em["Message-ID"] = make_msgid(idstring=f"pushgen.{msg.draft_id}", domain=domain)
    mailto = (f"mailto:{settings.sender_email}"
              f"?subject={quote('unsubscribe ' + msg.recipient.external_id)}")
    em["List-Unsubscribe"] = f"<{unsubscribe}>, <{mailto}>"
    em["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    em["X-Pushgen-Draft"] = str(msg.draft_id)
    # quoted-printable keeps the file 7-bit clean (any relay, any upload form) while
    # Chinese and long HTML lines survive exactly; set_content ends each part with a newline.
    em.set_content(msg.content.get("text", ""), subtype="plain", charset="utf-8",
                   cte="quoted-printable")
    em.add_alternative(msg.content.get("html", ""), subtype="html", charset="utf-8",
                       cte="quoted-printable")
    return em.as_bytes()


# --- the export --------------------------------------------------------------------------


def _select(rows: list[dict[str, Any]], channel: str, report: ExportReport) -> list[_Outgoing]:
    """Drafts that may be sent now: consent (read now, not at approval), a contact, checks."""
    out: list[_Outgoing] = []
    for raw in rows:
        r = store.decode_row(raw)
        if not r[f"consent_{channel}"]:
            report.skipped_no_consent += 1
            continue
        contact = r[_CONTACT[channel]]
        if not contact or not str(contact).strip():
            report.skipped_no_contact += 1
            continue
        if not r["passed"] or not checks_pass([check_result(c) for c in r["checks"]]):
            report.skipped_failing += 1
            continue
        recipient = Recipient(user_id=r["user_id"], external_id=r["user_external_id"],
                              name=r["user_name"], locale=r["locale"],
                              attributes=r["user_attributes"] or {})
        out.append(_Outgoing(r["id"], r["version"], r["status"], r["content"], recipient,
                             r["user_email"], r["user_phone"], r["locale"]))
    return out


def _write(path: Path, fmt: str, channel: str, campaign: str, settings: CampaignSettings,
           outgoing: list[_Outgoing], send_at: str | None) -> None:
    records = [_record(m, channel, campaign, send_at) for m in outgoing]
    if fmt == "csv":
        write_text_atomic(path, lambda fh: _write_csv(fh, channel, records))
    elif fmt == "jsonl":
        write_text_atomic(path, lambda fh: _write_jsonl(fh, channel, records, outgoing))
    else:
        # Date: the planned send time when given (what the recipient will see), else now.
        date = (_dt.datetime.fromisoformat(send_at) if send_at
                else _dt.datetime.now(_dt.timezone.utc))
        write_folder_atomic(path, ((f"{m.draft_id}.eml", build_eml(m, settings, date=date))
                                   for m in outgoing))


def export_campaign(db: Database, campaign: str, channel: str, *, fmt: str,
                    out_dir: str | os.PathLike[str], again: bool = False,
                    send_at: str | None = None, actor: str | None = None) -> ExportReport:
    """Write the approved ``channel`` drafts of ``campaign`` to a new file in ``out_dir``.

    Nothing to export writes no file (``report.path`` is None, ``exported`` 0). With
    ``again`` drafts exported before are written again too (and keep status exported).
    """
    if channel not in FORMATS:
        raise PushgenError(f"unknown channel {channel!r}: use email, sms or push")
    if fmt not in FORMATS[channel]:
        raise PushgenError(f"{channel} exports as {' or '.join(FORMATS[channel])}, not {fmt!r}")
    send_at = parse_send_at(send_at)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PushgenError(f"{out}: not a folder")
    cid = campaign_id(db, campaign)
    row = store.campaign_row(db, campaign)
    settings = campaign_settings(json.loads(row["config"] or "{}"), campaign, channel)
    report = ExportReport(campaign=campaign, channel=channel, fmt=fmt)
    statuses = ("approved", "exported") if again else ("approved",)
    path: Path | None = None
    try:
        with store.write_transaction(db):
            outgoing = _select(store.exportable_drafts(db, cid, channel, statuses), channel,
                               report)
            report.not_approved = sum(
                store.count_drafts(db, campaign_id=cid, channel=channel, status=s)
                for s in ("draft", "rejected"))
            if not outgoing:
                return report
            out.mkdir(parents=True, exist_ok=True)
            path = _target(out, campaign, channel, fmt)
            _write(path, fmt, channel, campaign, settings, outgoing, send_at)
            now = now_iso()
            changed = store.set_status_many(
                db, [{"id": m.draft_id, "version": m.version, "status": m.status,
                      "content": m.content} for m in outgoing], "exported",
                {"actor": actor or default_actor(), "action": "export", "at": now,
                 "reason": f"{fmt} {path.name}" + (f" send_at {send_at}" if send_at else "")},
                extra={"exported_at": now})
            if len(changed) != len(outgoing):  # pragma: no cover - the write lock prevents it
                raise PushgenError("drafts changed during export; nothing was marked and "
                                   "no file was kept; run the export again")
    except BaseException:
        # The database rolled back: leave no file claiming what was not marked exported.
        if path is not None and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise
    report.path = path
    report.exported = len(outgoing)
    report.draft_ids = [m.draft_id for m in outgoing]
    return report


__all__ = ["ExportReport", "FORMATS", "CSV_COLUMNS", "export_campaign", "build_eml",
           "parse_send_at", "write_text_atomic", "write_folder_atomic"]
