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


PICKS = ("ranked", "random")


@dataclass
class ABSettings:
    """The ``[ab]`` section: how the eligible audience is split between variants and the
    hold-out group (``pushgen.assign``), and what each variant sends."""

    weights: list[float] = field(default_factory=list)   # [] = an even split of --variants
    holdout: float = 0.0        # share of the audience that gets no message
    # Per variant: "ranked" (the ranker's items, variant v leading with the v-th) or
    # "random" (random eligible items: a control that measures what the ranker adds).
    picks: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)   # per variant: a template name
    seed: int = 0

    def is_default(self) -> bool:
        return self == ABSettings()


@dataclass
class SendSettings:
    """The ``[send]`` section: when each message goes out. Read at export time (``pushgen
    export --send-window ...`` overrides it), so it may change after drafting."""

    send_window: str | None = None   # "START/END" (ISO 8601) or a day; None: next 24 hours
    quiet_hours: str | None = None   # "21:00-09:00" or "off"; None: on for SMS only
    timezone: str = "UTC"            # the shop's timezone, for customers without one
    min_events: int = 5              # events a customer needs for their own hour

    def is_default(self) -> bool:
        return self == SendSettings()


@dataclass
class ResultSettings:
    """The ``[results]`` section: how ``pushgen report`` measures the campaign."""

    attribution_days: int = 7   # purchases up to N days after the last send count

    def is_default(self) -> bool:
        return self == ResultSettings()


@dataclass
class CampaignConfig:
    settings: CampaignSettings
    audience: AudienceFilter = field(default_factory=AudienceFilter)
    rank: dict[str, Any] = field(default_factory=dict)   # keyword arguments of ranking.RankRules
    llm: LLMSettings = field(default_factory=LLMSettings)
    ab: ABSettings = field(default_factory=ABSettings)
    send: SendSettings = field(default_factory=SendSettings)
    results: ResultSettings = field(default_factory=ResultSettings)

    def extra_json(self) -> dict[str, Any]:
        """The [ab], [send] and [results] sections for the stored campaign config, each only
        when it differs from the defaults (so configs stored before they existed compare
        equal)."""
        out: dict[str, Any] = {}
        for key in ("ab", "send", "results"):
            section = getattr(self, key)
            if not section.is_default():
                out[key] = dataclasses.asdict(section)
        return out

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
        elif section not in ("audience", "rank", "llm", "ab", "send", "results"):
            raise unknown_key(src, None, section,
                              [*_SECTIONS, "audience", "rank", "llm", "ab", "send", "results"])
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
                          llm=_llm_settings(data.get("llm", {}), src),
                          ab=ab_settings(data.get("ab", {}), src),
                          send=send_settings(data.get("send", {}), src),
                          results=result_settings(data.get("results", {}), src))


def _section(section: Any, src: str, name: str, cls: Any) -> dict[str, Any]:
    """A TOML table whose keys are the fields of dataclass ``cls``; unknown keys refused."""
    if not isinstance(section, dict):
        raise InputError("must be a [section]", file=src, field=name)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in section:
        if key not in known:
            raise unknown_key(src, name, key, known)
    return dict(section)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ab_settings(section: Any, src: str) -> ABSettings:
    """``[ab]``: ``weights = [0.5, 0.5]``, ``holdout = 0.1``, ``picks = ["ranked",
    "random"]``, ``templates = ["default", "short"]``, ``seed = 0``."""
    from .assign import check_split
    from .errors import PushgenError

    data = _section(section, src, "ab", ABSettings)
    weights = data.get("weights", [])
    if not isinstance(weights, list) or not all(_number(w) for w in weights):
        raise InputError("must be a list of numbers, e.g. [0.5, 0.5]", file=src,
                         field="ab.weights")
    holdout = data.get("holdout", 0.0)
    if not _number(holdout):
        raise InputError(f"must be a share between 0 and 1, got {holdout!r}", file=src,
                         field="ab.holdout")
    try:
        check_split(weights or [1.0], float(holdout))
    except PushgenError as exc:
        raise InputError(str(exc), file=src, field="ab") from None
    picks = data.get("picks", [])
    if not isinstance(picks, list) or any(p not in PICKS for p in picks):
        raise InputError(f"must be a list of {' or '.join(PICKS)}, one per variant", file=src,
                         field="ab.picks")
    templates = data.get("templates", [])
    if not isinstance(templates, list) or not all(isinstance(t, str) and t.strip()
                                                  for t in templates):
        raise InputError("must be a list of template names, one per variant", file=src,
                         field="ab.templates")
    n = len(weights)
    for key, values in (("picks", picks), ("templates", templates)):
        if n and values and len(values) != n:
            raise InputError(f"has {len(values)} entries but weights has {n}: give one per "
                             "variant", file=src, field=f"ab.{key}")
    if picks and templates and len(picks) != len(templates):
        raise InputError("picks and templates need one entry per variant each", file=src,
                         field="ab")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"must be a whole number, got {seed!r}", file=src, field="ab.seed")
    return ABSettings(weights=[float(w) for w in weights], holdout=float(holdout),
                      picks=list(picks), templates=list(templates), seed=seed)


def send_settings(section: Any, src: str) -> SendSettings:
    """``[send]``: ``send_window``, ``quiet_hours``, ``timezone``, ``min_events``; each
    value is checked now so a typo fails before drafting, not at export."""
    from .errors import PushgenError
    from .sendtime import parse_quiet_hours, parse_send_window, shop_zone

    data = _section(section, src, "send", SendSettings)
    for key in ("send_window", "quiet_hours", "timezone"):
        if key in data and not isinstance(data[key], str):
            raise InputError(f"must be text, got {data[key]!r}", file=src, field=f"send.{key}")
    out = SendSettings(**data)
    if not isinstance(out.min_events, int) or isinstance(out.min_events, bool) \
            or out.min_events < 1:
        raise InputError(f"must be a whole number of at least 1, got {out.min_events!r}",
                         file=src, field="send.min_events")
    for key, check in (("timezone", lambda: shop_zone(out.timezone)),
                       ("quiet_hours", lambda: parse_quiet_hours(out.quiet_hours)),
                       ("send_window", lambda: out.send_window is None or parse_send_window(
                           out.send_window, shop_zone(out.timezone)))):
        try:
            check()
        except PushgenError as exc:
            raise InputError(str(exc), file=src, field=f"send.{key}") from None
    return out


def result_settings(section: Any, src: str) -> ResultSettings:
    """``[results]``: ``attribution_days = 7``."""
    data = _section(section, src, "results", ResultSettings)
    days = data.get("attribution_days", 7)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 90:
        raise InputError(f"must be a whole number of days from 1 to 90, got {days!r}",
                         file=src, field="results.attribution_days")
    return ResultSettings(attribution_days=days)


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
    sections = {}
    for key, cls in (("ab", ABSettings), ("send", SendSettings), ("results", ResultSettings)):
        fields = {f.name for f in dataclasses.fields(cls)}
        sections[key] = cls(**{k: v for k, v in (data.pop(key, {}) or {}).items()
                               if k in fields})
    return CampaignConfig(settings=settings_from_json(data, name=name, channel=channel),
                          audience=AudienceFilter(**{k: v for k, v in audience.items()
                                                     if k in known}),
                          rank=rank, **sections)


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
# The sender settings a channel's messages carry (what demo_sender_fields compares).
SENDER_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("sender_name", "sender_email", "postal_address", "unsubscribe_url"),
    "sms": ("sender_name",),
    "push": (),
}


def demo_sender_fields(settings: CampaignSettings, channel: str | None = None) -> list[str]:
    """The sender settings of ``settings`` that still hold the demo values and that the
    channel's messages carry ([] when the campaign has its own)."""
    channel = channel or settings.channel
    return [f for f in SENDER_FIELDS.get(channel, ())
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
