"""Report statistics against scipy and worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from pushgen.results.stats import Difference, adjust_family, difference, plain_verdict, wilson


def test_wilson_matches_the_formula_and_handles_the_edges():
    r = wilson(12, 100)
    z = st.norm.ppf(0.975)
    p, n = 0.12, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert r.rate == 0.12
    assert r.low == pytest.approx(centre - half, abs=1e-9)
    assert r.high == pytest.approx(centre + half, abs=1e-9)
    zero = wilson(0, 50)
    assert zero.low == 0 and 0 < zero.high < 0.1      # not the useless [0, 0] of Wald
    full = wilson(50, 50)
    assert full.high == pytest.approx(1) and 0.9 < full.low < 1
    assert wilson(0, 0).trials == 0
    with pytest.raises(ValueError):
        wilson(5, 3)


def test_two_proportion_p_value_equals_chi_square_without_correction():
    a, b = wilson(30, 200), wilson(15, 210)
    d = difference(a, b)
    chi = st.chi2_contingency(np.array([[30, 170], [15, 195]]), correction=False)
    assert d.p_value == pytest.approx(chi.pvalue, rel=1e-9)
    assert d.diff == pytest.approx(30 / 200 - 15 / 210)
    assert d.low < d.diff < d.high and d.significant == (chi.pvalue < 0.05)


def test_newcombe_interval_worked_example():
    # Newcombe (1998), Table II example (a): 56/70 vs 48/80 -> difference 0.2,
    # hybrid score interval 0.0524 to 0.3339.
    d = difference(wilson(56, 70), wilson(48, 80))
    assert d.diff == pytest.approx(0.2)
    assert d.low == pytest.approx(0.0524, abs=5e-4) and d.high == pytest.approx(0.3339, abs=5e-4)


def test_no_difference_is_said_plainly():
    d = difference(wilson(10, 1000), wilson(11, 1000))
    assert not d.significant and "not significant" in plain_verdict(d)
    same = difference(wilson(0, 100), wilson(0, 120))
    assert same.p_value == 1.0 and not same.significant


def test_a_family_of_differences_is_judged_on_benjamini_hochberg_p_values():
    """Four comparisons with raw p 0.01, 0.04, 0.03, 0.5: three look significant alone;
    by hand, BH gives 0.04, 0.0533, 0.0533, 0.5, so only the first is."""
    diffs = [Difference(0.1, 0.01, 0.2, 2.5, p, p < 0.05) for p in (0.01, 0.04, 0.03, 0.5)]
    family = adjust_family(diffs)
    assert [d.p_adjusted for d in family] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert [d.significant for d in family] == [True, False, False, False]
    assert [d.p_value for d in family] == [0.01, 0.04, 0.03, 0.5] and family[0].family == 4
    line = plain_verdict(family[1], "segment B vs A, converted")
    assert "p = 0.04, 0.0533 adjusted for 4 comparisons: not significant" in line
    alone = adjust_family(diffs[:1])
    assert alone[0].p_adjusted is None and alone[0].significant
    # a comparison without data (p = 1) tests nothing: not counted in the family
    empty = Difference(0.0, -1.0, 1.0, 0.0, 1.0, False)
    padded = adjust_family(diffs + [empty, empty])
    assert [d.p_adjusted for d in padded[:4]] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert padded[4].p_adjusted is None and padded[0].family == 4
