"""Opt-out lists from the sending platform -> consent changes, and keeping them.

A row names the customer by ``external_id``, ``email``, ``phone`` or an unsubscribe link /
token (``token``, ``url`` or ``unsubscribe_url``; verified against the shop's secret, so a
forged one is a rejected row). Which channel it stops, unless a ``channel`` column says
(``email``, ``sms``, ``push`` or ``all``):

- a token: the channel of the campaign it was made for (email when unknown);
- an email address: email; a phone number: sms;
- an external id alone: every channel (the list does not say which, so nothing is sent).

Each change is a ``consent_events`` row (source ``file:line``, ``reason``, ``ts``) and the
customer's ``consent_<channel>`` set to 0. A customer already opted out on that channel is
left alone, so importing the same list again changes nothing. A later users file cannot
switch the consent back on unless it says when the customer consented again
(``consent_<channel>_at`` after the opt-out).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlite_utils import Database

from ..errors import PushgenError
from ..store import catalog, now_iso
from .values import RowError, key, parse_timestamp, text

CHANNELS = tuple(catalog.CONSENT_CHANNELS)
TOKEN_COLUMNS = ("token", "url", "unsubscribe_url")
CUSTOMER_COLUMNS = ("external_id", "email", "phone", *TOKEN_COLUMNS)
_NOT_DIGIT = re.compile(r"\D")


def phone_digits(phone: str) -> str:
    """Digits of a phone number, an international ``00`` prefix read as ``+``."""
    digits = _NOT_DIGIT.sub("", phone)
    return digits[2:] if phone.strip().startswith("00") else digits


class OptOutParser:
    """Row -> ([(user_id, channel), ...], at, reason). Indexes are built on first need."""

    def __init__(self, db: Database, date_formats: tuple[str, ...] = (),
                 erased: Callable[[str], bool] | None = None,
                 zone: str | None = None) -> None:
        self.db = db
        self.erased = erased
        self.date_formats, self.zone = date_formats, zone
        self.now = now_iso()
        self._ids: dict[str, int] | None = None
        self._emails: dict[str, list[int]] | None = None
        self._phones: dict[str, list[int]] | None = None
        self._campaigns: dict[int, str | None] | None = None

    def _by_phone(self, digits: str) -> list[int]:
        if self._phones is None:
            self._phones = {}
            for uid, phone in catalog.user_phones(self.db):
                self._phones.setdefault(phone_digits(phone), []).append(uid)
        return self._phones.get(digits, [])

    def _customers(self, rec: dict[str, Any]) -> tuple[list[int], tuple[str, ...]]:
        """The customers a row names, and the channels it stops by default."""
        from ..signing import verify_unsubscribe

        for column in TOKEN_COLUMNS:
            token = text(rec.get(column))
            if token is None:
                continue
            try:
                found = verify_unsubscribe(self.db, token)
            except PushgenError as exc:
                raise RowError(column, str(exc)) from None
            if self._campaigns is None:
                self._campaigns = catalog.campaign_channels(self.db)
            channel = self._campaigns.get(found.campaign_id) or "email"
            return [found.user_id], (channel,)
        external_id = key(rec.get("external_id"), "external_id")
        if external_id is not None:
            if self._ids is None:
                self._ids = catalog.user_ids_by_external_id(self.db)
            uid = self._ids.get(external_id)
            if uid is None and self.erased is not None and self.erased(external_id):
                return [], ()   # erased on request: nothing left to opt out
            if uid is None:
                raise RowError("external_id", f"no customer with external id {external_id!r}")
            return [uid], CHANNELS
        email = text(rec.get("email"))
        if email is not None:
            if self._emails is None:
                self._emails = catalog.user_ids_by_email(self.db)
            ids = self._emails.get(email.lower())
            if not ids:
                raise RowError("email", f"no customer with email {email!r}")
            return ids, ("email",)
        phone = text(rec.get("phone"))
        if phone is not None:
            digits = phone_digits(phone)
            if len(digits) < 6:
                raise RowError("phone", f"bad phone number {phone!r}")
            ids = self._by_phone(digits)
            if not ids:
                raise RowError("phone", f"no customer with phone {phone!r}")
            return ids, ("sms",)
        raise RowError(None, "no customer named: give external_id, email, phone or an "
                             "unsubscribe link (token, url)")

    def __call__(self, rec: dict[str, Any]) -> tuple[list[tuple[int, str]], str, str]:
        ids, channels = self._customers(rec)
        wanted = text(rec.get("channel"))
        if wanted is not None:
            wanted = wanted.lower()
            if wanted == "all":
                channels = CHANNELS
            elif wanted in CHANNELS:
                channels = (wanted,)
            else:
                raise RowError("channel", f"bad channel {wanted!r} (use email, sms, push or all)")
        at = self.now if rec.get("ts") is None else parse_timestamp(rec.get("ts"), "ts",
                                                                    self.date_formats, self.zone)
        reason = text(rec.get("reason")) or "unsubscribed"
        return [(uid, ch) for uid in ids for ch in channels], at, reason


__all__ = ["OptOutParser", "phone_digits", "CHANNELS", "CUSTOMER_COLUMNS", "TOKEN_COLUMNS"]
