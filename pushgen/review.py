"""Human review of drafts: a small state machine with an audit trail.

::

    draft ──approve──► approved ──export──► exported
      │  ◄──reopen───     │
      └──reject──► rejected ◄──reject──┘      (reopen: rejected/approved -> draft)

A draft that failed any error-severity check can never be approved. Every change is a
version-guarded UPDATE (optimistic locking between concurrent reviewers) written together
with its ``review_events`` row. Edits are re-validated by the same channel rules and guards
that checked the generated copy (``pushgen.generate.guards.check_draft``).
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from .config import settings_from_json
from .errors import PushgenError
from .signing import recipient_unsubscribe_url, shop_secret
from .messages import (CHANNEL_FIELDS, CampaignSettings, CheckResult, ItemFacts, Message,
                       MessageContext, Recipient, checks_pass)
from .store import dumps, loads, now_iso
from .store import llm_usage
from .store import reviews as store
from .store.catalog import catalog_signature

STATUSES: tuple[str, ...] = ("draft", "approved", "rejected", "exported")

# action -> statuses it may start from. Rejecting an approved draft is allowed directly:
# it moves toward "not sent", which is always safe; everything else follows the diagram.
_ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "approve": ("draft",),
    "reject": ("draft", "approved"),
    "reopen": ("approved", "rejected"),
    "edit": ("draft", "approved", "rejected"),
}


@dataclass
class ReviewEvent:
    """One row of a draft's audit trail."""

    id: int
    actor: str
    action: str
    at: str
    status_before: str | None
    status_after: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None


@dataclass
class DraftView:
    """A draft as a reviewer sees it: copy, recipient segment, items, checks and history."""

    id: int
    campaign: str
    campaign_id: int
    channel: str
    variant: int
    locale: str
    status: str
    version: int
    content: dict[str, str]
    items: list[ItemFacts]
    checks: list[CheckResult]
    passed: bool
    flag: str | None
    generator: str
    template_name: str | None
    model: str | None
    prompt_hash: str | None
    tokens_prompt: int
    tokens_completion: int
    created_at: str
    updated_at: str
    exported_at: str | None
    user_id: int
    user_external_id: str
    user_name: str | None
    user_email: str | None
    user_phone: str | None
    consent: bool
    segment: dict[str, Any]
    settings: CampaignSettings
    history: list[ReviewEvent] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    @property
    def blocking_checks(self) -> list[CheckResult]:
        """Failed checks that stop approval (severity 'error')."""
        return [c for c in self.checks if not c.ok and c.severity == "error"]

    @property
    def first_name(self) -> str | None:
        return Recipient(self.user_id, self.user_external_id, self.user_name).first_name

    @property
    def lead_item(self) -> ItemFacts | None:
        """The item the message leads with (what ``review list`` shows)."""
        return self.items[0] if self.items else None

    def to_dict(self, *, full: bool = True) -> dict[str, Any]:
        """Plain data for ``--json``. Never the customer's email or phone: the copy does not
        need them. ``full=False``: the short form of a list row."""
        lead = self.lead_item
        short: dict[str, Any] = {
            "id": self.id, "campaign": self.campaign, "channel": self.channel,
            "variant": self.variant, "user": self.user_external_id, "locale": self.locale,
            "status": self.status, "version": self.version, "passed": self.passed,
            "failed_checks": [c.name for c in self.failed_checks],
            "item": {"sku": lead.sku, "title": lead.title} if lead else None,
            "generator": self.generator, "flag": self.flag,
        }
        if not full:
            return short
        return {**short, "content": dict(self.content),
                "items": [{"sku": i.sku, "title": i.title, "score": i.score,
                           "reason": i.reason} for i in self.items],
                "checks": [c.to_dict() for c in self.checks],
                "template_name": self.template_name, "model": self.model,
                "prompt_hash": self.prompt_hash, "tokens_prompt": self.tokens_prompt,
                "tokens_completion": self.tokens_completion, "consent": self.consent,
                "segment": self.segment, "created_at": self.created_at,
                "updated_at": self.updated_at, "exported_at": self.exported_at,
                "history": [dataclasses.asdict(e) for e in self.history]}


@dataclass
class EditResult:
    """What an edit changed and what the checks say about the new copy."""

    draft: DraftView
    changed: list[str]
    status_before: str
    new_failures: list[CheckResult]   # failed now, passed (or absent) before the edit

    @property
    def passed(self) -> bool:
        return self.draft.passed


def default_actor() -> str:
    """Who is reviewing: $USER, else the login name, else 'reviewer'."""
    user = os.environ.get("USER")
    if user and _ACTOR_RE.fullmatch(user):
        return user
    try:
        name = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        name = ""
    return name if name and _ACTOR_RE.fullmatch(name) else "reviewer"


# A name for the audit trail: letters (any script), digits, spaces and . @ + ' - _.
_ACTOR_RE = re.compile(r"[^\W_][\w .@+'-]{0,63}")
ACTOR_MAX = 64


def actor_name(actor: str | None) -> str:
    """``actor`` checked for the audit trail (default: ``default_actor()``); PushgenError
    for anything else, so no request header or option can write arbitrary text there."""
    if actor is None or not actor.strip():
        return default_actor()
    name = actor.strip()
    if not _ACTOR_RE.fullmatch(name):
        raise PushgenError(f"actor name {actor[:80]!r} is not allowed: use letters, digits, "
                           f"spaces and . @ + ' - _ (at most {ACTOR_MAX} characters)")
    return name


def _item(data: dict[str, Any]) -> ItemFacts:
    names = {f.name for f in dataclasses.fields(ItemFacts)}
    return ItemFacts(**{k: v for k, v in data.items() if k in names})


def check_result(data: dict[str, Any]) -> CheckResult:
    """A CheckResult from its stored JSON dict."""
    return CheckResult(name=data.get("name", "?"), ok=bool(data.get("ok")),
                       message=data.get("message", "") or "",
                       severity=data.get("severity", "error"))


def _event(row: dict[str, Any]) -> ReviewEvent:
    return ReviewEvent(id=row["id"], actor=row["actor"], action=row["action"], at=row["at"],
                       status_before=row["status_before"], status_after=row["status_after"],
                       before=loads(row["before"]), after=loads(row["after"]),
                       reason=row["reason"])


def _view(db: Database, row: dict[str, Any], *, history: bool) -> DraftView:
    r = store.decode_row(row)
    channel = r["channel"]
    return DraftView(
        id=r["id"], campaign=r["campaign"], campaign_id=r["campaign_id"], channel=channel,
        variant=r["variant"], locale=r["locale"], status=r["status"], version=r["version"],
        content=r["content"], items=[_item(i) for i in r["items"]],
        checks=[check_result(c) for c in r["checks"]], passed=bool(r["passed"]), flag=r["flag"],
        generator=r["generator"], template_name=r["template_name"], model=r["model"],
        prompt_hash=r["prompt_hash"], tokens_prompt=r["tokens_prompt"] or 0,
        tokens_completion=r["tokens_completion"] or 0, created_at=r["created_at"],
        updated_at=r["updated_at"], exported_at=r["exported_at"], user_id=r["user_id"],
        user_external_id=r["user_external_id"], user_name=r["user_name"],
        user_email=r["user_email"], user_phone=r["user_phone"],
        consent=bool(r.get(f"consent_{channel}")),
        segment={"locale": r["user_locale"], **(r["user_attributes"] or {})},
        settings=settings_from_json(r["campaign_config"], name=r["campaign"], channel=channel),
        history=[_event(e) for e in store.events_for(db, r["id"])] if history else [],
    )


def campaign_id(db: Database, name: str) -> int:
    """Id of campaign ``name``; a clear error naming the known campaigns otherwise."""
    row = store.campaign_row(db, name)
    if row is None:
        known = ", ".join(store.campaign_names(db)) or "none yet (run `pushgen draft`)"
        raise PushgenError(f"no campaign named {name!r}; known campaigns: {known}")
    return row["id"]


def get_draft(db: Database, draft_id: int) -> DraftView:
    """One draft with its recipient segment, items, checks and review history."""
    row = store.fetch_draft(db, draft_id)
    if row is None:
        raise PushgenError(f"no draft with id {draft_id}")
    return _view(db, row, history=True)


def _filters(db: Database, campaign: str | None, channel: str | None, status: str | None,
             ) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise PushgenError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    if channel is not None and channel not in CHANNEL_FIELDS:
        raise PushgenError(f"unknown channel {channel!r}: use sms, push or email")
    return {"campaign_id": campaign_id(db, campaign) if campaign else None,
            "channel": channel, "status": status}


def list_drafts(db: Database, *, campaign: str | None = None, channel: str | None = None,
                status: str | None = None, failed_check: str | None = None,
                locale: str | None = None, limit: int = 50, offset: int = 0,
                ) -> list[DraftView]:
    """Drafts matching every given filter, in queue order (history not loaded)."""
    rows = store.fetch_drafts(db, **_filters(db, campaign, channel, status),
                              failed_check=failed_check, locale=locale, limit=limit,
                              offset=offset)
    return [_view(db, r, history=False) for r in rows]


def count_drafts(db: Database, *, campaign: str | None = None, channel: str | None = None,
                 status: str | None = None, failed_check: str | None = None,
                 locale: str | None = None) -> int:
    """How many drafts ``list_drafts`` would return without a limit."""
    return store.count_drafts(db, **_filters(db, campaign, channel, status),
                              failed_check=failed_check, locale=locale)


def queue_ids(db: Database, *, campaign: str | None = None, channel: str | None = None,
              status: str | None = "draft", failed_check: str | None = None,
              locale: str | None = None) -> list[int]:
    """Ids of matching drafts in queue order (for walking the queue one by one)."""
    return store.draft_ids(db, **_filters(db, campaign, channel, status),
                           failed_check=failed_check, locale=locale)


@dataclass
class QueueCounts:
    by_status: dict[str, int]
    by_failed_check: dict[str, int]   # drafts failing each check (waiting for review)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def queue_counts(db: Database, campaign: str | None = None) -> QueueCounts:
    """Drafts per status, and drafts still in review per failed check."""
    cid = campaign_id(db, campaign) if campaign else None
    by_status = {s: 0 for s in STATUSES}
    by_status.update(store.status_counts(db, cid))
    return QueueCounts(by_status=by_status,
                       by_failed_check=store.failed_check_counts(db, cid, status="draft"))


# --- writes -----------------------------------------------------------------------------


def _stale(db: Database, draft_id: int, expected: int) -> PushgenError:
    current = store.fetch_draft(db, draft_id)
    if current is None:
        return PushgenError(f"draft {draft_id} no longer exists")
    last = store.last_event(db, draft_id)
    when = (last or current)["at" if last else "updated_at"]
    hhmm = when[11:16] if len(when) >= 16 else when
    who = f" by {last['actor']}" if last else ""
    return PushgenError(
        f"draft {draft_id} was changed{who} at {hhmm} (version {current['version']}, you "
        f"edited version {expected}); reload and try again")


def _load_for_write(db: Database, draft_id: int, action: str,
                    expected_version: int | None) -> dict[str, Any]:
    row = store.fetch_draft(db, draft_id)
    if row is None:
        raise PushgenError(f"no draft with id {draft_id}")
    if expected_version is not None and row["version"] != expected_version:
        raise _stale(db, draft_id, expected_version)
    allowed = _ALLOWED_FROM[action]
    if row["status"] not in allowed:
        hint = {"rejected": "; reopen it first (`pushgen review reopen`)",
                "exported": "; it was exported already and cannot change"}.get(row["status"], "")
        raise PushgenError(f"cannot {action} draft {draft_id}: it is {row['status']}{hint}")
    return store.decode_row(row)


def _write(db: Database, row: dict[str, Any], changes: dict[str, Any],
           event: dict[str, Any]) -> None:
    if not store.update_draft(db, row["id"], row["version"], changes, event):
        raise _stale(db, row["id"], row["version"])


def _set_status(db: Database, row: dict[str, Any], status: str, action: str,
                actor: str | None, reason: str | None) -> DraftView:
    """Move a draft to ``status`` (content unchanged) with its audit row; return it."""
    now = now_iso()
    _write(db, row, {"status": status, "updated_at": now},
           {"actor": actor_name(actor), "action": action, "at": now,
            "status_before": row["status"], "status_after": status,
            "before": row["content"], "after": row["content"], "reason": reason})
    return get_draft(db, row["id"])


def approve(db: Database, draft_id: int, *, actor: str | None = None,
            expected_version: int | None = None, reason: str | None = None) -> DraftView:
    """Approve a draft for export. Refused unless every error-severity check passed.
    Approving an approved draft changes nothing (and writes no audit row)."""
    actor = actor_name(actor)
    current = store.fetch_draft(db, draft_id)
    if current is not None and current["status"] == "approved" \
            and expected_version in (None, current["version"]):
        return get_draft(db, draft_id)
    row = _load_for_write(db, draft_id, "approve", expected_version)
    checks = [check_result(c) for c in row["checks"]]
    if row["passed"] and checks_pass(checks):
        # The stored result may come from older rules: approve on today's.
        checks = _refresh_checks(db, [row])[0]
    if not row["passed"] or not checks_pass(checks):
        failed = ", ".join(f"{c.name} ({c.message})" if c.message else c.name
                           for c in checks if not c.ok and c.severity == "error")
        raise PushgenError(f"cannot approve draft {draft_id}: it fails "
                           f"{failed or 'its checks'}; edit it until every check passes")
    return _set_status(db, row, "approved", "approve", actor, reason)


def reject(db: Database, draft_id: int, *, actor: str | None = None, reason: str,
           expected_version: int | None = None) -> DraftView:
    """Reject a draft (it will not be exported). A reason is required."""
    if not reason or not reason.strip():
        raise PushgenError(f"rejecting draft {draft_id} needs a reason (--reason)")
    row = _load_for_write(db, draft_id, "reject", expected_version)
    return _set_status(db, row, "rejected", "reject", actor, reason.strip())


def reopen(db: Database, draft_id: int, *, actor: str | None = None, reason: str | None = None,
           expected_version: int | None = None) -> DraftView:
    """Put an approved or rejected draft back in the queue (status draft)."""
    row = _load_for_write(db, draft_id, "reopen", expected_version)
    return _set_status(db, row, "draft", "reopen", actor, reason)


_GUARDS: dict[tuple[Any, ...], Any] = {}


def _guard(db: Database) -> Any:
    """A catalog-wide fact guard, cached until the catalog changes (edits come one by one)."""
    from .generate import guards

    key = catalog_signature(db)
    guard = _GUARDS.get(key)
    if guard is None:
        _GUARDS.clear()
        guard = _GUARDS[key] = guards.store_guard(db)
    return guard


def recheck(db: Database, row: dict[str, Any], content: dict[str, str]) -> list[CheckResult]:
    """Run the channel rules and guards on ``content`` for the draft's recipient, items and
    campaign settings, exactly as generation did (``guards.check_draft``)."""
    return recheck_many(db, [(row, content)])[0]


def recheck_many(db: Database, pairs: list[tuple[dict[str, Any], dict[str, str]]]
                 ) -> list[list[CheckResult]]:
    """``recheck`` for many (decoded draft row, content) pairs with one read of the
    recipients and contacts (the export re-checks every draft it is about to write)."""
    from .generate import guards
    from .store import drafts as drafts_store

    uids = sorted({row["user_id"] for row, _ in pairs})
    people = drafts_store.recipients(db, uids)
    contacts = drafts_store.contact_values(db, uids)
    secret = shop_secret(db)
    guard = _guard(db)
    settings_cache: dict[tuple[str, str], CampaignSettings] = {}
    out = []
    for row, content in pairs:
        uid = row["user_id"]
        recipient = people.get(uid)
        if recipient is None:  # pragma: no cover - foreign keys keep the user
            raise PushgenError(f"draft {row['id']}: its user {uid} no longer exists")
        key = (row["campaign"], row["channel"])
        settings = settings_cache.get(key)
        if settings is None:
            config = row["campaign_config"]
            if isinstance(config, str):
                config = loads(config, {})
            settings = settings_cache[key] = settings_from_json(
                config, name=row["campaign"], channel=row["channel"])
        ctx = MessageContext(recipient=recipient, items=[_item(i) for i in row["items"]],
                             settings=settings, variant=row["variant"],
                             unsubscribe_url=recipient_unsubscribe_url(
                                 secret, settings, row["campaign_id"], uid,
                                 recipient.external_id))
        out.append(guards.check_draft(Message(row["channel"], dict(content)), ctx,
                                      forbidden_values=contacts.get(uid, []), guard=guard))
    return out


def edit(db: Database, draft_id: int, changes: dict[str, str], *, actor: str | None = None,
         expected_version: int | None, reason: str | None = None) -> EditResult:
    """Change fields of a draft's copy and re-run every check on the result.

    The draft goes back to ``draft`` status, except an approved draft whose new copy still
    passes every check stays approved. A failing edit is stored (so work is not lost) with
    ``passed = 0`` and its failed checks, and cannot be approved until fixed.
    """
    actor = actor_name(actor)
    row = _load_for_write(db, draft_id, "edit", expected_version)
    allowed = CHANNEL_FIELDS[row["channel"]]
    unknown = [k for k in changes if k not in allowed]
    if unknown:
        raise PushgenError(f"draft {draft_id} is {row['channel']}: unknown field(s) "
                           f"{', '.join(unknown)}; its fields are {', '.join(allowed)}")
    for k, v in changes.items():
        if not isinstance(v, str):
            raise PushgenError(f"draft {draft_id}: field {k} must be text")
    before = dict(row["content"])
    after = {**before, **changes}
    changed = [k for k in allowed if after.get(k) != before.get(k)]
    old_checks = [check_result(c) for c in row["checks"]]
    if not changed:
        return EditResult(draft=get_draft(db, draft_id), changed=[],
                          status_before=row["status"], new_failures=[])
    checks = recheck(db, row, after)
    passed = checks_pass(checks)
    status = "approved" if row["status"] == "approved" and passed else "draft"
    now = now_iso()
    _write(db, row, {"content": dumps(after), "checks": dumps([c.to_dict() for c in checks]),
                     "passed": int(passed), "status": status, "updated_at": now},
           {"actor": actor_name(actor), "action": "edit", "at": now,
            "status_before": row["status"], "status_after": status,
            "before": before, "after": after, "reason": reason})
    failed_before = {c.name for c in old_checks if not c.ok}
    new_failures = [c for c in checks if not c.ok and c.name not in failed_before]
    return EditResult(draft=get_draft(db, draft_id), changed=changed,
                      status_before=row["status"], new_failures=new_failures)


def approve_all_passing(db: Database, campaign: str, *, actor: str | None = None) -> int:
    """Approve every draft of ``campaign`` waiting for review whose checks all pass."""
    cid = campaign_id(db, campaign)
    event = {"actor": actor_name(actor), "action": "approve", "at": now_iso(),
             "reason": "bulk: all checks passed"}
    with store.write_transaction(db):
        rows = [r for r in store.approvable_drafts(db, cid)
                if checks_pass([check_result(c) for c in store.decode_row(r)["checks"]])]
        full = [store.decode_row(r) for r in store.drafts_by_id(db, [r["id"] for r in rows])]
        fresh = recheck_many(db, [(r, r["content"]) for r in full])
        passing = set()
        for r, checks in zip(full, fresh):
            if checks_pass(checks):
                passing.add(r["id"])
            else:  # fails today's rules: keep it in review, with the reason on it
                store.set_checks(db, r["id"], r["version"], [c.to_dict() for c in checks],
                                 False)
        rows = [r for r in rows if r["id"] in passing]
        return len(store.set_status_many(db, rows, "approved", event))


def _refresh_checks(db: Database, rows: list[dict[str, Any]]) -> list[list[CheckResult]]:
    """Run today's rules on drafts about to be approved; a draft that fails them now gets
    the new result stored (version unchanged: the copy did not change)."""
    fresh = recheck_many(db, [(r, r["content"]) for r in rows])
    for r, checks in zip(rows, fresh):
        if not checks_pass(checks):
            with store.write_transaction(db):
                store.set_checks(db, r["id"], r["version"], [c.to_dict() for c in checks],
                                 False)
            r["passed"] = 0
    return fresh


# --- reporting --------------------------------------------------------------------------


def campaign_report(db: Database, campaign: str) -> dict[str, Any]:
    """Review and cost summary of one campaign (for ``pushgen stats --campaign``).

    ``approval_rate`` is approved (incl. exported) over reviewed (approved + exported +
    rejected), None before any decision.
    """
    cid = campaign_id(db, campaign)
    by_status = {s: 0 for s in STATUSES}
    by_status.update(store.status_counts(db, cid))
    total = sum(by_status.values())
    approved = by_status["approved"] + by_status["exported"]
    decided = approved + by_status["rejected"]
    gens = store.generator_totals(db, cid)
    return {
        "campaign": campaign,
        "drafts": total,
        "by_status": by_status,
        "check_failures": store.failed_check_counts(db, cid),
        "approval_rate": round(approved / decided, 4) if decided else None,
        "reviewed": decided,
        "tokens_prompt": sum(g["tokens_prompt"] or 0 for g in gens),
        "tokens_completion": sum(g["tokens_completion"] or 0 for g in gens),
        "by_generator": {g["generator"]: {"drafts": g["drafts"],
                                          "tokens_prompt": g["tokens_prompt"] or 0,
                                          "tokens_completion": g["tokens_completion"] or 0}
                         for g in gens},
        "llm": llm_usage.campaign_totals(db, cid),   # LLM runs' calls, cache hits, cost
    }


__all__ = ["STATUSES", "DraftView", "EditResult", "ReviewEvent", "QueueCounts",
           "default_actor", "campaign_id", "get_draft", "list_drafts", "count_drafts",
           "queue_ids", "queue_counts", "check_result", "approve",
           "reject", "reopen", "edit", "recheck", "recheck_many", "actor_name",
           "approve_all_passing", "campaign_report"]
