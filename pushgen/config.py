"""Campaign configuration files (TOML): brand voice, sender, channel limits, audience, ranking.

A file looks like ``examples/campaign.toml``. Every key is optional; unknown keys are refused
with the file and key named, because a typo such as ``banned_phrase`` silently ignored would
let through copy the brand asked to block.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from .errors import InputError
from .messages import CHANNELS, CampaignSettings


@dataclass
class AudienceFilter:
    """Who may receive a campaign, on top of the mandatory channel consent."""

    profile: dict[str, list[str]] = field(default_factory=dict)  # field -> allowed values
    locales: list[str] = field(default_factory=list)
    active_within_days: int | None = None     # at least one event in the last N days
    frequency_cap: int | None = None          # at most N exported messages on this channel...
    frequency_days: int = 7                   # ...within this many days
    limit: int | None = None                  # at most N users (for trial runs)


@dataclass
class LLMPrice:
    """What a model costs, in your currency per 1M tokens."""

    input: float
    output: float

    def cost(self, tokens_prompt: int, tokens_completion: int) -> float:
        return (tokens_prompt * self.input + tokens_completion * self.output) / 1_000_000


@dataclass
class LLMSettings:
    """The ``[llm]`` section: a price table for cost estimates (not part of the campaign's
    identity: changing prices never makes a campaign's config 'different')."""

    prices: dict[str, LLMPrice] = field(default_factory=dict)

    def price(self, model: str) -> LLMPrice | None:
        """The price of ``model`` (exact name, then the longest listed prefix such as
        ``gpt-4o-mini`` for ``gpt-4o-mini-2024-07-18``); None when unknown."""
        if model in self.prices:
            return self.prices[model]
        prefixes = [m for m in self.prices if model.startswith(m)]
        return self.prices[max(prefixes, key=len)] if prefixes else None


@dataclass
class CampaignConfig:
    settings: CampaignSettings
    audience: AudienceFilter = field(default_factory=AudienceFilter)
    rank: dict[str, Any] = field(default_factory=dict)   # keyword arguments of ranking.RankRules
    llm: LLMSettings = field(default_factory=LLMSettings)

    def rank_rules(self, variants: int = 1) -> tuple[Any, int]:
        """The ``[rank]`` section as ``(RankRules, k)``: ``top_k`` items, by default enough
        for one message and for every variant (variant v leads with the v-th item)."""
        from .ranking import RankRules

        rules = RankRules(**{k: v for k, v in self.rank.items() if k != "top_k"})
        k = int(self.rank.get("top_k", max(self.settings.items_per_message, variants)))
        return rules, k


# TOML section -> {toml key: CampaignSettings field}
_SECTIONS: dict[str, dict[str, str]] = {
    "campaign": {"channel": "channel", "template": "template",
                 "items_per_message": "items_per_message"},
    "voice": {"tone": "tone", "emoji": "emoji_policy", "banned_phrases": "banned_phrases",
              "allowed_profile_fields": "allowed_profile_fields"},
    "sender": {"name": "sender_name", "email": "sender_email",
               "postal_address": "postal_address", "site_url": "site_url",
               "unsubscribe_url": "unsubscribe_url", "deep_link": "deep_link",
               "contact_email": "contact_email", "contact_phone": "contact_phone"},
    "limits": {"sms_max_segments": "sms_max_segments", "push_title_max": "push_title_max",
               "push_body_max": "push_body_max"},
}
_AUDIENCE_KEYS = {f.name for f in dataclasses.fields(AudienceFilter)}
# Keys of [rank]: ``top_k`` plus the fields of ranker.RankRules (kept in step by a test).
_RANK_KEYS = {"top_k", "repeat", "drop_inactive", "drop_out_of_stock",
              "include_categories", "exclude_categories", "min_price", "max_price",
              "min_discount", "max_per_category", "pinned", "blocked"}


def unknown_key(src: str, section: str | None, key: str, known: Iterable[str]) -> InputError:
    """``unknown key 'items_per_mesage' in [campaign]; did you mean 'items_per_message'?``
    (a typo silently ignored could let through copy the brand asked to block)."""
    known = sorted(known)
    where = f" in [{section}]" if section else ""
    what = "key" if section else "section"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return InputError(f"unknown {what} {key!r}{where}; {hint}", file=src)


def _check_type(path: str, key: str, value: Any, expected: Any) -> Any:
    if isinstance(expected, bool) or expected is None:
        return value
    if isinstance(expected, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError("must be a list of strings", file=path, field=key)
        return value
    if isinstance(expected, int) and not isinstance(value, int):
        raise InputError(f"must be a whole number, got {value!r}", file=path, field=key)
    if isinstance(expected, str) and not isinstance(value, str):
        raise InputError(f"must be text, got {value!r}", file=path, field=key)
    return value


def load_campaign_config(path: str | Path | None, *, name: str, channel: str | None = None
                         ) -> CampaignConfig:
    """Read a campaign TOML file (or defaults when ``path`` is None) for campaign ``name``."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("no such campaign config file", file=str(p)) from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"not valid TOML: {exc}", file=str(p)) from None
    src = str(path) if path is not None else "<defaults>"
    defaults = CampaignSettings(name=name)
    values: dict[str, Any] = {"name": name}
    for section, body in data.items():
        if section in _SECTIONS:
            if not isinstance(body, dict):
                raise InputError("must be a [section]", file=src, field=section)
            for key, value in body.items():
                target = _SECTIONS[section].get(key)
                if target is None:
                    raise unknown_key(src, section, key, _SECTIONS[section])
                values[target] = _check_type(src, f"{section}.{key}", value,
                                             getattr(defaults, target))
        elif section not in ("audience", "rank", "llm"):
            raise unknown_key(src, None, section,
                              [*_SECTIONS, "audience", "rank", "llm"])
    if channel is not None:
        values["channel"] = channel
    settings = CampaignSettings(**values)
    if settings.channel not in CHANNELS:
        raise InputError(f"channel must be one of {', '.join(CHANNELS)}", file=src,
                         field="campaign.channel")
    if settings.emoji_policy not in ("none", "allowed"):
        raise InputError("must be 'none' or 'allowed'", file=src, field="voice.emoji")
    if settings.sms_max_segments < 1 or settings.items_per_message < 1:
        raise InputError("must be at least 1", file=src, field="limits")
    _check_sender(settings, src)

    aud = dict(data.get("audience", {}))
    for key in aud:
        if key not in _AUDIENCE_KEYS:
            raise unknown_key(src, "audience", key, _AUDIENCE_KEYS)
    profile = aud.get("profile", {})
    if not isinstance(profile, dict):
        raise InputError("must be a table of field = value(s)", file=src, field="audience.profile")
    aud["profile"] = {k: [str(x) for x in (v if isinstance(v, list) else [v])]
                      for k, v in profile.items()}
    audience = AudienceFilter(**aud)

    rank = dict(data.get("rank", {}))
    for key in rank:
        if key not in _RANK_KEYS:
            raise unknown_key(src, "rank", key, _RANK_KEYS)
    return CampaignConfig(settings=settings, audience=audience, rank=rank,
                          llm=_llm_settings(data.get("llm", {}), src))


def _llm_settings(section: Any, src: str) -> LLMSettings:
    """``[llm.prices]`` entries: ``"gpt-4o-mini" = { input = 0.15, output = 0.60 }``."""
    if not isinstance(section, dict):
        raise InputError("must be a [section]", file=src, field="llm")
    for key in section:
        if key != "prices":
            raise unknown_key(src, "llm", key, ["prices"])
    prices = section.get("prices", {})
    if not isinstance(prices, dict):
        raise InputError("must be a table of model = { input = ..., output = ... }", file=src,
                         field="llm.prices")
    out = {}
    for model, entry in prices.items():
        where = f"llm.prices.{model}"
        if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
            raise InputError("must be { input = <price per 1M prompt tokens>, output = <price "
                             "per 1M completion tokens> }", file=src, field=where)
        values = []
        for part in ("input", "output"):
            v = entry[part]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise InputError(f"{part} must be a number >= 0, got {v!r}", file=src,
                                 field=where)
            values.append(float(v))
        out[model] = LLMPrice(*values)
    return LLMSettings(prices=out)


def config_from_json(config: dict[str, Any] | None, *, name: str, channel: str | None = None
                     ) -> CampaignConfig:
    """A campaign's config as stored with its drafts (settings, audience, rank), e.g. to
    continue a batch without the TOML file at hand."""
    data = dict(config or {})
    audience = dict(data.pop("audience", {}) or {})
    known = {f.name for f in dataclasses.fields(AudienceFilter)}
    rank = dict(data.pop("rank", {}) or {})
    return CampaignConfig(settings=settings_from_json(data, name=name, channel=channel),
                          audience=AudienceFilter(**{k: v for k, v in audience.items()
                                                     if k in known}),
                          rank=rank)


def _check_sender(settings: CampaignSettings, src: str) -> None:
    """Refuse sender values that could never work or could break a header: control
    characters anywhere, links that are not http(s), placeholders missing."""
    from .channels import control_chars, describe_char, is_http_url

    for section, keys in _SECTIONS.items():
        for key, target in keys.items():
            value = getattr(settings, target)
            for text in value if isinstance(value, list) else [value]:
                if isinstance(text, str) and control_chars(text):
                    bad = ", ".join(describe_char(c) for c in control_chars(text))
                    raise InputError(f"has a line break or control character ({bad})",
                                     file=src, field=f"{section}.{key}")
    if not is_http_url(settings.site_url):
        raise InputError(f"must be an http(s) URL, got {settings.site_url!r}", file=src,
                         field="sender.site_url")
    if "{token}" not in settings.unsubscribe_url or not is_http_url(
            settings.unsubscribe_url.replace("{token}", "1-1-" + "0" * 64)):
        raise InputError("must be an http(s) URL with a {token} placeholder, got "
                         f"{settings.unsubscribe_url!r}", file=src,
                         field="sender.unsubscribe_url")
    if "{sku}" not in settings.deep_link:
        raise InputError(f"must hold a {{sku}} placeholder, got {settings.deep_link!r}",
                         file=src, field="sender.deep_link")
    for key in ("email", "contact_email"):
        value = getattr(settings, _SECTIONS["sender"][key])
        if value and (value.count("@") != 1 or any(c.isspace() for c in value)):
            raise InputError(f"not an email address: {value!r}", file=src,
                             field=f"sender.{key}")


# What a campaign without a [sender] section sends as: fine for the demo shop, never for a
# real one (the address is invented and the unsubscribe link goes nowhere).
DEMO_SENDER = CampaignSettings(name="demo")
_DEMO_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("sender_name", "sender_email", "postal_address", "unsubscribe_url"),
    "sms": ("sender_name",),
    "push": (),
}


def demo_sender_fields(settings: CampaignSettings, channel: str | None = None) -> list[str]:
    """The sender settings of ``settings`` that still hold the demo values and that the
    channel's messages carry ([] when the campaign has its own)."""
    channel = channel or settings.channel
    return [f for f in _DEMO_FIELDS.get(channel, ())
            if getattr(settings, f) == getattr(DEMO_SENDER, f)]


def settings_from_json(config: dict[str, Any] | None, *, name: str | None = None,
                       channel: str | None = None) -> CampaignSettings:
    """Rebuild CampaignSettings from a campaigns.config JSON object.

    Keys that are not settings (audience, rank) are ignored; ``name`` and ``channel`` fill
    in for a campaign row whose config lacks them.
    """
    known = {f.name for f in dataclasses.fields(CampaignSettings)}
    values = {k: v for k, v in (config or {}).items() if k in known}
    if name is not None:
        values.setdefault("name", name)
    if channel is not None:
        values.setdefault("channel", channel)
    return CampaignSettings(**values)
