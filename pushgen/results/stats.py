"""Rates with confidence intervals and the difference of two rates, via ``scipy.stats``.

A campaign report compares small counts (a few hundred conversions), so every rate carries
a Wilson score interval (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``),
which behaves at 0% and 100% where the normal approximation does not. Two rates are compared
with the pooled two-proportion z-test (the same p-value as a 2x2 chi-square test without
continuity correction) and the difference gets Newcombe's hybrid score interval (method 10
of Newcombe, *Statistics in Medicine* 17, 1998), built from the two Wilson intervals.
Differences made together (every group and metric of one dimension, the uplift rows) are
one family: their p-values are adjusted with Benjamini-Hochberg
(``scipy.stats.false_discovery_control``) and significance is judged on the adjusted
value, so comparing twenty segments does not make one "significant" by chance.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any


CONFIDENCE = 0.95


@dataclass
class Rate:
    """``successes`` out of ``trials`` with its Wilson interval (rate is 0 when trials is 0)."""

    successes: int
    trials: int
    rate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Difference:
    """``a - b`` of two rates, its interval, the two-sided p-value, and whether it is
    significant at the confidence level used."""

    diff: float
    low: float
    high: float
    z: float
    p_value: float
    significant: bool            # at the confidence level, on p_adjusted when there is one
    p_adjusted: float | None = None   # Benjamini-Hochberg over the family it was made in
    family: int = 1              # how many differences were made together

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> Rate:
    """The rate ``successes / trials`` with its Wilson score interval."""
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return Rate(0, 0, 0.0, 0.0, 1.0)
    from scipy import stats as _st   # here: importing scipy.stats costs every command 0.5 s

    ci = _st.binomtest(int(successes), int(trials)).proportion_ci(
        confidence_level=confidence, method="wilson")
    return Rate(int(successes), int(trials), successes / trials, float(ci.low), float(ci.high))


def difference(a: Rate, b: Rate, confidence: float = CONFIDENCE) -> Difference:
    """``a.rate - b.rate`` with Newcombe's interval and the pooled z-test p-value."""
    d = a.rate - b.rate
    low = d - math.sqrt((a.rate - a.low) ** 2 + (b.high - b.rate) ** 2)
    high = d + math.sqrt((a.high - a.rate) ** 2 + (b.rate - b.low) ** 2)
    if a.trials == 0 or b.trials == 0:
        return Difference(d, -1.0, 1.0, 0.0, 1.0, False)
    pooled = (a.successes + b.successes) / (a.trials + b.trials)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.trials + 1 / b.trials))
    if se == 0:       # both 0% or both 100%: no evidence of any difference
        return Difference(d, low, high, 0.0, 1.0, False)
    z = d / se
    from scipy import stats as _st

    p = float(2 * _st.norm.sf(abs(z)))
    return Difference(d, max(low, -1.0), min(high, 1.0), z, p, p < 1 - confidence)


def mean_per(total: float, trials: int) -> float:
    """``total / trials`` (revenue per recipient), 0 for no trials."""
    return total / trials if trials else 0.0


def adjust_family(diffs: list[Difference], confidence: float = CONFIDENCE
                  ) -> list[Difference]:
    """``diffs`` made together, with Benjamini-Hochberg adjusted p-values and significance
    judged on them. A difference without data (p = 1: an empty group, or 0% against 0%)
    tests nothing and is left out of the family; a family of one is returned as it is."""
    tested = [i for i, d in enumerate(diffs) if d.p_value < 1.0]
    if len(tested) < 2:
        return list(diffs)
    from scipy.stats import false_discovery_control

    adjusted = false_discovery_control([diffs[i].p_value for i in tested], method="bh")
    out = list(diffs)
    for i, q in zip(tested, adjusted):
        out[i] = dataclasses.replace(diffs[i], p_adjusted=float(q), family=len(tested),
                                     significant=bool(q < 1 - confidence))
    return out


def plain_verdict(diff: Difference, what: str = "difference") -> str:
    """One line a campaign manager can read: significant or not, and by how much."""
    pts = f"{diff.diff * 100:+.2f} points (95% CI {diff.low * 100:+.2f} to {diff.high * 100:+.2f})"
    p = f"p = {diff.p_value:.3g}"
    if diff.p_adjusted is not None:
        p += f", {diff.p_adjusted:.3g} adjusted for {diff.family} comparisons"
    if diff.significant:
        return f"{what}: {pts}, {p}: significant"
    return f"{what}: {pts}, {p}: not significant (could be chance)"


__all__ = ["CONFIDENCE", "Rate", "Difference", "wilson", "difference", "mean_per",
           "adjust_family", "plain_verdict"]
