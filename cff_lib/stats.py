"""Paired significance tests for Table 6 (paper "Quantitative results": "Paired t-tests (p < 0.01) confirm the
statistical importance of ClipFaceFusion's advancements compared to baseline models").

The paper reports, per metric, the two means, a t-value and "p < 0.01", without saying what was paired or
how many pairs there were. Here a pair is one evaluation seed (or one sample) scored under both systems, and:

- :func:`paired_test` -- on the differences ``d = a - b``: paired t-test (``t = mean(d) / (sd(d) / sqrt(n))``,
  sd with ddof = 1, two-sided p from Student's t with n - 1 dof), Cohen's d_z = ``mean(d) / sd(d)``, the 95 %
  t-interval of ``mean(d)``, a Shapiro-Wilk normality test of ``d`` (needs n >= 3), and the test actually used:
  the paired t-test, or the Wilcoxon signed-rank test (two-sided, scipy's defaults) when Shapiro-Wilk rejects
  normality at ``alpha``. With n = 2 normality cannot be tested and the t-test is used (and says so).
- :func:`holm_correction` -- Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).
- :func:`paired_tests_table` -- one row per metric with the Holm-adjusted p and a significance column.

Degenerate differences: if every difference is equal, sd(d) = 0; t is then +-inf with p = 0 when the common
difference is non-zero, and undefined (NaN, p = 1) when it is zero (the systems agree exactly).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

PAIRED_T = "paired t"
WILCOXON = "Wilcoxon signed-rank"


@dataclass(frozen=True)
class PairedTestResult:
    """A paired comparison of system A against system B on the same units (seeds or samples)."""

    n: int  # number of pairs
    mean_a: float  # mean of a
    mean_b: float  # mean of b
    mean_diff: float  # mean of d = a - b
    t: float  # paired t statistic (NaN when all differences are 0)
    p: float  # two-sided p of the paired t-test
    cohens_dz: float  # mean(d) / sd(d), sd with ddof = 1
    ci95: tuple[float, float]  # 95 % t-interval of mean(d)
    normality_p: float | None  # Shapiro-Wilk p on d; None when n < 3 (untestable)
    test_used: str  # "paired t" or "Wilcoxon signed-rank" (when normality_p < alpha)
    p_used: float  # two-sided p of test_used
    alpha: float  # level used for the normality decision and `significant`
    significant: bool  # p_used < alpha (uncorrected; see holm_correction for families)


def _values(x: Any, argument: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be a sequence of numbers, got {type(x).__name__}") from None
    if arr.ndim != 1:
        raise ValueError(f"{argument} must be one-dimensional (one value per seed), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{argument} is empty; a t-test needs at least 2 paired values")
    if not np.isfinite(arr).all():
        raise ValueError(f"{argument} contains NaN or inf")
    if arr.size < 2:
        raise ValueError(f"{argument}: a t-test needs at least 2 paired values; got {arr.size} seed")
    return arr


def paired_test(a: Any, b: Any, alpha: float = 0.05) -> PairedTestResult:
    """Paired test of ``a`` vs ``b`` (same length, paired by position); see the module docstring."""
    from scipy import stats

    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    x, y = _values(a, "a"), _values(b, "b")
    if x.size != y.size:
        raise ValueError(f"a and b must pair up one to one, got {x.size} and {y.size} values")
    d = x - y
    n = d.size
    mean_d = float(d.mean())
    sd = float(d.std(ddof=1))
    tcrit = float(stats.t.ppf(0.975, n - 1))
    if sd > 0:
        se = sd / math.sqrt(n)
        t = mean_d / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
        dz = mean_d / sd
        ci = (mean_d - tcrit * se, mean_d + tcrit * se)
    elif mean_d != 0:
        t, p, dz, ci = math.copysign(math.inf, mean_d), 0.0, math.copysign(math.inf, mean_d), (mean_d, mean_d)
    else:
        t, p, dz, ci = float("nan"), 1.0, float("nan"), (0.0, 0.0)

    normality_p = None
    if n >= 3 and sd > 0:
        normality_p = float(stats.shapiro(d).pvalue)
    if normality_p is not None and normality_p < alpha:
        test_used = WILCOXON
        p_used = float(stats.wilcoxon(x, y, alternative="two-sided").pvalue)
    else:
        test_used, p_used = PAIRED_T, p
    return PairedTestResult(n=n, mean_a=float(x.mean()), mean_b=float(y.mean()), mean_diff=mean_d, t=float(t),
                            p=p, cohens_dz=float(dz), ci95=(float(ci[0]), float(ci[1])),
                            normality_p=normality_p, test_used=test_used, p_used=p_used, alpha=float(alpha),
                            significant=bool(p_used < alpha))


def holm_correction(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values: sorted ascending p_(1..m), ``adj_(i) = max_{j<=i} min(1, (m-j+1)
    p_(j))``; returned under the input keys, in input order."""
    if not isinstance(pvalues, Mapping) or len(pvalues) == 0:
        raise ValueError("pvalues must be a non-empty dict of name -> p-value")
    for k, v in pvalues.items():
        if not isinstance(v, (int, float)) or not (0.0 <= float(v) <= 1.0):
            raise ValueError(f"pvalues[{k!r}]={v!r} must be a p-value in [0, 1]")
    keys = sorted(pvalues, key=lambda k: float(pvalues[k]))
    m = len(keys)
    out, running = {}, 0.0
    for i, k in enumerate(keys):
        running = max(running, min(1.0, (m - i) * float(pvalues[k])))
        out[k] = running
    return {k: out[k] for k in pvalues}


def paired_tests_table(results: Mapping[str, tuple[Any, Any]], alpha: float = 0.05):
    """Table 6: one row per metric of ``results`` (metric -> (a values, b values)) with Holm-adjusted p.

    Columns: metric, n, mean_a, mean_b, mean_diff, ci95_low, ci95_high, t, p_t, cohens_dz, normality_p,
    test_used, p_used, p_holm, significant (p_holm < alpha).
    """
    import pandas as pd

    if not isinstance(results, Mapping) or len(results) == 0:
        raise ValueError("results must be a non-empty dict of metric -> (a values, b values)")
    tests = {}
    for metric, pair in results.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"results[{metric!r}] must be a pair (a values, b values)")
        try:
            tests[metric] = paired_test(pair[0], pair[1], alpha=alpha)
        except ValueError as e:
            raise ValueError(f"results[{metric!r}]: {e}") from None
    adjusted = holm_correction({k: r.p_used for k, r in tests.items()})
    rows = []
    for k, r in tests.items():
        rows.append({"metric": k, "n": r.n, "mean_a": r.mean_a, "mean_b": r.mean_b, "mean_diff": r.mean_diff,
                     "ci95_low": r.ci95[0], "ci95_high": r.ci95[1], "t": r.t, "p_t": r.p,
                     "cohens_dz": r.cohens_dz,
                     "normality_p": np.nan if r.normality_p is None else r.normality_p,
                     "test_used": r.test_used, "p_used": r.p_used, "p_holm": adjusted[k],
                     "significant": bool(adjusted[k] < alpha)})
    return pd.DataFrame(rows)
