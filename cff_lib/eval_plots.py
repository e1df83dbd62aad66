"""Figures of notebooks 04-07 (paper Fig. 4-7, Table 6): edit grids with zoom-ins, strips, |generated − reference|
heatmaps, the reference-integration sweep and per-method emotion-rendering error. Images are (3, H, W) or
(B, 3, H, W) tensors in [-1, 1]; every function returns a matplotlib figure (save it with
``figures.save_figure``)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) float in [0, 1]."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got {getattr(x, 'shape', type(x).__name__)}")
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def _zoom_box(size: int) -> tuple[int, int, int]:
    """(top, left, side) of the central zoom patch: the middle half of the face (eyes and mouth)."""
    side = max(4, size // 2)
    return (size - side) // 2, (size - side) // 2, side


def edit_grid(reference: torch.Tensor, outputs: Mapping[str, torch.Tensor], row_labels: Sequence[str],
              zoom: bool = True, reference_label: str = "Reference"):
    """Fig. 4: rows = scenarios, columns = reference + each method; with ``zoom`` a zoom-in patch of the
    face's centre (red box) under each image."""
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    cols = {reference_label: reference, **outputs}
    n = reference.shape[0]
    if len(row_labels) != n or any(v.shape != reference.shape for v in cols.values()):
        raise ValueError("every method needs one image per scenario, of the reference's size")
    per = 2 if zoom else 1
    fig, axes = plt.subplots(n * per, len(cols), figsize=(1.9 * len(cols), 1.9 * n * per), squeeze=False)
    top, left, side = _zoom_box(reference.shape[-1])
    for j, (name, imgs) in enumerate(cols.items()):
        axes[0][j].set_title(name.replace(" (", "\n("), fontsize=7)
        for i in range(n):
            img = to_numpy(imgs[i])
            ax = axes[i * per][j]
            ax.imshow(img)
            if zoom:
                ax.add_patch(mpatches.Rectangle((left - .5, top - .5), side, side, fill=False, ec="r", lw=0.8))
                axes[i * per + 1][j].imshow(img[top:top + side, left:left + side], interpolation="nearest")
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=7)
                if zoom:
                    axes[i * per + 1][j].set_ylabel("zoom", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def strip(images: torch.Tensor, labels: Sequence[str], title: str = "", source: torch.Tensor | None = None):
    """One row: optional source face, then each image with its label."""
    import matplotlib.pyplot as plt

    items = ([("source", source)] if source is not None else []) + list(zip(labels, images, strict=True))
    fig, axes = plt.subplots(1, len(items), figsize=(1.5 * len(items), 1.9), squeeze=False)
    for ax, (label, img) in zip(axes[0], items, strict=True):
        ax.imshow(to_numpy(img))
        ax.set_title(str(label), fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def deviation_maps(reference: torch.Tensor, outputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per method, (B, H, W) per-pixel |generated − reference| averaged over RGB, in [0, 1] intensity units."""
    out = {}
    for name, gen in outputs.items():
        if gen.shape != reference.shape:
            raise ValueError(f"{name}: images of shape {tuple(gen.shape)} vs reference {tuple(reference.shape)}")
        out[name] = ((gen.detach().float().cpu() - reference.detach().float().cpu()).abs() / 2).mean(1).numpy()
    return out


def heatmaps(reference: torch.Tensor, outputs: Mapping[str, torch.Tensor], row_labels: Sequence[str],
             oracle: torch.Tensor | None = None):
    """Fig. 5: seaborn heatmaps of |generated − reference| per scenario (rows) and method (columns), a
    shared colour scale, each panel titled with its mean deviation. With ``oracle`` (the same people
    rendered at their targets, :mod:`cff_lib.oracle`), each scenario gets a second row, "edit vs oracle
    target": |generated − oracle|, where a real edit is dark and an unchanged face is bright on the
    attributes that should have changed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    maps = deviation_maps(reference, outputs)
    rows = [(f"{label}\nvs source", maps, i) for i, label in enumerate(row_labels)]
    if oracle is not None:
        omaps = deviation_maps(oracle, outputs)
        rows = [r for i, label in enumerate(row_labels)
                for r in ((f"{label}\nvs source", maps, i), (f"{label}\nvs oracle target", omaps, i))]
    vmax = max(float(m.max()) for _, ms, _ in rows for m in ms.values()) or 1.0
    k = len(maps)
    fig, axes = plt.subplots(len(rows), k, figsize=(2.4 * k, 2.0 * len(rows)), squeeze=False)
    for r, (label, ms, i) in enumerate(rows):
        for j, (name, m) in enumerate(ms.items()):
            ax = axes[r][j]
            sns.heatmap(m[i], ax=ax, vmin=0, vmax=vmax, cmap="magma", cbar=j == k - 1, square=True,
                        xticklabels=False, yticklabels=False)
            title = f"mean {m[i].mean():.4f}"
            ax.set_title(name.replace(" (", "\n(") + "\n" + title if r == 0 else title, fontsize=7)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    return fig


def deviation_table(reference: torch.Tensor, outputs: Mapping[str, torch.Tensor], row_labels: Sequence[str],
                    oracle: torch.Tensor | None = None):
    """pandas DataFrame: scenario, method, mean and max |generated − reference| (intensity in [0, 1]) and,
    with ``oracle``, the mean |generated − oracle target| (``mean_abs_dev_oracle``)."""
    import pandas as pd

    maps = deviation_maps(reference, outputs)
    omaps = deviation_maps(oracle, outputs) if oracle is not None else None
    rows = []
    for name, m in maps.items():
        for i in range(len(m)):
            row = {"scenario": row_labels[i], "method": name, "mean_abs_dev": float(m[i].mean()),
                   "max_abs_dev": float(m[i].max())}
            if omaps is not None:
                row["mean_abs_dev_oracle"] = float(omaps[name][i].mean())
            rows.append(row)
    return pd.DataFrame(rows)


def integration_figure(sweep):
    """Fig. 6: SSIM to the source and CMC against reference-image integration (% of samples with I_ref)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    x = 100 * sweep["integration"].to_numpy()
    ax.plot(x, sweep["ssim"], "o-", color="C0", label="SSIM")
    ax.set_xlabel("reference-image integration (% of samples)", fontsize=8)
    ax.set_ylabel("SSIM", color="C0", fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(x, sweep["cmc"], "s--", color="C3", label="CMC")
    ax2.set_ylabel("CMC", color="C3", fontsize=8)
    ax.tick_params(labelsize=7), ax2.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def emotion_error_figure(ev, methods: Sequence[str] | None = None):
    """Fig. 7: emotion-rendering error per method -- 100 − emotion accuracy (%) and AVD, mean ± std over seeds,
    both read by the attribute referee."""
    import matplotlib.pyplot as plt

    methods = list(methods or ev.per_seed)
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.8))
    for ax, (metric, title, f) in zip(axes, (("emo_acc", "emotion error (%) ↓", lambda v: 100 - v),
                                              ("avd", "valence/arousal distance ↓", lambda v: v)), strict=True):
        vals = [f(np.asarray(ev.per_seed[m][metric], dtype=float)) for m in methods]
        means = [float(v.mean()) for v in vals]
        stds = [float(v.std(ddof=1)) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(range(len(methods)), means, yerr=stds, color=[f"C{i}" for i in range(len(methods))], capsize=3)
        ax.set_xticks(range(len(methods)), [m.split(" (")[0] for m in methods], fontsize=7, rotation=15)
        ax.set_title(title + " (referee)", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def fooling_gap_figure(ev, methods: Sequence[str] | None = None):
    """Per method, the referee's reading (solid) beside the guide's (hatched) for age error to target and
    emotion accuracy, mean ± std over seeds: the gap between the bars is the fooling gap."""
    import matplotlib.pyplot as plt

    methods = list(methods or ev.per_seed)
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.0))
    for ax, (ref, guide, title) in zip(axes, (("age_mae", "age_mae_guide", "|age − target| (years) ↓"),
                                              ("emo_acc", "emo_acc_guide", "emotion = target (%) ↑")), strict=True):
        x = np.arange(len(methods))
        for off, key, style in ((-0.2, ref, {}), (0.2, guide, {"hatch": "///", "fill": False})):
            vals = [np.asarray(ev.per_seed[m][key], dtype=float) for m in methods]
            means = [float(np.nanmean(v)) for v in vals]
            stds = [float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals]
            ax.bar(x + off, means, 0.4, yerr=stds, capsize=3, edgecolor=[f"C{i}" for i in range(len(methods))],
                   color=[f"C{i}" for i in range(len(methods))], label="guide" if style else "referee", **style)
        ax.set_xticks(x, [m.split(" (")[0] for m in methods], fontsize=7, rotation=15)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle("Referee (solid) vs the loss's guide (hatched): the gap is the fooling gap", fontsize=9)
    fig.tight_layout()
    return fig


def inversion_figure(table):
    """PSNR and identity similarity of the unconditioned reconstruction against t0."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6.5, 2.6))
    groups = table.groupby("unet", sort=False) if "unet" in table else [("reconstruction", table)]
    for name, part in groups:
        axes[0].plot(part["t0"], part["psnr_db"], "o-", label=name)
        axes[1].plot(part["t0"], part["identity_similarity"], "o-", label=name)
    axes[0].set_title("reconstruction PSNR (dB)", fontsize=9)
    axes[1].set_title("identity referee cos to source", fontsize=9)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("t0", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


__all__ = ["deviation_maps", "deviation_table", "edit_grid", "emotion_error_figure", "heatmaps",
           "integration_figure", "inversion_figure", "strip", "to_numpy"]


def effect_size_forest(table, title: str = "ClipFaceFusion − text-only baseline"):
    """Table 6 as a picture: each metric's standardised paired difference (Cohen's d_z) with its 95% CI
    (the CI of the mean difference divided by the differences' std), coloured by Holm significance."""
    import matplotlib.pyplot as plt

    rows = table.reset_index(drop=True)
    scale = (rows["mean_diff"] / rows["cohens_dz"]).where(rows["cohens_dz"] != 0)  # std of the differences
    lo, hi = rows["ci95_low"] / scale, rows["ci95_high"] / scale
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    colors = ["tab:red" if s else "0.5" for s in rows["significant"]]
    ax.hlines(y, lo, hi, colors=colors)
    ax.scatter(rows["cohens_dz"], y, c=colors, zorder=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"{m} (n={n})" for m, n in zip(rows["metric"], rows["n"], strict=True)], fontsize=7)
    ax.set(xlabel="Cohen's d_z with 95% CI (red: Holm-significant)", title=title)
    fig.tight_layout()
    return fig
