"""Figures of the vision backends' held-out scores (notebook 02): CLIP retrieval, age scatter, emotion confusion,
identity ROC and the training-loss curves.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.emotions import EMOTIONS
from cff_lib.face_banks import FaceBank
from cff_lib.vision_heldout import AGE_TOLERANCE, FAR, HeldoutScores, bank_labels, evaluate_clip


def plot_clip_retrieval(clip, bank: FaceBank, n_queries: int = 6, k: int = 4, seed: int = 0):
    """For a few captions of the bank, the k images CLIP ranks highest (green: fits the caption)."""
    import matplotlib.pyplot as plt

    ev = evaluate_clip(clip, bank)
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(bank), size=min(n_queries, len(bank)), replace=False)
    fig, axes = plt.subplots(len(queries), k, figsize=(1.5 * k + 2.6, 1.5 * len(queries)), squeeze=False)
    for r, q in enumerate(queries):
        order = np.argsort(-ev.details["similarity"][q])[:k]
        for c, i in enumerate(order):
            ax = axes[r, c]
            ax.imshow(bank.images[i].permute(1, 2, 0).numpy())
            ok = (bank.emotion[i] == bank.emotion[q] and abs(float(bank.age[i] - bank.age[q])) <= AGE_TOLERANCE
                  and bank.gender[i] == bank.gender[q])
            for s in ax.spines.values():
                s.set(color="tab:green" if ok else "tab:red", linewidth=3)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(f"{int(bank.age[i])} {EMOTIONS[int(bank.emotion[i])]}", fontsize=6)
        axes[r, 0].set_ylabel(ev.details["captions"][q].replace(" ", "\n", 2), fontsize=7, rotation=0,
                              ha="right", va="center")
    fig.suptitle(f"CLIP text->image retrieval, {bank.name} (top-{k}; green = fits the caption)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_age_scatter(evals: dict[str, dict[str, HeldoutScores]]):
    """True vs estimated age for each held-out bank."""
    import matplotlib.pyplot as plt

    banks = list(evals["estimators"])
    fig, axes = plt.subplots(1, len(banks), figsize=(4 * len(banks), 4), squeeze=False)
    for ax, b, label in zip(axes[0], banks, bank_labels(banks), strict=True):
        ev = evals["estimators"][b]
        ax.scatter(ev.details["age_true"], ev.details["age_pred"], s=6, alpha=0.5)
        ax.plot([AGE_MIN, AGE_MAX], [AGE_MIN, AGE_MAX], color="k", lw=1, ls="--")
        ax.set(xlabel="true age (years)", ylabel="AgeEst (years)",
               title=f"{label}\nMAE {ev.metrics['age_mae']:.2f} y (n={len(ev.details['age_true'])})")
    fig.tight_layout()
    return fig


def plot_emotion_confusion(evals: dict[str, dict[str, HeldoutScores]]):
    """Row-normalised emotion confusion matrices (seaborn heatmaps), one per held-out bank."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    banks = list(evals["estimators"])
    fig, axes = plt.subplots(1, len(banks), figsize=(5.2 * len(banks), 4.4), squeeze=False)
    for ax, b, label in zip(axes[0], banks, bank_labels(banks), strict=True):
        ev = evals["estimators"][b]
        conf = ev.details["confusion"].astype(float)
        norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
        sns.heatmap(norm, ax=ax, vmin=0, vmax=1, cmap="Blues", annot=True, fmt=".2f", annot_kws={"size": 6},
                    xticklabels=EMOTIONS, yticklabels=EMOTIONS, cbar=False)
        ax.set(xlabel="EmoEst", ylabel="true emotion",
               title=f"{label}: accuracy {ev.metrics['emotion_accuracy']:.3f}")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def plot_identity_roc(evals: dict[str, dict[str, HeldoutScores]], far: float = FAR):
    """Verification ROC of ArcFace and of the VGG's pooled features on each held-out bank."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.2))
    banks = list(evals["arcface"])
    for model, ls in (("arcface", "-"), ("vgg", ":")):
        for b, label in zip(banks, bank_labels(banks), strict=True):
            ev = evals[model][b]
            name = "ArcFace" if model == "arcface" else "VGG pooled"
            ax.plot(np.maximum(ev.details["fpr"], 1e-5), ev.details["tpr"], ls=ls,
                    label=f"{name}, {label}: TAR {ev.metrics['tar_at_far']:.3f}")
    ax.axvline(far, color="0.5", lw=0.8)
    ax.set(xscale="log", xlim=(1e-4, 1), ylim=(0, 1.01), xlabel="false accept rate",
           ylabel="true accept rate", title=f"identity verification (TAR at FAR = {far:.0%})")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def plot_loss_curves(curves: dict[str, Sequence[float]]):
    """Training-loss curves (one panel per model; x = fraction of training)."""
    import matplotlib.pyplot as plt

    curves = {k: v for k, v in curves.items() if len(v)}
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.8), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves.items(), strict=True):
        ax.plot(np.linspace(0, 1, len(curve)), curve)
        ax.set(title=name, xlabel="fraction of training", ylabel="loss")
    fig.tight_layout()
    return fig


__all__ = ["plot_age_scatter", "plot_clip_retrieval", "plot_emotion_confusion", "plot_identity_roc",
           "plot_loss_curves"]
