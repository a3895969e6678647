"""What the model writes for a draft, and how pushgen turns it into the customer's message.

Two modes:

- **blocks** (default): the model writes reusable pieces keyed by what the copy depends on,
  never by who receives it. A *lead* block per (first item, locale, segment, variant): the
  SMS text, the push title and body, or the email subject, preheader and opening; and for
  email an *item* block per (item, locale): a one-line pitch. The segment is the campaign's
  allowed profile fields that describe a group (tier, age band...), never a name or contact.
  Where the first name belongs the model writes ``{first_name}``; pushgen fills it in per
  customer, and a dropped or mangled placeholder fails the draft's ``llm.placeholders``
  check. Calls grow with catalog x locales x variants x segments, not with customers, and
  no prompt carries a name.
- **per-user**: one prompt per customer with the profile fields the campaign allows (the
  first name included when allowed), as before.

Either way the pieces are assembled by the channel's ``blocks`` template
(``templates/<channel>/blocks.<locale>.j2``), which adds the item link, the deep link, the
SMS opt-out line, the unsubscribe link and the postal address exactly as the template path
does; model HTML is sanitised (``html_safety``) before it enters the email layout.
"""

from __future__ import annotations

import html as _html
import re
from dataclasses import dataclass, replace
from typing import Any, Sequence

import nh3
from markupsafe import Markup

from ..channels import GSM7, sms_capacity, sms_encoding, sms_length
from ..messages import (CampaignSettings, CheckResult, ItemFacts, Message, MessageContext,
                        Recipient)
from .guards import prompt_fields
from .html_safety import sanitize_model_html
from .llm import LLMRequest, Prompts, data_json, feedback_lines, item_data
from .templates import RenderedMessage, get_renderer, greeting_name

MODES = ("blocks", "per-user")
PLACEHOLDER = "{first_name}"
PLACEHOLDER_CHARS = 12        # room a name gets inside a length limit given to the model
BLOCKS_TEMPLATE = "blocks"
PITCH_MAX = 160
OPENING_MAX = 300
_NO_SHRINK = 1000             # segments: render the model's SMS as written
CHANNEL_LABELS = {"sms": "SMS", "push": "app push", "email": "email"}
# Allowed profile fields that are not segment attributes: the name travels as a
# placeholder, the locale is part of every block key anyway.
_NOT_SEGMENT = {"first_name", "name", "locale", "language"}
_BRACES_RE = re.compile(r"\{\{?[^{}\n]{0,40}\}?\}")
_NAME_WORD_RE = re.compile(r"first[\s_\-]?name", re.IGNORECASE)


def names_allowed(settings: CampaignSettings) -> bool:
    """Whether the campaign lets copy use the customer's first name."""
    return any(f.strip() in ("first_name", "name") for f in settings.allowed_profile_fields)


def segment_of(recipient: Recipient, settings: CampaignSettings) -> dict[str, Any]:
    """The allowed profile fields that describe a group, not a person: what a block may
    depend on besides item and locale (never a name, never contact data)."""
    out = {}
    for key, value in prompt_fields(recipient, settings).items():
        if key in _NOT_SEGMENT or "name" in key.lower():
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            continue
        text = str(value)
        if len(text) <= 40:
            out[key] = value
    return out


@dataclass
class Slot:
    """One model-written piece a draft needs: ``role`` lead | item | user."""

    role: str
    sku: str | None
    request: LLMRequest


# --- placeholders ----------------------------------------------------------------------------


def placeholder_problems(fields: dict[str, str], rules: dict[str, str], where: str
                         ) -> list[str]:
    """What is wrong with the placeholders of one answer: a required ``{first_name}``
    dropped, or a mangled or unknown one (``{firstname}``, ``{{first_name}}``,
    ``[first_name]``, ``{name}``...)."""
    problems = []
    for key, text in fields.items():
        rule = rules.get(key)
        count = text.count(PLACEHOLDER)
        rest = text.replace(PLACEHOLDER, "")
        bad = _BRACES_RE.findall(rest) + _NAME_WORD_RE.findall(rest)
        if bad:
            problems.append(f"{where} {key}: placeholder written wrong or unknown "
                            f"({', '.join(repr(b) for b in bad[:3])}); write exactly {PLACEHOLDER}"
                            if rule else
                            f"{where} {key}: unexpected placeholder text "
                            f"({', '.join(repr(b) for b in bad[:3])})")
        elif count and not rule:
            problems.append(f"{where} {key}: {PLACEHOLDER} is not allowed here")
        elif rule == "required" and count == 0:
            problems.append(f"{where} {key}: the placeholder {PLACEHOLDER} was dropped "
                            "(the customer's first name goes there)")
    return problems


def fill(text: str, name: str) -> str:
    """``text`` with the placeholder replaced by the customer's name (one pass: a name that
    itself looks like a placeholder is not expanded again)."""
    return text.replace(PLACEHOLDER, name)


# --- prompts ---------------------------------------------------------------------------------


class Planner:
    """The LLM requests a draft needs, per mode. Block prompts are built once per block and
    reused for every customer who needs the same block."""

    def __init__(self, prompts: Prompts, mode: str,
                 template_dirs: Sequence[Any] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.prompts, self.mode, self.template_dirs = prompts, mode, template_dirs
        self._memo: dict[tuple[Any, ...], Slot] = {}
        self._budgets: dict[tuple[Any, ...], int] = {}

    def slots(self, ctx: MessageContext) -> list[Slot]:
        """The pieces of this draft, in assembly order."""
        if self.mode == "per-user":
            return [self.per_user(ctx)]
        channel = ctx.settings.channel
        lead = ctx.items[0]
        locale = ctx.recipient.locale or "en-US"
        segment = segment_of(ctx.recipient, ctx.settings)
        out = [self._block("lead", lead, locale, segment, ctx.variant, ctx.settings)]
        if channel == "email":
            for item in ctx.items[:max(ctx.settings.items_per_message, 1)]:
                out.append(self._block("item", item, locale, {}, 1, ctx.settings))
        return out

    def repair(self, slot: Slot, ctx: MessageContext, feedback: list[str]) -> Slot:
        """The same piece asked again with what failed (another prompt, another cache key)."""
        if slot.role == "user":
            return self.per_user(ctx, feedback)
        item = next(i for i in ctx.items if i.sku == slot.sku)
        locale = ctx.recipient.locale or "en-US"
        segment = segment_of(ctx.recipient, ctx.settings) if slot.role == "lead" else {}
        variant = ctx.variant if slot.role == "lead" else 1
        return self._block(slot.role, item, locale, segment, variant, ctx.settings,
                           feedback=feedback_lines(feedback))

    # -- per-user --

    def per_user(self, ctx: MessageContext, feedback: list[str] | None = None) -> Slot:
        s, channel = ctx.settings, ctx.settings.channel
        locale = ctx.recipient.locale or "en-US"
        items = ctx.items[:max(s.items_per_message, 1)]
        keys: tuple[str, ...] = {"sms": ("text",), "push": ("title", "body"),
                                 "email": ("subject", "preheader", "opening")}[channel]
        if channel == "email":
            keys += tuple(f"pitch_{n}" for n in range(1, len(items) + 1))
        data = {"customer": prompt_fields(ctx.recipient, s),
                "items": [item_data(i, locale) for i in items]}
        values = self._values(ctx.settings, locale, keys, ctx.variant, data, "per-user", None,
                              feedback_lines(feedback or []), self._limits(ctx))
        # no customer id in the key: it is stored with cache rows and draft provenance
        request = LLMRequest(f"{channel}.per-user|v{ctx.variant}", channel,
                             self.prompts.messages(channel, values), keys, {})
        return Slot("user", None, request)

    # -- blocks --

    def _block(self, role: str, item: ItemFacts, locale: str, segment: dict[str, Any],
               variant: int, settings: CampaignSettings, feedback: list[str] | None = None
               ) -> Slot:
        seg = tuple(sorted((k, str(v)) for k, v in segment.items()))
        memo_key = (role, locale, seg, variant, _facts(item), tuple(feedback or ()))
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        channel = settings.channel
        placeholder = PLACEHOLDER if names_allowed(settings) and role == "lead" else None
        if role == "item":
            task, keys = "blocks/email_item", ("pitch",)
            rules: dict[str, str] = {}
        elif channel == "email":
            task, keys = "blocks/email_lead", ("subject", "preheader", "opening")
            rules = {"opening": "required", "subject": "optional", "preheader": "optional"}
        elif channel == "push":
            task, keys = "blocks/push", ("title", "body")
            rules = {"title": "required"}
        else:
            task, keys = "blocks/sms", ("text",)
            rules = {"text": "required"}
        if placeholder is None:
            rules = {}
        limits = self._block_limits(settings, item, locale)
        data: dict[str, Any] = {"items": [item_data(item, locale)]}
        if role == "lead":
            data = {"segment": segment, **data}
        values = self._values(settings, locale, keys, variant, data, "blocks", placeholder,
                              feedback or [], limits)
        seg_text = ",".join(f"{k}={v}" for k, v in seg) or "-"
        block_key = (f"{channel}.{role}|{item.sku}|{locale}|{seg_text}|v{variant}"
                     if role == "lead" else f"email.item|{item.sku}|{locale}")
        if feedback:
            block_key += "|repair"
        slot = Slot(role, item.sku, LLMRequest(block_key, task.replace("/", "_"),
                                               self.prompts.messages(task, values), keys, rules))
        self._memo[memo_key] = slot
        return slot

    @staticmethod
    def _values(settings: CampaignSettings, locale: str, keys: tuple[str, ...], variant: int,
                data: dict[str, Any], mode: str, placeholder: str | None,
                feedback: list[str], limits: dict[str, Any]) -> dict[str, Any]:
        return {"settings": settings, "channel": settings.channel, "locale": locale,
                "channel_label": CHANNEL_LABELS[settings.channel], "limits": limits,
                "output_keys": list(keys), "variant": variant, "data_json": data_json(data),
                "feedback": feedback, "mode": mode, "placeholder": placeholder}

    def _limits(self, ctx: MessageContext) -> dict[str, Any]:
        """Length limits for the model's text, with room for what pushgen adds."""
        return self._block_limits(ctx.settings, ctx.items[0], ctx.recipient.locale or "en-US")

    def _block_limits(self, settings: CampaignSettings, lead: ItemFacts, locale: str
                      ) -> dict[str, Any]:
        limits: dict[str, Any] = {
            "push_title_max": settings.push_title_max, "push_body_max": settings.push_body_max,
            "subject_max": 50, "preheader_min": 40, "preheader_max": 130,
            "pitch_max": PITCH_MAX, "opening_max": OPENING_MAX,
            "placeholder_chars": PLACEHOLDER_CHARS}
        if settings.channel == "sms":
            limits.update(self._sms_budget(settings, lead, locale))
        return limits

    def _sms_budget(self, settings: CampaignSettings, lead: ItemFacts, locale: str
                    ) -> dict[str, Any]:
        """Characters left for the model's SMS text once the blocks template has added
        its own parts (sender, link, opt-out line), rendered with an empty text."""
        key = (lead.sku, lead.url, locale, settings.sms_max_segments, settings.sender_name)
        if key not in self._budgets:
            ctx = MessageContext(Recipient(0, "", None, locale), [lead], settings)
            frame = get_renderer(self.template_dirs).render(
                ctx, template=BLOCKS_TEMPLATE, extra={"llm": {"text": ""}}).message.get("text")
            gsm = sms_encoding(frame + lead.title) == GSM7
            capacity = sms_capacity(GSM7 if gsm else "UCS-2", max(settings.sms_max_segments, 1))
            self._budgets[key] = max(capacity - sms_length(frame) - 1, 20)
            self._budgets[key + ("gsm",)] = int(gsm)
        return {"sms_chars": self._budgets[key], "sms_gsm": bool(self._budgets[key + ("gsm",)])}


def _facts(item: ItemFacts) -> tuple[Any, ...]:
    """Everything about an item a block prompt shows (a changed price is another block)."""
    zh = (item.attributes or {}).get("title_zh")
    return (item.sku, item.title, zh, item.price, item.sale_price, item.currency,
            item.category, item.brand, item.description)


# --- assembly --------------------------------------------------------------------------------


def _allowed_link(settings: CampaignSettings, items: Sequence[ItemFacts]):
    site = settings.site_url.rstrip("/")
    urls = {i.url for i in items if i.url}

    def allow(url: str) -> bool:
        u = url.strip()
        return u in urls or (bool(site) and (u == site or u.startswith(site + "/")))
    return allow


def html_to_text(fragment: str) -> str:
    """Visible text of sanitised HTML (tags dropped, entities decoded, spaces collapsed)."""
    spaced = re.sub(r"<(br|/p|/li|/ul|/ol)\b[^>]*>", " ", fragment, flags=re.IGNORECASE)
    return " ".join(_html.unescape(nh3.clean(spaced, tags=set())).split())


@dataclass
class Assembled:
    """One customer's message from the model's pieces, and the placeholder check."""

    rendered: RenderedMessage
    placeholders: CheckResult


class Assembler:
    """Fills the model's pieces in and renders the channel's ``blocks`` template."""

    def __init__(self, template_dirs: Sequence[Any] | None = None) -> None:
        self.template_dirs = template_dirs
        self._html: dict[tuple[str, str], tuple[Markup, str]] = {}

    def _safe(self, cache_key: str, text: str, settings: CampaignSettings,
              items: Sequence[ItemFacts]) -> tuple[Markup, str]:
        """(sanitised HTML, plain text) of one model-written HTML piece, once per piece."""
        memo = (cache_key, text)
        hit = self._html.get(memo)
        if hit is None:
            clean = sanitize_model_html(text, _allowed_link(settings, items))
            hit = self._html[memo] = (Markup(clean), html_to_text(clean))
            if len(self._html) > 100_000:
                self._html.clear()
        return hit

    def assemble(self, ctx: MessageContext, pieces: list[tuple[Slot, str, dict[str, str]]]
                 ) -> Assembled:
        """``pieces``: (slot, answer cache key, the answer's fields) in slot order."""
        settings, channel = ctx.settings, ctx.settings.channel
        locale = ctx.recipient.locale or "en-US"
        name = greeting_name(ctx.recipient, locale)
        problems: list[str] = []
        llm: dict[str, Any] = {"pitch": {}, "pitch_html": {}}
        for slot, key, fields in pieces:
            where = "user" if slot.role == "user" else f"{slot.role} block {slot.request.block_key}"
            problems += placeholder_problems(fields, slot.request.placeholders, where)
            filled = {k: fill(v, name) for k, v in fields.items()}
            if slot.role == "item":
                item = next(i for i in ctx.items if i.sku == slot.sku)
                html, text = self._safe(key + ":pitch", fields["pitch"], settings, [item])
                llm["pitch_html"][item.sku] = html
                llm["pitch"][item.sku] = text
                continue
            for k, v in filled.items():
                if k.startswith("pitch_"):
                    n = int(k.split("_", 1)[1]) - 1
                    if n < len(ctx.items):
                        sku = ctx.items[n].sku
                        html, text = self._safe(f"{key}:{k}", v, settings, ctx.items)
                        llm["pitch_html"][sku], llm["pitch"][sku] = html, text
                elif k == "opening":
                    shown = ctx.items if slot.role == "user" else ctx.items[:1]
                    # sanitised before the name goes in, so the name is escaped as text
                    html, text = self._safe(f"{key}:opening", fields[k], settings, shown)
                    llm["opening_html"] = Markup(str(html).replace(
                        PLACEHOLDER, str(Markup.escape(name))))
                    llm["opening"] = fill(text, name)
                else:
                    llm[k] = v
        check = (CheckResult("llm.placeholders", False, "; ".join(problems)[:500])
                 if problems else
                 CheckResult("llm.placeholders", True, "placeholders kept"
                             if any(s.request.placeholders for s, _, _ in pieces)
                             else "no placeholders"))
        if channel == "sms":
            # The model's SMS is never cut to fit (a cut can halve a price or a sentence):
            # one that is too long fails sms.segments and is repaired with its length.
            ctx = replace(ctx, settings=replace(settings, sms_max_segments=_NO_SHRINK))
        rendered = get_renderer(self.template_dirs).render(
            ctx, template=BLOCKS_TEMPLATE, extra={"llm": llm})
        return Assembled(rendered, check)


def message_of(assembled: Assembled) -> Message:
    return assembled.rendered.message


__all__ = ["MODES", "PLACEHOLDER", "Slot", "Planner", "Assembler", "Assembled",
           "placeholder_problems", "fill", "names_allowed", "segment_of", "html_to_text"]
