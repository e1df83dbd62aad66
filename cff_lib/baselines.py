"""A DiffusionCLIP-style, text-only baseline on ClipFaceFusion's own backbone (paper Tables 5-6: the
"DiffusionCLIP" row and Table 6's unnamed baseline, whose means equal DiffusionCLIP's; docs/errata.md).

What it is: the *same* pretrained DDPM inside the *same* ``ConditionalUNet`` class, conditioned on
c = f_T (the frozen CLIP text feature of the target caption, 512-d) through a zero-initialised projection
added to the timestep embedding -- no audio, age or emotion encoders, no fusion, no reference-image slots.
What trains follows the profile's ``model.trainable``, so both methods get the same freedom: the projection
alone under ``fusion`` (as only ClipFaceFusion's conditioning path trains then), the projection and the UNet
under ``fusion+unet`` (as ClipFaceFusion's UNet is fine-tuned then, and as DiffusionCLIP fine-tunes its
whole model); same learning rate, steps and training chain length (``ddim.n_train_steps``). The objective is
DiffusionCLIP's: λ_CLIP · directional CLIP loss (``losses.DirectionalClipLoss``, caption vs
source caption, I_ref = the face) + λ_L1 · |I_gen − I_ref|₁ + λ_ID · ``losses.IdentityLoss``, full backprop
through a short reverse chain from the unconditional inversion (as ``cff_lib.training``).

How it differs from DiffusionCLIP (Kim et al., 2022): DiffusionCLIP fine-tunes *the whole* diffusion model
*once per target text* (one model per attribute, e.g. "old", "smiling"), with ID loss off for most faces.
Here one model is trained once over the composite set's many captions, so it serves every caption. It is
therefore a text-only *conditional* editor
on the same footing as ClipFaceFusion, not a reimplementation of DiffusionCLIP's per-text fine-tuning.
With an untrained (zero) projection it reproduces the unconditioned reconstruction exactly.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cff_lib import ddim
from cff_lib.conditional_unet import ConditionalUNet
from cff_lib.losses import DirectionalClipLoss, IdentityLoss

BASELINE_FILE = "diffusionclip_textonly.safetensors"
BASELINE_KIND = "TextOnlyBaseline"
L1_WEIGHT = 0.3  # λ_L1 of the pixel term (our choice; DiffusionCLIP's configs use 0-3 depending on the domain)
MAX_STEPS = 300  # DiffusionCLIP fine-tunes for "a few iterations": ~5 passes over ~50 precomputed inversions at
# batch 1 (a few hundred images per text); 300 steps at batch 16 show it 4,800 faces (~10x), ~20 min on 2 cores
# at 32² on the v2 backbone. ClipFaceFusion's 8,944 conditional-prior steps through this 8+8-step chain would
# take ~9 h here: a step of the baseline costs a 16-pass chain with backprop, one of the prior a single pass.


@dataclass(frozen=True)
class BaselineOptions:
    steps: int = 0  # optimizer steps; 0 = as many as the shipped ClipFaceFusion model took (its provenance
    # record; else the profile's epochs × ⌈n_train / batch_size⌉), at most MAX_STEPS
    train_ddim_steps: int | None = None  # reverse/inversion DDIM steps while training (None: ddim.n_train_steps)
    l1_weight: float = L1_WEIGHT
    max_grad_norm: float = 1.0


class TextOnlyBaseline(nn.Module):
    """ε_θ(x_t, t, c = f_T(caption)): the pretrained UNet + a zero-init projection of the CLIP text feature."""

    def __init__(self, plain_unet: nn.Module, clip: nn.Module, train_unet: bool = False):
        super().__init__()
        self.unet = ConditionalUNet(plain_unet, 512)
        self.unet.requires_grad_(False)
        self.unet.cond_proj.requires_grad_(True)
        self.unet.unet.requires_grad_(bool(train_unet))  # profile model.trainable 'fusion+unet'
        self.train_unet = bool(train_unet)
        self.clip = clip  # frozen CLIP (the model's), not part of the state

    @property
    def device(self) -> torch.device:
        return self.unet.cond_proj.weight.device

    @torch.no_grad()
    def text_features(self, captions: Sequence[str]) -> torch.Tensor:
        if isinstance(captions, str) or not captions:
            raise ValueError("captions must be a non-empty list of strings")
        return F.normalize(self.clip.encode_text(list(captions)).float(), dim=-1).to(self.device)  # (B, 512)

    def condition(self, captions: Sequence[str]) -> torch.Tensor:
        """c (B, 512) = f_T of the captions (no fusion, no other modality)."""
        return self.text_features(captions)

    @torch.no_grad()
    def edit(self, images: torch.Tensor, captions: Sequence[str], profile) -> torch.Tensor:
        edits = ddim.edit_variants(self.unet, images, {"edit": self.condition(captions)},
                                   ddim.EditConfig.from_profile(profile))
        return edits["edit"].clamp(-1, 1)


def baseline_from_model(model) -> TextOnlyBaseline:
    """A fresh baseline on ``model``'s *pretrained* UNet (a copy, never the fine-tuned one under
    ``trainable='fusion+unet'``: ``ClipFaceFusion.pretrained_unet``) and frozen CLIP."""
    plain = model.pretrained_unet()
    return TextOnlyBaseline(plain, model.encoders.multimodal.clip,
                            train_unet=model.fine_tunes_unet).to(model.device)


def _batches(profile, n_steps: int, seed: int):
    from cff_lib.dataset import collate, dataset_for, load_composite

    rows = [s for s in load_composite(profile).split("train") if s.image is not None]
    if not rows:
        raise ValueError("the composite train split has no face rows")
    ds, bs = dataset_for(profile, rows), profile.train.batch_size
    rng = np.random.default_rng(seed)
    order = []
    while len(order) < n_steps * bs:
        order += rng.permutation(len(rows)).tolist()
    for k in range(n_steps):
        yield collate([ds[i] for i in order[k * bs:(k + 1) * bs]])


def baseline_losses(model, profile) -> tuple[DirectionalClipLoss, IdentityLoss]:
    """The directional CLIP and identity losses on ``model``'s frozen CLIP, ArcFace and VGG."""
    enc, lw = model.encoders, profile.loss
    return (DirectionalClipLoss(enc.multimodal.clip, lw.clip_ref_weight),
            IdentityLoss(enc.arcface, enc.vgg, lw.arcface_weight, lw.perceptual_weight,
                         {"conv3_3": lw.vgg_conv3_3, "conv4_3": lw.vgg_conv4_3}))


def baseline_loss(losses, generated, images, batch, options: BaselineOptions, profile) -> dict[str, torch.Tensor]:
    """λ_CLIP L_dir + λ_L1 L1 + λ_ID L_ID on a batch (module docstring); ``losses`` from baseline_losses."""
    clip_loss, id_loss = losses
    lw = profile.loss
    terms = {"clip": clip_loss(generated, list(batch["caption"]), images, list(batch["source_caption"]))["loss"],
             "l1": (generated - images).abs().mean(), "id": id_loss(generated, images)["loss"]}
    terms["loss"] = lw.lambda_clip * terms["clip"] + options.l1_weight * terms["l1"] + lw.lambda_id * terms["id"]
    return terms


def _model_steps(profile) -> int:
    """Optimizer steps of the shipped ClipFaceFusion model (0 when it has no readable record)."""
    from cff_lib.training import verify_model_file

    try:
        return int(verify_model_file(profile)["step"] or 0)
    except (FileNotFoundError, ValueError):
        return 0


def baseline_steps(profile, options: BaselineOptions = BaselineOptions()) -> int:
    """Optimizer steps of a baseline training: ``options.steps``, else ClipFaceFusion's (its shipped record, else
    its schedule) capped at MAX_STEPS."""
    from cff_lib.dataset import load_composite
    from cff_lib.training import schedule_length

    if options.steps:
        return options.steps
    n_model = _model_steps(profile)
    if not n_model:
        n_model = schedule_length(profile, len([s for s in load_composite(profile).split("train")
                                                if s.image is not None]))
    return min(n_model, MAX_STEPS)


def train_baseline(baseline: TextOnlyBaseline, model, profile, options: BaselineOptions = BaselineOptions(),
                   batches=None, progress: bool = True) -> list[dict[str, float]]:
    """AdamW on what the baseline trains over composite train batches (or the given ``batches``: collated dicts
    with ``image``, ``caption``, ``source_caption``); returns the per-step loss history."""
    from tqdm.auto import tqdm

    n_steps = None
    if batches is None:
        n_steps = baseline_steps(profile, options)
        batches = _batches(profile, n_steps, profile.train.seed)
    batches = tqdm(batches, total=n_steps, desc=f"text-only baseline {profile.name}", unit="step",
                   disable=not progress)
    k = profile.ddim.n_train_steps if options.train_ddim_steps is None else options.train_ddim_steps
    k = max(1, min(k, profile.ddim.n_gen_steps, profile.ddim.n_inv_steps))
    chain = ddim.EditConfig.from_profile(profile, train_steps=k)  # the short training chain, full backprop
    params = [p for p in baseline.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=profile.train.learning_rate, weight_decay=profile.train.weight_decay)
    torch.manual_seed(profile.train.seed)
    losses = baseline_losses(model, profile)
    history = []
    for step, batch in enumerate(batches):
        images = batch["image"].to(baseline.device)
        c = baseline.condition(batch["caption"])
        gen = ddim.edit_variants(baseline.unet, images, {"edit": c}, chain)["edit"].clamp(-1, 1)
        terms = baseline_loss(losses, gen, images, batch, options, profile)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, options.max_grad_norm)
        opt.step()
        history.append({"step": step + 1, **{n: float(v.detach()) for n, v in terms.items()}})
        batches.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    return history


def _trained_state(baseline: TextOnlyBaseline) -> dict[str, torch.Tensor]:
    """The tensors the baseline trains, by their state-dict names (the projection; the UNet too if it trains)."""
    parts = ("unet.cond_proj.", "unet.unet.") if baseline.train_unet else ("unet.cond_proj.",)
    return {k: v.detach().cpu().contiguous() for k, v in baseline.state_dict().items() if k.startswith(parts)}


def _path(profile, weights_dir=None) -> Path:
    from cff_lib.model import weights_root

    return weights_root(profile, weights_dir) / BASELINE_FILE


def save_baseline(baseline: TextOnlyBaseline, model, profile, history, wall_s: float, weights_dir=None) -> Path:
    from cff_lib.weights import save_weights

    path = _path(profile, weights_dir)
    tail = [h["loss"] for h in history[-max(1, len(history) // 10):]]
    save_weights(_trained_state(baseline), path,
                 profile=profile, kind=BASELINE_KIND,
                 command=f"python -c \"from cff_lib import baselines; baselines.cli('{profile.name}')\"",
                 metrics={"final_train_loss": float(np.mean(tail)) if tail else float("nan"), "train_wall_s": wall_s},
                 config={"backend_digests": {k: model.backend_digests.get(k) for k in ("unet", "clip", "arcface",
                                                                                         "vgg")},
                         "steps": len(history), "history": history[-50:]})
    return path


def load_baseline(model, profile, weights_dir=None) -> tuple[TextOnlyBaseline, dict]:
    """The saved baseline (sha256-verified; trained on the same backends and profile) or an error saying why."""
    from cff_lib.weights import load_verified

    if not _path(profile, weights_dir).is_file():
        raise FileNotFoundError(f"no trained baseline at {_path(profile, weights_dir)} yet")
    loaded = load_verified(_path(profile, weights_dir), kind=BASELINE_KIND)
    rec = loaded.record
    if rec.fingerprint != profile.training_fingerprint():
        raise ValueError(f"{loaded.path} was trained for profile {rec.profile!r} (fingerprint {rec.fingerprint}), "
                         f"not {profile.name!r} as it is now (training fingerprint "
                         f"{profile.training_fingerprint()}); retrain it")
    want = {k: model.backend_digests.get(k) for k in ("unet", "clip", "arcface", "vgg")}
    if rec.config.get("backend_digests") != want:
        raise ValueError(f"{loaded.path} was trained on other backend weights; retrain it")
    baseline = baseline_from_model(model)
    mine = _trained_state(baseline)
    if set(loaded.tensors) != set(mine):
        raise ValueError(f"{loaded.path} holds {sorted(loaded.tensors)[:3]}..., this baseline trains "
                         f"{sorted(mine)[:3]}... (model.trainable changed); retrain it")
    baseline.load_state_dict({k: v.to(baseline.device) for k, v in loaded.tensors.items()}, strict=False)
    return baseline.eval(), {"path": str(loaded.path), "sha256": rec.sha256, "steps": rec.config.get("steps"),
                             "trained": False, "final_train_loss": rec.metrics.get("final_train_loss")}


def load_or_train_baseline(model, profile, weights_dir=None, options: BaselineOptions = BaselineOptions()
                           ) -> tuple[TextOnlyBaseline, dict]:
    """:func:`load_baseline`, or train and save it when missing or stale (returns the baseline and info)."""
    try:
        return load_baseline(model, profile, weights_dir)
    except (FileNotFoundError, ValueError) as err:
        why = str(err)
    baseline = baseline_from_model(model)
    start = time.perf_counter()
    history = train_baseline(baseline, model, profile, options)
    wall = time.perf_counter() - start
    path = save_baseline(baseline, model, profile, history, wall, weights_dir)
    return baseline.eval(), {"path": str(path), "steps": len(history), "trained": True, "why": why,
                             "train_wall_s": wall, "history": history}


def train_command(args) -> int:
    """``cff train baseline``: train (if needed) and save the baseline of ``args.profile`` on its trained
    model; prints what was done."""
    from cff_lib.config import load_profile
    from cff_lib.model import load_trained_model

    profile = load_profile(args.profile)
    _, info = load_or_train_baseline(load_trained_model(profile), profile)
    print(json.dumps({k: v for k, v in info.items() if k != "history"}, default=str))
    return 0


def cli(profile_name: str) -> None:
    """The command its provenance record quotes (``baselines.cli('toy')``): ``cff train baseline --profile``."""
    from cff_lib.train_commands import parse

    train_command(parse("baseline", ["--profile", profile_name], prog="baselines.cli"))


__all__ = ["BASELINE_FILE", "MAX_STEPS", "BaselineOptions", "TextOnlyBaseline", "baseline_from_model",
           "baseline_loss", "baseline_losses", "baseline_steps", "load_baseline", "load_or_train_baseline",
           "save_baseline", "train_baseline"]
