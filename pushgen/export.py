"""Export approved drafts as files a sending platform imports: CSV, JSONL or .eml.

Only approved drafts leave (``again=True`` adds ones exported before), and consent is read
again at export time: a customer who opted out after approval is skipped and counted.
Catalog facts are re-checked too: a draft whose items changed price, sale price or currency,
went inactive or out of stock since it was written is not exported but reopened (status
draft, with a review event naming the change) so a reviewer sees why it did not go out.
At most one message per customer per campaign leaves: of several approved variants only the
lowest variant number is exported, and none once another variant was exported before.
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

from .errors import PushgenError
from .messages import CHANNEL_FIELDS, CampaignSettings, Recipient, checks_pass
from .config import settings_from_json
from .review import campaign_id, check_result, default_actor
from .signing import recipient_unsubscribe_url, shop_secret
from .store import now_iso
from .store import reviews as store

FORMATS: dict[str, tuple[str, ...]] = {"email": ("csv", "jsonl", "eml"),
                                       "sms": ("csv", "jsonl"), "push": ("csv", "jsonl")}

# Exact CSV header per channel (the email one is what ESP importers map to merge fields).
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "email": ("email", "first_name", "subject", "preheader", "html", "text", "campaign",
              "draft_id", "variant", "send_at"),
    "sms": ("phone", "external_id", "text", "campaign", "draft_id", "variant", "send_at"),
    "push": ("external_id", "title", "body", "deep_link", "campaign", "draft_id", "variant",
             "send_at"),
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
    skipped_stale: int = 0              # catalog changed since approval: reopened for review
    skipped_extra_variant: int = 0      # another variant of the same customer goes / went out
    not_approved: int = 0               # drafts of the campaign still in review or rejected
    already_exported: int = 0           # exported before (written again only with --again)
    stale_reasons: list[str] = field(default_factory=list)  # "draft 12: SKU-1 price ..."

    @property
    def skipped(self) -> int:
        return (self.skipped_no_consent + self.skipped_no_contact + self.skipped_failing
                + self.skipped_stale + self.skipped_extra_variant)


@dataclass
class _Outgoing:
    draft_id: int
    variant: int
    user_id: int
    version: int
    status: str
    content: dict[str, str]
    recipient: Recipient
    email: str | None
    phone: str | None
    locale: str
    unsubscribe_url: str = ""


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
                            "variant": msg.variant, "send_at": send_at or ""}
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
    unsubscribe = msg.unsubscribe_url
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


def _money(value: Any) -> str:
    return "none" if value is None else f"{float(value):.2f}"


def catalog_changes(items: list[dict[str, Any]], current: dict[str, dict[str, Any]]
                    ) -> list[str]:
    """Why a draft's items no longer match the catalog (empty when they still do)."""
    changes: list[str] = []
    for it in items:
        sku = it.get("sku")
        now = current.get(sku)
        if now is None:
            changes.append(f"{sku} no longer in the catalog")
            continue
        for key in ("price", "sale_price"):
            old, new = it.get(key), now[key]
            if (old is None) != (new is None) or (
                    old is not None and abs(float(old) - float(new)) > 0.005):
                changes.append(f"{sku} {key} {_money(old)} -> {_money(new)}")
        if (it.get("currency") or "USD") != (now["currency"] or "USD"):
            changes.append(f"{sku} currency {it.get('currency')} -> {now['currency']}")
        if not now["active"]:
            changes.append(f"{sku} inactive")
        if now["stock"] is not None and now["stock"] <= 0:
            changes.append(f"{sku} out of stock")
    return changes


def _select(db: Database, rows: list[dict[str, Any]], channel: str, report: ExportReport,
            stale: list[tuple[dict[str, Any], str]], settings: CampaignSettings
            ) -> list[_Outgoing]:
    """Drafts that may be sent now: consent (read now, not at approval), a contact, checks,
    unchanged catalog facts. Stale drafts are appended to ``stale`` with the reason."""
    out: list[_Outgoing] = []
    secret = shop_secret(db)
    decoded = [store.decode_row(raw) for raw in rows]
    current = store.catalog_facts(db, [it.get("sku") for r in decoded for it in r["items"]
                                       if it.get("sku")])
    for r in decoded:
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
        changes = catalog_changes(r["items"], current)
        if changes:
            report.skipped_stale += 1
            reason = "catalog changed since approval: " + "; ".join(changes)
            report.stale_reasons.append(f"draft {r['id']}: {'; '.join(changes)}")
            stale.append((r, reason))
            continue
        recipient = Recipient(user_id=r["user_id"], external_id=r["user_external_id"],
                              name=r["user_name"], locale=r["locale"],
                              attributes=r["user_attributes"] or {})
        out.append(_Outgoing(r["id"], r["variant"], r["user_id"], r["version"], r["status"],
                             r["content"], recipient, r["user_email"], r["user_phone"],
                             r["locale"], recipient_unsubscribe_url(
                                 secret, settings, r["campaign_id"], r["user_id"],
                                 r["user_external_id"])))
    return out


def _one_per_user(outgoing: list[_Outgoing], already_sent: set[int],
                  report: ExportReport) -> list[_Outgoing]:
    """The lowest variant of each customer, and none for a customer already sent one."""
    best: dict[int, _Outgoing] = {}
    for m in outgoing:
        if m.user_id in already_sent:
            report.skipped_extra_variant += 1
        elif m.user_id not in best or m.variant < best[m.user_id].variant:
            if m.user_id in best:
                report.skipped_extra_variant += 1
            best[m.user_id] = m
        else:
            report.skipped_extra_variant += 1
    return sorted(best.values(), key=lambda m: m.draft_id)


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
    by_channel = store.channel_counts(db, cid)
    if not by_channel.get(channel):
        if by_channel:
            raise PushgenError(f"campaign {campaign} has {', '.join(sorted(by_channel))} "
                               f"drafts, not {channel}: use `pushgen export "
                               f"{sorted(by_channel)[0]} -c {campaign}`")
        raise PushgenError(f"campaign {campaign} has no drafts yet (run `pushgen draft`)")
    settings = settings_from_json(json.loads(row["config"] or "{}"), name=campaign,
                                  channel=channel)
    report = ExportReport(campaign=campaign, channel=channel, fmt=fmt)
    statuses = ("approved", "exported") if again else ("approved",)
    path: Path | None = None
    try:
        with store.write_transaction(db):
            stale: list[tuple[dict[str, Any], str]] = []
            outgoing = _select(db, store.exportable_drafts(db, cid, channel, statuses),
                               channel, report, stale, settings)
            sent = set() if again else store.exported_user_ids(db, cid, channel)
            outgoing = _one_per_user(outgoing, sent, report)
            report.not_approved = sum(
                store.count_drafts(db, campaign_id=cid, channel=channel, status=s)
                for s in ("draft", "rejected"))
            report.already_exported = store.count_drafts(db, campaign_id=cid, channel=channel,
                                                         status="exported")
            now = now_iso()
            who = actor or default_actor()
            for r, reason in stale:
                # Reopen (approved -> draft) so the reviewer sees why it did not go out; an
                # already exported draft (--again) keeps its status and is only skipped.
                if r["status"] == "approved":
                    store.set_status_many(
                        db, [{"id": r["id"], "version": r["version"], "status": r["status"],
                              "content": r["content"]}], "draft",
                        {"actor": who, "action": "reopen", "at": now, "reason": reason})
            if not outgoing:
                return report
            try:
                out.mkdir(parents=True, exist_ok=True)
                path = _target(out, campaign, channel, fmt)
                _write(path, fmt, channel, campaign, settings, outgoing, send_at)
            except OSError as exc:
                raise PushgenError(f"cannot write the export into folder {out}: "
                                   f"{exc.strerror or exc}") from None
            changed = store.set_status_many(
                db, [{"id": m.draft_id, "version": m.version, "status": m.status,
                      "content": m.content} for m in outgoing], "exported",
                {"actor": who, "action": "export", "at": now,
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
           "catalog_changes",
           "parse_send_at", "write_text_atomic", "write_folder_atomic"]
