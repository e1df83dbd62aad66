"""Control, measured: does the trained model move held-out faces toward the asked age and emotion, keeping
who they are? (paper "Qualitative results": age progression, emotional transitions, identity retention.)

For held-out faces (the composite's ``val`` rows with a target age and a target emotion, first
``profile.eval.n_samples`` of them) three images are read by the *frozen* judges (the age estimator, the
emotion estimator and ArcFace of ``model.encoders``):

- ``source``: the unedited face;
- ``reconstruction``: DDIM inversion to t0 then the reverse chain with c = None (the unconditioned model;
  what the edit would be without conditioning);
- ``edited``: the same inversion, reverse chain conditioned on the row's c (its caption, target age, target
  emotion, audio where the row has a clip, the face as I_ref). No per-image optimisation.

Per variant: ``age_mae`` = mean |AgeEst(I) − target age| (years, lower is better), ``emotion_accuracy`` =
fraction with argmax EmoEst(I) = target emotion, ``target_emotion_prob`` = mean softmax probability EmoEst
gives the target emotion (the reading itself, not only its argmax), ``identity_similarity`` = mean ArcFace
cosine to the source face (1 for the source itself) and, given ArcFace's verification threshold (its weight
record's threshold at a false-accept rate of 1%), ``same_identity`` = fraction of faces ArcFace still
verifies as the source's identity. Control shows as ``edited`` beating ``reconstruction`` on the first two
while identity stays high. Caveat: the judges are the networks the training loss used (as in the paper,
whose estimators both guide and evaluate), so the numbers measure control as those networks see it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cff_lib import ddim
from cff_lib.composite import CompositeSample
from cff_lib.emotions import EMOTIONS

VARIANTS = ("source", "reconstruction", "edited")
METRICS = ("age_mae", "emotion_accuracy", "target_emotion_prob", "identity_similarity", "same_identity")


def control_rows(samples: Sequence[CompositeSample], n: int | None = None) -> list[CompositeSample]:
    """The first ``n`` rows (all if None) that have a face, a target age and a target emotion."""
    rows = [s for s in samples if s.image is not None and s.target_age is not None
            and s.target_emotion is not None]
    if not rows:
        raise ValueError("no row has a face, a target age and a target emotion; nothing to measure")
    return rows[:n] if n else rows


@torch.no_grad()
def _readings(model, images: torch.Tensor, reference_id: torch.Tensor) -> dict[str, np.ndarray]:
    enc = model.encoders
    age = enc.age(images).age  # (B,) years
    probs = enc.emotion(images).logits.softmax(dim=1)  # (B, 8)
    identity = F.cosine_similarity(enc.arcface(images), reference_id, dim=-1)  # (B,)
    return {"age": age.cpu().numpy(), "emotion_probs": probs.cpu().numpy(), "identity": identity.cpu().numpy()}


@torch.no_grad()
def measure_control(model, profile, samples: Sequence[CompositeSample] | None = None, *, n: int | None = None,
                    batch_size: int | None = None, data_root=None, progress: bool = True):
    """Per-sample readings (pandas DataFrame, one row per face and variant) on held-out faces.

    ``samples`` default to the profile's composite ``val`` split; ``n`` to ``profile.eval.n_samples``.
    Use :func:`control_table` for the summary.
    """
    import pandas as pd

    from cff_lib.training import collate, dataset_for, load_composite

    if samples is None:
        samples = load_composite(profile).split("val")
    rows = control_rows(samples, n if n is not None else profile.eval.n_samples)
    dataset = dataset_for(profile, rows, data_root)
    bs = batch_size or profile.train.batch_size
    d = profile.ddim
    was = model.training
    model.eval()
    records = []
    try:
        for start in tqdm(range(0, len(rows), bs), desc="control", unit="batch", disable=not progress):
            batch = collate([dataset[i] for i in range(start, min(start + bs, len(rows)))])
            images = batch["image"].to(model.device)
            c = model.condition({**batch, "reference": images}).c  # (B, cond_dim)
            x_t0 = ddim.invert(model.unet, images, None, d.t0, d.n_inv_steps, spacing=d.spacing)  # Eq. 9
            outputs = {
                "source": images,
                "reconstruction": ddim.sample(model.unet, x_t0, None, d.t0, d.n_gen_steps, spacing=d.spacing),
                "edited": ddim.sample(model.unet, x_t0, c, d.t0, d.n_gen_steps, spacing=d.spacing),  # Eq. 30
            }
            ref_id = model.encoders.arcface(images)
            for variant, x in outputs.items():
                r = _readings(model, x.clamp(-1, 1), ref_id)
                for j in range(images.shape[0]):
                    s = rows[start + j]
                    records.append({
                        "row": start + j, "image": s.image, "variant": variant,
                        "target_age": float(s.target_age), "target_emotion": s.target_emotion,
                        "source_age": s.source_age, "source_emotion": s.source_emotion,
                        "age_est": float(r["age"][j]),
                        "emotion_est": EMOTIONS[int(r["emotion_probs"][j].argmax())],
                        "target_emotion_prob": float(r["emotion_probs"][j][EMOTIONS.index(s.target_emotion)]),
                        "identity_similarity": float(r["identity"][j]),
                    })
    finally:
        model.train(was)
    df = pd.DataFrame.from_records(records)
    df["age_error"] = (df["age_est"] - df["target_age"]).abs()
    df["emotion_correct"] = (df["emotion_est"] == df["target_emotion"]).astype(float)
    return df


def control_table(per_sample, identity_threshold: float | None = None):
    """Summary per variant: n, age_mae, emotion_accuracy, target_emotion_prob, identity_similarity (means
    over faces) and, with ``identity_threshold`` (an ArcFace cosine), same_identity (fraction at or above it)."""
    import pandas as pd

    if identity_threshold is not None and not -1.0 <= float(identity_threshold) <= 1.0:
        raise ValueError(f"identity_threshold={identity_threshold!r} must be a cosine in [-1, 1]")

    out = []
    for variant in VARIANTS:
        part = per_sample[per_sample["variant"] == variant]
        if len(part) == 0:
            continue
        out.append({"variant": variant, "n": int(len(part)), "age_mae": float(part["age_error"].mean()),
                    "emotion_accuracy": float(part["emotion_correct"].mean()),
                    "target_emotion_prob": float(part["target_emotion_prob"].mean()),
                    "identity_similarity": float(part["identity_similarity"].mean())})
        if identity_threshold is not None:
            out[-1]["same_identity"] = float((part["identity_similarity"] >= float(identity_threshold)).mean())
    return pd.DataFrame(out)


def control_bar_chart(table):
    """One panel per metric of ``table`` (age MAE ↓, emotion accuracy ↑, target-emotion probability ↑,
    identity similarity ↑, same identity ↑ when present), one bar per variant."""
    import matplotlib.pyplot as plt

    titles = {"age_mae": "|age − target| (years) ↓", "emotion_accuracy": "emotion = target ↑",
              "target_emotion_prob": "P(target emotion) ↑", "identity_similarity": "ArcFace cos to source ↑",
              "same_identity": "verified same identity ↑"}
    metrics = [m for m in METRICS if m in table.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 2.8))
    colors = {"source": "0.6", "reconstruction": "C1", "edited": "C0"}
    for ax, metric in zip(axes, metrics, strict=True):
        vals = table[metric].to_numpy()
        ax.bar(table["variant"], vals, color=[colors.get(v, "C2") for v in table["variant"]])
        for x, v in enumerate(vals):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_title(titles[metric], fontsize=9)
        ax.tick_params(labelsize=8)
        if metric != "age_mae":
            ax.set_ylim(0, 1.1)
    fig.tight_layout()
    return fig


def identity_threshold(weights_dir) -> float | None:
    """ArcFace's verification threshold (cosine at a 1% false-accept rate on clean held-out renders) from its
    weight record (``weights_dir/arcface.provenance.json``, written by notebooks/02); None where there is no
    such record (the paper world's pretrained ArcFace: choose a threshold from a verification benchmark)."""
    from pathlib import Path

    from cff_lib.weights import read_record, weight_paths

    record = weight_paths(Path(weights_dir) / "arcface.safetensors")[1]
    if not record.is_file():
        return None
    value = read_record(record).metrics.get("arcface_threshold_clean")
    if value is None:
        raise ValueError(f"{record} has no 'arcface_threshold_clean' metric; retrain ArcFace with notebooks/02")
    return float(value)
