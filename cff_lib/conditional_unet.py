"""ε_θ(x_t, t, c) of Eq. (30): a pretrained unconditional UNet plus a zero-initialised input for c.

Paper, "Diffusion process and optimization": the reverse DDIM update uses ε_θ(x_t, t, c), where c is
the fused multi-modal vector ("Multi-modal fusion"). "Implementation": the backbone is a DDIM model
pre-trained on faces at 256 × 256; the public checkpoint with that description, and the one
DiffusionCLIP edits with, is ``google/ddpm-ema-celebahq-256`` (a diffusers ``UNet2DModel``, 113.7 M
parameters, ``paper_unet_config``).

How c enters. ``UNet2DModel`` already adds a "class embedding" to the timestep embedding before
every ResNet block (``emb = time_embedding(t) + class_embedding(class_labels)``). We set
``unet.class_embedding`` to ``nn.Identity()`` and pass a precomputed embedding
``class_labels = cond_proj(c)``, with ``cond_proj = Linear(cond_dim, time_embed_dim)`` whose weight
and bias start at zero. So:

- an untrained projection adds exact zeros: the conditional model reproduces the unconditional one
  bit for bit;
- ``c=None`` (explicitly unconditional) adds zeros as well, whatever the projection has learned;
- the projection lives on the wrapper, not inside the UNet: the UNet's state dict and config stay
  those of the pretrained checkpoint, so ``save_unet`` writes a folder any diffusers user can load
  as a plain UNet.

We prefer this to a forward hook on ``time_embedding`` (which would need c stashed on the module
between calls) and to ``class_embedding = cond_proj`` (which would make c mandatory inside the UNet
and put the projection in the UNet's state dict under a config that does not declare it).

Note: the wrapper replaces ``class_embedding`` on the UNet it is given; afterwards call the wrapper,
not the UNet (diffusers' pipelines would fail on it with "class_labels should be provided").
"""

from __future__ import annotations

import copy
import functools
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from cff_lib.atomic import atomic_directory, atomic_path

PAPER_UNET_ID = "google/ddpm-ema-celebahq-256"
_PROJ_FILE = "cond_proj.safetensors"
_SCHEDULE_FILE = "cff_scheduler_config.json"  # a UNet folder's carried schedule (save_unet / load_unet)
_UNET_SUBFOLDER = "unet"

_MISSING_WEIGHTS = (  # formatted with path=...
    "no pretrained UNet at {path!r}. The paper's backbone is 'google/ddpm-ema-celebahq-256' "
    "(https://huggingface.co/google/ddpm-ema-celebahq-256, ~455 MB). This project never downloads: on a "
    "machine with internet run `from diffusers import UNet2DModel; UNet2DModel.from_pretrained("
    "'google/ddpm-ema-celebahq-256').save_pretrained('ddpm-ema-celebahq-256')`, copy that folder here and "
    "point `unet_path` at it (it is then read with `from_pretrained(path, local_files_only=True)`)."
)


# ----------------------------------------------------------------------------------------------- presets
def paper_unet_config() -> dict[str, Any]:
    """``UNet2DModel`` kwargs of ``google/ddpm-ema-celebahq-256`` (its hub ``config.json``).

    113,673,219 parameters ("113.7 M").
    """
    return dict(
        sample_size=256,  # 256 × 256 faces ("Implementation")
        in_channels=3,  # RGB in [-1, 1]
        out_channels=3,  # ε prediction
        center_input_sample=False,  # inputs are already in [-1, 1]
        time_embedding_type="positional",  # sinusoidal timestep embedding (DDPM)
        flip_sin_to_cos=False,  # DDPM's [sin, cos] order
        freq_shift=1,  # DDPM's frequency offset
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),  # attention at 16 × 16
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,  # attention at 16 × 16
        block_out_channels=(128, 128, 256, 256, 512, 512),  # 256 → 8 over five downsamplings
        layers_per_block=2,  # two ResNet blocks per resolution
        mid_block_scale_factor=1,  # no rescaling of the middle block's residual
        downsample_padding=0,  # DDPM's asymmetric downsampling pad
        act_fn="silu",  # swish
        attention_head_dim=None,  # a single attention head
        norm_num_groups=32,  # GroupNorm(32)
        norm_eps=1e-6,  # DDPM's GroupNorm epsilon
    )


def synthetic_unet_config(resolution: int = 32) -> dict[str, Any]:
    """A ~1.1 M-parameter UNet of the synthetic world (32² → 1,113,955 params; 64² → 1,223,427 params).

    Same building blocks and timestep conventions as ``paper_unet_config`` (so the code path is
    identical), with one ResNet per level and one attention level at 16 × 16.
    """
    if resolution == 32:
        down = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")  # 32 → 16 (attn) → 8
        up = ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
        channels = (32, 64, 64)
    elif resolution == 64:
        down = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D")  # 64 → 32 → 16 (attn) → 8
        up = ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
        channels = (32, 32, 64, 64)
    else:
        raise ValueError(f"resolution={resolution} must be 32 or 64 (the synthetic world's image sizes)")
    cfg = paper_unet_config()
    cfg.update(
        sample_size=resolution,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=1,
    )
    return cfg


def tiny_unet_config(sample_size: int = 16) -> dict[str, Any]:
    """A ~45 k-parameter UNet for unit tests (16², channels (8, 16), one attention level)."""
    cfg = paper_unet_config()
    cfg.update(
        sample_size=sample_size,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
    )
    return cfg


def synthetic_v2_unet_config(resolution: int = 32) -> dict[str, Any]:
    """The wider synthetic UNet of the ``toy_v2`` DDPM recipe (cff_lib.pretrain_ddpm; docs/errata.md).

    Same blocks as ``synthetic_unet_config`` with a wider bottom level and two ResNets per level (32²: channels
    (32, 64, 128), attention at 16 × 16 and in the middle block; 3,692,867 parameters, ~2.9 s per AdamW step at
    batch 64 on one CPU thread, ``bench/bench_ddpm_arch.py``).
    """
    cfg = synthetic_unet_config(resolution)
    cfg.update(block_out_channels=(32, 64, 128) if resolution == 32 else (32, 32, 64, 128), layers_per_block=2)
    return cfg


def paper_scheduler_config() -> dict[str, Any]:
    """The ``DDPMScheduler`` config shipped with ``google/ddpm-ema-celebahq-256``.

    ``clip_sample`` is the hub's value and only matters to diffusers' own schedulers; ``cff_lib.ddim`` follows
    Eq. (30) and DiffusionCLIP and never clips the x0 prediction.
    """
    return dict(
        num_train_timesteps=1000,  # K = 1000 ("Reference image and DDIM inversion")
        beta_start=1e-4,  # β_1 of the linear DDPM schedule
        beta_end=0.02,  # β_K of the linear DDPM schedule
        beta_schedule="linear",  # β_t linear in t
        trained_betas=None,  # no explicit β table
        variance_type="fixed_small",  # DDPM posterior variance (irrelevant to η = 0 DDIM)
        clip_sample=True,  # hub value; see the docstring
    )


PREDICTION_TYPES = ("epsilon", "v_prediction")  # what the UNet outputs: ε, or v = √ᾱ ε − √(1−ᾱ) x0
NOISE_SCHEDULES = ("linear", "cosine", "linear_zero_snr", "cosine_zero_snr")
SCHEDULER_ATTR = "noise_scheduler_config"  # the attribute a loaded UNet carries its DDPMScheduler config in


def diffusion_scheduler_config(schedule: str = "linear", prediction_type: str = "epsilon") -> dict[str, Any]:
    """A ``DDPMScheduler`` config: the paper's K = 1000 with another ᾱ schedule and/or prediction target.

    ``schedule``: "linear" (the paper's β 1e-4 → 0.02; ᾱ_999 = 4.0e-5, i.e. non-zero terminal SNR),
    "cosine" (Nichol & Dhariwal's ``squaredcos_cap_v2``; ᾱ_999 ≈ 2e-9), or either rescaled to zero terminal
    SNR (Lin et al. 2024, ``rescale_betas_zero_snr``; ᾱ_999 = 0 exactly, which needs v-prediction to sample
    from). ``prediction_type``: "epsilon" or "v_prediction". ("linear", "epsilon") is
    ``paper_scheduler_config()`` itself, key for key.
    """
    if schedule not in NOISE_SCHEDULES:
        raise ValueError(f"schedule={schedule!r} must be one of {NOISE_SCHEDULES}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction_type!r} must be one of {PREDICTION_TYPES}")
    cfg = paper_scheduler_config()
    if schedule == "linear" and prediction_type == "epsilon":
        return cfg
    if schedule.startswith("cosine"):
        cfg["beta_schedule"] = "squaredcos_cap_v2"
    if schedule.endswith("zero_snr"):
        cfg["rescale_betas_zero_snr"] = True
    cfg["prediction_type"] = prediction_type
    return cfg


def prediction_type_of_config(config: Any) -> str:
    """The prediction target a scheduler config declares (absent: "epsilon", diffusers' default)."""
    kind = dict(config).get("prediction_type", "epsilon") if config is not None else "epsilon"
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={kind!r} is not supported; use one of {PREDICTION_TYPES}")
    return kind


def attach_scheduler(unet: nn.Module, config: Any) -> nn.Module:
    """Record on ``unet`` (a ``UNet2DModel``) the ``DDPMScheduler`` config it was trained with; returns ``unet``.

    ``cff_lib.ddim`` reads it (ᾱ_t and the prediction type) whenever a caller passes no explicit schedule, and
    :class:`ConditionalUNet` forwards it. ``None`` removes it (the model then runs under the paper's schedule,
    linear β and ε-prediction). Validated here, so a bad config fails at load time.
    """
    if config is None:
        unet.__dict__.pop(SCHEDULER_ATTR, None)
        return unet
    config = dict(config)
    prediction_type_of_config(config)
    alphas_cumprod(config)  # raises on an unusable schedule
    setattr(unet, SCHEDULER_ATTR, config)
    return unet


def scheduler_config_of(model: nn.Module) -> dict[str, Any] | None:
    """The scheduler config a model carries (a UNet2DModel, a ConditionalUNet, ...); None: the paper's."""
    config = getattr(model, SCHEDULER_ATTR, None)
    return dict(config) if config is not None else None


def prediction_type_of(model: nn.Module) -> str:
    """"epsilon" or "v_prediction": what ``model``'s output is (its carried config; "epsilon" without one)."""
    return prediction_type_of_config(scheduler_config_of(model))


def alphas_cumprod(schedule: Any = None) -> torch.Tensor:
    """ᾱ_t, float32 (K,), of a scheduler, a scheduler config (dict) or a tensor; None → the paper's.

    The paper writes α_t for the cumulative product ᾱ_t = Π_{s≤t} (1 − β_s) (Eqs. 9, 30). Only the last value
    may be 0 (a zero-terminal-SNR schedule, ``diffusion_scheduler_config``).
    """
    if schedule is None:
        return _paper_alphas_cumprod().clone()
    if isinstance(schedule, torch.Tensor):
        a = schedule.detach().to(torch.float32).cpu()
    elif hasattr(schedule, "alphas_cumprod"):  # a diffusers scheduler instance
        a = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float32).cpu()
    elif isinstance(schedule, dict) or hasattr(schedule, "keys"):  # a (Frozen)dict scheduler config
        from diffusers import DDPMScheduler

        a = DDPMScheduler.from_config(dict(schedule)).alphas_cumprod.to(torch.float32)
    else:
        raise ValueError(
            f"schedule: cannot read alphas_cumprod from a {type(schedule).__name__}; pass a diffusers "
            "scheduler, its config dict or a 1-D tensor"
        )
    if a.ndim != 1 or a.numel() < 2 or not torch.isfinite(a).all() or (a[:-1] <= 0).any() or (a < 0).any() \
            or (a > 1).any():
        raise ValueError("schedule: alphas_cumprod must be a 1-D tensor of values in (0, 1] (the last, t = K − 1, "
                         f"may be 0: zero terminal SNR), got {tuple(a.shape)}")
    if (a[1:] > a[:-1]).any():
        raise ValueError("schedule: alphas_cumprod must be non-increasing in t")
    return a


@functools.lru_cache(maxsize=1)
def _paper_alphas_cumprod() -> torch.Tensor:
    return alphas_cumprod(paper_scheduler_config())


# ----------------------------------------------------------------------------------------------- model
class BottleneckAdapter(nn.Module):
    """A residual edit of the UNet's bottleneck ("h-space", Asyrp: Kwon et al. 2023) driven by c.

    Δh = W_up SiLU(W_down GroupNorm(h) + W_c c), added to the middle block's output h (B, C, h, w). W_up
    starts at zero, so an untrained adapter changes nothing; with ``c=None`` the adapter is not applied at
    all. The backbone stays frozen under ``trainable: adapter``: the edit can only move what the bottleneck
    encodes (pose, expression, age: coarse semantics) and decodes through the pretrained prior, which keeps
    the guides' gradients from painting pixel noise (docs/errata.md, "Robust guides").
    """

    def __init__(self, channels: int, cond_dim: int, rank: int = 64):
        super().__init__()
        self.norm = nn.GroupNorm(min(32, channels), channels)
        self.down = nn.Conv2d(channels, rank, 1)
        self.cond = nn.Linear(cond_dim, rank)
        self.up = nn.Conv2d(rank, channels, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        z = self.down(self.norm(h)) + self.cond(c.to(h.dtype))[:, :, None, None]  # (B, rank, h, w)
        return h + self.up(F.silu(z))  # (B, C, h, w)


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                    prediction_type: str) -> torch.Tensor:
    """What the UNet learns to output at (x_t, t): ε, or v = √ᾱ_t ε − √(1−ᾱ_t) x0 (Salimans & Ho 2022)."""
    if prediction_type == "epsilon":
        return noise
    a = scheduler.alphas_cumprod.to(x0.dtype)[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


class ConditionalUNet(nn.Module):
    """ε_θ(x_t, t, c): ``unet`` with c added to its timestep embedding through a zero-initialised projection.

    Args:
        unet: a ``diffusers.UNet2DModel`` without class conditioning (pretrained or fresh).
        cond_dim: size of the conditioning vector c (the fusion module's output).
        gradient_checkpointing: recompute UNet activations in the backward pass (less memory, ~30 % slower).
    """

    def __init__(self, unet: nn.Module, cond_dim: int, gradient_checkpointing: bool = False):
        super().__init__()
        from diffusers import UNet2DModel

        if not isinstance(unet, UNet2DModel):
            raise ValueError(f"unet must be a diffusers UNet2DModel, got {type(unet).__name__}")
        if getattr(unet, "class_embedding", None) is not None and not isinstance(unet.class_embedding, nn.Identity):
            raise ValueError("unet already has a class embedding; ConditionalUNet wraps unconditional UNets only")
        if not isinstance(cond_dim, int) or cond_dim < 1:
            raise ValueError(f"cond_dim={cond_dim!r} must be a positive int")
        self.unet = unet
        # class_labels will carry the precomputed projection of c (see the module docstring)
        self.unet.class_embedding = nn.Identity()
        self.cond_dim = cond_dim
        self.time_embed_dim = unet.config.time_embedding_dim or unet.config.block_out_channels[0] * 4
        self.cond_proj = nn.Linear(cond_dim, self.time_embed_dim)
        nn.init.zeros_(self.cond_proj.weight)
        nn.init.zeros_(self.cond_proj.bias)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.adapter: BottleneckAdapter | None = None  # add_adapter(); only under trainable "adapter"
        self._adapter_c: torch.Tensor | None = None  # c of the call in progress, read by the mid-block hook
        self.guidance_scale = 1.0  # classifier-free guidance w of ``forward`` (1: none; the profile's ddim section)

    def add_adapter(self, rank: int = 64) -> BottleneckAdapter:
        """Attach a zero-initialised :class:`BottleneckAdapter` to the middle block (once); returns it."""
        if self.adapter is None:
            self.adapter = BottleneckAdapter(self.unet.config.block_out_channels[-1], self.cond_dim, rank)
            self.unet.mid_block.register_forward_hook(self._apply_adapter)
        return self.adapter

    def plain_unet_copy(self) -> nn.Module:
        """A deep copy of the wrapped UNet without the adapter's hook (the plain backbone, as loaded)."""
        hooks = self.unet.mid_block._forward_hooks
        saved = dict(hooks)
        hooks.clear()  # the hook is bound to this wrapper: copying it would copy the whole wrapper along
        try:
            return copy.deepcopy(self.unet)
        finally:
            hooks.update(saved)

    def _apply_adapter(self, _module, _inputs, h):
        if self.adapter is None or self._adapter_c is None:
            return h
        return self.adapter(h, self._adapter_c.expand(h.shape[0], -1))

    # conveniences the samplers read
    @property
    def sample_size(self) -> int:
        return self.unet.config.sample_size

    @property
    def in_channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def noise_scheduler_config(self) -> dict[str, Any] | None:
        """The wrapped UNet's training scheduler config (``attach_scheduler``); None: the paper's."""
        return scheduler_config_of(self.unet)

    @property
    def prediction_type(self) -> str:
        """"epsilon" or "v_prediction": what ``forward`` returns (the wrapped UNet's target)."""
        return prediction_type_of(self.unet)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int, c: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's prediction (B, C, H, W) for x_t (B, C, H, W) at timestep(s) t -- ε, or v for a
        v-prediction backbone (``prediction_type``); ``c`` (B, cond_dim) or None.

        With ``guidance_scale`` w ≠ 1 and a c, classifier-free guidance: u + w (f(c) − u), u = f(None)
        (two passes; not in the paper, docs/errata.md "A conditional prior"). w = 1 is one conditional pass."""
        if c is None or self.guidance_scale == 1.0:
            return self.predict(x_t, t, c)
        u = self.predict(x_t, t, None)  # (B, C, H, W) the unconditional branch
        return u + self.guidance_scale * (self.predict(x_t, t, c) - u)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor | int, c: torch.Tensor | None = None) -> torch.Tensor:
        """One pass of the UNet, never guided (what the denoising loss trains); arguments as ``forward``."""
        batch = x_t.shape[0]
        if c is None:
            cond_emb = x_t.new_zeros(batch, self.time_embed_dim)  # exact no-op on the timestep embedding
        else:
            if c.ndim != 2 or c.shape[1] != self.cond_dim or c.shape[0] not in (1, batch):
                raise ValueError(f"c must have shape ({batch}, {self.cond_dim}), got {tuple(c.shape)}")
            cond_emb = self.cond_proj(c.to(self.cond_proj.weight.dtype))  # (B, time_embed_dim)
            cond_emb = cond_emb.expand(batch, -1)
        self._adapter_c = c  # read by the adapter's hook on the middle block (None: not applied)
        try:
            return self.unet(x_t, t, class_labels=cond_emb).sample
        finally:
            self._adapter_c = None

    # ------------------------------------------------------------------------------------------- I/O
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``path/unet/`` (diffusers format, safetensors) and ``path/cond_proj.safetensors``."""
        path = Path(path)
        save_unet(self.unet, path / _UNET_SUBFOLDER)
        meta = {"cond_dim": str(self.cond_dim), "time_embed_dim": str(self.time_embed_dim)}
        with atomic_path(path / _PROJ_FILE) as tmp:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in self.cond_proj.state_dict().items()},
                str(tmp),
                metadata=meta,
            )

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, cond_dim: int | None = None, gradient_checkpointing: bool = False
    ) -> ConditionalUNet:
        """Load a ``save_pretrained`` folder, or wrap a plain UNet folder (then ``cond_dim`` is needed).

        A plain folder, e.g. the downloaded ``google/ddpm-ema-celebahq-256``, gets a fresh zero projection.
        """
        path = Path(path)
        proj_file = path / _PROJ_FILE
        if proj_file.is_file():
            from safetensors import safe_open

            with safe_open(str(proj_file), framework="pt") as f:
                saved_dim = int(f.metadata()["cond_dim"])
            if cond_dim is not None and cond_dim != saved_dim:
                raise ValueError(f"cond_dim={cond_dim} disagrees with the saved projection ({saved_dim})")
            model = cls(load_unet(path / _UNET_SUBFOLDER), saved_dim, gradient_checkpointing)
            model.cond_proj.load_state_dict(load_file(str(proj_file)))
            return model
        if cond_dim is None:
            raise ValueError(f"cond_dim is required: {str(path)!r} holds a plain UNet without {_PROJ_FILE}")
        return cls(load_unet(path), cond_dim, gradient_checkpointing)


# ----------------------------------------------------------------------------------------------- plain I/O
def load_unet(path: str | os.PathLike):
    """A ``UNet2DModel`` from a local ``save_pretrained`` folder; never touches the network.

    Raises ``FileNotFoundError`` naming ``google/ddpm-ema-celebahq-256`` and how to get it when
    nothing is there.
    """
    from diffusers import UNet2DModel

    path_str = os.fspath(path)
    try:
        with warnings.catch_warnings():  # diffusers passes a deprecated huggingface_hub argument
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            unet = UNet2DModel.from_pretrained(path_str, local_files_only=True)
    except (OSError, ValueError) as err:  # diffusers reports a missing folder / config / weights as OSError
        raise FileNotFoundError(_MISSING_WEIGHTS.format(path=path_str)) from err
    schedule_file = Path(path_str) / _SCHEDULE_FILE  # only written by save_unet for a non-paper schedule
    if schedule_file.is_file():
        attach_scheduler(unet, json.loads(schedule_file.read_text()))
    return unet


def save_unet(unet: nn.Module, path: str | os.PathLike) -> None:
    """Write a ``UNet2DModel`` (or a ``ConditionalUNet``'s) to ``path`` as a diffusers folder (safetensors).

    Written into a temporary sibling folder and swapped in: an interrupted save keeps the old folder.
    """
    if isinstance(unet, ConditionalUNet):
        unet.save_pretrained(path)
        return
    config = scheduler_config_of(unet)
    with atomic_directory(path) as tmp:
        unet.save_pretrained(tmp, safe_serialization=True)  # the config never records the wrapper's Identity
        if config is not None:  # the schedule travels with the UNet (absent: the paper's)
            (Path(tmp) / _SCHEDULE_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
