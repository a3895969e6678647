"""Campaign configuration files (TOML): brand voice, sender, channel limits, audience, ranking.

A file looks like ``examples/campaign.toml``. Every key is optional; unknown keys are refused
with the file and key named, because a typo such as ``banned_phrase`` silently ignored would
let through copy the brand asked to block.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
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
class CampaignConfig:
    settings: CampaignSettings
    audience: AudienceFilter = field(default_factory=AudienceFilter)
    rank: dict[str, Any] = field(default_factory=dict)   # keyword arguments of ranker.RankRules


# TOML section -> {toml key: CampaignSettings field}
_SECTIONS: dict[str, dict[str, str]] = {
    "campaign": {"channel": "channel", "template": "template",
                 "items_per_message": "items_per_message"},
    "voice": {"tone": "tone", "emoji": "emoji_policy", "banned_phrases": "banned_phrases",
              "allowed_profile_fields": "allowed_profile_fields"},
    "sender": {"name": "sender_name", "email": "sender_email",
               "postal_address": "postal_address", "site_url": "site_url",
               "unsubscribe_url": "unsubscribe_url", "deep_link": "deep_link"},
    "limits": {"sms_max_segments": "sms_max_segments", "push_title_max": "push_title_max",
               "push_body_max": "push_body_max"},
}
_AUDIENCE_KEYS = {f.name for f in dataclasses.fields(AudienceFilter)}
# Keys of [rank]: ``top_k`` plus the fields of ranker.RankRules (kept in step by a test).
_RANK_KEYS = {"top_k", "repeat", "drop_inactive", "drop_out_of_stock",
              "include_categories", "exclude_categories", "min_price", "max_price",
              "min_discount", "max_per_category", "pinned", "blocked"}


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
                    known = ", ".join(sorted(_SECTIONS[section]))
                    raise InputError(f"unknown key (known: {known})", file=src,
                                     field=f"{section}.{key}")
                values[target] = _check_type(src, f"{section}.{key}", value,
                                             getattr(defaults, target))
        elif section not in ("audience", "rank"):
            raise InputError("unknown section (known: campaign, voice, sender, limits, "
                             "audience, rank)", file=src, field=section)
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

    aud = dict(data.get("audience", {}))
    for key in aud:
        if key not in _AUDIENCE_KEYS:
            raise InputError(f"unknown key (known: {', '.join(sorted(_AUDIENCE_KEYS))})",
                             file=src, field=f"audience.{key}")
    profile = aud.get("profile", {})
    if not isinstance(profile, dict):
        raise InputError("must be a table of field = value(s)", file=src, field="audience.profile")
    aud["profile"] = {k: [str(x) for x in (v if isinstance(v, list) else [v])]
                      for k, v in profile.items()}
    audience = AudienceFilter(**aud)

    rank = dict(data.get("rank", {}))
    for key in rank:
        if key not in _RANK_KEYS:
            raise InputError(f"unknown key (known: {', '.join(sorted(_RANK_KEYS))})",
                             file=src, field=f"rank.{key}")
    return CampaignConfig(settings=settings, audience=audience, rank=rank)


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
