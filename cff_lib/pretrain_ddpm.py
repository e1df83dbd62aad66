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
from torch import nn
from tqdm.auto import tqdm

from cff_lib.atomic import atomic_path
from cff_lib.conditional_unet import paper_scheduler_config, synthetic_unet_config, tiny_unet_config
from cff_lib.emotions import EMOTIONS
from cff_lib.provenance import REPO_ROOT
from cff_lib.weights import PretrainReport, load_verified, save_weights

DDPM_NAME = "ddpm"  # weights/<...>/ddpm.safetensors
DDPM_KIND = "UNet2DModel"
STATE_NAME = "ddpm_state.safetensors"  # resumable training state, under build/pretrain_state/<profile>/
_TRAIN_STREAM, _HELDOUT_STREAM, _BATCH_STREAM, _EVAL_STREAM = 0xD0F0, 0xD0F1, 0xD0F2, 0xD0F3


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
    unet: str = "synthetic"  # "synthetic" (synthetic_unet_config) or "tiny" (tiny_unet_config, tests)
    fixed_batches: int = 0  # 0: fresh batches every step; n > 0: cycle through n fixed batches (tests)
    seed_offset: int = 0  # added to the profile's seed (independent reruns)


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
}


def ddpm_config(profile) -> DdpmPretrainConfig:
    """The frozen pre-training config of a profile: "ci" for the ci profile, "toy" for every other synthetic one."""
    if profile.data.world != "synthetic":
        raise ValueError(f"profile={profile.name!r} uses the real world; its DDPM is the published "
                         "google/ddpm-ema-celebahq-256 (cff_lib.conditional_unet), not trained here")
    return PRESETS["ci" if profile.name == "ci" else "toy"]


def unet_config(profile, cfg: DdpmPretrainConfig) -> dict:
    """``UNet2DModel`` kwargs for the profile's image size."""
    size = int(profile.data.image_size)
    if cfg.unet == "tiny":
        return tiny_unet_config(size)
    if cfg.unet != "synthetic":
        raise ValueError(f"unet={cfg.unet!r} must be 'synthetic' or 'tiny'")
    return synthetic_unet_config(size)


# ------------------------------------------------------------------------------------------ data
def render_faces(seed: int, stream: int, n: int, size: int, progress: bool = False) -> torch.Tensor:
    """``n`` faces of fresh identities (random gender, age, emotion, intensity, variation) as uint8
    (n, 3, size, size); a pure function of (seed, stream, n, size)."""
    from cff_lib.synthetic_faces import MAX_AGE, MIN_AGE, FaceAttributes, render_face, sample_identity

    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in tqdm(range(n), desc="rendering faces", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream, i]))
        identity = sample_identity(rng)
        e = int(rng.integers(len(EMOTIONS)))
        attrs = FaceAttributes(identity, float(rng.uniform(MIN_AGE, MAX_AGE)), EMOTIONS[e],
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


def _lr_factor(step: int, cfg: DdpmPretrainConfig, steps: int) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


# ------------------------------------------------------------------------------------------ training state
def state_path(profile, name: str = STATE_NAME) -> Path:
    """Where a stopped run of ``profile`` keeps its resumable state (scratch, under build/)."""
    return REPO_ROOT / "build" / "pretrain_state" / profile.name / name


def save_train_state(path: Path, modules: dict[str, nn.Module], opt, step: int, losses: list[float],
                     cfg) -> None:
    """Write a resumable training state (module weights, AdamW state, step, losses, config) as safetensors."""
    from safetensors.torch import save_file

    tensors = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for name, v in st.items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()  # dropout draws continue exactly where they stopped
    meta = {"step": str(step), "losses": json.dumps(losses), "param_groups": json.dumps(sd["param_groups"]),
            "config": json.dumps(dataclasses.asdict(cfg))}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)


def load_train_state(path: Path, modules: dict[str, nn.Module], opt, cfg) -> tuple[int, list[float]] | None:
    """Restore a state written by :func:`save_train_state` into ``modules`` and ``opt``; returns (step, losses),
    or None (nothing changed) when the file is absent or was written under another config (``steps`` aside)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    saved = json.loads(meta.get("config", "{}"))
    mine = json.loads(json.dumps(dataclasses.asdict(cfg)))
    if {k: v for k, v in saved.items() if k != "steps"} != {k: v for k, v in mine.items() if k != "steps"}:
        return None
    tensors = load_file(str(path))
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")},
                          strict=True)
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), json.loads(meta["losses"])


# ------------------------------------------------------------------------------------------ training
def fit_ddpm(profile, cfg: DdpmPretrainConfig, *, steps: int | None = None, progress: bool = True,
             resume: bool = False, max_wall_s: float | None = None, state_file: Path | None = None):
    """Train the DDPM; returns (EMA UNet in eval mode, losses, steps done, training bank uint8)."""
    from diffusers import DDPMScheduler, UNet2DModel

    steps = cfg.steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive int")
    if max_wall_s is not None and not max_wall_s > 0:
        raise ValueError(f"max_wall_s={max_wall_s!r} must be positive or None")
    t_start = time.time()
    seed = int(profile.train.seed) + cfg.seed_offset
    scheduler = DDPMScheduler(**paper_scheduler_config())
    k = int(scheduler.config.num_train_timesteps)
    torch.manual_seed(seed)
    unet = UNet2DModel(**unet_config(profile, cfg))
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    bank = render_faces(seed, _TRAIN_STREAM, cfg.n_train_faces, int(profile.data.image_size), progress)
    state_file = state_file or state_path(profile)
    start, losses = 0, []
    if resume:
        restored = load_train_state(state_file, {"model": unet, "ema": ema}, opt, cfg)
        if restored is not None:
            start, losses = restored
    unet.train()
    bar = tqdm(range(start, steps), desc="ddpm", disable=not progress, initial=start, total=steps)
    done = start
    for step in bar:
        x0, t, noise = _batch(bank, seed, step % cfg.fixed_batches if cfg.fixed_batches else step, cfg, k)
        for g in opt.param_groups:
            g["lr"] = cfg.learning_rate * _lr_factor(step, cfg, steps)
        x_t = scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(unet(x_t, t).sample, noise)  # ε-prediction
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step)) if cfg.ema_decay > 0 else 0.0
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1.0 - d)
        losses.append(float(loss.detach()))
        done = step + 1
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        out_of_time = max_wall_s is not None and time.time() - t_start > max_wall_s
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < steps) or (
                out_of_time and done < steps):
            save_train_state(state_file, {"model": unet, "ema": ema}, opt, done, losses, cfg)
        if out_of_time:
            break
    return ema.eval(), losses, done, bank


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def eps_mse(unet, images_u8: torch.Tensor, timesteps, seed: int, batch: int = 64) -> dict[int, float]:
    """ε-MSE of ``unet`` on ``images_u8`` at each timestep, with fixed noise from ``seed``: {t: mse}."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**paper_scheduler_config())
    out = {}
    for t in timesteps:
        g = torch.Generator().manual_seed(_seed_of(seed, _EVAL_STREAM, int(t)))
        total = 0.0
        for s in range(0, images_u8.shape[0], batch):
            x0 = to_unit(images_u8[s:s + batch])
            noise = torch.randn(x0.shape, generator=g)
            tt = torch.full((x0.shape[0],), int(t), dtype=torch.long)
            pred = unet(scheduler.add_noise(x0, noise, tt), tt).sample
            total += float(F.mse_loss(pred, noise, reduction="sum"))
        out[int(t)] = total / images_u8.numel()
    return out


def evaluate_ddpm(profile, unet, cfg: DdpmPretrainConfig, bank: torch.Tensor | None = None,
                  progress: bool = False) -> dict[str, float]:
    """Held-out ε-MSE (mean over ``eval_timesteps`` and per timestep) on fresh renders ("heldout_*") and the
    world's ffhq + cacd test split ("world_test_*"); on the first training faces too ("train_*", the gap)."""
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
        per_t = eps_mse(unet, imgs, cfg.eval_timesteps, seed)
        metrics[f"{name}_images"] = float(imgs.shape[0])
        metrics[f"{name}_eps_mse"] = float(np.mean(list(per_t.values())))
        metrics.update({f"{name}_eps_mse_t{t}": v for t, v in per_t.items()})
    return metrics


# ------------------------------------------------------------------------------------------ public API
def _command(profile, out_dir) -> str:
    return f"python -m cff_lib.pretrain_ddpm --profile {profile.name} --out {out_dir}"


def _jsonable_unet_config(cfg: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def train_ddpm(profile, out_dir, *, steps: int | None = None, progress: bool = True,
               config: DdpmPretrainConfig | None = None, resume: bool = False,
               max_wall_s: float | None = None) -> PretrainReport:
    """Train the unconditional face DDPM, evaluate it on held-out faces, write ``out_dir/ddpm.safetensors``.

    ``steps``: override the config's step count (the LR schedule follows it). ``config``: override the
    profile's preset (tests). ``resume``: continue from the saved training state when it matches the config.
    ``max_wall_s``: stop after this many seconds, save the resumable state, and ship what was reached.
    """
    t0 = time.time()
    cfg = config or ddpm_config(profile)
    if not isinstance(cfg, DdpmPretrainConfig):
        raise ValueError(f"config must be a DdpmPretrainConfig, got {type(cfg).__name__}")
    target = cfg.steps if steps is None else steps
    unet, losses, done, bank = fit_ddpm(profile, cfg, steps=steps, progress=progress, resume=resume,
                                        max_wall_s=max_wall_s)
    train_wall = time.time() - t0
    metrics = evaluate_ddpm(profile, unet, cfg, bank, progress=progress)
    metrics["final_train_loss"] = float(np.mean(losses[-max(1, len(losses) // 10):]))
    metrics["train_wall_s"] = train_wall
    record_cfg = {"architecture": _jsonable_unet_config(unet_config(profile, cfg)),
                  "scheduler": paper_scheduler_config(),
                  "train": {**dataclasses.asdict(cfg), "steps": done, "target_steps": target,
                            "seed": int(profile.train.seed)}}
    path = Path(out_dir) / DDPM_NAME
    save_weights(unet, path, profile=profile, command=_command(profile, out_dir), metrics=metrics,
                 config=record_cfg, kind=DDPM_KIND)
    if done >= target and config is None and state_path(profile).is_file():
        state_path(profile).unlink()  # finished: the resumable state is no longer needed
    return PretrainReport(name=DDPM_NAME, metrics=metrics, wall_s=time.time() - t0, steps=done,
                          weights=(str(path) + ".safetensors",), losses=tuple(losses))


def load_ddpm(weights_dir):
    """The hash-checked unconditional ``UNet2DModel`` of ``weights_dir`` (eval mode)."""
    from diffusers import UNet2DModel

    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise FileNotFoundError(f"weights_dir={str(weights_dir)!r} is not a folder; train with "
                                "cff_lib.pretrain_ddpm.train_ddpm(profile, weights_dir)")
    loaded = load_verified(weights_dir / DDPM_NAME, kind=DDPM_KIND)
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in loaded.config["architecture"].items()}
    unet = UNet2DModel(**arch)
    unet.load_state_dict(loaded.tensors, strict=True)
    return unet.eval()


SAMPLERS = ("ddim", "ddpm")


@torch.no_grad()
def ddpm_samples(unet, n: int = 16, seed: int = 2024, n_steps: int = 50, sampler: str = "ddim") -> torch.Tensor:
    """``n`` samples (n, 3, H, W) in [-1, 1] from pure noise.

    ``sampler="ddim"``: the project's Eq. (30) chain (:func:`cff_lib.ddim.generate`, η = 0, full chain from
    t = 999, x0 never clipped) -- what ClipFaceFusion uses. ``"ddpm"``: diffusers' ancestral ``DDPMScheduler``
    (clips the x0 prediction to [-1, 1]) over ``n_steps`` steps; a diagnostic of what the network learned, since
    an unclipped DDIM chain from t = 999 amplifies the ε error of a briefly trained model (x0 = (x − √(1−ᾱ) ε) /
    √ᾱ with √ᾱ_999 ≈ 0.006) into saturated colours.
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

        x = generate(unet, None, n_steps=n_steps, shape=shape, generator=g)
    else:
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(**paper_scheduler_config())
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
                     sampler: str = "ddim"):
    """A matplotlib Figure of ``n`` samples of the DDPM in ``weights_dir`` (seed ``seed``; see
    :func:`ddpm_samples` for ``sampler``)."""
    import matplotlib.pyplot as plt

    unet = load_ddpm(weights_dir)
    n_steps = n_steps or ddpm_config(profile).sample_steps
    grid = image_grid(ddpm_samples(unet, n, seed, n_steps, sampler))
    fig, ax = plt.subplots(figsize=(min(8.0, 1.0 + grid.shape[1] / 40), min(8.0, 1.0 + grid.shape[0] / 40)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    how = "DDIM (Eq. 30, unclipped)" if sampler == "ddim" else "ancestral DDPM (x0 clipped)"
    ax.set_title(f"{n} samples, {n_steps} steps {how}, seed {seed} ({profile.name})", fontsize=9)
    fig.tight_layout()
    return fig


def main(argv=None) -> None:
    import argparse

    from cff_lib.config import load_profile

    ap = argparse.ArgumentParser(description="Pre-train the synthetic world's unconditional face DDPM.")
    ap.add_argument("--profile", default="toy", help="profile name (default: toy)")
    ap.add_argument("--out", default=None, help="weights folder (default: the profile's model.weights_dir)")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    ap.add_argument("--resume", action="store_true", help="continue from the saved training state")
    ap.add_argument("--max-wall-s", type=float, default=None, help="stop (resumably) after this many seconds")
    ap.add_argument("--grid", default=None, help="also write a sample grid PNG here")
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    out = args.out or profile.model.weights_dir
    report = train_ddpm(profile, out, steps=args.steps, resume=args.resume, max_wall_s=args.max_wall_s)
    print(json.dumps({"metrics": report.metrics, "wall_s": report.wall_s, "steps": report.steps,
                      "weights": report.weights, "losses_every_100": report.losses[::100]}, indent=2))
    if args.grid:
        for sampler in SAMPLERS:
            fig = ddpm_sample_grid(profile, out, sampler=sampler, n_steps=None if sampler == "ddim" else 250)
            path = Path(args.grid)
            path = path if sampler == "ddim" else path.with_name(f"{path.stem}_{sampler}{path.suffix}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=150)
            print("sample grid:", path)


if __name__ == "__main__":
    main()
