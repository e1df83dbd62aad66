"""Paired tests and Holm correction (cff_lib.stats) against scipy and hand computations."""
import math

import numpy as np
import pytest
from scipy import stats as ss

from cff_lib.stats import PAIRED_T, WILCOXON, holm_correction, paired_test, paired_tests_table

A = [0.91, 0.93, 0.92, 0.94, 0.90]
B = [0.88, 0.89, 0.90, 0.90, 0.87]


def test_paired_t_matches_scipy_and_hand():
    r = paired_test(A, B)
    ref = ss.ttest_rel(A, B)
    assert r.t == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    d = np.subtract(A, B)  # [0.03, 0.04, 0.02, 0.04, 0.03]
    sd = math.sqrt(((d - d.mean()) ** 2).sum() / 4)
    assert r.mean_diff == pytest.approx(0.032) and r.t == pytest.approx(0.032 / (sd / math.sqrt(5)))
    assert r.cohens_dz == pytest.approx(0.032 / sd)
    half = ss.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert r.ci95 == pytest.approx((0.032 - half, 0.032 + half))
    assert r.n == 5 and r.mean_a == pytest.approx(np.mean(A)) and r.mean_b == pytest.approx(np.mean(B))
    assert r.normality_p == pytest.approx(ss.shapiro(d).pvalue)
    assert r.test_used == PAIRED_T and r.p_used == r.p and r.significant


def test_wilcoxon_when_normality_fails():
    a = np.array([0.0] * 9 + [10.0, 0.1, 0.2])
    b = np.zeros(12) - np.linspace(0.01, 0.12, 12)
    r = paired_test(a, b)
    assert r.normality_p < 0.05 and r.test_used == WILCOXON
    assert r.p_used == pytest.approx(ss.wilcoxon(a, b).pvalue)


def test_two_pairs_use_t_without_normality():
    r = paired_test([1.0, 2.0], [0.0, 0.5])
    assert r.normality_p is None and r.test_used == PAIRED_T


def test_constant_differences():
    r = paired_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert r.t == math.inf and r.p == 0.0
    z = paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert math.isnan(z.t) and z.p == 1.0 and not z.significant


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="at least 2 paired values; got 1 seed"):
        paired_test([0.9], [0.8])
    with pytest.raises(ValueError, match="a and b must pair up"):
        paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="b is empty"):
        paired_test([1, 2], [])
    with pytest.raises(ValueError, match="a contains NaN"):
        paired_test([1, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="alpha"):
        paired_test(A, B, alpha=1.5)


def test_holm_known_example():
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06 -> monotone), 0.5 (x1 = 0.5)
    adj = holm_correction({"a": 0.03, "b": 0.01, "c": 0.5, "d": 0.02})
    assert list(adj) == ["a", "b", "c", "d"]
    assert adj == pytest.approx({"a": 0.06, "b": 0.04, "c": 0.5, "d": 0.06})
    assert holm_correction({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})
    with pytest.raises(ValueError, match="pvalues"):
        holm_correction({})
    with pytest.raises(ValueError, match="pvalues\\['x'\\]"):
        holm_correction({"x": 1.2})


def test_paired_tests_table():
    df = paired_tests_table({"ssim": (A, B), "cmc": ([0.8, 0.81, 0.79], [0.8, 0.8, 0.8])})
    assert list(df["metric"]) == ["ssim", "cmc"]
    assert {"p_holm", "significant", "test_used", "ci95_low", "cohens_dz"} <= set(df.columns)
    adj = holm_correction(dict(zip(df["metric"], df["p_used"], strict=True)))
    assert list(df["p_holm"]) == pytest.approx([adj["ssim"], adj["cmc"]])
    assert bool(df.loc[0, "significant"]) and not bool(df.loc[1, "significant"])
    with pytest.raises(ValueError, match="results\\['x'\\]"):
        paired_tests_table({"x": ([1.0], [2.0])})
