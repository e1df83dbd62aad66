"""Synthetic-world pre-training of the unconditional face DDPM that stands in for the paper's pretrained backbone.

Paper, "Implementation details": the reverse process (Eq. 30) starts from "a DDIM model pre-trained on faces at
256 × 256" (``google/ddpm-ema-celebahq-256``, a diffusers ``UNet2DModel``; :mod:`cff_lib.conditional_unet`).
The synthetic world needs its own: this module trains ``UNet2DModel(**synthetic_unet_config(image_size))``
(~1.1 M parameters at 32²) as a plain DDPM -- the linear-β ``DDPMScheduler`` of
:func:`cff_lib.conditional_unet.paper_scheduler_config` (K = 1000), ε-prediction with an MSE loss, AdamW with
warm-up and cosine decay, and an exponential moving average of the weights (shipped, as the paper's "ema"
checkpoint is).

Training faces are rendered by :func:`cff_lib.synthetic_faces.render_face` from a dedicated seed stream: fresh
identities at random ages and expressions, never those of the profile's world. Held-out evaluation uses other
identities: fresh renders from a separate stream and, when the world and its manifests exist, the test split
of its FFHQ and CACD. The held-out metric is the ε-MSE at fixed timesteps and fixed noise (the training loss,
on images never trained on); :func:`ddpm_sample_grid` shows DDIM samples (:func:`cff_lib.ddim.generate`).

Every batch (image indices, flips, timesteps, noise) is a pure function of (seed, step), so a run is
deterministic and a run stopped at step s and resumed (``resume=True``, from the state saved every
``checkpoint_every`` steps under ``build/pretrain_state/<profile>/``) continues exactly as if uninterrupted.
Shipped (``out_dir``): ``ddpm.safetensors`` (the EMA UNet's state dict + its config) and its provenance record.

Recipes (:data:`PRESETS`). "ci" and "toy" are the first recipe above (linear β, ε); ci still ships it.
"toy_v2" is what the toy profile ships (``ddpm`` = its EMA UNet at :data:`SHIPPED_STEPS`, a copy of
``pretraining/ddpm_v2``; retrained with toy_v2 for those steps when missing). It trains a wider UNet with
v-prediction on a cosine schedule: the
linear schedule's ᾱ_999 = 4e-5 leaves signal in "pure noise" that an ε model never learns to ignore, and
f_θ = (x − √(1−ᾱ) ε)/√ᾱ multiplies its ε error by ~150 at t = 999, so the toy DDPM's samples come out as
flat saturated colours or colour casts (docs/errata.md, "Synthetic DDPM v2"). The schedule and target are
recorded in the weight file's config (``scheduler``, a ``DDPMScheduler`` config with ``prediction_type``);
:func:`load_ddpm` / :func:`cff_lib.backends.unet_from_weights` attach it to the UNet (``noise_scheduler_config``), and
:mod:`cff_lib.ddim` samples every model under its own schedule and target. Files without the key, or with the
paper's config (every file written before), load and sample exactly as before.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.atomic import atomic_path, atomic_write_text
from cff_lib.conditional_unet import (
    NOISE_SCHEDULES,
    PREDICTION_TYPES,
    attach_scheduler,
    diffusion_scheduler_config,
    paper_scheduler_config,
    prediction_type_of,
    scheduler_config_of,
    synthetic_unet_config,
    synthetic_v2_unet_config,
    tiny_unet_config,
    training_target,
)
from cff_lib.emotions import EMOTIONS
from cff_lib.pretraining import (
    check_steps,
    load_train_state,
    run_loop,
    save_train_state,
    state_path,
    warmup_then_cosine,
)
from cff_lib.provenance import REPO_ROOT
from cff_lib.weights import PretrainReport, save_weights

DDPM_NAME = "ddpm"  # weights/<...>/ddpm.safetensors
DDPM_KIND = "UNet2DModel"
STATE_NAME = "ddpm_state.safetensors"  # resumable training state, under build/pretrain_state/<profile>/
_TRAIN_STREAM, _HELDOUT_STREAM, _BATCH_STREAM, _EVAL_STREAM = 0xD0F0, 0xD0F1, 0xD0F2, 0xD0F3


UNETS = ("synthetic", "synthetic_v2", "tiny")


@dataclass(frozen=True)
class DdpmPretrainConfig:
    steps: int  # optimiser steps
    batch_size: int  # images per step
    learning_rate: float  # AdamW peak learning rate
    weight_decay: float  # AdamW weight decay
    warmup_steps: int  # linear warm-up, then cosine decay to 10 % of the peak
    grad_clip: float  # max global gradient norm
    ema_decay: float  # EMA decay (warmed up as min(decay, (1+s)/(10+s))); 0 ships the raw weights
    n_train_faces: int  # rendered training faces (fresh identities)
    n_heldout_faces: int  # rendered held-out faces (other fresh identities)
    max_world_faces: int  # cap on test-split faces read from the world's ffhq + cacd (0: skip the world)
    eval_timesteps: tuple = (50, 250, 500, 750, 950)  # timesteps of the held-out ε-MSE
    sample_steps: int = 50  # DDIM steps of the sample grid (full chain from t = 999)
    hflip: bool = True  # random horizontal flips
    checkpoint_every: int = 250  # save the resumable state every n steps (0: only at the end of a stopped run)
    unet: str = "synthetic"  # "synthetic" | "synthetic_v2" (wider, synthetic_v2_unet_config) | "tiny" (tests)
    fixed_batches: int = 0  # 0: fresh batches every step; n > 0: cycle through n fixed batches (tests)
    seed_offset: int = 0  # added to the profile's seed (independent reruns)
    schedule: str = "linear"  # ᾱ schedule: linear (the paper's) | cosine | linear_zero_snr | cosine_zero_snr
    prediction_type: str = "epsilon"  # the UNet's target: "epsilon" (ε) or "v_prediction" (v = √ᾱ ε − √(1−ᾱ) x0)
    lr_schedule: str = "cosine"  # after warm-up: "cosine" decay to 10 % at `steps`, or "constant" (open-ended)

    def __post_init__(self):
        if self.schedule not in NOISE_SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} must be one of {NOISE_SCHEDULES}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r} must be one of {PREDICTION_TYPES}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule={self.lr_schedule!r} must be 'cosine' or 'constant'")
        if self.unet not in UNETS:
            raise ValueError(f"unet={self.unet!r} must be one of {UNETS}")


PRESETS: dict[str, DdpmPretrainConfig] = {
    # ci: a smoke run (~20 s on 2 cores): the samples are noise-like blobs.
    "ci": DdpmPretrainConfig(steps=30, batch_size=16, learning_rate=1e-3, weight_decay=0.0, warmup_steps=5,
                             grad_clip=1.0, ema_decay=0.9, n_train_faces=256, n_heldout_faces=32,
                             max_world_faces=16, eval_timesteps=(100, 500, 900), sample_steps=10,
                             checkpoint_every=0),
    # toy: ~25 min on one shared CPU thread (1-2 s per step at batch 64, 32²).
    "toy": DdpmPretrainConfig(steps=1000, batch_size=64, learning_rate=1e-3, weight_decay=0.0, warmup_steps=100,
                              grad_clip=1.0, ema_decay=0.995, n_train_faces=8000, n_heldout_faces=256,
                              max_world_faces=256, sample_steps=50, checkpoint_every=200),
    # toy_v2: the recipe that replaces toy (docs/errata.md, "Synthetic DDPM v2"): v-prediction on a cosine
    # schedule (no non-zero terminal SNR to leave a colour cast), the wider synthetic_v2 UNet (3.7 M), a
    # constant learning rate after warm-up so the run is open-ended (resumed across sessions; `steps` is only
    # an upper bound), EMA 0.999. ~2.9 s per step on one CPU thread. Writes ddpm_v2, never ddpm.
    "toy_v2": DdpmPretrainConfig(steps=100_000, batch_size=64, learning_rate=5e-4, weight_decay=0.0,
                                 warmup_steps=200, grad_clip=1.0, ema_decay=0.999, n_train_faces=20_000,
                                 n_heldout_faces=256, max_world_faces=256, sample_steps=50, checkpoint_every=150,
                                 unet="synthetic_v2", schedule="cosine", prediction_type="v_prediction",
                                 lr_schedule="constant"),
}


SHIPPED_STEPS: dict[str, int] = {"toy_v2": 2400}
"""Steps of each open-ended preset's shipped weights: ``weights/synthetic/ddpm`` is the toy_v2 EMA UNet at step
2,400 (sample Fréchet distance within 2x of fresh renders: bench/results/ddpm_realism_v2_step2400.json)."""


def shipped_preset(profile) -> str:
    """The :data:`PRESETS` key whose weights a synthetic profile ships as ``ddpm``: "ci" for ci, else "toy_v2"."""
    return "ci" if profile.name == "ci" else "toy_v2"


def ddpm_config(profile, preset: str | None = None) -> DdpmPretrainConfig:
    """The frozen pre-training config of a profile: ``preset`` (a key of :data:`PRESETS`) if given, else the
    shipped one (:func:`shipped_preset`), with an open-ended preset's steps set to :data:`SHIPPED_STEPS`."""
    if profile.data.world != "synthetic":
        raise ValueError(f"profile={profile.name!r} uses the real world; its DDPM is the published "
                         "google/ddpm-ema-celebahq-256 (cff_lib.conditional_unet), not trained here")
    if preset is None:
        name = shipped_preset(profile)
        cfg = PRESETS[name]
        return dataclasses.replace(cfg, steps=SHIPPED_STEPS[name]) if name in SHIPPED_STEPS else cfg
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} must be one of {sorted(PRESETS)}")
    return PRESETS[preset]


def unet_config(profile, cfg: DdpmPretrainConfig) -> dict:
    """``UNet2DModel`` kwargs for the profile's image size."""
    size = int(profile.data.image_size)
    if cfg.unet == "tiny":
        return tiny_unet_config(size)
    if cfg.unet == "synthetic_v2":
        return synthetic_v2_unet_config(size)
    if cfg.unet != "synthetic":
        raise ValueError(f"unet={cfg.unet!r} must be one of {UNETS}")
    return synthetic_unet_config(size)


def scheduler_config(cfg: DdpmPretrainConfig) -> dict:
    """The ``DDPMScheduler`` config a run trains under (and records with its weights): the paper's linear-β,
    ε-prediction config for "linear"/"epsilon" (the ci and toy presets), else
    :func:`cff_lib.conditional_unet.diffusion_scheduler_config` (which adds ``prediction_type``)."""
    return diffusion_scheduler_config(cfg.schedule, cfg.prediction_type)


# ------------------------------------------------------------------------------------------ data
def render_faces(seed: int, stream: int, n: int, size: int, progress: bool = False) -> torch.Tensor:
    """``n`` faces of fresh identities (random gender, age, emotion, intensity, variation) as uint8
    (n, 3, size, size); a pure function of (seed, stream, n, size)."""
    from cff_lib.synthetic_faces import FaceAttributes, render_face, sample_identity

    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in tqdm(range(n), desc="rendering faces", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream, i]))
        identity = sample_identity(rng)
        e = int(rng.integers(len(EMOTIONS)))
        attrs = FaceAttributes(identity, float(rng.uniform(AGE_MIN, AGE_MAX)), EMOTIONS[e],
                               1.0 if e == 0 else float(rng.uniform(0.3, 1.0)))
        out[i] = np.asarray(render_face(attrs, size, variation_seed=int(rng.integers(0, 2**31 - 1))).convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [-1, 1]."""
    return images_u8.float() / 127.5 - 1.0


def _world_test_faces(profile, limit: int) -> torch.Tensor | None:
    """Up to ``limit`` test-split faces of the world's ffhq + cacd (uint8), spread evenly; None if absent."""
    from cff_lib.manifests import manifest_filename, read_manifest
    from cff_lib.preprocessing import load_image
    from cff_lib.world import data_root, manifest_dir

    if limit <= 0:
        return None
    entries = []
    for dataset in ("ffhq", "cacd"):
        path, root = manifest_dir(profile) / manifest_filename(dataset), data_root(profile) / dataset
        if path.is_file() and root.is_dir():
            entries += [root / e.path for e in read_manifest(path).split("test")]
    if not entries:
        return None
    pick = [entries[int(i)] for i in np.unique(np.linspace(0, len(entries) - 1, min(limit, len(entries))).round())]
    imgs = np.stack([load_image(p, int(profile.data.image_size)) for p in pick])  # float in [-1, 1]
    return torch.from_numpy(((imgs + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8))


def _seed_of(*key: int) -> int:
    """A torch seed derived from an integer key (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def _batch(bank: torch.Tensor, seed: int, step: int, cfg: DdpmPretrainConfig, n_train_timesteps: int):
    """(x0 (B, 3, H, W) in [-1, 1], t (B,), noise (B, 3, H, W)) of ``step``; a pure function of its args."""
    g = torch.Generator().manual_seed(_seed_of(seed, _BATCH_STREAM, step))
    idx = torch.randint(0, bank.shape[0], (cfg.batch_size,), generator=g)
    x0 = to_unit(bank[idx])
    if cfg.hflip:
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    t = torch.randint(0, n_train_timesteps, (cfg.batch_size,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    return x0, t, noise


# ------------------------------------------------------------------------------------------ training
def fit_ddpm(profile, cfg: DdpmPretrainConfig, *, steps: int | None = None, progress: bool = True,
             resume: bool = False, max_wall_s: float | None = None, state_file: Path | None = None,
             on_checkpoint=None):
    """Train the DDPM; returns (EMA UNet in eval mode, losses, steps done, training bank uint8).

    The UNet is trained under :func:`scheduler_config` (``cfg.schedule``) on ``cfg.prediction_type``'s target;
    the returned EMA UNet carries that config (``noise_scheduler_config``, read by :mod:`cff_lib.ddim`).
    ``on_checkpoint(ema, step, losses)``: called after each saved state (e.g. to write a snapshot of the EMA
    weights); it must not touch the RNG state or the modules' weights.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    steps = check_steps(cfg.steps if steps is None else steps)
    if max_wall_s is not None and not max_wall_s > 0:
        raise ValueError(f"max_wall_s={max_wall_s!r} must be positive or None")
    t_start = time.time()
    seed = int(profile.train.seed) + cfg.seed_offset
    scheduler = DDPMScheduler(**scheduler_config(cfg))
    k = int(scheduler.config.num_train_timesteps)
    torch.manual_seed(seed)
    unet = UNet2DModel(**unet_config(profile, cfg))
    ema = attach_scheduler(copy.deepcopy(unet).requires_grad_(False), scheduler_config(cfg))
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    bank = render_faces(seed, _TRAIN_STREAM, cfg.n_train_faces, int(profile.data.image_size), progress)
    state_file = state_file or state_path(profile, STATE_NAME)
    start, losses = 0, []
    if resume:
        restored = load_train_state(state_file, {"model": unet, "ema": ema}, opt, cfg)
        if restored is not None:
            start, losses = restored
    unet.train()

    def step_loss(step: int) -> torch.Tensor:
        x0, t, noise = _batch(bank, seed, step % cfg.fixed_batches if cfg.fixed_batches else step, cfg, k)
        x_t = scheduler.add_noise(x0, noise, t)
        return F.mse_loss(unet(x_t, t).sample, training_target(scheduler, x0, noise, t, cfg.prediction_type))

    @torch.no_grad()
    def update_ema(step: int) -> None:
        d = min(cfg.ema_decay, (1 + step) / (10 + step)) if cfg.ema_decay > 0 else 0.0
        for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
            pe.lerp_(p, 1.0 - d)

    def checkpoint(done: int, losses: list[float]) -> None:
        save_train_state(state_file, {"model": unet, "ema": ema}, opt, done, losses, cfg)
        if on_checkpoint is not None:
            with torch.random.fork_rng(devices=[]):
                on_checkpoint(ema, done, losses)
            ema.requires_grad_(False)

    losses, done = run_loop(
        opt, step_loss, steps=steps, lr=cfg.learning_rate,
        lr_factor=lambda s: warmup_then_cosine(s, steps, cfg.warmup_steps, constant=cfg.lr_schedule == "constant"),
        clip=unet.parameters(), grad_clip=cfg.grad_clip, start=start, losses=losses, after_step=update_ema,
        checkpoint=checkpoint, checkpoint_every=cfg.checkpoint_every, max_wall_s=max_wall_s, started=t_start,
        desc="ddpm", progress=progress, postfix_window=50, postfix_format=".4f")
    return ema.eval(), losses, done, bank


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def heldout_errors(unet, images_u8: torch.Tensor, timesteps, seed: int, batch: int = 64) -> dict[int, dict]:
    """Errors of ``unet`` on ``images_u8`` at each timestep under its own schedule and target (its carried
    ``noise_scheduler_config``; none: the paper's linear β, ε), with fixed noise from ``seed``:
    {t: {"eps": ε-MSE, "x0": MSE of the predicted clean image f_θ, "loss": MSE of the training target}}.
    ε and f_θ are derived from the output as the DDIM sampler derives them (v: ε = √(1−ᾱ) x_t + √ᾱ v)."""
    from diffusers import DDPMScheduler

    config = scheduler_config_of(unet) or paper_scheduler_config()
    kind = prediction_type_of(unet)
    scheduler = DDPMScheduler(**config)
    a_all = scheduler.alphas_cumprod.to(torch.float32)
    out = {}
    for t in timesteps:
        g = torch.Generator().manual_seed(_seed_of(seed, _EVAL_STREAM, int(t)))
        sa, s1 = float(a_all[int(t)] ** 0.5), float((1 - a_all[int(t)]) ** 0.5)
        total = {"eps": 0.0, "x0": 0.0, "loss": 0.0}
        for s in range(0, images_u8.shape[0], batch):
            x0 = to_unit(images_u8[s:s + batch])
            noise = torch.randn(x0.shape, generator=g)
            tt = torch.full((x0.shape[0],), int(t), dtype=torch.long)
            x_t = scheduler.add_noise(x0, noise, tt)
            pred = unet(x_t, tt).sample
            if kind == "epsilon":
                eps, x0_pred = pred, (x_t - s1 * pred) / sa if sa > 0 else torch.full_like(pred, float("nan"))
            else:
                eps, x0_pred = s1 * x_t + sa * pred, sa * x_t - s1 * pred
            target = training_target(scheduler, x0, noise, tt, kind)
            total["eps"] += float(F.mse_loss(eps, noise, reduction="sum"))
            total["x0"] += float(F.mse_loss(x0_pred, x0, reduction="sum"))
            total["loss"] += float(F.mse_loss(pred, target, reduction="sum"))
        out[int(t)] = {k: v / images_u8.numel() for k, v in total.items()}
    return out


def eps_mse(unet, images_u8: torch.Tensor, timesteps, seed: int, batch: int = 64) -> dict[int, float]:
    """ε-MSE of ``unet`` on ``images_u8`` at each timestep, with fixed noise from ``seed``: {t: mse}."""
    return {t: e["eps"] for t, e in heldout_errors(unet, images_u8, timesteps, seed, batch).items()}


def evaluate_ddpm(profile, unet, cfg: DdpmPretrainConfig, bank: torch.Tensor | None = None,
                  progress: bool = False) -> dict[str, float]:
    """Held-out ε-MSE (mean over ``eval_timesteps`` and per timestep) on fresh renders ("heldout_*") and the
    world's ffhq + cacd test split ("world_test_*"); on the first training faces too ("train_*", the gap).
    Also per set: ``*_x0_mse`` (MSE of the predicted clean image, comparable across prediction targets) and
    ``*_loss`` (the training objective: ε- or v-MSE), both means over ``eval_timesteps``."""
    seed = int(profile.train.seed) + cfg.seed_offset
    sets = {"heldout": render_faces(seed, _HELDOUT_STREAM, cfg.n_heldout_faces, int(profile.data.image_size),
                                    progress)}
    world = _world_test_faces(profile, cfg.max_world_faces)
    if world is not None:
        sets["world_test"] = world
    if bank is not None:
        sets["train"] = bank[: cfg.n_heldout_faces]
    metrics: dict[str, float] = {}
    for name, imgs in sets.items():
        errors = heldout_errors(unet, imgs, cfg.eval_timesteps, seed)
        per_t = {t: e["eps"] for t, e in errors.items()}
        metrics[f"{name}_images"] = float(imgs.shape[0])
        metrics[f"{name}_eps_mse"] = float(np.mean(list(per_t.values())))
        metrics.update({f"{name}_eps_mse_t{t}": v for t, v in per_t.items()})
        metrics[f"{name}_x0_mse"] = float(np.mean([e["x0"] for e in errors.values()]))
        metrics.update({f"{name}_x0_mse_t{t}": e["x0"] for t, e in errors.items()})
        metrics[f"{name}_loss"] = float(np.mean([e["loss"] for e in errors.values()]))
    return metrics


# ------------------------------------------------------------------------------------------ public API
def _command(profile, out_dir, preset: str | None = None, name: str = DDPM_NAME, state_file=None) -> str:
    cmd = f"python -m cff_lib.pretrain_ddpm --profile {profile.name} --out {out_dir}"
    if preset is not None:
        cmd += f" --preset {preset}"
    if name != DDPM_NAME:
        cmd += f" --name {name}"
    if state_file is not None:
        cmd += f" --state {state_file} --resume --snapshot"
    return cmd


def _jsonable_unet_config(cfg: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _record_config(profile, cfg: DdpmPretrainConfig, done: int, target: int, preset: str | None) -> dict:
    return {"architecture": _jsonable_unet_config(unet_config(profile, cfg)),
            "scheduler": scheduler_config(cfg),  # read back by load_ddpm / unet_from_weights
            "train": {**dataclasses.asdict(cfg), "steps": done, "target_steps": target,
                      "seed": int(profile.train.seed), **({"preset": preset} if preset else {})}}


def train_ddpm(profile, out_dir, *, steps: int | None = None, progress: bool = True,
               config: DdpmPretrainConfig | None = None, resume: bool = False,
               max_wall_s: float | None = None, preset: str | None = None, name: str = DDPM_NAME,
               state_file: Path | None = None, snapshot: bool = False) -> PretrainReport:
    """Train the unconditional face DDPM, evaluate it on held-out faces, write ``out_dir/<name>.safetensors``.

    ``steps``: override the config's step count (the LR schedule follows it). ``config``: override the
    profile's preset (tests). ``preset``: a :data:`PRESETS` key (default: the profile's, ``ddpm_config``).
    ``name``: the weight file's stem (``ddpm`` is the shipped backbone; ``toy_v2`` runs use ``ddpm_v2``).
    ``resume``: continue from the saved training state (``state_file``, default
    ``build/pretrain_state/<profile>/<name>_state.safetensors``) when it matches the config.
    ``max_wall_s``: stop after this many seconds, save the resumable state, and ship what was reached.
    ``snapshot``: at every saved state also write the EMA weights (``out_dir/<name>``, with its provenance
    record: held-out metrics on the fresh renders only) and ``out_dir/<name>_progress.json`` (step, wall time,
    held-out loss and x0-MSE, mean training loss), so a long run can be inspected and swapped in as it goes.
    """
    t0 = time.time()
    if config is not None and preset is not None:
        raise ValueError("pass config or preset, not both")
    cfg = config or ddpm_config(profile, preset)
    if not isinstance(cfg, DdpmPretrainConfig):
        raise ValueError(f"config must be a DdpmPretrainConfig, got {type(cfg).__name__}")
    target = cfg.steps if steps is None else steps
    state_file = Path(state_file) if state_file is not None else state_path(profile, f"{name}_state.safetensors")
    path = Path(out_dir) / name
    command = _command(profile, out_dir, preset, name, state_file if snapshot else None)
    progress_file = Path(out_dir) / f"{name}_progress.json"

    def write_snapshot(ema, done: int, losses: list[float]) -> None:
        metrics = evaluate_ddpm(profile, ema, dataclasses.replace(cfg, max_world_faces=0))
        metrics["train_loss_last100"] = float(np.mean(losses[-100:]))
        save_weights(ema, path, profile=profile, command=command, metrics=metrics,
                     config=_record_config(profile, cfg, done, target, preset), kind=DDPM_KIND)
        history = json.loads(progress_file.read_text())["history"] if progress_file.is_file() else []
        history = [h for h in history if h["step"] < done] + [{
            "step": done, "wall_s_this_process": round(time.time() - t0, 1),
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "train_loss_last100": metrics["train_loss_last100"], "heldout_loss": metrics["heldout_loss"],
            "heldout_x0_mse": metrics["heldout_x0_mse"], "heldout_eps_mse": metrics["heldout_eps_mse"]}]
        atomic_write_text(progress_file, json.dumps({"name": name, "preset": preset, "command": command,
                                                     "state_file": str(state_file), "history": history},
                                                    indent=2) + "\n")

    unet, losses, done, bank = fit_ddpm(profile, cfg, steps=steps, progress=progress, resume=resume,
                                        max_wall_s=max_wall_s, state_file=state_file,
                                        on_checkpoint=write_snapshot if snapshot else None)
    train_wall = time.time() - t0
    metrics = evaluate_ddpm(profile, unet, cfg, bank, progress=progress)
    metrics["final_train_loss"] = float(np.mean(losses[-max(1, len(losses) // 10):]))
    metrics["train_wall_s"] = train_wall
    save_weights(unet, path, profile=profile, command=command, metrics=metrics,
                 config=_record_config(profile, cfg, done, target, preset), kind=DDPM_KIND)
    if done >= target and config is None and state_file.is_file() and not snapshot:
        state_file.unlink()  # finished: the resumable state is no longer needed
    return PretrainReport(name=name, metrics=metrics, wall_s=time.time() - t0, steps=done,
                          weights=(str(path) + ".safetensors",), losses=tuple(losses))


def load_ddpm(weights_dir, name: str = DDPM_NAME):
    """The hash-checked unconditional ``UNet2DModel`` ``weights_dir/<name>`` (eval mode), carrying its
    schedule and prediction type, built by the backend factory (:func:`cff_lib.backends.create_backend`)."""
    from cff_lib.backends import create_backend

    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise FileNotFoundError(f"weights_dir={str(weights_dir)!r} is not a folder; train with "
                                "cff_lib.pretrain_ddpm.train_ddpm(profile, weights_dir)")
    return create_backend("unet", "synthetic", weights_dir / f"{name}.safetensors")  # hash-checked


SAMPLERS = ("ddim", "ddpm")


@torch.no_grad()
def ddpm_samples(unet, n: int = 16, seed: int = 2024, n_steps: int = 50, sampler: str = "ddim",
                 clip_x0: bool = False) -> torch.Tensor:
    """``n`` samples (n, 3, H, W) in [-1, 1] from pure noise, under the model's own schedule and prediction
    type (its ``noise_scheduler_config``; none: the paper's).

    ``sampler="ddim"``: the project's Eq. (30) chain (:func:`cff_lib.ddim.generate`, η = 0, full chain from
    t = 999, x0 never clipped) -- what ClipFaceFusion uses. ``"ddpm"``: diffusers' ancestral ``DDPMScheduler``
    (clips the x0 prediction to [-1, 1]) over ``n_steps`` steps; a diagnostic of what the network learned, since
    an unclipped DDIM chain from t = 999 amplifies the ε error of a briefly trained model (x0 = (x − √(1−ᾱ) ε) /
    √ᾱ with √ᾱ_999 ≈ 0.006) into saturated colours. ``clip_x0``: the DDIM chain clamps f_θ to [-1, 1] at
    every step (:func:`cff_lib.ddim.sample`).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive int")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} must be one of {SAMPLERS}")
    size = int(unet.config.sample_size)
    shape = (n, int(unet.config.in_channels), size, size)
    g = torch.Generator().manual_seed(int(seed))
    if sampler == "ddim":
        from cff_lib.ddim import generate

        x = generate(unet, None, n_steps=n_steps, shape=shape, generator=g, clip_x0=clip_x0)
    else:
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(**(scheduler_config_of(unet) or paper_scheduler_config()))
        scheduler.set_timesteps(n_steps)
        x = torch.randn(shape, generator=g)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=g).prev_sample
    return x.clamp(-1.0, 1.0)


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(n, 3, H, W) in [-1, 1] -> uint8 (rows·(H+pad)+pad, nrow·(W+pad)+pad, 3) on a white background."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (n, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    n, _, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    return grid


def ddpm_sample_grid(profile, weights_dir, n: int = 16, seed: int = 2024, *, n_steps: int | None = None,
                     sampler: str = "ddim", name: str = DDPM_NAME, clip_x0: bool = False):
    """A matplotlib Figure of ``n`` samples of the DDPM ``weights_dir/<name>`` (seed ``seed``; see
    :func:`ddpm_samples` for ``sampler`` and ``clip_x0``)."""
    import matplotlib.pyplot as plt

    unet = load_ddpm(weights_dir, name)
    n_steps = n_steps or ddpm_config(profile).sample_steps
    grid = image_grid(ddpm_samples(unet, n, seed, n_steps, sampler, clip_x0))
    fig, ax = plt.subplots(figsize=(min(8.0, 1.0 + grid.shape[1] / 40), min(8.0, 1.0 + grid.shape[0] / 40)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    how = (f"DDIM (Eq. 30, {'x0 clipped' if clip_x0 else 'unclipped'})" if sampler == "ddim"
           else "ancestral DDPM (x0 clipped)")
    kind = scheduler_config_of(unet) or paper_scheduler_config()
    what = f"{kind.get('beta_schedule')}{', zero SNR' if kind.get('rescale_betas_zero_snr') else ''}, " \
           f"{prediction_type_of(unet)}"
    ax.set_title(f"{n} samples of {name} ({what}), {n_steps} steps {how}, seed {seed} ({profile.name})",
                 fontsize=8)
    fig.tight_layout()
    return fig


def train_command(args) -> int:
    """``cff train ddpm`` (``python -m cff_lib.pretrain_ddpm``): train, write the weights, print the report,
    optionally write sample grids (``--grid``)."""
    from cff_lib.config import load_profile

    profile = load_profile(args.profile)
    out = args.out or profile.model.weights_dir
    if args.name == DDPM_NAME and args.preset not in (None, shipped_preset(profile)) and Path(out).resolve() == (
            REPO_ROOT / "weights" / "synthetic").resolve():
        raise ValueError(f"--preset {args.preset} would overwrite the shipped {out}/{DDPM_NAME}.safetensors "
                         f"(a {shipped_preset(profile)} model); pass --name (e.g. ddpm_{args.preset})")
    report = train_ddpm(profile, out, steps=args.steps, resume=args.resume, max_wall_s=args.max_wall_s,
                        preset=args.preset, name=args.name, state_file=args.state, snapshot=args.snapshot)
    print(json.dumps({"metrics": report.metrics, "wall_s": report.wall_s, "steps": report.steps,
                      "weights": report.weights, "losses_every_100": report.losses[::100]}, indent=2))
    if args.grid:
        for sampler in SAMPLERS:
            fig = ddpm_sample_grid(profile, out, sampler=sampler, n_steps=None if sampler == "ddim" else 250,
                                   name=args.name)
            path = Path(args.grid)
            path = path if sampler == "ddim" else path.with_name(f"{path.stem}_{sampler}{path.suffix}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=150)
            print("sample grid:", path)
    return 0


if __name__ == "__main__":  # the entry point its provenance records quote: the same as `cff train ddpm`
    from cff_lib.train_commands import run

    raise SystemExit(run("ddpm", train_command, prog="python -m cff_lib.pretrain_ddpm"))
