"""Records that cross module boundaries: what a message is about, who it is for, what it says.

The ranker produces ``ItemFacts`` (catalog facts plus score and reason), the campaign builds a
``MessageContext``, a generator (template or LLM) returns a ``Message``, and the channel rules
and guards return ``CheckResult`` rows. Review edits and exports use the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Channel = Literal["sms", "push", "email"]
CHANNELS: tuple[str, ...] = ("sms", "push", "email")

# The fields a message of each channel carries, in display order.
CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "sms": ("text",),
    "push": ("title", "body", "deep_link"),
    "email": ("subject", "preheader", "html", "text"),
}


@dataclass
class ItemFacts:
    """Catalog facts of one recommended item: the only facts copy may state about it."""

    sku: str
    title: str
    price: float | None
    currency: str = "USD"
    sale_price: float | None = None
    category: str | None = None
    brand: str | None = None
    description: str | None = None
    url: str | None = None
    image_url: str | None = None
    score: float = 0.0
    reason: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def current_price(self) -> float | None:
        """What the customer pays now: the sale price when there is one."""
        if self.sale_price is not None and self.price is not None and self.sale_price < self.price:
            return self.sale_price
        return self.price

    @property
    def discount_pct(self) -> int:
        """Whole-percent discount of the sale price (0 when not on sale), rounded down."""
        if self.sale_price is None or not self.price or self.sale_price >= self.price:
            return 0
        return int((self.price - self.sale_price) * 100 // self.price)

    def scored(self, score: float, reason: str) -> "ItemFacts":
        """These facts with one customer's score and reason; strings and attributes are
        shared with this object (read-only), which a batch of contexts pickles once."""
        return ItemFacts(self.sku, self.title, self.price, self.currency, self.sale_price,
                         self.category, self.brand, self.description, self.url,
                         self.image_url, score, reason, self.attributes)

    def to_dict(self) -> dict[str, Any]:
        # Explicit rather than dataclasses.asdict, which deep-copies and costs ~10x more
        # (this runs for every item of every draft).
        return {"sku": self.sku, "title": self.title, "price": self.price,
                "currency": self.currency, "sale_price": self.sale_price,
                "category": self.category, "brand": self.brand,
                "description": self.description, "url": self.url,
                "image_url": self.image_url, "score": self.score, "reason": self.reason,
                "attributes": dict(self.attributes)}


@dataclass
class Recipient:
    """The person a message is for. Only fields a campaign may use in copy or prompts."""

    user_id: int
    external_id: str
    name: str | None
    locale: str = "en-US"
    attributes: dict[str, Any] = field(default_factory=dict)  # profile fields the campaign allows

    @property
    def first_name(self) -> str | None:
        """First name, or None. Chinese names (no space) are used whole."""
        if not self.name or not self.name.strip():
            return None
        name = self.name.strip()
        return name.split()[0] if " " in name else name


@dataclass
class CampaignSettings:
    """Everything a campaign config (TOML) says about voice, sender, limits and links."""

    name: str
    channel: str = "sms"
    tone: str = "friendly"
    emoji_policy: Literal["none", "allowed"] = "none"
    banned_phrases: list[str] = field(default_factory=list)
    sender_name: str = "Pushgen Demo Shop"
    sender_email: str = "news@shop.example"
    postal_address: str = "1 Market Street, Springfield, 12345, USA"
    site_url: str = "https://shop.example"
    # {token} is replaced by a per-draft unsubscribe token.
    unsubscribe_url: str = "https://shop.example/unsubscribe?t={token}"
    # {sku} is replaced by the item's sku.
    deep_link: str = "shop://item/{sku}"
    # The shop's own contact, the only email address / phone number copy may show.
    contact_email: str = ""
    contact_phone: str = ""
    sms_max_segments: int = 1
    push_title_max: int = 50
    push_body_max: int = 150
    items_per_message: int = 3
    # Profile fields a prompt may mention (never email or phone).
    allowed_profile_fields: list[str] = field(default_factory=lambda: ["first_name", "locale"])
    template: str = "default"


@dataclass
class MessageContext:
    """Input of every generator: who, what items, which campaign."""

    recipient: Recipient
    items: list[ItemFacts]
    settings: CampaignSettings
    variant: int = 1
    # This recipient's signed unsubscribe link (``signing.unsubscribe_url``); "" when unknown.
    unsubscribe_url: str = ""


@dataclass
class Message:
    """A rendered message: ``fields`` holds CHANNEL_FIELDS[channel]."""

    channel: str
    fields: dict[str, str]

    def get(self, name: str) -> str:
        return self.fields.get(name) or ""


@dataclass
class CheckResult:
    """One named check of a message. ``severity`` 'error' blocks approval, 'warning' does not."""

    name: str
    ok: bool
    message: str = ""
    severity: Literal["error", "warning"] = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "message": self.message,
                "severity": self.severity}


def checks_pass(checks: list[CheckResult]) -> bool:
    """True when no error-severity check failed."""
    return all(c.ok or c.severity != "error" for c in checks)
