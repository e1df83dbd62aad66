"""Figures of the data-assembly notebook (paper "Datasets", "Training procedure"): a labelled sample grid,
label distributions, a waveform + spectrogram panel, and the batch-mixing check."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import signal

from cff_lib.emotions import EMOTIONS
from cff_lib.manifests import DATASETS, Manifest
from cff_lib.preprocessing import load_audio, load_image


def dataset_sample_grid(root: Path, composite, n: int = 16, size: int = 64):
    """Faces of the first ``n`` composite training rows with an image, titled with their target caption."""
    rows = [s for s in composite.split("train") if s.image][:n]
    if not rows:
        raise ValueError("composite has no training rows with an image")
    cols = min(8, len(rows))
    fig, axes = plt.subplots(-(-len(rows) // cols), cols, figsize=(1.9 * cols, 2.3 * -(-len(rows) // cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, rows, strict=False):
        img = load_image(root / s.image, size)  # (3, H, W) in [-1, 1]
        ax.imshow((img.transpose(1, 2, 0) + 1) / 2)
        src = f"{s.source_age:.0f}y {s.source_emotion or ''}".strip() if s.source_age is not None else "?"
        ax.set_title(f"{s.source}: {src}\n→ {s.caption.removeprefix('a ').removeprefix('an ')}", fontsize=6)
    fig.suptitle("Composite training rows: source face and target condition", fontsize=9)
    return fig


def label_distributions(manifests: dict[str, Manifest], composite):
    """Ages (FFHQ, CACD), emotions (FFHQ faces, RAVDESS clips), split sizes per dataset, composite sources."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for name in ("ffhq", "cacd"):
        ages = [e.label("age") for e in manifests[name].entries if e.label("age") is not None]
        axes[0].hist(ages, bins=range(16, 101, 4), alpha=0.6, label=f"{name} (n={len(ages)})")
    axes[0].set(title="age", xlabel="years", ylabel="files")
    axes[0].legend(fontsize=7)
    x = np.arange(len(EMOTIONS))
    for k, name in enumerate(("ffhq", "ravdess")):
        counts = [sum(e.label("emotion") == emo for e in manifests[name].entries) for emo in EMOTIONS]
        axes[1].bar(x + 0.4 * k, counts, width=0.4, label=name)
    axes[1].set_xticks(x + 0.2, EMOTIONS, rotation=45, fontsize=7)
    axes[1].set(title="emotion")
    axes[1].legend(fontsize=7)
    bottom = np.zeros(len(DATASETS))
    for split in ("train", "val", "test"):
        counts = np.array([len(manifests[d].split(split)) for d in DATASETS])
        axes[2].bar(DATASETS, counts, bottom=bottom, label=split)
        bottom += counts
    axes[2].set(title="manifest splits (files)")
    axes[2].legend(fontsize=7)
    for k, split in enumerate(("train", "val")):
        rows = composite.split(split)
        frac = [sum(s.source == d for s in rows) / max(len(rows), 1) for d in DATASETS]
        axes[3].bar(np.arange(4) + 0.4 * k, frac, width=0.4, label=f"{split} (n={len(rows)})")
    axes[3].set_xticks(np.arange(4) + 0.2, DATASETS)
    axes[3].set(title="composite rows by source", ylabel="fraction")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    return fig


def waveform_spectrogram(root: Path, manifest: Manifest, emotions=("neutral", "happy", "sad", "angry"),
                         sample_rate: int = 16000, max_seconds: float = 5.0):
    """One clip per emotion (same actor when possible): preprocessed waveform above its spectrogram."""
    clips = []
    for emo in emotions:
        entry = next((e for e in manifest.entries if e.label("emotion") == emo), None)
        if entry is not None:
            clips.append((emo, entry))
    if not clips:
        raise ValueError(f"manifest {manifest.dataset} has no clip of emotions {emotions}")
    fig, axes = plt.subplots(2, len(clips), figsize=(3.6 * len(clips), 4.2), squeeze=False)
    for k, (emo, entry) in enumerate(clips):
        wave = load_audio(root / entry.path, sample_rate, max_seconds)  # zero mean, unit variance
        t = np.arange(len(wave)) / sample_rate
        axes[0, k].plot(t, wave, lw=0.3)
        axes[0, k].set(title=f"{emo}: {Path(entry.path).name}", xlabel="s")
        axes[0, k].title.set_fontsize(7)
        f, tt, sxx = signal.spectrogram(wave, fs=sample_rate, nperseg=512, noverlap=384)
        axes[1, k].pcolormesh(tt, f, 10 * np.log10(sxx + 1e-10), shading="auto", cmap="magma")
        axes[1, k].set(ylim=(0, 4000), xlabel="s", ylabel="Hz")
    fig.suptitle("RAVDESS-convention clips after preprocessing (16 kHz, zero mean / unit variance, ≤ 5 s)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def mixing_plot(measured: dict[str, float], target: dict[str, float], n_batches: int):
    fig, ax = plt.subplots(figsize=(4.5, 3))
    x = np.arange(len(DATASETS))
    ax.bar(x - 0.2, [target[d] for d in DATASETS], width=0.4, label="paper (target)")
    ax.bar(x + 0.2, [measured[d] for d in DATASETS], width=0.4, label=f"sampler, {n_batches} batches")
    ax.set_xticks(x, DATASETS)
    ax.set(ylabel="fraction of samples", title="Batch mixing ratios")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
