"""Export approved drafts as files a sending platform imports: CSV, JSONL or .eml.

Only approved drafts leave (``again=True`` adds ones exported before). At export time
consent is read again (opted-out customers are skipped and counted), every draft is checked
again by the current channel rules and guards (one that fails now is reopened with the
reason), and catalog facts are compared with what was approved (a changed price, sale
price or currency, an inactive or out-of-stock item reopens the draft). At most one message
per customer per campaign leaves: the variant the customer was assigned (``pushgen.assign``;
for campaigns drafted before assignments existed, the lowest variant), and none once another
variant went out.

Each message gets its own send time (``send_at``, UTC) with a ``send_time_reason``: the
customer's usual active hour in their own timezone, inside the campaign's send window and
never inside quiet hours in their local time (``pushgen.sendtime``; quiet hours are on for
SMS by default). Customers without a timezone get the shop's default, named in the report.

Exactly once, whatever happens to the process (kill -9 included):

1. one short transaction marks the drafts ``exported`` and records the export in the
   ``exports`` journal as *pending*, with the file's final name;
2. the file (or the folder of .eml files) is written under a hidden temporary name beside
   it and fsynced; 3. it is renamed to its final name: that rename is the commit point;
4. the journal row becomes *done*.

The next export first reconciles every pending row left by a run that died: if the final
file exists the export stands (nothing is written twice); if not, its drafts go back to
approved (nothing is lost) and the temporary file is removed. Unfinished temporary files
in the output folder are cleaned up with a note. Only one export runs at a time (a lock
file beside the database).

CSV cells that a spreadsheet would read as a formula (starting with = + - @, a tab or a CR)
are prefixed with ``'`` as OWASP recommends (a phone number's leading + stays). Header
values of .eml files are encoded by the email library and cleaned of line breaks, so a
customer name can never add or break a header. A campaign still using pushgen's demo sender
(no [sender] in its config) is refused unless ``allow_demo_sender``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import glob
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from sqlite_utils import Database

from .channels import FORMULA_STARTS, control_chars, one_line
from .config import SendSettings, config_from_json, demo_sender_fields, settings_from_json
from .errors import PushgenError
from .generate.guards import neutralize_template_syntax
from .messages import CHANNEL_FIELDS, CampaignSettings, CheckResult, Recipient, checks_pass
from .review import actor_name, campaign_id, recheck_many
from .segments import profile_segment
from .sendtime import (DEFAULT_SMS_QUIET_HOURS, MIN_EVENTS, Customer, QuietHours, SendPlan,
                       SendWindow, parse_quiet_hours, parse_send_window, plan_all, shop_zone)
from .signing import recipient_unsubscribe_url, shop_secret
from .store import assignments as assignment_store
from .store import now_iso
from .store import reviews as store
from .store import send_times as send_store
from .store.ranking import database_tag

FORMATS: dict[str, tuple[str, ...]] = {"email": ("csv", "jsonl", "eml"),
                                       "sms": ("csv", "jsonl"), "push": ("csv", "jsonl")}

# Exact CSV header per channel (the email one is what ESP importers map to merge fields).
# Columns added later go at the end, so importers mapping by position keep working.
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "email": ("email", "first_name", "subject", "preheader", "html", "text", "campaign",
              "draft_id", "variant", "send_at", "from", "unsubscribe_url", "send_time_reason"),
    "sms": ("phone", "external_id", "text", "campaign", "draft_id", "variant", "send_at",
            "send_time_reason"),
    "push": ("external_id", "title", "body", "deep_link", "campaign", "draft_id", "variant",
             "send_at", "push_token", "send_time_reason"),
}
_CONTACT = {"email": "user_email", "sms": "user_phone", "push": "user_external_id"}

# Test hook: the export kills its own process (SIGKILL, like a crash or `kill -9`) at the
# named point: 'journal' (drafts marked, nothing written), 'file:N' (N files/rows written),
# 'written' (complete, not renamed), 'renamed' (final name, journal not closed).
KILL_ENV = "PUSHGEN_TEST_KILL_EXPORT_AT"
TMP_SUFFIX = ".pushgen-tmp"
# Temporary names of interrupted exports: this version's carry the database's identity
# (``.<file>.<id12>.pushgen-tmp``), so an export only ever removes its own database's
# (two shops may export into one folder); older versions' names carry none.
_STALE_TMP_RE = re.compile(r"^\..+-(?:email|sms|push)-\d{8}T\d{6}Z(?:-\d+)?"
                           r"(?:\.csv|\.jsonl)?(?:\.(?P<db>[0-9a-f]{12})\.pushgen-tmp|"
                           r"\.pushgen-tmp|\.[A-Za-z0-9_]+\.tmp)$")


@dataclass
class ExportReport:
    """What one export wrote and what it left out, and why."""

    campaign: str
    channel: str
    fmt: str
    path: Path | None = None            # the file (or .eml folder); None when nothing to write
    exported: int = 0
    draft_ids: list[int] = field(default_factory=list)
    export_id: int | None = None        # row of the exports journal
    skipped_no_consent: int = 0         # opted out of the channel since approval
    skipped_no_contact: int = 0         # no email address / phone number
    skipped_bad_contact: int = 0        # an address or number no platform can use
    skipped_failing: int = 0            # fails a check now: reopened for review
    skipped_stale: int = 0              # catalog changed since approval: reopened for review
    skipped_extra_variant: int = 0      # another variant of the same customer goes / went out
    skipped_holdout: int = 0            # drafts of hold-out customers (never sent)
    not_approved: int = 0               # drafts of the campaign still in review or rejected
    already_exported: int = 0           # exported before in this format (again: --again)
    other_format: int = 0               # exported before in another format, written now in this one
    stale_reasons: list[str] = field(default_factory=list)    # "draft 12: SKU-1 price ..."
    failing_reasons: list[str] = field(default_factory=list)  # "draft 12: guard.links ..."
    neutralised_cells: list[str] = field(default_factory=list)  # "draft 12 subject"
    notes: list[str] = field(default_factory=list)  # reconciled exports, cleaned temp files
    # Send times: the window, quiet hours, the shop's timezone, and how the hours were found.
    send_window: tuple[str, str] | None = None
    quiet_hours: str | None = None
    shop_timezone: str = "UTC"
    shop_timezone_customers: int = 0    # customers without a (known) timezone of their own
    send_sources: dict[str, int] = field(default_factory=dict)   # own | segment | shop
    send_hours: list[int] = field(default_factory=lambda: [0] * 24)  # messages per local hour

    @property
    def skipped(self) -> int:
        return (self.skipped_no_consent + self.skipped_no_contact + self.skipped_bad_contact
                + self.skipped_failing + self.skipped_stale + self.skipped_extra_variant
                + self.skipped_holdout)


@dataclass
class _Outgoing:
    draft_id: int
    variant: int
    user_id: int
    version: int
    status: str
    exported_at: str | None
    content: dict[str, str]
    recipient: Recipient
    email: str | None
    phone: str | None
    push_token: str | None
    locale: str
    unsubscribe_url: str = ""


@dataclass
class SendOptions:
    """When an export's messages go out: the window (UTC, never before now), quiet hours
    in each customer's local time (None: none), the shop's timezone for customers without
    one, and how many events make a customer's own hour."""

    window: SendWindow
    quiet: QuietHours | None
    shop_timezone: str
    min_events: int = MIN_EVENTS


def send_options(channel: str, settings: SendSettings | None = None, *,
                 send_window: str | None = None, quiet_hours: str | None = None,
                 timezone: str | None = None, min_events: int | None = None,
                 now: _dt.datetime | None = None) -> SendOptions:
    """The export's send options: the campaign's ``[send]`` settings, overridden by the
    arguments. No window means the next 24 hours; quiet hours default to 21:00-09:00 for
    SMS and none for email and push (``"off"`` turns them off). A window that has ended is
    refused; one that has begun starts now."""
    settings = settings or SendSettings()
    tz_name = timezone or settings.timezone or "UTC"
    tz = shop_zone(tz_name)
    now = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    text = send_window or settings.send_window
    if text:
        window = parse_send_window(text, tz)
        if window.end <= now:
            raise PushgenError(f"the send window {text} has already ended; give a window in "
                               "the future (--send-window START/END or a day)")
        if window.start < now:
            window = SendWindow(now.replace(microsecond=0), window.end)
    else:
        start = now.replace(second=0, microsecond=0)
        window = SendWindow(start, start + _dt.timedelta(days=1))
    quiet_text = quiet_hours if quiet_hours is not None else settings.quiet_hours
    if quiet_text is None and channel == "sms":
        quiet_text = DEFAULT_SMS_QUIET_HOURS
    events = min_events if min_events is not None else settings.min_events
    if events < 1:
        raise PushgenError(f"--min-events {events}: use 1 or more")
    return SendOptions(window, parse_quiet_hours(quiet_text), tz.key, events)


def plan_send_times(db: Database, user_ids: list[int], options: SendOptions
                    ) -> tuple[dict[int, SendPlan], dict[str, int]]:
    """Each customer's send time (``sendtime.plan_all``) from their timezone, profile
    segment and event history; and how many plans came from own / segment / shop history
    and how many customers got the shop's timezone."""
    profiles = send_store.profiles(db, user_ids)
    times = send_store.event_times(db, user_ids)
    customers = [Customer(u, profiles[u][0], profile_segment(profiles[u][1]), times[u])
                 for u in user_ids]
    return plan_all(customers, options.window, shop_tz=shop_zone(options.shop_timezone),
                    quiet=options.quiet, min_events=options.min_events)


def parse_send_at(value: str | None) -> None:
    """``--send-at`` (one send time for the whole campaign) was replaced by per-customer
    send times; a clear error points to ``--send-window``."""
    if value:
        raise PushgenError("--send-at was replaced by per-customer send times: each message "
                           "now goes out at its customer's usual hour; give the window with "
                           "--send-window START/END (or a day, e.g. 2026-12-01)")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "campaign"


def _target(out_dir: Path, campaign: str, channel: str, fmt: str) -> Path:
    """A new, unused name for this export: campaign, channel and UTC time to the second.
    A name is taken while any database's export is being written under it."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{_slug(campaign)}-{channel}-{stamp}"
    suffix = "" if fmt == "eml" else f".{fmt}"
    path, n = out_dir / f"{stem}{suffix}", 2
    while path.exists() or any(out_dir.glob(f".{glob.escape(path.name)}*{TMP_SUFFIX}")):
        path, n = out_dir / f"{stem}-{n}{suffix}", n + 1
    return path


def _tmp_for(path: Path, db_tag: str) -> Path:
    return path.with_name(f".{path.name}.{db_tag}{TMP_SUFFIX}")


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:  # pragma: no cover - runs in a killed subprocess
        os.kill(os.getpid(), signal.SIGKILL)


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_text_atomic(path: Path, write: Callable[[TextIO], None], *,
                      mode: int | None = None) -> None:
    """Write via ``write(fh)`` into a temp file beside ``path``, fsync, then rename over
    (``mode``: the file's permissions, e.g. 0o600 for personal data).

    A crash at any point leaves either no file or the complete file, never a partial one.
    Text is plain UTF-8 without BOM (what ESP importers expect)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


# --- what may leave ---------------------------------------------------------------------------

# Formula starts (OWASP CSV injection): = + - @, and tab / CR which some spreadsheets skip.
_FORMULA_START = (*FORMULA_STARTS, "\t", "\r")
_PHONE_CELL_RE = re.compile(r"\+[\d ()./-]+")


def csv_safe(value: Any, *, phone: bool = False) -> tuple[Any, bool]:
    """(cell, changed): a text cell a spreadsheet would run as a formula gets a leading
    ``'`` (shown as text, OWASP's advice); a phone number's '+' followed by digits stays.
    Numbers and empty cells are unchanged."""
    if not isinstance(value, str) or not value:
        return value, False
    if not value.lstrip(" ").startswith(_FORMULA_START) and not value.startswith(
            _FORMULA_START):
        return value, False
    if phone and _PHONE_CELL_RE.fullmatch(value):
        return value, False  # digits and phone punctuation: no function can be called
    return "'" + value, True


_PHONE_OK_RE = re.compile(r"\+?[\d ()./-]{7,32}")


def usable_phone(phone: str | None) -> bool:
    """A number an SMS platform can send to: digits and phone punctuation, 7-15 digits."""
    if not phone or not _PHONE_OK_RE.fullmatch(phone.strip()):
        return False
    return 7 <= sum(c.isdigit() for c in phone) <= 15


def usable_email(address: str | None, *, for_eml: bool = False) -> bool:
    """An address a platform can send to: one '@', no spaces or control characters
    (``for_eml``: also one the email library can write into a To header)."""
    if not address:
        return False
    if control_chars(address) or any(c.isspace() for c in address):
        return False
    local, at, domain = address.partition("@")
    if not at or not local or not domain or "@" in domain or "." not in domain.strip("."):
        return False
    if for_eml:
        try:
            Address(addr_spec=address)
        except Exception:  # the email library's parse errors and header defects
            return False
    return True


def _utc(when: _dt.datetime) -> str:
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(msg: _Outgoing, channel: str, campaign: str, plan: SendPlan,
            settings: CampaignSettings) -> dict[str, Any]:
    """One exported message as a flat dict (the CSV columns are a subset of it)."""
    base: dict[str, Any] = {"campaign": campaign, "draft_id": msg.draft_id,
                            "variant": msg.variant, "send_at": _utc(plan.send_at),
                            "send_time_reason": plan.reason}
    if channel == "email":
        return {"email": msg.email, "first_name": _data_text(msg.recipient.first_name),
                **{k: msg.content.get(k, "") for k in CHANNEL_FIELDS["email"]}, **base,
                "from": _from_header(settings), "unsubscribe_url": msg.unsubscribe_url}
    if channel == "sms":
        return {"phone": msg.phone, "external_id": msg.recipient.external_id,
                "text": msg.content.get("text", ""), **base}
    return {"external_id": msg.recipient.external_id,
            **{k: msg.content.get(k, "") for k in CHANNEL_FIELDS["push"]}, **base,
            "push_token": msg.push_token or ""}


def _data_text(value: str | None) -> str:
    """A customer's name as a merge field: one line, template delimiters split (a platform
    that renders Liquid in merge fields must not evaluate a name like '{{ 7*7 }}')."""
    return neutralize_template_syntax(one_line(value or ""))


def _from_header(settings: CampaignSettings) -> str:
    return str(Address(display_name=one_line(settings.sender_name),
                       addr_spec=settings.sender_email))


def _write_csv(fh: TextIO, channel: str, records: list[dict[str, Any]],
               neutralised: list[str]) -> None:
    # QUOTE_ALL: every field quoted, so HTML with commas, quotes and newlines and Chinese
    # text survive any RFC 4180 reader unchanged; quoting does not stop a spreadsheet from
    # running a formula, so formula starts are neutralised too (csv_safe).
    writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS[channel], quoting=csv.QUOTE_ALL,
                            extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for n, rec in enumerate(records, 1):
        row = {}
        for key in CSV_COLUMNS[channel]:
            value, changed = csv_safe(rec.get(key, ""), phone=key == "phone")
            if changed:
                neutralised.append(f"draft {rec['draft_id']} {key}")
            row[key] = value
        writer.writerow(row)
        _kill_point(f"file:{n}")


def _write_jsonl(fh: TextIO, channel: str, records: list[dict[str, Any]],
                 outgoing: list[_Outgoing], plans: dict[int, SendPlan]) -> None:
    for rec, msg in zip(records, outgoing):
        plan = plans[msg.user_id]
        line = {"channel": channel, "external_id": msg.recipient.external_id,
                "name": _data_text(msg.recipient.name), "locale": msg.locale, **rec,
                "send_at_local": plan.local_time.isoformat(), "timezone": plan.timezone}
        fh.write(json.dumps(line, ensure_ascii=False, sort_keys=False) + "\n")


# SMTP line ends, but header lines up to RFC 5322's 998 characters: with the default 78 the
# email library folds a long List-Unsubscribe (a signed link is ~150 characters) into RFC 2047
# encoded words, which mail clients do not decode in that header (one-click unsubscribe
# breaks). Non-ASCII values are still encoded.
_EML_POLICY = policy.SMTP.clone(max_line_length=998)


def build_eml(msg: _Outgoing, settings: CampaignSettings, *, date: _dt.datetime) -> bytes:
    """One RFC 5322 message: multipart/alternative (text/plain, then text/html), UTF-8,
    with one-click List-Unsubscribe (RFC 8058). Every header value is one line (control
    characters become spaces) and non-ASCII is RFC 2047-encoded by the email library."""
    unsubscribe = msg.unsubscribe_url
    domain = settings.sender_email.rpartition("@")[2] or "pushgen.local"
    em = EmailMessage(policy=_EML_POLICY)
    em["From"] = _from_header(settings)
    em["To"] = Address(display_name=one_line(msg.recipient.name or ""),
                       addr_spec=msg.email or "")
    em["Subject"] = one_line(msg.content.get("subject", ""))
    em["Date"] = format_datetime(date)
    em["Message-ID"] = make_msgid(idstring=f"pushgen.{msg.draft_id}", domain=domain)
    mailto = (f"mailto:{settings.sender_email}"
              f"?subject={quote('unsubscribe ' + msg.recipient.external_id)}")
    em["List-Unsubscribe"] = f"<{one_line(unsubscribe)}>, <{mailto}>"
    em["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    em["X-Pushgen-Draft"] = str(msg.draft_id)
    # quoted-printable keeps the file 7-bit clean (any relay, any upload form) while
    # Chinese and long HTML lines survive exactly; set_content ends each part with a newline.
    em.set_content(msg.content.get("text", ""), subtype="plain", charset="utf-8",
                   cte="quoted-printable")
    em.add_alternative(msg.content.get("html", ""), subtype="html", charset="utf-8",
                       cte="quoted-printable")
    return em.as_bytes()


# --- catalog facts ------------------------------------------------------------------------


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


ExportProgress = Callable[[str, int, int], None]   # (stage, done, total)
_CHECK_CHUNK = 500


def _select(db: Database, rows: list[dict[str, Any]], channel: str, fmt: str,
            report: ExportReport, reopen: list[tuple[dict[str, Any], str]],
            settings: CampaignSettings, progress: ExportProgress | None = None
            ) -> list[_Outgoing]:
    """Drafts that may be sent now: consent (read now, not at approval), a usable contact,
    every check passing now, unchanged catalog facts. Drafts to send back to review are
    appended to ``reopen`` with the reason."""
    out: list[_Outgoing] = []
    secret = shop_secret(db)
    decoded = [store.decode_row(raw) for raw in rows]
    current = store.catalog_facts(db, [it.get("sku") for r in decoded for it in r["items"]
                                       if it.get("sku")])
    candidates = []
    for r in decoded:
        if not r[f"consent_{channel}"]:
            report.skipped_no_consent += 1
            continue
        contact = r[_CONTACT[channel]]
        if not contact or not str(contact).strip():
            report.skipped_no_contact += 1
            continue
        if (channel == "email" and not usable_email(contact, for_eml=fmt == "eml")
                or channel == "sms" and not usable_phone(contact)):
            report.skipped_bad_contact += 1
            continue
        changes = catalog_changes(r["items"], current)
        if changes:
            report.skipped_stale += 1
            report.stale_reasons.append(f"draft {r['id']}: {'; '.join(changes)}")
            reopen.append((r, "catalog changed since approval: " + "; ".join(changes)))
            continue
        candidates.append(r)
    # The current rules, not the ones in force when the draft was approved.
    fresh: list[list[CheckResult]] = []
    for start in range(0, len(candidates), _CHECK_CHUNK):
        part = candidates[start:start + _CHECK_CHUNK]
        fresh += recheck_many(db, [(r, r["content"]) for r in part])
        if progress:
            progress("checking drafts", start + len(part), len(candidates))
    for r, checks in zip(candidates, fresh):
        if not checks_pass(checks):
            failed = [f"{c.name} ({c.message})" for c in checks
                      if not c.ok and c.severity == "error"]
            report.skipped_failing += 1
            report.failing_reasons.append(f"draft {r['id']}: {'; '.join(failed)}"[:300])
            store.set_checks(db, r["id"], r["version"], [c.to_dict() for c in checks], False)
            reopen.append((r, "fails a check now: " + "; ".join(failed)[:500]))
            continue
        recipient = Recipient(user_id=r["user_id"], external_id=r["user_external_id"],
                              name=r["user_name"], locale=r["locale"],
                              attributes=r["user_attributes"] or {})
        unsub = (recipient_unsubscribe_url(secret, settings, r["campaign_id"], r["user_id"],
                                           r["user_external_id"]) if channel == "email" else "")
        out.append(_Outgoing(r["id"], r["variant"], r["user_id"], r["version"], r["status"],
                             r["exported_at"], r["content"], recipient, r["user_email"],
                             r["user_phone"], r.get("user_push_token"), r["locale"], unsub))
    return out


def _one_per_user(outgoing: list[_Outgoing], already_sent: dict[int, set[int]],
                  assigned: dict[int, int], report: ExportReport) -> list[_Outgoing]:
    """Each customer's assigned variant (the lowest one for a customer without an
    assignment), none for the hold-out group, and none for a customer who was already sent
    another draft (the same draft may be written again in another format)."""
    best: dict[int, _Outgoing] = {}
    for m in outgoing:
        own = assigned.get(m.user_id)
        sent = already_sent.get(m.user_id, set())
        if own == 0:
            report.skipped_holdout += 1
        elif (sent and m.draft_id not in sent) or (own is not None and m.variant != own):
            report.skipped_extra_variant += 1
        elif m.user_id not in best or m.variant < best[m.user_id].variant:
            if m.user_id in best:
                report.skipped_extra_variant += 1
            best[m.user_id] = m
        else:
            report.skipped_extra_variant += 1
    return sorted(best.values(), key=lambda m: m.draft_id)


# --- writing -----------------------------------------------------------------------------


def _write_tmp(tmp: Path, fmt: str, channel: str, campaign: str, settings: CampaignSettings,
               outgoing: list[_Outgoing], plans: dict[int, SendPlan],
               report: ExportReport, progress: ExportProgress | None = None) -> None:
    """The complete export under its temporary name, fsynced (file or .eml folder)."""
    if fmt in ("csv", "jsonl"):
        records = [_record(m, channel, campaign, plans[m.user_id], settings)
                   for m in outgoing]
        with open(tmp, "x", encoding="utf-8", newline="") as fh:
            if fmt == "csv":
                _write_csv(fh, channel, records, report.neutralised_cells)
            else:
                _write_jsonl(fh, channel, records, outgoing, plans)
            fh.flush()
            os.fsync(fh.fileno())
        return
    tmp.mkdir()
    for n, m in enumerate(outgoing, 1):
        # Date: the message's planned send time (what the recipient will see).
        data = build_eml(m, settings, date=plans[m.user_id].send_at)
        with open(tmp / f"{m.draft_id}.eml", "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _kill_point(f"file:{n}")
        if progress and (n % 50 == 0 or n == len(outgoing)):
            progress("writing .eml files", n, len(outgoing))
    _fsync_dir(tmp)


@contextlib.contextmanager
def _export_lock(db: Database) -> Iterator[None]:
    """One export at a time per database: an exclusive lock on ``<db>.export-lock``,
    released by the OS when the process ends however it ends (so a killed export never
    leaves it held)."""
    row = db.execute("PRAGMA database_list").fetchone()
    name = row[2] if row else ""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks; run one at a time
        yield
        return
    if not name:
        yield
        return
    path = Path(name + ".export-lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PushgenError(f"{path}: cannot create the export lock "
                           f"({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PushgenError("another export of this database is running; wait for it "
                               "to finish and run this one again") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def reconcile_exports(db: Database, *, actor: str) -> list[str]:
    """Finish every export a dead run left pending; one note per export. The final file
    exists -> the export stands; it does not -> its drafts are put back as they were and
    its temporary file is removed. Call with the export lock held."""
    notes = []
    for row in store.pending_exports(db):
        final, tmp = Path(row["path"]), Path(row["tmp_path"])
        now = now_iso()
        if final.exists():
            note = (f"export {row['id']} ({final.name}, {row['messages']} message(s)) was "
                    "interrupted after its file was complete: it stands, nothing is "
                    "written again")
            with store.write_transaction(db):
                store.finish_export(db, row["id"], "done", now, note)
            if tmp.exists():
                _remove(tmp)
        else:
            with store.write_transaction(db):
                undone = store.undo_exported(db, row["drafts"], {
                    "actor": actor, "action": "export_undone", "at": now,
                    "reason": f"export {row['id']} ({final.name}) was interrupted before its "
                              "file was complete; nothing of it was sent"})
                back = {i for i in undone}
                again = sum(1 for e in row["drafts"]
                            if e["id"] in back and e["status_before"] == "exported")
                note = (f"export {row['id']} ({final.name}) was interrupted before its file "
                        f"was complete: nothing of it was sent; {len(undone) - again} "
                        "draft(s) are approved again and go in the next export"
                        + (f", {again} keep their earlier export" if again else ""))
                store.finish_export(db, row["id"], "undone", now, note)
            if tmp.exists():
                _remove(tmp)
        notes.append(note)
    return notes


def _clean_stale_tmp(out: Path, keep: set[str], db_tag: str) -> list[str]:
    """Remove unfinished temporary exports of this database (and older versions' unnamed
    ones) from ``out``; another database's are left alone: they may be its export running."""
    if not out.is_dir():
        return []
    removed = []
    for entry in sorted(out.iterdir()):
        m = _STALE_TMP_RE.match(entry.name)
        if m and m["db"] in (None, db_tag) and str(entry.resolve()) not in keep:
            _remove(entry)
            removed.append(entry.name)
    if not removed:
        return []
    shown = ", ".join(removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3
                                      else "")
    return [f"removed {len(removed)} unfinished temporary export(s) left in {out} by an "
            f"interrupted run: {shown}"]


def export_campaign(db: Database, campaign: str, channel: str, *, fmt: str,
                    out_dir: str | os.PathLike[str], again: bool = False,
                    send_window: str | None = None, quiet_hours: str | None = None,
                    timezone: str | None = None, min_events: int | None = None,
                    actor: str | None = None, allow_demo_sender: bool = False,
                    now: _dt.datetime | None = None,
                    progress: ExportProgress | None = None) -> ExportReport:
    """Write the approved ``channel`` drafts of ``campaign`` to a new file in ``out_dir``.

    Nothing to export writes no file (``report.path`` is None, ``exported`` 0). A draft is
    exported once per format: drafts exported before in another format are written in this
    one too (``report.other_format``); with ``again`` also those exported in this format.
    ``allow_demo_sender``: export even though the campaign still uses the demo sender.
    ``send_window`` ("START/END" or a day), ``quiet_hours`` ("21:00-09:00" or "off"),
    ``timezone`` (the shop's, for customers without one) and ``min_events`` override the
    campaign's ``[send]`` settings (``send_options``). ``progress(stage, done, total)`` is
    called while drafts are re-checked and .eml files written.
    """
    if channel not in FORMATS:
        raise PushgenError(f"unknown channel {channel!r}: use email, sms or push")
    if fmt not in FORMATS[channel]:
        raise PushgenError(f"{channel} exports as {' or '.join(FORMATS[channel])}, not {fmt!r}")
    who = actor_name(actor)
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
    stored = json.loads(row["config"] or "{}")
    settings = settings_from_json(stored, name=campaign, channel=channel)
    timing = send_options(channel, config_from_json(stored, name=campaign).send,
                          send_window=send_window, quiet_hours=quiet_hours, timezone=timezone,
                          min_events=min_events, now=now)
    window_text = f"{_utc(timing.window.start)}/{_utc(timing.window.end)}"
    demo = demo_sender_fields(settings, channel)
    if demo and not allow_demo_sender:
        raise PushgenError(
            f"campaign {campaign} still uses pushgen's demo {', '.join(demo)} (its config "
            "has no [sender]); set [sender] name, email, postal_address and unsubscribe_url "
            "in a campaign config and redraft with --regenerate, or add --allow-demo-sender "
            "for a test export")
    report = ExportReport(campaign=campaign, channel=channel, fmt=fmt)
    with _export_lock(db):
        report.notes += reconcile_exports(db, actor=who)
        db_tag = database_tag(db)
        report.notes += _clean_stale_tmp(out, store.pending_tmp_paths(db), db_tag)
        with store.write_transaction(db):
            reopen: list[tuple[dict[str, Any], str]] = []
            done_here = store.exported_in_format(db, cid, channel, fmt)
            rows = [r for r in store.exportable_drafts(db, cid, channel, ("approved", "exported"))
                    if again or r["id"] not in done_here]
            report.already_exported = 0 if again else len(done_here)
            outgoing = _select(db, rows, channel, fmt, report, reopen, settings, progress)
            sent = {} if again else store.exported_drafts_by_user(db, cid, channel)
            outgoing = _one_per_user(outgoing, sent, assignment_store.variant_of(db, cid),
                                     report)
            report.other_format = sum(1 for m in outgoing if m.status == "exported"
                                      and m.draft_id not in done_here)
            report.not_approved = sum(
                store.count_drafts(db, campaign_id=cid, channel=channel, status=s)
                for s in ("draft", "rejected"))
            now = now_iso()
            for r, reason in reopen:
                # Reopen (approved -> draft) so the reviewer sees why it did not go out; an
                # already exported draft (--again) keeps its status and is only skipped.
                if r["status"] == "approved":
                    store.set_status_many(
                        db, [{"id": r["id"], "version": r["version"], "status": r["status"],
                              "content": r["content"]}], "draft",
                        {"actor": who, "action": "reopen", "at": now, "reason": reason})
            if not outgoing:
                return report
            plans, sources = plan_send_times(db, [m.user_id for m in outgoing], timing)
            report.send_window = (_utc(timing.window.start), _utc(timing.window.end))
            report.quiet_hours = str(timing.quiet) if timing.quiet else None
            report.shop_timezone = timing.shop_timezone
            report.shop_timezone_customers = sources.pop("shop_timezone")
            report.send_sources = sources
            for plan in plans.values():
                report.send_hours[plan.local_time.hour] += 1
            try:
                out.mkdir(parents=True, exist_ok=True)
                path = _target(out, campaign, channel, fmt).absolute()
            except OSError as exc:
                raise PushgenError(f"cannot write the export into folder {out}: "
                                   f"{exc.strerror or exc}") from None
            tmp = _tmp_for(path, db_tag)
            changed = store.set_status_many(
                db, [{"id": m.draft_id, "version": m.version, "status": m.status,
                      "content": m.content} for m in outgoing], "exported",
                {"actor": who, "action": "export", "at": now,
                 "reason": f"{fmt} {path.name}, send window {window_text}"},
                extra={"exported_at": now})
            if len(changed) != len(outgoing):  # pragma: no cover - the write lock prevents it
                raise PushgenError("drafts changed during export; nothing was marked and "
                                   "no file was written; run the export again")
            entries = [{"id": m.draft_id, "version": m.version + 1,
                        "status_before": m.status, "exported_at_before": m.exported_at}
                       for m in outgoing]
            report.export_id = store.insert_export(db, {
                "campaign_id": cid, "channel": channel, "format": fmt, "path": str(path),
                "tmp_path": str(tmp), "drafts": entries, "messages": len(outgoing),
                "actor": who, "send_at": window_text, "started_at": now})
            send_store.save_plans(db, report.export_id, [
                {"draft_id": m.draft_id, "user_id": m.user_id,
                 "send_at": _utc(plans[m.user_id].send_at),
                 "local_time": plans[m.user_id].local_time.isoformat(),
                 "timezone": plans[m.user_id].timezone, "source": plans[m.user_id].source,
                 "reason": plans[m.user_id].reason} for m in outgoing])
        # Committed: the drafts are marked and the export is recorded. From here a crash is
        # reconciled by the next export; an error is undone right away.
        _kill_point("journal")
        try:
            _write_tmp(tmp, fmt, channel, campaign, settings, outgoing, plans, report, progress)
            _kill_point("written")
            os.rename(tmp, path)
            _fsync_dir(path.parent)
        except BaseException as exc:
            _remove(tmp)
            reconcile_exports(db, actor=who)  # the file is not there: put the drafts back
            if isinstance(exc, OSError):
                raise PushgenError(f"cannot write the export into folder {out}: "
                                   f"{exc.strerror or exc}; nothing was exported") from None
            raise
        _kill_point("renamed")
        with store.write_transaction(db):
            store.finish_export(db, report.export_id, "done", now_iso())
    report.path = path
    report.exported = len(outgoing)
    report.draft_ids = [m.draft_id for m in outgoing]
    if report.neutralised_cells:
        report.notes.append(
            f"{len(report.neutralised_cells)} CSV cell(s) started like a spreadsheet formula "
            f"(= + - @) and were prefixed with ' so spreadsheets show them as text: "
            + ", ".join(report.neutralised_cells[:3])
            + (" ..." if len(report.neutralised_cells) > 3 else ""))
    return report


__all__ = ["ExportReport", "FORMATS", "CSV_COLUMNS", "KILL_ENV", "export_campaign",
           "build_eml", "catalog_changes", "csv_safe", "usable_email", "usable_phone",
           "reconcile_exports", "parse_send_at", "write_text_atomic", "SendOptions",
           "send_options", "plan_send_times"]
