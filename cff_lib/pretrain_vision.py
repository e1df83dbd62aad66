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
splits. Evaluation (:func:`evaluate_clip`, :func:`evaluate_estimators`, :func:`evaluate_identity`) uses
identities never trained on: freshly rendered *clean* faces (a separate seed stream) and the manifests'
*test* splits. Identity verification is reported as TAR at FAR = 1% and the balanced accuracy at that
threshold, over all genuine and all impostor pairs.

Each ``train_*`` is ``(profile, out_dir, *, steps=None, progress=True) -> PretrainReport``; the step counts
come from :data:`SCALES` (per profile scale), everything is seeded from ``profile.train.seed`` and runs on the
CPU; the weights are written with :func:`cff_lib.weights.save_weights` (safetensors + provenance record).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.arcface import synthetic_arcface_config
from cff_lib.captions import caption_from_attributes, caption_variant
from cff_lib.clip_encoder import synthetic_clip_config
from cff_lib.emotions import EMOTIONS, valence_arousal
from cff_lib.encoders import EMOTION_PROMPT
from cff_lib.estimators import synthetic_estimator_config
from cff_lib.weights import PretrainReport, save_weights, verified_path

FILES = {"clip": "clip", "age": "age_estimator", "emotion": "emotion_estimator", "arcface": "arcface",
         "vgg": "vgg"}
"""create_encoders weight key -> file stem in the weights folder (``<stem>.safetensors``)."""
FAR = 0.01
"""False-accept rate at which identity verification is reported."""
AGE_TOLERANCE = 5.0
"""Text->image retrieval counts an image as fitting an age in the caption within this many years."""
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


# ------------------------------------------------------------------------------------------ architectures
# ------------------------------------------------------------------------------------------ face banks
@dataclass(frozen=True)
class FaceBank:
    """Labelled face images held in memory (uint8 to keep them small)."""

    images: torch.Tensor  # (N, 3, S, S) uint8 RGB
    identity: torch.Tensor  # (N,) int64, contiguous identity ids 0..n_identities-1
    age: torch.Tensor  # (N,) float32 years
    emotion: torch.Tensor  # (N,) int64 index into cff_lib.emotions.EMOTIONS
    intensity: torch.Tensor  # (N,) float32 expression strength in [0, 1]
    gender: tuple  # (N,) "female" / "male"
    name: str  # what the bank holds, for tables ("clean held-out renders", ...)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_identities(self) -> int:
        return int(self.identity.max()) + 1 if len(self) else 0

    def floats(self, idx: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        """Images ``idx`` as float (B, 3, S, S) in [-1, 1]."""
        return self.images[idx].float() / 127.5 - 1.0

    def captions(self, idx: Sequence[int] | None = None) -> list[str]:
        ids = range(len(self)) if idx is None else idx
        return [caption_from_attributes(float(self.age[i]), EMOTIONS[int(self.emotion[i])], self.gender[i])
                for i in ids]

    def valence_arousal(self) -> torch.Tensor:
        """(N, 2) ground-truth valence / arousal."""
        return torch.tensor([valence_arousal(EMOTIONS[int(e)], float(k))
                             for e, k in zip(self.emotion, self.intensity, strict=True)], dtype=torch.float32)

    def subset(self, mask: torch.Tensor) -> FaceBank:
        keep = torch.nonzero(mask).flatten()
        _, ident = torch.unique(self.identity[keep], return_inverse=True)
        return FaceBank(self.images[keep], ident, self.age[keep], self.emotion[keep], self.intensity[keep],
                        tuple(self.gender[i] for i in keep.tolist()), self.name)


def _to_uint8(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, S, S)


def render_bank(seed: int, stream: int, n_identities: int, per_identity: int, size: int, *, clean: bool,
                name: str = "", progress: bool = False) -> FaceBank:
    """``n_identities`` fresh identities x ``per_identity`` renders each (random age 16-99, emotion and
    intensity; ``clean``: plain render, else per-image variation). Identity i of a stream is always the same."""
    from cff_lib.synthetic_faces import FaceAttributes, render_face, sample_identity

    if n_identities < 1 or per_identity < 1:
        raise ValueError(f"n_identities={n_identities} and per_identity={per_identity} must be >= 1")
    imgs, ident, ages, emos, ints, genders = [], [], [], [], [], []
    for i in tqdm(range(n_identities), desc=f"render {name or 'faces'}", disable=not progress, leave=False):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED, stream, i]))
        who = sample_identity(rng)
        for _ in range(per_identity):
            age = round(float(rng.uniform(AGE_MIN, AGE_MAX)), 1)
            e = int(rng.integers(len(EMOTIONS)))
            k = 1.0 if e == 0 else round(float(rng.uniform(0.3, 1.0)), 2)
            var = None if clean else int(rng.integers(0, 2**31 - 1))
            img = render_face(FaceAttributes(who, age, EMOTIONS[e], k), size, variation_seed=var)
            imgs.append(_to_uint8(img))
            ident.append(i), ages.append(age), emos.append(e), ints.append(k), genders.append(who.gender)
    return FaceBank(torch.stack(imgs), torch.tensor(ident), torch.tensor(ages, dtype=torch.float32),
                    torch.tensor(emos), torch.tensor(ints, dtype=torch.float32), tuple(genders),
                    name or ("clean renders" if clean else "renders"))


def dataset_bank(profile, split: str, datasets: Sequence[str] = ("ffhq", "cacd")) -> FaceBank:
    """The FFHQ / CACD images of one manifest split (labels from the manifests' ground-truth columns)."""
    from cff_lib.manifests import manifest_filename, read_manifest
    from cff_lib.preprocessing import load_image
    from cff_lib.world import data_root, manifest_dir

    profile = _profile(profile)
    size, root = profile.data.image_size, data_root(profile)
    imgs, names, ages, emos, ints, genders = [], [], [], [], [], []
    for ds in datasets:
        path = manifest_dir(profile) / manifest_filename(ds)
        if not path.is_file():
            raise FileNotFoundError(f"manifest {path} is missing; run notebooks/01_data_assembly "
                                    f"(cff reproduce --profile {profile.name} --only 01) first")
        for e in read_manifest(path).split(split):
            arr = load_image(root / ds / e.path, size)  # (3, S, S) in [-1, 1]
            imgs.append(torch.from_numpy(np.rint((arr + 1.0) * 127.5).clip(0, 255).astype(np.uint8)))
            names.append(f"{ds}:{e.label('identity')}")
            ages.append(float(e.label("age")))
            emos.append(EMOTIONS.index(e.label("emotion")))
            ints.append(float(e.label("intensity")))
            genders.append(e.label("gender"))
    if not imgs:
        raise ValueError(f"profile {profile.name!r}: split {split!r} of {list(datasets)} holds no images")
    _, ident = np.unique(np.array(names), return_inverse=True)
    return FaceBank(torch.stack(imgs), torch.from_numpy(ident.astype(np.int64)),
                    torch.tensor(ages, dtype=torch.float32), torch.tensor(emos),
                    torch.tensor(ints, dtype=torch.float32), tuple(genders), f"{'+'.join(datasets)} {split} split")


def concat_banks(banks: Sequence[FaceBank], name: str) -> FaceBank:
    """One bank from several; identity ids are offset so that banks never share an identity."""
    offset, ids = 0, []
    for b in banks:
        ids.append(b.identity + offset)
        offset += b.n_identities
    return FaceBank(torch.cat([b.images for b in banks]), torch.cat(ids), torch.cat([b.age for b in banks]),
                    torch.cat([b.emotion for b in banks]), torch.cat([b.intensity for b in banks]),
                    tuple(g for b in banks for g in b.gender), name)


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


# ------------------------------------------------------------------------------------------ training plumbing
def _seed_all(profile, model: str) -> np.random.Generator:
    seed = profile.train.seed + _MODEL_CODE[model]
    torch.manual_seed(seed)
    return np.random.default_rng(np.random.SeedSequence([profile.train.seed, _MODEL_CODE[model]]))


def _check_steps(steps: int | None, default: int) -> int:
    if steps is None:
        return default
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer (or None for the profile's default)")
    return steps


def optimise(params, steps: int, lr: float, step_fn: Callable[[int], torch.Tensor], desc: str,
             progress: bool, *, weight_decay: float = 1e-4, grad_clip: float | None = 5.0) -> list[float]:
    """AdamW with a 5% linear warm-up and cosine decay; ``grad_clip`` None: no clipping. Returns the loss of
    every step. The one optimiser loop of the vision pre-training and of ``cff_lib.referees``."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        loss = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


def loss_curve(losses: Sequence[float], points: int = 100) -> list[float]:
    """The loss averaged over ``points`` equal chunks of steps (what records and plots keep)."""
    if not losses:
        return []
    chunks = np.array_split(np.asarray(losses, dtype=np.float64), min(points, len(losses)))
    return [round(float(c.mean()), 5) for c in chunks]


def _command(fn: str, profile) -> str:
    return (f".venv/bin/python -c \"from cff_lib.pretrain_vision import {fn}; "
            f"{fn}('{profile.name}', '{profile.model.weights_dir}')\"")


def _batch(rng: np.random.Generator, n: int, b: int) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, n, size=b))


def _summary(metrics: dict, prefix: str, bank_key: str) -> dict:
    return {f"{prefix}{k}_{bank_key}": v for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------ CLIP
def train_clip(profile, out_dir, *, steps: int | None = None, progress: bool = True) -> PretrainReport:
    """Contrastive CLIP pre-training (open_clip CLIP + ClipLoss) on rendered faces <-> captions."""
    from open_clip.loss import ClipLoss

    from cff_lib.clip_encoder import build_synthetic_clip

    t0 = time.perf_counter()
    profile, out_dir = _profile(profile), Path(out_dir)
    sc = scale_for(profile)
    steps = _check_steps(steps, sc.clip_steps)
    bank = training_bank(profile, progress=progress)
    rng = _seed_all(profile, "clip")
    clip = build_synthetic_clip(synthetic_clip_config(profile.data.image_size)).train()
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
    from cff_lib.estimators import AgeEstimator, EmotionEstimator, create_age_estimator, create_emotion_estimator
    from cff_lib.robustness import l2_pgd

    t0 = time.perf_counter()
    profile, out_dir = _profile(profile), Path(out_dir)
    sc = scale_for(profile)
    steps = _check_steps(steps, sc.estimator_steps)
    if not adversarial_l2 >= 0:
        raise ValueError(f"adversarial_l2={adversarial_l2!r} must be >= 0 (0: standard training)")
    bank = training_bank(profile, progress=progress)
    va = bank.valence_arousal()
    rng = _seed_all(profile, "estimators")
    cfg = synthetic_estimator_config(profile.data.image_size)
    if init_from is None:
        age_net, emo_net = AgeEstimator(cfg).train(), EmotionEstimator(cfg).train()
    else:
        start = vision_weight_files(init_from)
        age_net = create_age_estimator("synthetic", verified_path(start["age"])).unfreeze().train()
        emo_net = create_emotion_estimator("synthetic", verified_path(start["emotion"])).unfreeze().train()

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
    from cff_lib.arcface import ArcFace, ArcMarginProduct, IResNet

    t0 = time.perf_counter()
    profile, out_dir = _profile(profile), Path(out_dir)
    sc = scale_for(profile)
    steps = _check_steps(steps, sc.arcface_steps)
    bank = _multi_image_identities(training_bank(profile, progress=progress))
    rng = _seed_all(profile, "arcface")
    arc = ArcFace(IResNet(synthetic_arcface_config(profile.data.image_size))).unfreeze().train()
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
    from cff_lib.vgg_perceptual import PerceptualVGG, VGGConfig

    t0 = time.perf_counter()
    profile, out_dir = _profile(profile), Path(out_dir)
    sc = scale_for(profile)
    steps = _check_steps(steps, sc.vgg_steps)
    bank = training_bank(profile, progress=progress)
    rng = _seed_all(profile, "vgg")
    net = VGGMultiTask(PerceptualVGG(VGGConfig(width_divisor=4)), bank.n_identities).train()
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


# ------------------------------------------------------------------------------------------ evaluation
@dataclass(frozen=True)
class HeldoutScores:
    """Held-out metrics of one model on one bank, plus the raw arrays the notebook's figures need."""

    metrics: dict  # name -> float
    details: dict  # name -> numpy array (predictions, scores, ROC, confusion matrix)


def _heldout_metrics(profile, fn: Callable[[FaceBank], dict], prefix: str, progress: bool) -> dict:
    out = {}
    for key, bank in heldout_banks(profile, progress=progress).items():
        out.update(_summary(fn(bank), prefix, key))
    return out


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


# ------------------------------------------------------------------------------------------ loading
@dataclass(frozen=True)
class VisionModels:
    """The trained synthetic vision backends, hash-checked and frozen."""

    clip: object  # cff_lib.clip_encoder.ClipEncoder
    age: object  # cff_lib.estimators.AgeEstimator
    emotion: object  # cff_lib.estimators.EmotionEstimator
    arcface: object  # cff_lib.arcface.ArcFace
    vgg: object  # cff_lib.vgg_perceptual.PerceptualVGG


def vision_weight_files(out_dir) -> dict[str, Path]:
    """create_encoders weight key -> safetensors path in ``out_dir``."""
    return {k: Path(out_dir) / f"{stem}.safetensors" for k, stem in FILES.items()}


def missing_vision_weights(out_dir) -> list[str]:
    """Keys of FILES whose safetensors or provenance record is absent from ``out_dir``."""
    from cff_lib.weights import weight_paths as _pair

    return [k for k, p in vision_weight_files(out_dir).items() if not all(q.is_file() for q in _pair(p))]


def load_vision_models(out_dir) -> VisionModels:
    """Verify every file's sha256 against its provenance record, then build each model with its factory."""
    from cff_lib.arcface import create_arcface
    from cff_lib.clip_encoder import create_clip
    from cff_lib.estimators import create_age_estimator, create_emotion_estimator
    from cff_lib.vgg_perceptual import create_vgg

    p = {k: verified_path(v) for k, v in vision_weight_files(out_dir).items()}
    models = VisionModels(create_clip("synthetic", p["clip"]), create_age_estimator("synthetic", p["age"]),
                          create_emotion_estimator("synthetic", p["emotion"]),
                          create_arcface("synthetic", p["arcface"]), create_vgg("synthetic", p["vgg"]))
    for m in (models.clip, models.age, models.emotion, models.arcface, models.vgg):
        m.freeze()
    return models


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


def recorded_loss_curves(out_dir) -> dict[str, list[float]]:
    """Training-loss curves stored in the provenance records (available without retraining)."""
    from cff_lib.weights import read_record

    names = {"clip": "clip", "estimators": "age", "arcface": "arcface", "vgg": "vgg"}
    files = vision_weight_files(out_dir)
    return {k: list(read_record(files[v]).config.get("loss_curve", [])) for k, v in names.items()}


def with_steps(scale: VisionScale, steps: int) -> VisionScale:
    """``scale`` with every step count set to ``steps`` (tests)."""
    return replace(scale, clip_steps=steps, estimator_steps=steps, arcface_steps=steps, vgg_steps=steps)


# ------------------------------------------------------------------------------------------ notebook helpers
TARGETS = {"emotion_accuracy": ">= 0.95", "age_mae": "<= 5 years", "tar_at_far": ">= 0.95",
           "accuracy_at_far": ">= 0.95"}
"""The issue's targets on clean renders (metric name -> target as text)."""


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
    labels = _bank_labels(banks)
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


def _bank_labels(banks: Sequence[str]) -> list[str]:
    names = {"clean": "clean held-out renders", "test": "ffhq+cacd test split"}
    return [names.get(b, b) for b in banks]


def failing_classes(evals: dict[str, dict[str, HeldoutScores]], bank: str = "clean", below: float = 0.95) -> dict:
    """Emotion classes whose held-out accuracy is under ``below`` (what to report if a target is missed)."""
    m = evals["estimators"][bank].metrics
    return {e: m[f"emotion_accuracy_{e}"] for e in EMOTIONS
            if f"emotion_accuracy_{e}" in m and m[f"emotion_accuracy_{e}"] < below}


# ------------------------------------------------------------------------------------------ figures
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
    for ax, b, label in zip(axes[0], banks, _bank_labels(banks), strict=True):
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
    for ax, b, label in zip(axes[0], banks, _bank_labels(banks), strict=True):
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
        for b, label in zip(banks, _bank_labels(banks), strict=True):
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
