"""Validation of one row of each kind: target columns in, a store row out (or RowError).

Users and items become dicts for ``catalog.upsert_users`` / ``upsert_items``; events
become ``EventRow`` (keys still as text: ids are resolved when the batch is written, after
customers and products the file itself creates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .presets import Skip
from .values import (RowError, attribute, boolean, integer, key, number, parse_timestamp,
                     required, tags, text, url)

REQUIRED: dict[str, tuple[str, ...]] = {
    "users": ("external_id",),
    "items": ("sku", "title"),
    "events": ("user", "item", "kind", "ts"),
    "unsubscribes": (),
    "outcomes": ("event", "ts"),
}
USER_TEXT = ("name", "email", "phone", "timezone")
USER_BOOLS = ("consent_email", "consent_sms", "consent_push")
CONSENT_AT = {f"{c}_at": c.removeprefix("consent_") for c in USER_BOOLS}
ITEM_TEXT = ("description", "category", "brand")
ITEM_URLS = ("url", "image_url")

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CURRENCY = re.compile(r"[A-Z]{3}")
# APNs tokens are 64 hex digits, FCM tokens ~150 characters of [A-Za-z0-9_:-], Expo
# tokens ExponentPushToken[...]: printable ASCII without spaces covers them all.
_PUSH_TOKEN = re.compile(r"[\x21-\x7e]{8,4096}")
_KIND = re.compile(r"[a-z][a-z0-9_\-]{0,31}")
RETURN_KINDS = ("purchase", "return")


@dataclass(frozen=True)
class Reading:
    """What a value parser needs to know about the file."""

    decimal_comma: bool = False
    date_formats: tuple[str, ...] = ()
    timezone: str | None = None       # of times without an offset (None: UTC)


def user_row(rec: dict[str, Any], reading: Reading = Reading()) -> dict[str, Any]:
    """A users row. ``consent_<channel>_at`` columns are kept under ``_consent_at`` (they
    say when a customer gave consent, which may lift an earlier opt-out)."""
    row: dict[str, Any] = {"external_id": required(rec, "external_id")}
    attributes: dict[str, Any] = {}
    for name, value in rec.items():
        if name == "external_id":
            continue
        if name in USER_TEXT:
            row[name] = text(value)
            if name == "email" and row[name] is not None and not _EMAIL.fullmatch(row[name]):
                raise RowError(name, f"bad email address {row[name]!r}")
        elif name == "push_token":
            token = text(value)
            if token is not None and not _PUSH_TOKEN.fullmatch(token):
                raise RowError(name, "bad push token (expected the device token the app "
                                     "registered: 8 to 4096 printable characters, no spaces)")
            row[name] = token
        elif name == "locale":
            row[name] = (text(value) or "en-US").replace("_", "-")
        elif name in USER_BOOLS:
            # An empty consent cell means no consent: never assume permission.
            row[name] = boolean(value, name, 0)
        elif name in CONSENT_AT:
            if value is not None:
                row.setdefault("_consent_at", {})[CONSENT_AT[name]] = parse_timestamp(
                    value, name, reading.date_formats, reading.timezone)
        elif name == "attributes" and isinstance(value, dict):
            attributes.update({k: attribute(v) for k, v in value.items()})
        else:
            attributes[name] = attribute(value)
    if attributes:
        row["attributes"] = attributes
    return row


def item_row(rec: dict[str, Any], reading: Reading = Reading()) -> dict[str, Any]:
    row: dict[str, Any] = {"sku": required(rec, "sku"), "title": required(rec, "title")}
    attributes: dict[str, Any] = {}
    comma = reading.decimal_comma
    for name, value in rec.items():
        if name in ("sku", "title"):
            continue
        if name in ITEM_TEXT:
            row[name] = text(value)
        elif name in ITEM_URLS:
            row[name] = url(value, name)
        elif name in ("price", "sale_price"):
            row[name] = number(value, name, decimal_comma=comma)
        elif name == "stock":
            row[name] = integer(value, name, decimal_comma=comma)
        elif name == "currency":
            currency = (text(value) or "USD").upper()
            if not _CURRENCY.fullmatch(currency):
                raise RowError(name, f"bad currency {value!r} (use a 3-letter code like USD)")
            row[name] = currency
        elif name == "active":
            row[name] = boolean(value, name, 1)
        elif name == "tags":
            attributes["tags"] = tags(value)
        elif name == "attributes" and isinstance(value, dict):
            attributes.update({k: attribute(v) for k, v in value.items()})
        else:
            attributes[name] = attribute(value)
    price, sale = row.get("price"), row.get("sale_price")
    if price is not None and sale is not None and sale > price:
        # A sale price above the price would turn into a negative discount in copy.
        raise RowError("sale_price", f"sale price {sale:g} is above the price {price:g}")
    if attributes:
        row["attributes"] = attributes
    return row


class EventRow:
    """One validated event; ``user_fields`` / ``item_fields`` are the row's ``user.*`` /
    ``item.*`` columns, used to create a customer or product the store does not have."""

    __slots__ = ("user", "item", "kind", "ts", "quantity", "value", "user_fields",
                 "item_fields", "line")

    def __init__(self, user: str, item: str, kind: str, ts: str, quantity: float,
                 value: float, user_fields: dict[str, Any] | None,
                 item_fields: dict[str, Any] | None, line: int) -> None:
        self.user, self.item, self.kind, self.ts = user, item, kind, ts
        self.quantity, self.value, self.line = quantity, value, line
        self.user_fields, self.item_fields = user_fields, item_fields


NO_CUSTOMER = Skip("no customer (the user column is empty: a guest or anonymous purchase)")
ERASED = Skip("customer erased on request (never imported again)")


class ErasedIds:
    """Whether an external id belongs to a customer erased on request (``pushgen users
    forget``): the erasure keeps only a keyed hash of the id, checked once per id. A shop's
    exports still name such a customer until the shop erases them there too; the import
    skips those rows and counts them, so the customer is not brought back."""

    def __init__(self, db: Any) -> None:
        from ..signing import shop_secret
        from ..store import privacy

        self.db = db
        self.hashes = privacy.erased_hashes(db)      # read once: a set lookup per id
        self._secret = shop_secret(db) if self.hashes else b""
        self._known: dict[str, bool] = {}

    def __call__(self, external_id: str) -> bool:
        if not self.hashes:
            return False
        known = self._known.get(external_id)
        if known is None:
            from ..privacy import erased_id_hash

            known = erased_id_hash(self.db, external_id, self._secret) in self.hashes
            self._known[external_id] = known
        return known


_KINDS_SEEN: set[str] = set()


def _kind(value: Any) -> str:
    textual = key(value, "kind")
    if textual is None:
        raise RowError("kind", "required value is empty")
    kind = textual.lower()
    if kind not in _KINDS_SEEN:
        if not _KIND.fullmatch(kind):
            raise RowError("kind", f"bad event kind {textual!r} (a word such as view, cart, "
                                   "purchase, return, rating)")
        if len(_KINDS_SEEN) < 1000:
            _KINDS_SEEN.add(kind)
    return kind


def event_row(rec: dict[str, Any], reading: Reading, line: int) -> EventRow | Skip:
    """An event; a row with no customer is skipped (it cannot be personalised), not an
    error. A negative quantity on a purchase is a return of that many units."""
    user = rec.get("user")
    if type(user) is not str:
        user = key(user, "user")
        if user is None:
            return NO_CUSTOMER
    item = rec.get("item")
    if type(item) is not str:
        item = required(rec, "item")
    kind = _kind(rec.get("kind"))
    quantity = rec.get("quantity")
    if quantity is None:
        quantity = 1.0
    else:
        quantity = number(quantity, "quantity", minimum=None,
                          decimal_comma=reading.decimal_comma)
        if quantity is None:
            quantity = 1.0
        elif quantity < 0:
            if kind not in RETURN_KINDS:
                raise RowError("quantity", f"negative quantity {quantity:g} on a {kind!r} "
                                           "event (only purchases can be negative: they become "
                                           "returns)")
            kind, quantity = "return", -quantity
        elif quantity == 0:
            raise RowError("quantity", "quantity 0 (a line with no units)")
    value = rec.get("value")
    if value is not None:
        value = number(value, "value", minimum=None, decimal_comma=reading.decimal_comma)
    ts = parse_timestamp(rec.get("ts"), "ts", reading.date_formats, reading.timezone)
    user_fields = item_fields = None
    for name in [n for n in rec if "." in n]:
        if name.startswith("user."):
            if user_fields is None:
                user_fields = {}
            user_fields[name[5:]] = rec[name]
        elif name.startswith("item."):
            if item_fields is None:
                item_fields = {}
            item_fields[name[5:]] = rec[name]
    return EventRow(user, item, kind, ts, quantity, 1.0 if value is None else value,
                    user_fields, item_fields, line)


def new_user_row(event: EventRow, reading: Reading) -> dict[str, Any]:
    """The customer an events row creates: its external id plus the row's non-empty user.*
    columns (an empty cell says nothing about the customer, so it sets nothing)."""
    fields = {k: v for k, v in (event.user_fields or {}).items() if v is not None}
    fields.pop("external_id", None)
    try:
        row = user_row({"external_id": event.user, **fields}, reading)
        row.pop("_consent_at", None)
        return row
    except RowError as exc:
        raise RowError(f"user.{exc.field}" if exc.field else None, exc.message) from None


def new_item_row(event: EventRow, reading: Reading) -> dict[str, Any]:
    """The product an events row creates: its sku, a title (the sku when the row has
    none) and the row's non-empty item.* columns."""
    fields = {k: v for k, v in (event.item_fields or {}).items() if v is not None}
    fields.pop("sku", None)
    if fields.get("title") is None:
        fields["title"] = event.item
    try:
        return item_row({"sku": event.item, **fields}, reading)
    except RowError as exc:
        raise RowError(f"item.{exc.field}" if exc.field else None, exc.message) from None


def merge_rows(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Fields of a later row override an earlier row's; attributes are merged."""
    if old is None:
        return new
    merged = {**old, **new}
    if "attributes" in old and "attributes" in new:
        merged["attributes"] = {**old["attributes"], **new["attributes"]}
    return merged


__all__ = ["merge_rows", "ErasedIds", "ERASED", "REQUIRED", "Reading", "user_row", "item_row", "EventRow", "event_row",
           "new_user_row", "new_item_row", "NO_CUSTOMER", "CONSENT_AT"]
