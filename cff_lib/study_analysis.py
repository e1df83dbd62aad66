"""Analysis of the blind user study (paper "User study", Fig. 8; notebook 10), and the simulated panel that
checks the pipeline when no human has rated anything.

Input: a closed study (``cff_lib.study``) read into one row per rating (:func:`ratings_frame`). Repeats of
attention checks (``repeat_of`` set) are used only by :func:`attention_table`; every other table reads each
rater's first rating of a pair. A rater who failed an attention check can be left out (``exclude``).

- :func:`box_plot` -- Fig. 8: the distribution of the 1-5 scores per criterion and method.
- :func:`means_table` -- mean per method and criterion (and "overall", the mean of the five) with a 95 %
  bootstrap CI that resamples *raters* (a rater's ratings are not independent), and
  :func:`paper_comparison` -- those means in their own columns beside the paper's quoted means (the claims
  ledger, ``cff_lib/paper_claims.yaml``) in theirs: a paper number and a measured one never share a column.
- :func:`agreement_table` -- inter-rater agreement, Krippendorff's alpha (ordinal; package ``krippendorff``)
  per criterion over the raters x items matrix.
- :func:`method_tests` -- differences between methods: per item (a face under a method) the mean over its
  raters; per criterion and pair of methods, the paired test of ``cff_lib.stats`` on faces rated under both,
  Holm-corrected over the whole family (all criteria x pairs).
- :func:`preference_table` -- share of raters preferring each method (highest mean over all five criteria;
  ties split), for all raters, specialists and regular users.
- :func:`specialist_table` -- specialists vs regular users: means per group, the difference, and a two-sided
  Mann-Whitney U test on the raters' own means.
- :func:`claims_table` -- the ledger's user-study claims with their verdicts: without human ratings they stay
  "not reproducible here: needs human raters".

Simulated panel (:func:`pipeline_check_study`): placeholder images (random noise, not faces) under the
evaluation's method names, and simulated raters who go through the real code path (``Study.register_rater``,
``Study.rate``, one transaction per rating). Their scores are 3 + a *planted* per-method offset
(:data:`PLANTED_OFFSETS`, chosen here, unrelated to the paper) + a face effect + a rater bias + noise, rounded
and clipped to 1-5; a share of careless raters answer at random. Every number it yields checks the pipeline
(tests recover the planted order, attention checks catch careless raters) and says nothing about any method:
:func:`heading` titles each figure and table as a pipeline check.
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cff_lib.study import CRITERIA, CRITERION_LABELS, SCORE_MAX, SCORE_MIN, Study, create_study

OVERALL = "overall"
PIPELINE_CHECK = "PIPELINE CHECK (simulated raters on placeholder images; not a result)"
PLANTED_OFFSETS = (0.4, 0.0, -0.4)
"""Offsets (Likert points) planted on the simulated panel's methods, in the order given; not the paper's."""

CARELESS_SHARE = 0.1
NEEDS_HUMANS = "needs human raters"

PAPER_COLUMNS = {"photorealism": ("photorealism",), "emotional_expression": ("emotional expression",
                                                                             "emotional coherence"),
                 "age_accuracy": ("age accuracy",), "identity_preservation": ("identity preservation",),
                 "cross_modal_consistency": ("CMC",), OVERALL: ("overall",)}
"""Criterion -> the user-study columns of the claims ledger it is compared with."""


def heading(simulated: bool, what: str) -> str:
    """A figure's or table's title: ``what``, prefixed as a pipeline check when the ratings are simulated."""
    return f"{PIPELINE_CHECK}: {what}" if simulated else f"{what} (human raters)"


def paper_rows() -> dict[str, str]:
    """Method name in a study -> the paper's row it stands for (the evaluation's ClipFaceFusion and its
    DiffusionCLIP-style text-only baseline); a method named like a paper row maps to itself."""
    from cff_lib.evaluation import CFF, TEXT_ONLY

    return {CFF: "ClipFaceFusion", TEXT_ONLY: "DiffusionCLIP"}


# ------------------------------------------------------------------------------------------ ratings
def ratings_frame(study: Study | str | os.PathLike, *, allow_open: bool = False):
    """pandas DataFrame, one row per stored rating (``Study.ratings``: rater_id, specialist, position,
    slot_id, item_id, face, method, repeat_of, the five criteria, submitted)."""
    import pandas as pd

    study = study if isinstance(study, Study) else Study(study)
    rows = study.ratings(allow_open=allow_open)
    if not rows:
        raise ValueError(f"the study {study.path} holds no ratings yet")
    df = pd.DataFrame(rows)
    df["repeat_of"] = df["repeat_of"].astype("Int64")
    return df


def first_ratings(df, exclude: Sequence[str] = ()):
    """The ratings without attention repeats, and without the raters in ``exclude``."""
    keep = df["repeat_of"].isna() & ~df["rater_id"].isin(list(exclude))
    out = df[keep]
    if len(out) == 0:
        raise ValueError("no ratings left after removing repeats and excluded raters")
    return out


def _methods(df) -> list[str]:
    """The methods in the study's order (``method_id``), else in order of appearance."""
    if "method_id" in df:
        return list(df.sort_values("method_id", kind="stable")["method"].drop_duplicates())
    return list(dict.fromkeys(df["method"]))


def attention_table(df, tolerance: int = 1):
    """One row per attention check: rater, specialist, the two positions, the largest difference over the
    criteria and whether it passed (<= ``tolerance``)."""
    import pandas as pd

    by_pos = df.set_index(["rater_id", "position"])
    rows = []
    for _, r in df[df["repeat_of"].notna()].iterrows():
        key = (r["rater_id"], int(r["repeat_of"]))
        if key not in by_pos.index:
            continue
        first = by_pos.loc[key]
        diff = int(max(abs(int(r[c]) - int(first[c])) for c in CRITERIA))
        rows.append({"rater_id": r["rater_id"], "specialist": bool(r["specialist"]), "position": key[1],
                     "repeat_position": int(r["position"]), "max_abs_difference": diff,
                     "passed": diff <= tolerance})
    return pd.DataFrame(rows, columns=["rater_id", "specialist", "position", "repeat_position",
                                       "max_abs_difference", "passed"])


def failed_raters(attention) -> list[str]:
    """Raters with at least one failed attention check."""
    return sorted(set(attention.loc[~attention["passed"].astype(bool), "rater_id"]))


# ------------------------------------------------------------------------------------------ Fig. 8
def box_plot(df, title: str):
    """Fig. 8: one panel per criterion, one box per method (scores 1-5, mean as a white dot)."""
    import matplotlib.pyplot as plt

    df = first_ratings(df)
    methods = _methods(df)
    fig, axes = plt.subplots(1, len(CRITERIA), figsize=(3.0 * len(CRITERIA), 3.8), sharey=True)
    colours = plt.get_cmap("tab10").colors
    for ax, c in zip(axes, CRITERIA, strict=True):
        data = [df.loc[df["method"] == m, c].to_numpy(dtype=float) for m in methods]
        box = ax.boxplot(data, patch_artist=True, widths=0.6, showmeans=True,
                         meanprops={"marker": "o", "markerfacecolor": "white", "markeredgecolor": "black"},
                         flierprops={"marker": "x", "markersize": 4, "markeredgecolor": "0.4"},
                         medianprops={"color": "black", "linewidth": 1.5})
        for patch, colour in zip(box["boxes"], itertools.cycle(colours)):
            patch.set_facecolor(colour)
            patch.set_alpha(0.6)
        ax.set_title(CRITERION_LABELS[c], fontsize=9)
        ax.set_xticks(range(1, len(methods) + 1), [_short(m) for m in methods], rotation=30, ha="right",
                      fontsize=7)
        ax.set_ylim(SCORE_MIN - 0.5, SCORE_MAX + 0.5)
        ax.set_yticks(range(SCORE_MIN, SCORE_MAX + 1))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score (1 = poor, 5 = great)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


# ------------------------------------------------------------------------------------------ means and CIs
def means_table(df, n_boot: int = 1000, seed: int = 0, exclude: Sequence[str] = ()):
    """Mean score per method and criterion (+ "overall") with a 95 % percentile bootstrap CI over raters.
    Columns: method, criterion, n_ratings, n_raters, mean, ci95_low, ci95_high."""
    import pandas as pd

    if not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot={n_boot!r} must be an integer >= 100")
    df = first_ratings(df, exclude).copy()
    df[OVERALL] = df[list(CRITERIA)].mean(axis=1)
    crits = [*CRITERIA, OVERALL]
    methods, raters = _methods(df), list(dict.fromkeys(df["rater_id"]))
    r_idx = {r: i for i, r in enumerate(raters)}
    sums = np.zeros((len(raters), len(methods), len(crits)))
    counts = np.zeros((len(raters), len(methods), 1))
    for j, m in enumerate(methods):
        sub = df[df["method"] == m]
        idx = sub["rater_id"].map(r_idx).to_numpy()
        np.add.at(sums[:, j, :], idx, sub[crits].to_numpy(dtype=float))
        np.add.at(counts[:, j, 0], idx, 1.0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(raters), size=(n_boot, len(raters)))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = sums[draws].sum(1) / counts[draws].sum(1)  # (n_boot, methods, criteria)
    lo, hi = np.nanpercentile(boot, 2.5, axis=0), np.nanpercentile(boot, 97.5, axis=0)
    rows = []
    for j, m in enumerate(methods):
        for k, c in enumerate(crits):
            n = int(counts[:, j, 0].sum())
            rows.append({"method": m, "criterion": c, "n_ratings": n, "n_raters": int((counts[:, j, 0] > 0).sum()),
                         "mean": float(sums[:, j, k].sum() / n), "ci95_low": float(lo[j, k]),
                         "ci95_high": float(hi[j, k])})
    return pd.DataFrame(rows)


def paper_comparison(means, claims=None):
    """The measured means beside the paper's quoted user-study means, in separate columns: one row per (paper
    row or study method, criterion). Columns: method (this study), paper row, criterion, measured mean,
    measured ci95_low, measured ci95_high, paper column, paper value (quoted), paper cell (as printed)."""
    import pandas as pd

    from cff_lib.claims import load_claims

    claims = [c for c in (claims if claims is not None else load_claims())
              if c.table == "User study" and c.unit.startswith("Likert")]
    to_paper = paper_rows()
    rows, used = [], set()
    for _, r in means.iterrows():
        prow = to_paper.get(r["method"], r["method"])
        matches = [c for c in claims if c.row == prow and c.column in PAPER_COLUMNS[r["criterion"]]] or [None]
        for c in matches:
            if c is not None:
                used.add(c.key)
            rows.append({"method (this study)": r["method"], "paper row": prow, "criterion": r["criterion"],
                         "measured mean": r["mean"], "measured ci95_low": r["ci95_low"],
                         "measured ci95_high": r["ci95_high"], "paper column": c.column if c else "",
                         "paper value (quoted)": c.value if c else float("nan"), "paper cell (as printed)":
                         c.cell if c else ""})
    crit_of = {col: crit for crit, cols in PAPER_COLUMNS.items() for col in cols}
    for c in claims:
        if c.key not in used:
            rows.append({"method (this study)": "", "paper row": c.row, "criterion": crit_of.get(c.column, ""),
                         "measured mean": float("nan"), "measured ci95_low": float("nan"),
                         "measured ci95_high": float("nan"), "paper column": c.column,
                         "paper value (quoted)": c.value, "paper cell (as printed)": c.cell})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ agreement
def agreement_table(df, exclude: Sequence[str] = ()):
    """Krippendorff's alpha (ordinal) per criterion over raters x items. Columns: criterion, alpha,
    n_raters, n_items, n_ratings."""
    import krippendorff
    import pandas as pd

    df = first_ratings(df, exclude)
    rows = []
    for c in CRITERIA:
        matrix = df.pivot_table(index="rater_id", columns="item_id", values=c, aggfunc="first")
        data = matrix.to_numpy(dtype=float)
        pairable = (np.isfinite(data).sum(0) >= 2).sum()
        alpha = (float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                                          value_domain=list(range(SCORE_MIN, SCORE_MAX + 1))))
                 if pairable >= 1 else float("nan"))
        rows.append({"criterion": c, "alpha": alpha, "n_raters": matrix.shape[0], "n_items": matrix.shape[1],
                     "n_ratings": int(np.isfinite(data).sum())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ tests
def item_means(df, exclude: Sequence[str] = ()):
    """Per item (face under a method) the mean of each criterion over its raters: index (face, method)."""
    return first_ratings(df, exclude).groupby(["face", "method"])[list(CRITERIA)].mean()


def method_tests(df, alpha: float = 0.05, exclude: Sequence[str] = ()):
    """Paired tests between every pair of methods per criterion on per-item means, paired by face
    (``stats.paired_tests_table``), Holm-corrected over all criteria x pairs. Columns: criterion, method_a,
    method_b, then the paired-test table's columns (``metric`` = "criterion: a vs b")."""
    from cff_lib.stats import paired_tests_table

    means = item_means(df, exclude)
    methods = _methods(first_ratings(df, exclude))
    family, labels = {}, {}
    for c in CRITERIA:
        wide = means[c].unstack("method")
        for a, b in itertools.combinations(methods, 2):
            both = wide[[a, b]].dropna()
            if len(both) < 2:
                continue
            key = f"{c}: {a} vs {b}"
            family[key] = (both[a].to_numpy(), both[b].to_numpy())
            labels[key] = (c, a, b)
    if not family:
        raise ValueError("no pair of methods has two or more faces rated under both")
    table = paired_tests_table(family, alpha=alpha)
    table.insert(0, "method_b", [labels[k][2] for k in table["metric"]])
    table.insert(0, "method_a", [labels[k][1] for k in table["metric"]])
    table.insert(0, "criterion", [labels[k][0] for k in table["metric"]])
    return table


# ------------------------------------------------------------------------------------------ preference
def preference_table(df, exclude: Sequence[str] = ()):
    """Share (%) of raters whose highest mean over all five criteria is each method (ties split equally), for
    all raters, specialists and regular users. Columns: method, all raters (%), specialists (%), regular users
    (%), and the rater counts."""
    import pandas as pd

    df = first_ratings(df, exclude).copy()
    df[OVERALL] = df[list(CRITERIA)].mean(axis=1)
    methods = _methods(df)
    per = df.groupby(["rater_id", "method"])[OVERALL].mean().unstack("method").reindex(columns=methods)
    specialist = df.groupby("rater_id")["specialist"].first().reindex(per.index).astype(bool)
    best = per.eq(per.max(axis=1), axis=0).astype(float)
    best = best.div(best.sum(axis=1), axis=0)  # a tie splits the rater

    def share(mask) -> list[float]:
        n = int(mask.sum())
        return [float("nan") if n == 0 else 100.0 * float(best.loc[mask, m].sum()) / n for m in methods]

    everyone = pd.Series(True, index=per.index)
    return pd.DataFrame({"method": methods, "all raters (%)": share(everyone),
                         "specialists (%)": share(specialist), "regular users (%)": share(~specialist),
                         "n raters": len(per), "n specialists": int(specialist.sum()),
                         "n regular users": int((~specialist).sum())})


def specialist_table(df, exclude: Sequence[str] = ()):
    """Specialists vs regular users per method and criterion: mean of each group, the difference (specialists
    minus regular users) and a two-sided Mann-Whitney U p on the raters' own means."""
    import pandas as pd
    from scipy import stats

    df = first_ratings(df, exclude).copy()
    df[OVERALL] = df[list(CRITERIA)].mean(axis=1)
    rows = []
    for m in _methods(df):
        sub = df[df["method"] == m]
        per = sub.groupby(["rater_id", "specialist"])[[*CRITERIA, OVERALL]].mean().reset_index()
        for c in (*CRITERIA, OVERALL):
            s = per.loc[per["specialist"].astype(bool), c].to_numpy(dtype=float)
            r = per.loc[~per["specialist"].astype(bool), c].to_numpy(dtype=float)
            p = (float(stats.mannwhitneyu(s, r, alternative="two-sided").pvalue)
                 if len(s) and len(r) and not (np.ptp(np.r_[s, r]) == 0) else float("nan"))
            rows.append({"method": m, "criterion": c, "specialists mean": float(s.mean()) if len(s) else math.nan,
                         "regular users mean": float(r.mean()) if len(r) else math.nan,
                         "difference": (float(s.mean() - r.mean()) if len(s) and len(r) else math.nan),
                         "n specialists": len(s), "n regular users": len(r), "mann_whitney_p": p})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ claims
def claims_table(reasons: Mapping | None = None):
    """The ledger's user-study claims and their verdicts (``claims.judge``; no measured value is passed, so
    each keeps the ledger's standing reason, "not reproducible here: needs human raters ...")."""
    import pandas as pd

    from cff_lib.claims import judge, load_claims

    rows = []
    for c in load_claims():
        if c.table != "User study":
            continue
        v = judge(c, None, (reasons or {}).get(c.key))
        rows.append({"paper row": c.row, "paper column": c.column, "paper cell (as printed)": c.cell,
                     "paper value": c.value, "unit": c.unit, "verdict": v.text})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ simulated panel
def placeholder_samples(methods: Sequence[str], n_faces: int, size: int = 16, seed: int = 0):
    """``create_study`` samples of random-noise placeholder images (not faces) for a pipeline check."""
    rng = np.random.default_rng(seed)
    refs = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n_faces)]
    return {m: [(ref, rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for ref in refs] for m in methods}


def simulate_panel(study: Study, n_raters: int = 30, specialist_share: float = 0.8,
                   offsets: Sequence[float] = PLANTED_OFFSETS, careless_share: float = CARELESS_SHARE,
                   seed: int = 0) -> dict[str, Any]:
    """Simulated raters rate ``study`` through ``Study.register_rater`` and ``Study.rate`` (module docstring);
    ``offsets`` are planted on the study's methods in order. Returns what was planted."""
    if not isinstance(n_raters, int) or n_raters < 2:
        raise ValueError(f"n_raters={n_raters!r} must be an integer >= 2")
    if not 0 <= specialist_share <= 1 or not 0 <= careless_share < 1:
        raise ValueError("specialist_share and careless_share must lie in [0, 1]")
    info = study.info()
    if len(offsets) < len(info.methods):
        raise ValueError(f"offsets has {len(offsets)} values for {len(info.methods)} methods")
    planted = dict(zip(info.methods, offsets, strict=False))
    rng = np.random.default_rng(seed)
    face_effect = rng.normal(0.0, 0.4, info.n_faces)
    # the simulation may look at which method made a slot: it stands for the raters' eyes, not their browser
    careless = set()
    for _ in range(n_raters):
        specialist = bool(rng.random() < specialist_share)
        rater = study.register_rater(specialist, seed=int(rng.integers(2**31)))
        sloppy = bool(rng.random() < careless_share)
        if sloppy:
            careless.add(rater.rater_id)
        bias = rng.normal(0.0, 0.3) - (0.2 if specialist else 0.0)
        impression: dict[tuple[str, int], np.ndarray] = {}  # a rater's view of a pair, the same when it repeats
        progress = study.progress(rater.rater_id)
        while not progress.done:
            method, face = study.item_of(progress.next_slot.slot_id)
            if sloppy:
                scores = {c: int(rng.integers(SCORE_MIN, SCORE_MAX + 1)) for c in CRITERIA}
            else:
                if (method, face) not in impression:
                    impression[(method, face)] = rng.normal(0.0, 0.6, len(CRITERIA))
                latent = (3.0 + planted[method] + face_effect[face] + bias + impression[(method, face)]
                          + rng.normal(0.0, 0.2, len(CRITERIA)))
                scores = {c: int(np.clip(np.rint(v), SCORE_MIN, SCORE_MAX)) for c, v in zip(CRITERIA, latent,
                                                                                             strict=True)}
            progress = study.rate(rater.rater_id, progress.next_slot.slot_id, scores)
    return {"planted offsets": planted, "careless raters": sorted(careless), "n_raters": n_raters}


def pipeline_check_study(path: str | os.PathLike, n_faces: int = 12, n_raters: int = 30, seed: int = 0,
                         methods: Sequence[str] | None = None) -> tuple[Study, dict[str, Any]]:
    """Create a study of placeholder images under the evaluation's method names at ``path``, let a simulated
    panel rate it (:func:`simulate_panel`) and close it. Returns (study, what was planted)."""
    from cff_lib.evaluation import METHODS

    methods = tuple(methods or METHODS)
    create_study(Path(path), placeholder_samples(methods, n_faces, seed=seed), overwrite=True,
                 title="Pipeline check (simulated panel)", source="placeholder images (random noise)")
    panel = Study(path, durable=False)  # a throwaway file: commits need not survive a power cut
    planted = simulate_panel(panel, n_raters=n_raters, seed=seed)
    panel.close()
    panel.release()
    return Study(path), planted


def planted_table(planted: Mapping[str, Any]):
    """The simulated panel's planted offsets, one row per method."""
    import pandas as pd

    return pd.DataFrame([{"method": m, "planted offset (Likert points)": v}
                         for m, v in planted["planted offsets"].items()])


__all__ = ["OVERALL", "PIPELINE_CHECK", "PLANTED_OFFSETS", "agreement_table", "attention_table", "box_plot",
           "claims_table", "failed_raters", "first_ratings", "heading", "item_means", "means_table",
           "method_tests", "paper_comparison", "pipeline_check_study", "placeholder_samples", "planted_table",
           "preference_table", "ratings_frame", "simulate_panel", "specialist_table"]
