"""Tables 7 and 8 from the run store: the ablations and the one-at-a-time sweep, measured (notebooks 08, 09).

Each run of the store (:mod:`cff_lib.runstore`; made by :mod:`cff_lib.sweeps`) holds one evaluation of one
trained model: :func:`table_evaluate`, the evaluate step these tables need, stores the control
measurement (``runstore.default_evaluate``) and, per evaluation seed of the profile, the paper's metrics of
ClipFaceFusion's edits (``cff_lib.evaluation.score``: every attribute, identity and text-image reading is the
**referees'**; the guides are read only for the fooling gap). A run's value of a metric is its mean over the
evaluation seeds; a table cell is the **mean ± std over training seeds** (one run per seed; std with
ddof = 1; a single seed prints the mean alone and says so).

Columns (the names ``cff_lib.evaluation`` uses):

- Table 7 (:data:`TABLE7_METRICS`): ``ssim``, ``lpips`` (LPIPS on the referees' feature maps), ``s_dir``,
  ``age_acc`` and ``emo_acc`` (%, referee), ``identity_similarity`` (the identity referee's cosine to the
  source: the paper's "FID" column, docs/errata.md), ``cmc`` (the paper's CMC of the conditioning) and the
  fooling gap ``fooling_gap_age_y`` / ``fooling_gap_emo_pts`` (guide minus referee);
- Table 8 (:data:`TABLE8_METRICS`): ``ssim``, ``lpips``, ``identity_similarity``, ``cmc``.

Paired differences (:func:`paired_to_base`): each row against the base ("full"), paired by training seed
(the same seed trains both), ``cff_lib.stats.paired_test``, Holm-corrected over the rows of each metric. A
test needs at least 2 training seeds; with fewer the cell says so (no p is invented).

Paper numbers (``cff_lib/paper_claims.yaml``, :func:`paper_table`) are a separate table: a paper number and a
measured number never share a column. Reading never trains: :func:`collect` takes what the store holds and
marks every other (row, seed) "not measured yet".
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cff_lib.overlays import SWEEP, Variant, ablations, sweep_points
from cff_lib.runstore import EVALUATION_FILE, RunSpec, RunStore, default_evaluate

TABLE7_METRICS: dict[str, str] = {
    "ssim": "SSIM ↑", "lpips": "LPIPS(referees) ↓", "s_dir": "S_dir ↑", "age_acc": "age acc. % (referee) ↑",
    "emo_acc": "emotion acc. % (referee) ↑", "identity_similarity": "identity cos. (referee; paper 'FID') ↑",
    "cmc": "CMC ↑", "fooling_gap_age_y": "fooling gap, age (y)", "fooling_gap_emo_pts": "fooling gap, emotion (pts)"}
TABLE8_METRICS: dict[str, str] = {k: TABLE7_METRICS[k] for k in ("ssim", "lpips", "identity_similarity", "cmc")}
PAPER_COLUMNS = {"SSIM": "ssim", "LPIPS": "lpips", "S_dir": "s_dir", "Age Acc": "age_acc", "Emo Acc": "emo_acc",
                 "FID": "identity_similarity", "CMC": "cmc"}
"""The paper's column -> the measured metric it corresponds to (FID: docs/errata.md)."""
TOY_TRAINING_SEEDS = (0, 1, 2)
"""Training seeds of the toy tables (the ± is over these); not measured yet on this CPU (notebooks 08, 09)."""
CI_ABLATIONS = ("full", "no_cmc")  # ci: 2 configurations × 1 seed, inside make test
CI_SWEEP = {"ddim_steps": (5, 3)}  # ci: the base's own DDIM steps (notebook 08's "full" run) and an
# inference-only point (no training: the base's parameters, evaluated with 3 steps), to stay in make test's budget
CI_SEEDS = (0,)
NOT_MEASURED = "not measured yet"


# ------------------------------------------------------------------------------------------ the evaluate step
def table_evaluate(profile, params: Path) -> dict:
    """The run store's evaluate step for Tables 7 and 8: the control measurement plus, per evaluation seed of
    ``profile`` (``eval.seeds``, ``eval.n_samples`` faces each), ClipFaceFusion's metrics
    (``evaluation.score``; no realism reference, which these tables do not show)."""
    import torch

    from cff_lib import evaluation
    from cff_lib.dataset import load_rows
    from cff_lib.model import build_model

    out = default_evaluate(profile, params)
    model = build_model(profile)
    model.load_trained(params)
    model.eval()
    ctx = evaluation.metric_context(model, profile=profile, realism_n=0)
    pool = evaluation.eval_pool(profile)
    seeds = [int(s) for s in profile.eval.seeds] or [0]
    per_seed: dict[str, list[float]] = {k: [] for k in evaluation.METRIC_NAMES}
    for seed in seeds:
        rows = evaluation.seed_rows(pool, seed, profile.eval.n_samples)
        images, conds = load_rows(profile, rows)
        gen = evaluation.run_methods(model, None, images, conds, seed, profile, methods=(evaluation.CFF,))
        gen = gen[evaluation.CFF]
        with torch.no_grad():
            cond = model.condition({**conds, "reference": images.to(model.device)})
        # rows=None: no oracle distances (not in these tables; the control measurement has the oracle share)
        summary, _ = evaluation.score(model, ctx, gen, images.to(gen.device), conds, cond, evaluation.CFF)
        for k in per_seed:
            per_seed[k].append(_finite_or_none(summary.get(k)))
    out["metrics"] = per_seed
    out["eval_seeds"] = seeds
    out["n_samples"] = int(profile.eval.n_samples)
    return out


def _finite_or_none(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


# ------------------------------------------------------------------------------------------ which runs
def notebook_variants(profile, table: str) -> tuple[list[Variant], tuple[int, ...], bool]:
    """(variants, training seeds, run the missing ones?) of notebook 08 (``table="7"``) or 09 (``"8"``):
    on ``ci`` a 2-configuration × 1-seed sweep that runs; elsewhere the full grid, read from the store only."""
    if table not in ("7", "8"):
        raise ValueError(f"table={table!r} must be '7' or '8'")
    if profile.name == "ci":
        if table == "7":
            return ablations(profile, CI_ABLATIONS), CI_SEEDS, True
        own = profile.ddim.n_gen_steps
        values = [own, *(x for x in CI_SWEEP["ddim_steps"] if x != own)][:2]
        return sweep_points(profile, ["ddim_steps"], {"ddim_steps": values}), CI_SEEDS, True
    variants = ablations(profile) if table == "7" else sweep_points(profile)
    return variants, TOY_TRAINING_SEEDS, False


def plan(store: RunStore, profile, variants: Sequence[Variant], seeds: Sequence[int]) -> list[RunSpec]:
    """One spec per (variant, training seed), labelled with the variant's key."""
    return [store.spec(profile, v, seed=s, label=v.key) for v in variants for s in seeds]


def collect(store: RunStore, specs: Sequence[RunSpec], variants: Sequence[Variant], metrics: Sequence[str]):
    """Long table of what the store holds for ``specs``: one row per (variant, seed, metric) with the run's
    value (mean over its evaluation seeds) or status "not measured yet". Nothing is trained or evaluated."""
    import pandas as pd

    names = {v.key: v.name for v in variants}
    records = []
    for spec in specs:
        folder = store.path(spec.run_id)
        evaluation, status = None, NOT_MEASURED
        if folder.is_dir():
            problems = store.verify(spec.run_id)
            if problems:
                status = "corrupt: " + "; ".join(problems)
            else:
                import json

                evaluation = json.loads((folder / EVALUATION_FILE).read_text())
                status = "measured" if "metrics" in evaluation else "measured without the table metrics"
        for m in metrics:
            vals = [] if evaluation is None else [v for v in evaluation.get("metrics", {}).get(m, []) if v is not None]
            records.append({"key": spec.label, "variant": names.get(spec.label, spec.label), "seed": spec.seed,
                            "run_id": spec.run_id, "metric": m, "status": status,
                            "value": float(np.mean(vals)) if vals else float("nan"),
                            "eval_seeds": len(vals)})
    return pd.DataFrame.from_records(records)


# ------------------------------------------------------------------------------------------ tables
def _mean_std(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4g} (1 seed)"
    return f"{values.mean():.4g} ± {values.std(ddof=1):.2g}"


def summary_table(long, variants: Sequence[Variant], metrics: Mapping[str, str]):
    """One row per variant: training seeds measured, then each metric as "mean ± std over training seeds"
    (measured here); rows with no finished run say "not measured yet"."""
    import pandas as pd

    rows = []
    for v in variants:
        part = long[long["key"] == v.key]
        done = part[part["status"] == "measured"]
        n_seeds = done["seed"].nunique()
        row = {"row": v.name, "training seeds measured": f"{n_seeds} of {part['seed'].nunique()}"}
        for m, label in metrics.items():
            vals = done.loc[done["metric"] == m, "value"].to_numpy(dtype=float)
            row[f"{label} (measured)"] = _mean_std(vals) if n_seeds else NOT_MEASURED
        rows.append(row)
    return pd.DataFrame(rows)


def base_key(long, variants: Sequence[Variant], base_run_ids: Sequence[str]) -> str:
    """The key of the variant whose runs are the base's (``base_run_ids``: the base spec's run per seed);
    Table 8's optimal points restate the base, so the first such point is the base."""
    ids = set(base_run_ids)
    for v in variants:
        if set(long.loc[long["key"] == v.key, "run_id"]) <= ids:
            return v.key
    raise ValueError("no row is the base configuration; add it (Table 7: 'full'; Table 8: an optimal point)")


def paired_to_base(long, variants: Sequence[Variant], metrics: Mapping[str, str], base: str = "full"):
    """Each row minus the base row (key ``base``), paired by training seed, per metric; Holm over the rows of
    a metric. Rows whose runs are the base's own (Table 8's optimal points) are left out. Columns: row,
    metric, n_pairs, mean_diff, ci95_low, ci95_high, test, p, p_holm, significant."""
    import pandas as pd

    from cff_lib.stats import holm_correction, paired_test

    if base not in {v.key for v in variants}:
        raise ValueError(f"base {base!r} is not among the rows {[v.key for v in variants]}")
    measured = long[long["status"] == "measured"]
    base_ids = set(long.loc[long["key"] == base, "run_id"])
    out = []
    for m in metrics:
        ref = measured[(measured["key"] == base) & (measured["metric"] == m)].set_index("seed")["value"]
        tests = {}
        rows = []
        for v in variants:
            if set(long.loc[long["key"] == v.key, "run_id"]) <= base_ids:
                continue
            cur = measured[(measured["key"] == v.key) & (measured["metric"] == m)].set_index("seed")["value"]
            seeds = sorted(s for s in set(ref.index) & set(cur.index)
                           if math.isfinite(ref[s]) and math.isfinite(cur[s]))
            d = np.array([cur[s] - ref[s] for s in seeds])
            row = {"row": v.name, "metric": m, "n_pairs": len(seeds),
                   "mean_diff": float(d.mean()) if len(d) else float("nan"), "ci95_low": float("nan"),
                   "ci95_high": float("nan"), "test": "", "p": float("nan"), "p_holm": float("nan"),
                   "significant": None}
            if len(seeds) >= 2:
                r = paired_test([cur[s] for s in seeds], [ref[s] for s in seeds])
                row.update(ci95_low=r.ci95[0], ci95_high=r.ci95[1], test=r.test_used, p=r.p_used)
                tests[v.name] = r.p_used
            else:
                row["test"] = (NOT_MEASURED if not len(seeds) else
                               "no test: needs ≥ 2 training seeds (a difference of one seed only)")
            rows.append(row)
        if tests:
            adjusted = holm_correction(tests)
            for row in rows:
                if row["row"] in adjusted:
                    row["p_holm"] = adjusted[row["row"]]
                    row["significant"] = bool(adjusted[row["row"]] < 0.05)
        out += rows
    return pd.DataFrame(out)


def paper_table(table: str, variants: Sequence[Variant], metrics: Mapping[str, str]):
    """The paper's printed cells for these rows (``cff_lib/paper_claims.yaml``): one row per variant, one
    column per metric the paper prints, "(paper)" in every column name."""
    import pandas as pd

    from cff_lib.claims import load_claims

    claims = [c for c in load_claims() if c.table == f"Table {table}"]
    rows = []
    for v in variants:
        row = {"row": v.name}
        for c in claims:
            metric = PAPER_COLUMNS.get(c.column)
            if metric in metrics and _same_row(v, c.row, table):
                row[f"{c.column} (paper)"] = c.cell
        rows.append(row)
    return pd.DataFrame(rows)


def _same_row(v: Variant, printed: str, table: str) -> bool:
    printed = printed.replace("(optimal)", "").strip()
    if table == "7":
        wanted = " ".join(v.name.lower().split())
        return wanted == " ".join(printed.lower().split()) or (v.key == "full" and printed.lower().startswith("full"))
    label, _, value = printed.partition(" = ")
    mine_label, _, mine_value = v.name.partition(" = ")
    try:
        return label.strip() == mine_label.strip() and math.isclose(float(value), float(mine_value))
    except ValueError:
        return False


def missing_rows(long) -> list[str]:
    """'row (seeds a, b)' for every row with a training seed not measured yet."""
    part = long[long["status"] != "measured"].drop_duplicates(["variant", "seed"])
    return [f"{name} (seeds {', '.join(str(s) for s in sorted(g['seed']))})" for name, g in part.groupby("variant",
                                                                                                         sort=False)]


# ------------------------------------------------------------------------------------------ figures
def forest_plot(paired, metrics: Mapping[str, str]):
    """One panel per metric: each row's paired difference to the base (dot) with its 95 % CI (bar, where
    there are ≥ 2 training seeds); rows not measured are left out."""
    import matplotlib.pyplot as plt

    shown = [m for m in metrics if paired.loc[paired["metric"] == m, "mean_diff"].notna().any()] or list(metrics)[:1]
    ncols = min(5, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    labels = list(dict.fromkeys(paired["row"]))
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, sharey=True,
                             figsize=(2.4 * ncols + 1.5, nrows * (0.3 * max(3, len(labels)) + 1.0)))
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, m in zip(axes.flat, shown, strict=False):
        part = paired[paired["metric"] == m].set_index("row")
        for i, label in enumerate(labels):
            if label not in part.index or not math.isfinite(part.loc[label, "mean_diff"]):
                continue
            r = part.loc[label]
            if math.isfinite(r["ci95_low"]):
                ax.plot([r["ci95_low"], r["ci95_high"]], [i, i], color="C0", lw=1.5)
            ax.plot([r["mean_diff"]], [i], "o", color="C3" if r["significant"] else "C0", ms=4)
        ax.axvline(0, color="0.5", lw=0.8, ls="--")
        ax.set_title(metrics[m], fontsize=8)
        ax.tick_params(labelsize=7)
    for row in axes:
        row[0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle("Paired difference to the base (row − base, per training seed; red: Holm p < 0.05)", fontsize=9)
    fig.tight_layout()
    return fig


def small_multiples(long, variants: Sequence[Variant], metrics: Mapping[str, str], base_value_of=None):
    """One panel per (swept setting, metric): the metric (mean over training seeds, ± std bars) against the
    setting's value; the profile's own value (the base) marked with a ring."""
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(v.key.split("=", 1)[0] for v in variants if "=" in v.key))
    measured = long[long["status"] == "measured"]
    fig, axes = plt.subplots(len(settings) or 1, len(metrics), squeeze=False,
                             figsize=(2.3 * len(metrics), 1.9 * max(1, len(settings))))
    for i, key in enumerate(settings):
        setting = SWEEP[key]
        for j, (m, label) in enumerate(metrics.items()):
            ax = axes[i][j]
            xs, means, stds = [], [], []
            for v in variants:
                if v.key.split("=", 1)[0] != key:
                    continue
                vals = measured[(measured["key"] == v.key) & (measured["metric"] == m)]["value"].to_numpy(float)
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    xs.append(float(v.key.split("=", 1)[1]))
                    means.append(vals.mean())
                    stds.append(vals.std(ddof=1) if len(vals) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, means, yerr=stds, fmt="o-", ms=3, lw=1, capsize=2)
                if base_value_of is not None and base_value_of(key) in xs:
                    k = xs.index(base_value_of(key))
                    ax.plot([xs[k]], [means[k]], "o", mfc="none", mec="C3", ms=8)
            else:
                ax.text(0.5, 0.5, NOT_MEASURED, ha="center", va="center", transform=ax.transAxes, fontsize=7)
            ticks = sorted(set(xs)) or [float(x) for x in setting.values]  # the values measured
            ax.set_xticks(ticks, [f"{x:g}" for x in ticks], fontsize=6)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(label, fontsize=8)
            if j == 0:
                ax.set_ylabel(setting.name, fontsize=8)
    fig.suptitle("Table 8, one setting at a time (mean ± std over training seeds; ring: the base's value)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def base_value(profile):
    """``key -> the profile's own value`` of a Table 8 setting (for :func:`small_multiples`)."""
    def value(key: str) -> Any:
        section, name = SWEEP[key].settings[0].split(".")
        return float(getattr(getattr(profile, section), name))
    return value


__all__ = ["CI_ABLATIONS", "CI_SEEDS", "CI_SWEEP", "NOT_MEASURED", "PAPER_COLUMNS", "TABLE7_METRICS",
           "TABLE8_METRICS", "TOY_TRAINING_SEEDS", "base_key", "base_value", "collect", "forest_plot", "missing_rows",
           "notebook_variants", "paired_to_base", "paper_table", "plan", "small_multiples", "summary_table",
           "table_evaluate"]
