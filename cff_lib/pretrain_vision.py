"""Synthetic-world pre-training of the vision backends: CLIP, AgeEst / EmoEst, ArcFace and the perceptual VGG.

Paper sections "Input taxonomy and encoding" (CLIP ViT-B/32, Eqs. 1 and 8), "Age and emotion consistency
losses" (AgeEst, EmoEst) and "Identity preservation mechanism" (ArcFace, VGG-16 perceptual loss). The paper
uses published models; the synthetic world trains small models of the *same classes* here so that every loss
and metric built on them means something:

- :func:`train_clip`: open_clip's ``CLIP`` (small config, 512-d joint space) with open_clip's contrastive
  ``ClipLoss`` on rendered faces <-> captions ("a 25-year-old happy woman", and partial captions such as
  "a photo of a happy face", the wording ``cff_lib.encoders.EMOTION_PROMPT`` uses for f_Emo,Text);
- :func:`train_estimators`: AgeEst (DEX expected age over one-year bins; Gaussian-label cross-entropy + L1)
  and EmoEst (8-way cross-entropy + valence/arousal regression);
- :func:`train_arcface`: the IResNet ArcFace with the additive angular margin head over synthetic
  identities (each rendered at many ages and expressions);
- :func:`train_perceptual_vgg`: the VGG-16-shaped feature stack trained as a multi-task identity / age /
  emotion classifier, so that its conv3_3 / conv4_3 features respond to faces.

Training data are faces rendered on the fly with :mod:`cff_lib.synthetic_faces` (known labels, unlimited
identities, per-image background / framing / lighting variation) plus the profile's FFHQ and CACD *train*
splits (:func:`training_bank`, built from :mod:`cff_lib.face_banks`). Each trainer scores its model
(:mod:`cff_lib.vision_heldout`) on identities never trained on (:func:`heldout_banks`): freshly rendered
*clean* faces (a separate seed stream) and the manifests' *test* splits. The weight files and their loading
are :mod:`cff_lib.vision_models`, the notebook's figures :mod:`cff_lib.vision_plots`.

Each ``train_*`` is ``(profile, out_dir, *, steps=None, progress=True) -> PretrainReport``; the step counts
come from :data:`SCALES` (per profile scale), everything is seeded from ``profile.train.seed`` and runs on the
CPU; the weights are written with :func:`cff_lib.weights.save_weights` (safetensors + provenance record).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.backends import create_backend
from cff_lib.captions import caption_variant
from cff_lib.emotions import EMOTIONS
from cff_lib.encoders import EMOTION_PROMPT
from cff_lib.face_banks import FaceBank, concat_banks, dataset_bank, render_bank
from cff_lib.pretraining import check_steps, loss_curve, optimise
from cff_lib.vision_heldout import evaluate_clip, evaluate_estimators, evaluate_identity, evaluate_vgg
from cff_lib.vision_models import FILES, VisionModels, load_vision_models, missing_vision_weights, vision_weight_files
from cff_lib.weights import PretrainReport, save_weights, verified_path

_STREAM_TRAIN, _STREAM_HELDOUT = 1, 2  # seed streams of the rendered banks (never overlap)
_MODEL_CODE = {"clip": 11, "estimators": 12, "arcface": 13, "vgg": 14}  # per-model seed offsets


# ------------------------------------------------------------------------------------------ scales
@dataclass(frozen=True)
class VisionScale:
    """How much data and how many steps the vision pre-training uses at one profile scale."""

    n_identities: int  # rendered training identities
    images_per_identity: int  # rendered training images per identity (random age, emotion, variation)
    use_dataset: bool  # also train on the profile's FFHQ + CACD train splits
    batch_size: int  # images per optimiser step
    clip_steps: int  # CLIP optimiser steps
    estimator_steps: int  # AgeEst + EmoEst optimiser steps (trained side by side on the same batches)
    arcface_steps: int  # ArcFace optimiser steps
    vgg_steps: int  # perceptual VGG optimiser steps
    learning_rate: float  # peak AdamW learning rate (cosine decay after a 5% warm-up); CLIP and VGG use half
    n_heldout_identities: int  # clean held-out identities rendered for evaluation
    heldout_per_identity: int  # clean held-out images per identity


SCALES: dict[str, VisionScale] = {
    # seconds per model on 2 cores: proves the code path, numbers are not meaningful
    "ci": VisionScale(n_identities=24, images_per_identity=4, use_dataset=True, batch_size=16, clip_steps=12,
                      estimator_steps=12, arcface_steps=12, vgg_steps=12, learning_rate=1e-3,
                      n_heldout_identities=8, heldout_per_identity=4),
    # minutes per model on one CPU thread
    "toy": VisionScale(n_identities=1500, images_per_identity=8, use_dataset=True, batch_size=64,
                       clip_steps=1000, estimator_steps=1000, arcface_steps=2000, vgg_steps=1500,
                       learning_rate=1e-3, n_heldout_identities=100, heldout_per_identity=6),
}


def _profile(profile):
    from cff_lib.config import Profile, load_profile

    if isinstance(profile, str):
        return load_profile(profile)
    if not isinstance(profile, Profile):
        raise ValueError(f"profile must be a profile name or a cff_lib.config.Profile, got {type(profile).__name__}")
    return profile


def scale_for(profile) -> VisionScale:
    """The VisionScale of a synthetic profile (by name; other synthetic profiles get the ``toy`` scale)."""
    profile = _profile(profile)
    if profile.data.world != "synthetic" or profile.model.backend != "synthetic":
        raise ValueError(f"profile {profile.name!r} uses the {profile.model.backend!r} backend on "
                         f"{profile.data.world!r} data: vision pre-training is for the synthetic world only "
                         "(the paper world loads published weights)")
    return SCALES.get(profile.name, SCALES["toy"])


def with_steps(scale: VisionScale, steps: int) -> VisionScale:
    """``scale`` with every step count set to ``steps`` (tests)."""
    return replace(scale, clip_steps=steps, estimator_steps=steps, arcface_steps=steps, vgg_steps=steps)


# ------------------------------------------------------------------------------------------ the profile's face banks
_BANK_CACHE: dict[tuple, FaceBank] = {}


def training_bank(profile, *, progress: bool = False) -> FaceBank:
    """Rendered training identities (+ the FFHQ/CACD train splits): what every train_* function samples."""
    profile = _profile(profile)
    sc = scale_for(profile)
    key = ("train", profile.fingerprint(), sc)
    if key not in _BANK_CACHE:
        banks = [render_bank(profile.train.seed, _STREAM_TRAIN, sc.n_identities, sc.images_per_identity,
                             profile.data.image_size, clean=False, name="training renders", progress=progress)]
        if sc.use_dataset:
            banks.append(dataset_bank(profile, "train"))
        _BANK_CACHE.clear()
        _BANK_CACHE[key] = concat_banks(banks, "training renders + ffhq/cacd train split")
    return _BANK_CACHE[key]


def heldout_banks(profile, *, progress: bool = False) -> dict[str, FaceBank]:
    """Evaluation banks of identities never trained on: ``"clean"`` (fresh clean renders from a separate seed
    stream) and, when the scale uses the dataset, ``"test"`` (the FFHQ + CACD test splits: varied
    backgrounds, framing, JPEG)."""
    profile = _profile(profile)
    sc = scale_for(profile)
    clean = render_bank(profile.train.seed, _STREAM_HELDOUT, sc.n_heldout_identities, sc.heldout_per_identity,
                        profile.data.image_size, clean=True, name="clean held-out renders", progress=progress)
    if not sc.use_dataset:
        return {"clean": clean}
    return {"clean": clean, "test": dataset_bank(profile, "test")}


# ------------------------------------------------------------------------------------------ seeds, batches, records
def _seed_all(profile, model: str) -> np.random.Generator:
    seed = profile.train.seed + _MODEL_CODE[model]
    torch.manual_seed(seed)
    return np.random.default_rng(np.random.SeedSequence([profile.train.seed, _MODEL_CODE[model]]))


def _command(fn: str, profile) -> str:
    return (f".venv/bin/python -c \"from cff_lib.pretrain_vision import {fn}; "
            f"{fn}('{profile.name}', '{profile.model.weights_dir}')\"")


def _batch(rng: np.random.Generator, n: int, b: int) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, n, size=b))


def _summary(metrics: dict, prefix: str, bank_key: str) -> dict:
    return {f"{prefix}{k}_{bank_key}": v for k, v in metrics.items()}


def _heldout_metrics(profile, fn: Callable[[FaceBank], dict], prefix: str, progress: bool) -> dict:
    out = {}
    for key, bank in heldout_banks(profile, progress=progress).items():
        out.update(_summary(fn(bank), prefix, key))
    return out


# ------------------------------------------------------------------------------------------ CLIP
def train_clip(profile, out_dir, *, steps: int | None = None, progress: bool = True) -> PretrainReport:
    """Contrastive CLIP pre-training (open_clip CLIP + ClipLoss) on rendered faces <-> captions."""
    from open_clip.loss import ClipLoss

    t0 = time.perf_counter()
    profile, out_dir = _profile(profile), Path(out_dir)
    sc = scale_for(profile)
    steps = check_steps(steps, sc.clip_steps)
    bank = training_bank(profile, progress=progress)
    rng = _seed_all(profile, "clip")
    clip = create_backend("clip", "synthetic", image_size=profile.data.image_size).train()
    loss_fn = ClipLoss()

    def step(_: int) -> torch.Tensor:
        idx = _batch(rng, len(bank), sc.batch_size)
        texts = [caption_variant(rng, float(bank.age[i]), EMOTIONS[int(bank.emotion[i])], bank.gender[i],
                                 EMOTION_PROMPT)
                 for i in idx.tolist()]
        return loss_fn(clip.encode_image(bank.floats(idx)), clip.encode_text(texts), clip.logit_scale)

    losses = optimise(clip.parameters(), steps, sc.learning_rate * 0.5, step, "train CLIP", progress)
    clip.eval()
    metrics = _heldout_metrics(profile, lambda b: evaluate_clip(clip, b).metrics, "clip_", progress)
    cfg = {"steps": steps, "scale": sc.__dict__, "loss_curve": loss_curve(losses)}
    save_weights(clip, out_dir / FILES["clip"], profile=profile, command=_command("train_clip", profile),
                 metrics=metrics, config=cfg)
    return PretrainReport("clip", metrics, time.perf_counter() - t0, steps,
                          (str(out_dir / f"{FILES['clip']}.safetensors"),), tuple(loss_curve(losses)))


# ------------------------------------------------------------------------------------------ AgeEst, EmoEst
def _age_targets(age: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian label distributions over the one-year bins AGE_MIN..AGE_MAX (DEX-style soft targets)."""
    bins = torch.linspace(AGE_MIN, AGE_MAX, int(AGE_MAX - AGE_MIN) + 1)
    w = torch.exp(-0.5 * ((bins[None] - age[:, None]) / sigma) ** 2)
    return w / w.sum(dim=1, keepdim=True)  # (B, 84)


def train_estimators(profile, out_dir, *, steps: int | None = None, progress: bool = True,
                     adversarial_l2: float = 0.0, pgd_steps: int = 3, init_from=None) -> PretrainReport:
    """AgeEst and EmoEst, trained side by side on the same batches; writes age_estimator + emotion_estimator.

    ``adversarial_l2`` > 0: adversarial training (Madry et al.): each batch is replaced by its worst case inside
    an L2 ball of that radius per image (:func:`cff_lib.robustness.l2_pgd`, ``pgd_steps`` steps, both nets in
    eval mode while attacked), so the guides' gradients become perceptually aligned and a loss that follows
    them has to change the face (docs/errata.md, "Robust guides"). ``init_from``: a weights folder whose
    age_estimator + emotion_estimator to start from (fine-tuning) instead of random weights.
    """
    from cff_lib.robustness import l2_pgd

    t0 = time.perf_counter()
    profile, out_dir = _profile(profile), Path(out_dir)
    sc = scale_for(profile)
    steps = check_steps(steps, sc.estimator_steps)
    if not adversarial_l2 >= 0:
        raise ValueError(f"adversarial_l2={adversarial_l2!r} must be >= 0 (0: standard training)")
    bank = training_bank(profile, progress=progress)
    va = bank.valence_arousal()
    rng = _seed_all(profile, "estimators")
    start = None if init_from is None else vision_weight_files(init_from)
    age_net, emo_net = (create_backend(k, "synthetic", None if start is None else verified_path(start[k]),
                                       image_size=profile.data.image_size).unfreeze().train()
                        for k in ("age", "emotion"))

    def per_image_loss(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # (B,)
        logp = F.log_softmax(age_net.age_head(age_net.backbone(x)), dim=-1)
        pred_age = logp.exp() @ age_net.bin_ages
        age_loss = -(_age_targets(bank.age[idx]) * logp).sum(1) + 0.05 * (pred_age - bank.age[idx]).abs()
        emo = emo_net(x)
        emo_loss = (F.cross_entropy(emo.logits, bank.emotion[idx], reduction="none")
                    + ((emo.valence_arousal - va[idx]) ** 2).mean(1))
        return age_loss + emo_loss

    def step(_: int) -> torch.Tensor:
        idx = _batch(rng, len(bank), sc.batch_size)
        x = bank.floats(idx)
        if adversarial_l2 > 0:
            age_net.eval(), emo_net.eval()
            g = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
            x = l2_pgd(lambda z: per_image_loss(z, idx), x, adversarial_l2, pgd_steps, generator=g)
            age_net.train(), emo_net.train()
        return per_image_loss(x, idx).mean()

    params = list(age_net.parameters()) + list(emo_net.parameters())
    losses = optimise(params, steps, sc.learning_rate, step, "train AgeEst+EmoEst", progress)
    age_net.eval(), emo_net.eval()
    metrics = _heldout_metrics(profile, lambda b: evaluate_estimators(age_net, emo_net, b).metrics, "", progress)
    rec = {"steps": steps, "scale": sc.__dict__, "loss_curve": loss_curve(losses),
           **({"adversarial_l2": adversarial_l2, "pgd_steps": pgd_steps} if adversarial_l2 > 0 else {}),
           **({"init_from": str(init_from)} if init_from is not None else {})}
    cmd = _command("train_estimators", profile)
    if adversarial_l2 > 0 or init_from is not None:
        cmd = (f".venv/bin/python -c \"from cff_lib.pretrain_vision import train_estimators; train_estimators("
               f"'{profile.name}', '{out_dir}', steps={steps}, adversarial_l2={adversarial_l2}, "
               f"pgd_steps={pgd_steps}, init_from={str(init_from) if init_from else None!r})\"")
    age_m = {k: v for k, v in metrics.items() if k.startswith("age")}
    emo_m = {k: v for k, v in metrics.items() if k.startswith(("emotion", "va"))}
    save_weights(age_net, out_dir / FILES["age"], profile=profile, command=cmd, metrics=age_m, config=rec)
    save_weights(emo_net, out_dir / FILES["emotion"], profile=profile, command=cmd, metrics=emo_m, config=rec)
    files = tuple(str(out_dir / f"{FILES[k]}.safetensors") for k in ("age", "emotion"))
    return PretrainReport("estimators", metrics, time.perf_counter() - t0, steps, files, tuple(loss_curve(losses)))


# ------------------------------------------------------------------------------------------ ArcFace
def _multi_image_identities(bank: FaceBank) -> FaceBank:
    counts = torch.bincount(bank.identity)
    return bank.subset(counts[bank.identity] >= 2)


def train_arcface(profile, out_dir, *, steps: int | None = None, progress: bool = True) -> PretrainReport:
    """ArcFace (IResNet + additive angular margin, s = 32, m ramped 0 -> 0.5 over the first 30% of steps)
    over every training identity with at least two images."""
    from cff_lib.arcface import ArcMarginProduct

    t0 = time.perf_counter()
    profile, out_dir = _profile(profile), Path(out_dir)
    sc = scale_for(profile)
    steps = check_steps(steps, sc.arcface_steps)
    bank = _multi_image_identities(training_bank(profile, progress=progress))
    rng = _seed_all(profile, "arcface")
    arc = create_backend("arcface", "synthetic", image_size=profile.data.image_size).unfreeze().train()
    head = ArcMarginProduct(512, bank.n_identities, s=32.0, m=0.5)

    def step(s: int) -> torch.Tensor:
        head.m = 0.5 * min(1.0, s / max(1.0, 0.3 * steps))
        idx = _batch(rng, len(bank), sc.batch_size)
        emb = arc.backbone(arc.preprocess(bank.floats(idx)))
        return F.cross_entropy(head(emb, bank.identity[idx]), bank.identity[idx])

    losses = optimise(list(arc.parameters()) + list(head.parameters()), steps, sc.learning_rate, step,
                       "train ArcFace", progress)
    arc.eval()
    metrics = _heldout_metrics(profile, lambda b: evaluate_identity(arc, b).metrics, "arcface_", progress)
    cfg = {"steps": steps, "scale": sc.__dict__, "loss_curve": loss_curve(losses), "margin_s": 32.0,
           "margin_m": 0.5, "n_identities": bank.n_identities}
    save_weights(arc, out_dir / FILES["arcface"], profile=profile, command=_command("train_arcface", profile),
                 metrics=metrics, config=cfg)
    return PretrainReport("arcface", metrics, time.perf_counter() - t0, steps,
                          (str(out_dir / f"{FILES['arcface']}.safetensors"),), tuple(loss_curve(losses)))


# ------------------------------------------------------------------------------------------ perceptual VGG
class VGGMultiTask(nn.Module):
    """Training wrapper: pooled relu3_3 + relu4_3 features -> identity / age-bin / emotion logits."""

    def __init__(self, vgg, n_identities: int):
        super().__init__()
        self.vgg = vgg  # PerceptualVGG (the part that is saved)
        c = sum(vgg.channels.values())
        n_bins = int(AGE_MAX - AGE_MIN) + 1
        self.identity_head = nn.Linear(c, n_identities)  # training identities
        self.age_head = nn.Linear(c, n_bins)  # one-year age bins 16..99
        self.emotion_head = nn.Linear(c, len(EMOTIONS))  # RAVDESS categories
        self.register_buffer("bin_ages", torch.linspace(AGE_MIN, AGE_MAX, n_bins), persistent=False)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.vgg(images)
        return torch.cat([m.mean(dim=(2, 3)) for m in maps.values()], dim=1)  # (B, C3 + C4)

    def forward(self, images: torch.Tensor):
        h = self.pooled(images)
        return self.identity_head(h), self.age_head(h), self.emotion_head(h)


def _init_vgg(vgg) -> None:
    """torchvision's VGG initialisation (Kaiming normal, fan-out, zero bias): ``make_layers`` alone keeps
    PyTorch's default conv init, under which a BatchNorm-free 10-conv stack barely trains from scratch."""
    for m in vgg.features:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def train_perceptual_vgg(profile, out_dir, *, steps: int | None = None, progress: bool = True) -> PretrainReport:
    """The VGG-16-shaped perceptual network (width/4) trained as a multi-task identity / age / emotion
    classifier; only the feature stack (what the perceptual loss reads) is saved."""
    t0 = time.perf_counter()
    profile, out_dir = _profile(profile), Path(out_dir)
    sc = scale_for(profile)
    steps = check_steps(steps, sc.vgg_steps)
    bank = training_bank(profile, progress=progress)
    rng = _seed_all(profile, "vgg")
    net = VGGMultiTask(create_backend("vgg", "synthetic"), bank.n_identities).train()
    _init_vgg(net.vgg)

    def step(_: int) -> torch.Tensor:
        idx = _batch(rng, len(bank), sc.batch_size)
        ident, age, emo = net(bank.floats(idx))
        age_loss = -(_age_targets(bank.age[idx]) * F.log_softmax(age, dim=-1)).sum(1).mean()
        return (F.cross_entropy(ident, bank.identity[idx]) + age_loss
                + F.cross_entropy(emo, bank.emotion[idx]))

    losses = optimise(net.parameters(), steps, sc.learning_rate * 0.5, step, "train perceptual VGG", progress)
    net.eval()
    metrics = _heldout_metrics(profile, lambda b: evaluate_vgg(net, b).metrics, "vgg_", progress)
    cfg = {"steps": steps, "scale": sc.__dict__, "loss_curve": loss_curve(losses),
           "tasks": "identity CE + age-bin CE (Gaussian labels) + emotion CE on pooled relu3_3/relu4_3"}
    save_weights(net.vgg, out_dir / FILES["vgg"], profile=profile,
                 command=_command("train_perceptual_vgg", profile), metrics=metrics, config=cfg)
    return PretrainReport("vgg", metrics, time.perf_counter() - t0, steps,
                          (str(out_dir / f"{FILES['vgg']}.safetensors"),), tuple(loss_curve(losses)))


# ------------------------------------------------------------------------------------------ all of them
TRAINERS: dict[str, Callable[..., PretrainReport]] = {
    "clip": train_clip, "estimators": train_estimators, "arcface": train_arcface, "vgg": train_perceptual_vgg,
}
"""Report name -> trainer, in training order."""


def train_all(profile, out_dir, *, progress: bool = True,
              steps: dict[str, int] | None = None) -> dict[str, PretrainReport]:
    """Run every vision trainer (``steps`` may override some, by TRAINERS key)."""
    steps = dict(steps or {})
    unknown = set(steps) - set(TRAINERS)
    if unknown:
        raise ValueError(f"steps has unknown keys {sorted(unknown)}; expected some of {list(TRAINERS)}")
    return {k: fn(profile, out_dir, steps=steps.get(k), progress=progress) for k, fn in TRAINERS.items()}


def ensure_vision_models(profile, out_dir, *, retrain: bool = False, progress: bool = True
                         ) -> tuple[VisionModels, dict[str, PretrainReport]]:
    """Train (and write with provenance) when ``retrain`` or any weight file is missing; then verify every
    file's sha256 and load. Returns the models and the training reports (empty when nothing was trained)."""
    reports = train_all(profile, out_dir, progress=progress) if retrain or missing_vision_weights(out_dir) else {}
    from cff_lib.weights import verify_weights

    problems = verify_weights(out_dir, expected=tuple(FILES.values()))
    if problems:
        raise ValueError("weight files do not match their provenance records:\n" + "\n".join(problems))
    return load_vision_models(out_dir), reports


def train_command(args) -> int:
    """``cff train vision``: train the four vision backends (or ``--only`` some, in training order) into
    ``--out`` (default: the profile's weights folder) and print their reports."""
    import json

    profile = _profile(args.profile)
    out = args.out or profile.model.weights_dir
    names = [k for k in TRAINERS if args.only is None or k in args.only]
    reports = {k: TRAINERS[k](profile, out, steps=args.steps) for k in names}
    print(json.dumps({k: {"metrics": r.metrics, "wall_s": r.wall_s, "steps": r.steps, "weights": r.weights}
                      for k, r in reports.items()}, indent=2))
    return 0

