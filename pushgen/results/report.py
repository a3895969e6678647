"""One campaign's results: the funnel per variant, generator, version, locale and segment,
the differences between variants, and the uplift against the hold-out group.

Definitions (also written into every report, so a reader need not guess):

- **Rates** are shares of *recipients*, the messages exported; each message counts once
  per stage however often the platform reported it (three opens are one opened message).
  Conversions and revenue are the platform's ``converted`` outcomes.
- **Differences** between groups: Newcombe's interval and the pooled two-proportion
  z-test (``stats.difference``), against variant 1 for variants and against the largest
  group for generators, versions, locales and segments.
- **Uplift** compares *customers*, not messages: the share of customers with a purchase
  event in the campaign window (first planned send to the last plus ``attribution_days``)
  among everyone assigned a variant, whether their message went out or not, minus the same
  share in the hold-out group; both groups were drawn the same way from the same audience.
  Both are measured from the shop's own purchase events: a purchase known only from the
  platform's conversion report is left out, because no platform reports on the hold-out.
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from ..errors import PushgenError
from ..segments import profile_segment
from ..store import outcomes as store
from ..store.assignments import split as stored_split
from .stats import Difference, Rate, adjust_family, difference, mean_per, plain_verdict, wilson

FUNNEL: tuple[str, ...] = ("sent", "delivered", "opened", "clicked", "converted")
OTHER_EVENTS: tuple[str, ...] = ("bounced", "unsubscribed", "complained")
DIMENSIONS: tuple[str, ...] = ("variant", "generator", "version", "locale", "segment")
# Metrics compared between groups of each dimension.
COMPARED: dict[str, tuple[str, ...]] = {"variant": ("opened", "clicked", "converted")}
DEFAULT_COMPARED = ("converted",)
DEFAULT_ATTRIBUTION_DAYS = 7

DEFINITIONS: tuple[str, ...] = (
    "Rates are shares of recipients (messages exported); a message counts once per stage "
    "however often the platform reported it. Conversions and revenue come from the "
    "platform's converted outcomes.",
    "95% intervals: Wilson score for rates, Newcombe's hybrid score for differences; "
    "p-values from the pooled two-proportion z-test (equal to a chi-square test without "
    "continuity correction), not corrected for multiple comparisons.",
    "Variants are compared with variant 1; generators, versions, locales and segments with "
    "their largest group.",
    "Uplift: the share of customers with a purchase in the campaign window (first planned "
    "send to the last plus the attribution days) among everyone assigned a variant, sent or "
    "not, minus the same share in the hold-out group. Both groups are measured from the "
    "shop's own purchase events; purchases known only from the platform's conversion report "
    "are left out, because no platform reports on the hold-out.",
)


@dataclass
class GroupResult:
    """The funnel of one group of messages (a variant, a generator, a locale...)."""

    dimension: str
    label: str
    recipients: int
    rates: dict[str, Rate]            # FUNNEL stage -> share of recipients
    counts: dict[str, int]            # FUNNEL and OTHER_EVENTS -> messages
    revenue: float
    revenue_per_recipient: float

    def to_dict(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "label": self.label,
                "recipients": self.recipients, "counts": dict(self.counts),
                "rates": {k: r.to_dict() for k, r in self.rates.items()},
                "revenue": round(self.revenue, 2),
                "revenue_per_recipient": round(self.revenue_per_recipient, 4)}


@dataclass
class Comparison:
    """``label`` minus ``reference`` on one metric, with its test and a plain verdict."""

    dimension: str
    metric: str
    label: str
    reference: str
    diff: Difference
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "metric": self.metric, "label": self.label,
                "reference": self.reference, **self.diff.to_dict(), "verdict": self.verdict}


@dataclass
class Uplift:
    """Purchase rate of the customers assigned ``label`` minus the hold-out's."""

    label: str
    treated: Rate
    holdout: Rate
    diff: Difference
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "treated": self.treated.to_dict(),
                "holdout": self.holdout.to_dict(), **self.diff.to_dict(),
                "verdict": self.verdict}


@dataclass
class CampaignResults:
    """Everything ``pushgen report`` shows about one campaign."""

    campaign: str
    channel: str
    split: dict[int, int]                     # customers per variant, 0 = hold-out
    picks: dict[int, str]                     # variant -> ranked | random
    recipients: int
    funnel: dict[str, int]                    # FUNNEL and OTHER_EVENTS -> messages
    revenue: float
    groups: dict[str, list[GroupResult]]
    comparisons: list[Comparison]
    window: dict[str, Any] | None             # start, end, attribution_days (UTC ISO)
    uplift: list[Uplift]
    send_hours: list[int]                     # exported messages per local send hour
    outcomes: int                             # outcome rows imported for the campaign
    definitions: list[str] = field(default_factory=lambda: list(DEFINITIONS))
    notes: list[str] = field(default_factory=list)

    def verdicts(self, dimension: str) -> tuple[list[Comparison], int]:
        """The comparisons worth reading for one dimension, and how many are left out:
        every one for variants and generators (the point of an A/B test), only significant
        ones for versions, locales and segments (many small groups; most differences there
        are chance)."""
        found = [c for c in self.comparisons if c.dimension == dimension]
        if dimension in ("variant", "generator"):
            return found, 0
        shown = [c for c in found if c.diff.significant]
        return shown, len(found) - len(shown)

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign, "channel": self.channel,
            "split": {("holdout" if v == 0 else f"variant {v}"): n
                      for v, n in sorted(self.split.items())},
            "picks": {f"variant {v}": p for v, p in sorted(self.picks.items())},
            "recipients": self.recipients, "funnel": dict(self.funnel),
            "revenue": round(self.revenue, 2), "outcomes": self.outcomes,
            "groups": {d: [g.to_dict() for g in gs] for d, gs in self.groups.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "window": self.window, "uplift": [u.to_dict() for u in self.uplift],
            "send_hours": list(self.send_hours), "definitions": list(self.definitions),
            "notes": list(self.notes),
        }


def _generator_label(row: dict[str, Any]) -> str:
    gen = row["generator"] or "template"
    if gen == "llm":
        mode = (row.get("llm_meta") or {}).get("mode")
        return f"llm ({mode})" if mode else "llm"
    if gen == "llm_fallback_template":
        return "template (LLM fell back)"
    return gen


def _version_label(row: dict[str, Any]) -> str:
    name = row.get("template_name") or "?"
    return f"{row['model']} · {name}" if row.get("model") else name


def _label(dimension: str, row: dict[str, Any], picks: dict[int, str]) -> str:
    if dimension == "variant":
        v = row["variant"]
        return f"variant {v}" + (" (random pick)" if picks.get(v) == "random" else "")
    if dimension == "generator":
        return _generator_label(row)
    if dimension == "version":
        return _version_label(row)
    if dimension == "locale":
        return row["locale"] or "?"
    return profile_segment(row["attributes"])


def group_result(dimension: str, label: str, rows: list[dict[str, Any]]) -> GroupResult:
    """The funnel of ``rows`` (exported messages with their 0/1 outcome flags)."""
    n = len(rows)
    counts = {k: sum(r[k] for r in rows) for k in FUNNEL + OTHER_EVENTS}
    revenue = float(sum(r["revenue"] or 0.0 for r in rows))
    return GroupResult(dimension, label, n, {k: wilson(counts[k], n) for k in FUNNEL}, counts,
                       revenue, mean_per(revenue, n))


def _compare(dimension: str, groups: list[GroupResult]) -> list[Comparison]:
    if len(groups) < 2:
        return []
    ref = groups[0] if dimension == "variant" else max(groups, key=lambda g: g.recipients)
    made = []
    for g in groups:
        if g is ref or not g.recipients or not ref.recipients:
            continue
        for metric in COMPARED.get(dimension, DEFAULT_COMPARED):
            made.append((g, metric, difference(g.rates[metric], ref.rates[metric])))
    family = adjust_family([d for _, _, d in made])      # one family per dimension
    return [Comparison(dimension, metric, g.label, ref.label, d,
                       plain_verdict(d, f"{g.label} vs {ref.label}, {metric}"))
            for (g, metric, _), d in zip(made, family)]


def _parse(ts: str) -> _dt.datetime:
    d = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=_dt.timezone.utc)


def _iso(d: _dt.datetime) -> str:
    return d.astimezone(_dt.timezone.utc).isoformat()


def _uplifts(db: Database, campaign_id: int, window: dict[str, Any], picks: dict[int, str]
             ) -> tuple[list[Uplift], dict[int, tuple[int, int]]]:
    by_variant = store.purchasers_by_variant(db, campaign_id, window["start"], window["end"])
    n0, b0 = by_variant.get(0, (0, 0))
    if not n0:
        return [], by_variant
    hold = wilson(b0, n0)
    treated = [(v, n, b) for v, (n, b) in sorted(by_variant.items()) if v != 0]
    rows = [("all variants", sum(n for _, n, _ in treated), sum(b for _, _, b in treated))]
    if len(treated) > 1:
        rows += [(f"variant {v}" + (" (random pick)" if picks.get(v) == "random" else ""), n, b)
                 for v, n, b in treated]
    rates = [wilson(b, n) for _, n, b in rows]
    family = adjust_family([difference(rate, hold) for rate in rates])
    out = [Uplift(label, rate, hold, d, plain_verdict(d, f"uplift of {label} over the hold-out"))
           for (label, _, _), rate, d in zip(rows, rates, family)]
    return out, by_variant


def campaign_results(db: Database, campaign: str, *, attribution_days: int | None = None,
                     now: _dt.datetime | None = None) -> CampaignResults:
    """The results of ``campaign`` from its exported messages, their outcomes and the
    purchase events of its assigned customers. ``attribution_days`` defaults to the
    campaign's ``[results] attribution_days`` (else 7)."""
    meta = store.campaign_meta(db, campaign)
    if meta is None:
        from ..store.reviews import campaign_names

        known = ", ".join(campaign_names(db)) or "none yet"
        raise PushgenError(f"no campaign named {campaign!r}; known campaigns: {known}")
    config = meta["config"]
    days = attribution_days or int((config.get("results") or {}).get(
        "attribution_days", DEFAULT_ATTRIBUTION_DAYS))
    if not 1 <= days <= 365:
        raise PushgenError(f"--attribution-days {days}: use 1 to 365 days")
    picks = {i: p for i, p in enumerate((config.get("ab") or {}).get("picks") or [], 1)}
    rows = store.exported_messages(db, meta["id"])
    split = stored_split(db, meta["id"])
    groups: dict[str, list[GroupResult]] = {}
    comparisons: list[Comparison] = []
    for dim in DIMENSIONS:
        buckets: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            buckets[_label(dim, r, picks)].append(r)
        order: Callable[[str], Any] = (
            (lambda k: buckets[k][0]["variant"]) if dim == "variant"
            else (lambda k: (-len(buckets[k]), k)))
        groups[dim] = [group_result(dim, k, buckets[k]) for k in sorted(buckets, key=order)]
        comparisons += _compare(dim, groups[dim])
    total = group_result("all", "all", rows)
    notes: list[str] = []
    outcomes = store.outcome_count(db, meta["id"])
    window = None
    uplift: list[Uplift] = []
    if not rows:
        notes.append("no message of this campaign was exported yet: approve and export it "
                     "(pushgen export), then import the platform's outcomes")
    else:
        if not outcomes:
            notes.append("no outcomes imported yet: pushgen import outcomes FILE (the "
                         "sending platform's delivery, open, click and conversion report)")
        first, last = store.send_range(db, meta["id"])
        start, end = _parse(first), _parse(last) + _dt.timedelta(days=days)
        window = {"start": _iso(start), "end": _iso(end), "attribution_days": days}
        uplift, by_variant = _uplifts(db, meta["id"], window, picks)
        if not split.get(0):
            notes.append("no hold-out group, so the campaign's effect on sales cannot be "
                         "measured: set [ab] holdout = 0.1 in the campaign config before "
                         "drafting the next campaign")
        elif not any(b for _, b in by_variant.values()):
            platform = store.platform_only_purchases(db, meta["id"])
            notes.append("no purchase event in the campaign window for any customer: import "
                         "the shop's orders for the window (pushgen import events) to "
                         "measure uplift" + (f" ({platform} purchases are known only from "
                                             "the platform's conversions and do not count)"
                                             if platform else ""))
        if end > (now or _dt.datetime.now(_dt.timezone.utc)):
            notes.append(f"the attribution window is open until {_iso(end)[:16]} UTC: "
                         "purchases until then still count, so these numbers can change")
    return CampaignResults(
        campaign=campaign, channel=meta["channel"] or "", split=split, picks=picks,
        recipients=len(rows), funnel=total.counts, revenue=total.revenue, groups=groups,
        comparisons=comparisons, window=window, uplift=uplift,
        send_hours=store.local_send_hours(db, meta["id"]), outcomes=outcomes, notes=notes)


__all__ = ["CampaignResults", "GroupResult", "Comparison", "Uplift", "campaign_results",
           "group_result", "FUNNEL", "DIMENSIONS", "DEFINITIONS"]
