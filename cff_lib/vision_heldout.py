"""Held-out scores of the synthetic vision backends (notebook 02; the referees are scored the same way).

Every score is measured on identities never trained on (a :class:`cff_lib.face_banks.FaceBank`):
:func:`evaluate_clip` (text->image retrieval, zero-shot emotion), :func:`evaluate_estimators` (age MAE,
emotion accuracy and confusion, valence/arousal MAE), :func:`evaluate_identity` and :func:`verification`
(TAR at FAR = 1 % and the balanced accuracy at that threshold, over all genuine and all impostor pairs),
:func:`evaluate_vgg` (the perceptual VGG's training heads and pooled features). :func:`evaluate_all` scores
every loaded model (``cff_lib.vision_models.VisionModels``) on every bank; :func:`metrics_table` and
:func:`failing_classes` are the notebook's table and its warning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cff_lib.emotions import EMOTIONS
from cff_lib.encoders import EMOTION_PROMPT
from cff_lib.face_banks import FaceBank

if TYPE_CHECKING:  # annotations only
    from cff_lib.pretrain_vision import VGGMultiTask
    from cff_lib.vision_models import VisionModels

FAR = 0.01
"""False-accept rate at which identity verification is reported."""


AGE_TOLERANCE = 5.0
"""Text->image retrieval counts an image as fitting an age in the caption within this many years."""


@dataclass(frozen=True)
class HeldoutScores:
    """Held-out metrics of one model on one bank, plus the raw arrays the notebook's figures need."""

    metrics: dict  # name -> float
    details: dict  # name -> numpy array (predictions, scores, ROC, confusion matrix)


@torch.no_grad()
def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], bank: FaceBank, chunk: int = 256) -> torch.Tensor:
    return torch.cat([fn(bank.floats(slice(i, i + chunk))) for i in range(0, len(bank), chunk)])


@torch.no_grad()
def evaluate_clip(clip, bank: FaceBank) -> HeldoutScores:
    """Text->image retrieval over the bank (every image's caption queries all images of the bank).

    ``t2i_top1``: the top image fits the caption (same emotion and gender, age within AGE_TOLERANCE);
    ``t2i_top1_chance``: the same for a random image; ``t2i_top1_exact``: the top image is the caption's own
    image; ``zero_shot_emotion_acc``: argmax over the eight ``EMOTION_PROMPT`` texts.
    """
    img = _chunked(clip.encode_image, bank)  # (N, 512)
    caps = bank.captions()
    txt = torch.cat([clip.encode_text(caps[i:i + 256]) for i in range(0, len(caps), 256)])  # (N, 512)
    sim = txt @ img.T  # (N queries, N images)
    top = sim.argmax(dim=1)
    fits = ((bank.emotion[:, None] == bank.emotion[None]) & ((bank.age[:, None] - bank.age[None]).abs()
                                                              <= AGE_TOLERANCE))
    g = torch.tensor([x == "female" for x in bank.gender])
    fits &= g[:, None] == g[None]
    prompts = clip.encode_text([EMOTION_PROMPT.format(e) for e in EMOTIONS])  # (8, 512)
    zs = (img @ prompts.T).argmax(dim=1)
    metrics = {"t2i_top1": float(fits[torch.arange(len(bank)), top].float().mean()),
               "t2i_top1_chance": float(fits.float().mean()),
               "t2i_top1_exact": float((top == torch.arange(len(bank))).float().mean()),
               "zero_shot_emotion_acc": float((zs == bank.emotion).float().mean())}
    return HeldoutScores(metrics, {"similarity": sim.numpy(), "top": top.numpy(), "captions": np.array(caps)})


@torch.no_grad()
def evaluate_estimators(age_net, emo_net, bank: FaceBank) -> HeldoutScores:
    """Age MAE (years), emotion accuracy, per-class accuracy, valence/arousal MAE and the confusion matrix."""
    ages = _chunked(lambda x: age_net(x).age, bank)
    logits = _chunked(lambda x: emo_net(x).logits, bank)
    va = _chunked(lambda x: emo_net(x).valence_arousal, bank)
    pred = logits.argmax(dim=1)
    conf = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=np.int64)
    np.add.at(conf, (bank.emotion.numpy(), pred.numpy()), 1)
    metrics = {"age_mae": float((ages - bank.age).abs().mean()),
               "emotion_accuracy": float((pred == bank.emotion).float().mean()),
               "va_mae": float((va - bank.valence_arousal()).abs().mean())}
    for k, e in enumerate(EMOTIONS):
        n = conf[k].sum()
        if n:
            metrics[f"emotion_accuracy_{e}"] = float(conf[k, k] / n)
    return HeldoutScores(metrics, {"age_true": bank.age.numpy(), "age_pred": ages.numpy(), "confusion": conf,
                                "emotion_true": bank.emotion.numpy(), "emotion_pred": pred.numpy()})


def verification(embeddings: torch.Tensor, identity: torch.Tensor, far: float = FAR) -> HeldoutScores:
    """Verification over all pairs of a bank: genuine = same identity, impostor = different identities.

    ``tar_at_far``: share of genuine pairs accepted at the threshold that accepts ``far`` of the impostors;
    ``accuracy_at_far``: balanced accuracy at that threshold, (TAR + 1 - FAR_actual) / 2; ``eer``: equal
    error rate; ``auc``: area under the ROC.
    """
    if not 0.0 < far < 1.0:
        raise ValueError(f"far={far} must lie in (0, 1)")
    emb = F.normalize(embeddings.float(), dim=-1)
    sim = emb @ emb.T
    iu = torch.triu_indices(len(emb), len(emb), offset=1)
    scores = sim[iu[0], iu[1]].numpy()
    same = (identity[iu[0]] == identity[iu[1]]).numpy()
    gen, imp = scores[same], scores[~same]
    if len(gen) == 0 or len(imp) == 0:
        raise ValueError("verification needs at least one genuine and one impostor pair")
    thr = float(np.quantile(imp, 1.0 - far, method="higher"))
    tar = float((gen > thr).mean())
    far_actual = float((imp > thr).mean())
    order = np.sort(np.unique(np.concatenate([gen, imp])))[::-1]
    tpr = np.concatenate([[0.0], np.searchsorted(np.sort(-gen), -order, side="right") / len(gen)])
    fpr = np.concatenate([[0.0], np.searchsorted(np.sort(-imp), -order, side="right") / len(imp)])
    eer_i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    metrics = {"tar_at_far": tar, "accuracy_at_far": 0.5 * (tar + 1.0 - far_actual), "threshold": thr,
               "eer": float(0.5 * (fpr[eer_i] + 1 - tpr[eer_i])), "auc": float(np.trapezoid(tpr, fpr)),
               "n_genuine": float(len(gen)), "n_impostor": float(len(imp))}
    return HeldoutScores(metrics, {"fpr": fpr, "tpr": tpr, "genuine": gen, "impostor": imp})


@torch.no_grad()
def evaluate_identity(arcface, bank: FaceBank, far: float = FAR) -> HeldoutScores:
    """ArcFace verification on a bank of held-out identities (see :func:`verification`)."""
    return verification(_chunked(arcface, bank), bank.identity, far)


@torch.no_grad()
def evaluate_vgg(net: VGGMultiTask, bank: FaceBank, far: float = FAR) -> HeldoutScores:
    """The multi-task VGG's held-out emotion accuracy and age MAE (its training heads) and the verification
    TAR of its pooled features -- evidence that the perceptual features encode faces."""
    h = _chunked(net.pooled, bank)
    age = F.softmax(net.age_head(h), dim=-1) @ net.bin_ages
    emo = net.emotion_head(h).argmax(dim=1)
    ver = verification(h, bank.identity, far)
    metrics = {"emotion_accuracy": float((emo == bank.emotion).float().mean()),
               "age_mae": float((age - bank.age).abs().mean()), "tar_at_far": ver.metrics["tar_at_far"]}
    return HeldoutScores(metrics, ver.details)


@torch.no_grad()
def evaluate_all(models: VisionModels, banks: dict[str, FaceBank]) -> dict[str, dict[str, HeldoutScores]]:
    """Every held-out evaluation: ``{"clip"|"estimators"|"arcface"|"vgg": {bank key: HeldoutScores}}``.
    The VGG row is the verification of its pooled relu3_3/relu4_3 features (its training heads are not kept)."""
    def vgg_embed(x):
        return torch.cat([m.mean(dim=(2, 3)) for m in models.vgg(x).values()], dim=1)

    out: dict[str, dict[str, HeldoutScores]] = {"clip": {}, "estimators": {}, "arcface": {}, "vgg": {}}
    for key, bank in banks.items():
        out["clip"][key] = evaluate_clip(models.clip, bank)
        out["estimators"][key] = evaluate_estimators(models.age, models.emotion, bank)
        out["arcface"][key] = evaluate_identity(models.arcface, bank)
        out["vgg"][key] = verification(_chunked(vgg_embed, bank), bank.identity)
    return out


TARGETS = {"emotion_accuracy": ">= 0.95", "age_mae": "<= 5 years", "tar_at_far": ">= 0.95",
           "accuracy_at_far": ">= 0.95"}
"""The issue's targets on clean renders (metric name -> target as text)."""


_TABLE_ROWS = (  # (model label, evaluation key, metric, shown name)
    ("CLIP", "clip", "t2i_top1", "text->image top-1 (fits caption)"),
    ("CLIP", "clip", "t2i_top1_chance", "  chance level of the above"),
    ("CLIP", "clip", "t2i_top1_exact", "text->image top-1 (own image)"),
    ("CLIP", "clip", "zero_shot_emotion_acc", "zero-shot emotion accuracy"),
    ("AgeEst", "estimators", "age_mae", "age MAE (years)"),
    ("EmoEst", "estimators", "emotion_accuracy", "emotion accuracy"),
    ("EmoEst", "estimators", "va_mae", "valence/arousal MAE"),
    ("ArcFace", "arcface", "tar_at_far", "TAR @ FAR=1%"),
    ("ArcFace", "arcface", "accuracy_at_far", "verification accuracy @ FAR=1%"),
    ("ArcFace", "arcface", "eer", "equal error rate"),
    ("VGG (pooled features)", "vgg", "tar_at_far", "TAR @ FAR=1%"),
)


def metrics_table(evals: dict[str, dict[str, HeldoutScores]], extra: dict[str, dict[str, float]] | None = None):
    """A DataFrame: model, metric, one column per bank, target. ``extra``: {model: {metric: value}} rows
    measured on another held-out set (e.g. the audio encoder's held-out speakers), in their own column."""
    import pandas as pd

    banks = list(next(iter(evals.values())))
    labels = bank_labels(banks)
    rows = []
    for label, key, metric, shown in _TABLE_ROWS:
        row = {"model": label, "metric": shown}
        row.update({name: evals[key][b].metrics.get(metric, float("nan"))
                    for b, name in zip(banks, labels, strict=True)})
        row["target (clean)"] = TARGETS.get(metric, "") if key != "vgg" else ""
        rows.append(row)
    for model, metrics in (extra or {}).items():
        for metric, value in metrics.items():
            if metric.endswith(("_clips", "_speakers", "_s")):  # counts and timings are not metrics
                continue
            rows.append({"model": model, "metric": metric, "other held-out set": float(value),
                         "target (clean)": ""})
    return pd.DataFrame(rows)


def bank_labels(banks: Sequence[str]) -> list[str]:
    names = {"clean": "clean held-out renders", "test": "ffhq+cacd test split"}
    return [names.get(b, b) for b in banks]


def failing_classes(evals: dict[str, dict[str, HeldoutScores]], bank: str = "clean", below: float = 0.95) -> dict:
    """Emotion classes whose held-out accuracy is under ``below`` (what to report if a target is missed)."""
    m = evals["estimators"][bank].metrics
    return {e: m[f"emotion_accuracy_{e}"] for e in EMOTIONS
            if f"emotion_accuracy_{e}" in m and m[f"emotion_accuracy_{e}"] < below}


__all__ = ["AGE_TOLERANCE", "FAR", "TARGETS", "HeldoutScores", "bank_labels", "evaluate_all", "evaluate_clip",
           "evaluate_estimators", "evaluate_identity", "evaluate_vgg", "failing_classes", "metrics_table",
           "verification"]
