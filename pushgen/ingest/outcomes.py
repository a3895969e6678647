"""What the sending platform reports about exported messages -> ``outcomes`` rows.

A row names its message by ``draft_id`` (the column every pushgen export carries), or by
``campaign`` + ``user`` (the customer's external id; their exported message of that
campaign). Columns: ``event`` (``sent``, ``delivered``, ``bounced``, ``opened``,
``clicked``, ``converted``, ``unsubscribed``, ``complained``; common platform spellings
such as ``open``, ``click``, ``hard_bounce`` or ``spamreport`` are read too), ``ts``,
optional ``value`` (the order value of a conversion), ``item`` (the sku clicked or bought)
and ``bounce`` (``hard`` or ``soft``).

- A bounce is *soft* unless the platform says hard (``bounce = hard`` / ``permanent``, or
  the event ``hard_bounce``): a soft bounce (a full mailbox, a phone switched off) is
  temporary, so it changes nothing; treating an unknown bounce as hard would stop
  messages to a reachable customer.
- ``unsubscribed``, ``complained`` and a hard ``bounced`` switch the customer's consent
  for the message's channel off at once (a ``consent_events`` row saying why), so they are
  never drafted or exported on it again.
- ``clicked`` and ``converted`` with an item become ``click`` and ``purchase`` events.
- An outcome for a message that was never exported is an error: it points at the wrong
  draft or a file of another shop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from ..store import catalog
from ..store import outcomes as store
from .presets import Skip
from .rows import ERASED
from .values import RowError, integer, key, number, parse_timestamp, text

EVENTS: tuple[str, ...] = ("sent", "delivered", "bounced", "opened", "clicked", "converted",
                           "unsubscribed", "complained")
# Platform spellings -> (event, bounce detail or None).
_SYNONYMS: dict[str, tuple[str, str | None]] = {
    **{e: (e, None) for e in EVENTS},
    "send": ("sent", None), "delivery": ("delivered", None), "bounce": ("bounced", None),
    "hard_bounce": ("bounced", "hard"), "hardbounce": ("bounced", "hard"),
    "soft_bounce": ("bounced", "soft"), "softbounce": ("bounced", "soft"),
    "open": ("opened", None), "click": ("clicked", None), "conversion": ("converted", None),
    "purchase": ("converted", None), "order": ("converted", None),
    "unsubscribe": ("unsubscribed", None), "optout": ("unsubscribed", None),
    "opt_out": ("unsubscribed", None), "complaint": ("complained", None),
    "spam": ("complained", None), "spamreport": ("complained", None),
    "spam_report": ("complained", None),
}
HARD_BOUNCE = {"hard", "permanent", "hard_bounce", "hardbounce", "hard bounce"}
# Outcomes that switch consent off for the message's channel, with the reason recorded.
OPT_OUT_REASONS = {"unsubscribed": "unsubscribed", "complained": "complained (marked as spam)",
                   "bounced": "hard bounce"}
EVENT_KINDS = {"clicked": "click", "converted": "purchase"}
CUSTOMER_COLUMNS = ("draft_id", "campaign")


@dataclass(frozen=True)
class Outcome:
    """One validated outcome row."""

    draft_id: int
    user_id: int
    channel: str
    event: str
    ts: str
    detail: str | None
    value: float | None
    item_id: int | None

    @property
    def opts_out(self) -> bool:
        return self.event in ("unsubscribed", "complained") or (
            self.event == "bounced" and self.detail == "hard")


def event_name(value: Any) -> tuple[str, str | None]:
    """A platform's event word -> (event, bounce detail)."""
    word = text(value)
    if word is None:
        raise RowError("event", "required value is empty")
    found = _SYNONYMS.get(word.strip().lower().replace("-", "_").replace(" ", "_"))
    if found is None:
        raise RowError("event", f"unknown event {word!r} (use {', '.join(EVENTS)})")
    return found


class OutcomeParser:
    """Row -> Outcome (or Skip for an erased customer); drafts and items are looked up once."""

    def __init__(self, db: Database, date_formats: tuple[str, ...] = (),
                 decimal_comma: bool = False,
                 erased: Callable[[str], bool] | None = None, zone: str | None = None) -> None:
        self.db, self.date_formats, self.decimal_comma = db, date_formats, decimal_comma
        self.zone = zone
        self.erased = erased
        self._drafts: dict[int, dict[str, Any] | None] = {}
        self._pairs: dict[tuple[str, str], list[int]] = {}
        self._campaigns: dict[str, bool] = {}
        self._items: dict[str, int] | None = None

    def _draft(self, draft_id: int) -> dict[str, Any] | None:
        if draft_id not in self._drafts:
            self._drafts[draft_id] = store.draft_target(self.db, draft_id)
        return self._drafts[draft_id]

    def _by_customer(self, campaign: str, user: str) -> int:
        if campaign not in self._campaigns:
            self._campaigns[campaign] = store.campaign_exists(self.db, campaign)
        if not self._campaigns[campaign]:
            raise RowError("campaign", f"no campaign named {campaign!r}")
        pair = (campaign, user)
        if pair not in self._pairs:
            self._pairs[pair] = store.exported_draft_of(self.db, campaign, user)
        ids = self._pairs[pair]
        if not ids:
            raise RowError("user", f"campaign {campaign!r} exported no message to customer "
                                   f"{user!r}")
        if len(ids) > 1:
            raise RowError("user", f"campaign {campaign!r} exported {len(ids)} messages to "
                                   f"customer {user!r}: name the message with draft_id")
        return ids[0]

    def _target(self, rec: dict[str, Any]) -> dict[str, Any]:
        raw_id = rec.get("draft_id")
        campaign = text(rec.get("campaign"))
        user = key(rec.get("user"), "user")
        if raw_id is not None and text(raw_id) is not None:
            draft_id = integer(raw_id, "draft_id")
            if draft_id is None or draft_id < 1:
                raise RowError("draft_id", f"bad draft id {raw_id!r}")
        elif campaign is not None:
            if user is None:
                raise RowError("user", "required with campaign: the customer's external id")
            draft_id = self._by_customer(campaign, user)
        else:
            raise RowError("draft_id", "no message named: give draft_id, or campaign and user")
        draft = self._draft(draft_id)
        if draft is None:
            raise RowError("draft_id", f"no draft {draft_id} in this database")
        if draft["erased_at"] is None:
            if campaign is not None and campaign != draft["campaign"]:
                raise RowError("campaign", f"draft {draft_id} belongs to campaign "
                                           f"{draft['campaign']!r}, not {campaign!r}")
            if user is not None and user != draft["external_id"]:
                raise RowError("user", f"draft {draft_id} was for another customer, not "
                                       f"{user!r}")
        if draft["exported_at"] is None:
            raise RowError("draft_id", f"draft {draft_id} was never exported (it is "
                                       f"{draft['status']}): outcomes belong to messages that "
                                       "went out")
        return draft

    def _item(self, rec: dict[str, Any]) -> int | None:
        sku = key(rec.get("item"), "item")
        if sku is None:
            return None
        if self._items is None:
            self._items = catalog.item_ids_by_sku(self.db)
        item_id = self._items.get(sku)
        if item_id is None:
            raise RowError("item", f"unknown item {sku!r} (import the catalog first)")
        return item_id

    def __call__(self, rec: dict[str, Any]) -> Outcome | Skip:
        event, detail = event_name(rec.get("event"))
        user = key(rec.get("user"), "user")
        if (text(rec.get("draft_id")) is None and user is not None
                and self.erased is not None and self.erased(user)):
            return ERASED
        draft = self._target(rec)
        if draft["erased_at"] is not None:
            return ERASED
        ts = parse_timestamp(rec.get("ts"), "ts", self.date_formats, self.zone)
        if event == "bounced":
            given = text(rec.get("bounce"))
            if given is not None:
                detail = "hard" if given.strip().lower() in HARD_BOUNCE else "soft"
            detail = detail or "soft"     # unknown: soft (see the module docstring)
        value = number(rec.get("value"), "value", decimal_comma=self.decimal_comma)
        if value is not None and event != "converted":
            raise RowError("value", f"an order value belongs to a converted row, not {event}")
        return Outcome(draft["id"], draft["user_id"], draft["channel"], event, ts, detail,
                       value, self._item(rec))


__all__ = ["EVENTS", "Outcome", "OutcomeParser", "event_name", "OPT_OUT_REASONS",
           "EVENT_KINDS", "CUSTOMER_COLUMNS"]
