"""Known export layouts: one file of order lines -> customers, products and events.

A preset names the columns of a published export and how one order line becomes events:

- ``shopify-orders``: Shopify admin, Orders > Export (CSV). One row per line item; the
  order's own columns (Email, Created at, Financial Status...) are filled only on its first
  row, so they are carried down to the order's other rows.
- ``woocommerce-orders``: WooCommerce Customer / Order / Coupon Export, format "Default -
  One Row per Item" (column keys such as ``order_id``, ``billing_email``, ``item_sku``).
- ``online-retail``: the UCI Online Retail data set (``InvoiceNo, StockCode, Description,
  Quantity, InvoiceDate, UnitPrice, CustomerID, Country``; the Online Retail II names
  ``Invoice``, ``Price``, ``Customer ID`` are accepted too).

Every preset creates the customers and products it meets that do not exist yet (existing
ones are left as they are), reads refunds and cancellations as ``return`` events, and
skips (and counts) rows that cannot be a customer's purchase: no customer, unpaid orders,
postage and fee lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

Shape = Callable[[dict[str, Any]], "list[dict[str, Any]] | Skip"]


@dataclass(frozen=True)
class Skip:
    """A row that is not an event (counted by reason, never an error)."""

    reason: str


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    columns: dict[str, tuple[str, ...]]   # target -> the export's column (alternatives)
    required: tuple[str, ...]             # targets the file must have
    date_formats: tuple[str, ...]
    shape: Shape
    order: str | None = None              # target holding the order id
    fill_down: tuple[str, ...] = ()       # order-level targets blank on an order's later rows

    def published_columns(self) -> list[str]:
        return [names[0] for names in self.columns.values()]

    def resolve(self, header: list[str], source: str) -> dict[str, str]:
        """``{file column: target}`` for this file, or InputError naming what is missing."""
        renames: dict[str, str] = {}
        present = set(header)
        for target, names in self.columns.items():
            found = next((n for n in names if n in present), None)
            if found is not None:
                renames[found] = target
            elif target in self.required:
                raise InputError(
                    f"not a {self.title} file: column {names[0]!r} is missing (the preset "
                    f"reads {', '.join(self.published_columns())})", file=source, line=1,
                    field=names[0])
        return renames


class PresetRun:
    """One import with a preset: carries order-level values down, then shapes each row."""

    def __init__(self, preset: Preset) -> None:
        self.preset = preset
        self._order: Any = None
        self._carried: dict[str, Any] = {}

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]] | Skip:
        preset = self.preset
        if preset.order is not None and preset.fill_down:
            order = row.get(preset.order)
            if order is not None and order == self._order:
                for target in preset.fill_down:
                    if row.get(target) is None and target in self._carried:
                        row[target] = self._carried[target]
            else:
                self._order = order
            self._carried = {t: row.get(t) for t in preset.fill_down}
        return preset.shape(row)


_WHOLE_FLOAT = re.compile(r"(\d+)\.0+")


def _customer(value: Any) -> Any:
    """``17850.0`` (a customer number saved through a float column) -> ``17850``."""
    if isinstance(value, str):
        m = _WHOLE_FLOAT.fullmatch(value)
        if m:
            return m.group(1)
    return value


def _email_key(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _plain_number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _line(row: dict[str, Any], **event: Any) -> dict[str, Any]:
    """An event row: the event's own columns plus the row's user.* and item.* columns."""
    out = {k: v for k, v in row.items() if k.startswith(("user.", "item."))}
    out.update(event)
    return out


# --- UCI Online Retail ---------------------------------------------------------------------

# Stock codes in the data set that are not products: postage, carriage, bank charges,
# discounts, manual adjustments, samples, fees.
NON_PRODUCT_CODES = frozenset({
    "POST", "DOT", "C2", "M", "D", "S", "B", "CRUK", "PADS", "BANK CHARGES", "AMAZONFEE",
    "ADJUST", "ADJUST2", "TEST001", "TEST002",
})


def _online_retail(row: dict[str, Any]) -> list[dict[str, Any]] | Skip:
    code = row.get("item")
    if isinstance(code, str) and code.strip().upper() in NON_PRODUCT_CODES:
        return Skip("not a product (postage, fees, discounts, adjustments)")
    invoice = str(row.get("order") or "")
    # Cancellations are invoices numbered C...; their quantities are negative.
    kind = "return" if invoice.upper().startswith("C") else "purchase"
    return [_line(row, user=_customer(row.get("user")), item=code, kind=kind, ts=row.get("ts"),
                  quantity=row.get("quantity"), **{"item.currency": "GBP"})]


ONLINE_RETAIL = Preset(
    name="online-retail",
    title="UCI Online Retail",
    columns={
        "order": ("InvoiceNo", "Invoice"),
        "item": ("StockCode",),
        "item.title": ("Description",),
        "quantity": ("Quantity",),
        "ts": ("InvoiceDate",),
        "item.price": ("UnitPrice", "Price"),
        "user": ("CustomerID", "Customer ID"),
        "user.country": ("Country",),
    },
    required=("order", "item", "quantity", "ts", "user"),
    date_formats=("%m/%d/%Y %H:%M", "%Y-%m-%d %H:%M:%S", "iso"),
    shape=_online_retail,
)


# --- Shopify orders export -----------------------------------------------------------------

def _shopify(row: dict[str, Any]) -> list[dict[str, Any]] | Skip:
    status = str(row.get("status") or "").strip().lower()
    if status == "voided":
        return Skip("order voided (never paid)")
    if status == "refunded":
        kind = "return"
    elif row.get("cancelled_at") is not None:
        return Skip("order cancelled before payment")
    else:
        kind = "purchase"
    email = _email_key(row.get("user"))
    item = row.get("item") if row.get("item") is not None else row.get("item.title")
    event = _line(row, user=email, item=item, kind=kind, ts=row.get("ts"),
                  quantity=row.get("quantity"))
    if email is not None:
        event["user.email"] = email
    return [event]


SHOPIFY_ORDERS = Preset(
    name="shopify-orders",
    title="Shopify orders export",
    columns={
        "order": ("Name",),
        "user": ("Email",),
        "status": ("Financial Status",),
        "user.consent_email": ("Accepts Marketing", "Accepts Email Marketing"),
        "item.currency": ("Currency",),
        "ts": ("Created at",),
        "quantity": ("Lineitem quantity",),
        "item.title": ("Lineitem name",),
        "item.price": ("Lineitem price",),
        "item": ("Lineitem sku",),
        "user.name": ("Billing Name",),
        "user.country": ("Billing Country",),
        "cancelled_at": ("Cancelled at",),
        "item.brand": ("Vendor",),
        "user.phone": ("Phone", "Billing Phone"),
    },
    required=("order", "user", "ts", "quantity", "item.title"),
    date_formats=("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S", "iso"),
    shape=_shopify,
    order="order",
    fill_down=("user", "status", "user.consent_email", "item.currency", "ts", "user.name",
               "user.country", "cancelled_at", "user.phone"),
)


# --- WooCommerce Customer / Order / Coupon Export ------------------------------------------

_WOO_PAID = {"completed", "processing", "on-hold"}


def _woocommerce(row: dict[str, Any]) -> list[dict[str, Any]] | Skip:
    status = str(row.get("status") or "").strip().lower().removeprefix("wc-")
    if status == "refunded":
        kind = "return"
    elif status in _WOO_PAID:
        kind = "purchase"
    else:
        return Skip(f"order {status or 'without a status'} (not paid)")
    email = _email_key(row.get("user"))
    first, last = row.pop("first_name", None), row.pop("last_name", None)
    name = " ".join(str(p).strip() for p in (first, last) if p is not None and str(p).strip())
    quantity = _plain_number(row.get("quantity"))
    subtotal = _plain_number(row.pop("subtotal", None))
    refunded = _plain_number(row.pop("refunded_qty", None))
    if subtotal is not None and quantity:
        row["item.price"] = round(subtotal / quantity, 2)
    item = row.get("item") if row.get("item") is not None else row.get("item.title")
    event = _line(row, user=email, item=item, kind=kind, ts=row.get("ts"),
                  quantity=row.get("quantity"))
    if email is not None:
        event["user.email"] = email
    if name:
        event["user.name"] = name
    events = [event]
    # WooCommerce stores refunded quantities as negative numbers.
    if kind == "purchase" and refunded:
        events.append({**event, "kind": "return", "quantity": abs(refunded)})
    return events


WOOCOMMERCE_ORDERS = Preset(
    name="woocommerce-orders",
    title="WooCommerce order export (one row per item)",
    columns={
        "order": ("order_id", "order_number"),
        "ts": ("date", "order_date"),
        "status": ("status",),
        "item.currency": ("order_currency",),
        "user": ("billing_email", "customer_email"),
        "first_name": ("billing_first_name",),
        "last_name": ("billing_last_name",),
        "user.phone": ("billing_phone",),
        "user.country": ("billing_country",),
        "item.title": ("item_name",),
        "item": ("item_sku",),
        "quantity": ("item_quantity",),
        "subtotal": ("item_subtotal",),
        "refunded_qty": ("item_refunded_qty",),
    },
    required=("order", "ts", "status", "user", "item.title", "quantity"),
    date_formats=("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "iso"),
    shape=_woocommerce,
)


PRESETS: dict[str, Preset] = {p.name: p for p in (SHOPIFY_ORDERS, WOOCOMMERCE_ORDERS,
                                                  ONLINE_RETAIL)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r} (use {', '.join(PRESETS)})") from None


def presets_help() -> str:
    """One paragraph per preset: its name and the export columns it reads."""
    return "\n\n".join(f"{p.name} ({p.title}): {', '.join(p.published_columns())}"
                       for p in PRESETS.values())


__all__ = ["Preset", "PresetRun", "Skip", "PRESETS", "get_preset", "presets_help",
           "NON_PRODUCT_CODES"]
