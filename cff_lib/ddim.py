"""Deterministic DDIM (η = 0): reference-image inversion (Eq. 9) and conditioned sampling (Eq. 30).

Paper, "Reference image and DDIM inversion", Eq. (9), run forward from the reference image up to
t0 ∈ [300, 600]:

    x_{t+1} = √ᾱ_{t+1} · f_θ(x_t, t) + √(1 − ᾱ_{t+1}) · ε_θ(x_t, t),
    f_θ(x_t, t) = (x_t − √(1 − ᾱ_t) · ε_θ(x_t, t)) / √ᾱ_t

and "Diffusion process and optimization", Eq. (30), run backward from x_{t0} (editing) or from
x_T ~ N(0, I):

    x_{t−1} = √ᾱ_{t−1} · f_θ(x_t, t, c) + √(1 − ᾱ_{t−1}) · ε_θ(x_t, t, c)

(the paper writes α_t for the cumulative ᾱ_t). Both are one move between two noise levels,
``_ddim_move``.

Step grid. DiffusionCLIP, which the paper extends, uses
``seq = (linspace(0, 1, n) * t0).astype(int)``: n timesteps from 0 to exactly t0. That is our default,
``spacing="diffusionclip"``, because the paper's edit starts at a chosen t0 and this grid starts
there (diffusers' "leading" grid starts at (n − 1)·⌊(t0 + 1)/n⌋ ≤ t0; for a full chain with 50 steps
that is t = 980, not 999). ``spacing="leading"`` reproduces diffusers' ``DDIMScheduler`` exactly
(tested against ``DDIMPipeline`` to 1e-5). Whatever the grid τ_0 > … > τ_{n−1} (= 0), sampling makes
n UNet calls τ_0 → τ_1 → … → τ_{n−1} → clean (ᾱ = 1), and inversion walks the same levels back up,
also in n calls: clean → τ_{n−1} → … → τ_0, evaluating ε at the source (x_t, t) as Eq. (9) says (the
clean image is labelled t = τ_{n−1} = 0). DiffusionCLIP instead treats the clean image as x at t = 0
and inverts in n − 1 calls; our extra first call moves it from ᾱ = 1 to ᾱ_0 = 0.9999, which makes
inversion the mirror image of sampling (better reconstructions) at the cost of one UNet call.

Why our own loop rather than diffusers' ``DDIMScheduler`` / ``DDIMInverseScheduler``: (1) the
DiffusionCLIP grid ending at t0 is not one of their spacings; (2) ``DDIMInverseScheduler`` evaluates
ε at the destination timestep, Eq. (9) at the source; (3) the memory-efficient mode needs the x0
prediction f_θ of every step as an autograd node; (4) Eq. (30) does not clip f_θ, ``DDIMScheduler``
does by default. The update is two lines, and the parity test pins it to diffusers'.

Schedule and prediction target. Every function takes ``schedule`` (ᾱ_t); when it is None the model's own
is used: the ``DDPMScheduler`` config a loaded synthetic DDPM carries (``noise_scheduler_config``, set by
``cff_lib.conditional_unet.attach_scheduler``; forwarded by ``ConditionalUNet``), else the paper's linear
β schedule. The network output is ε_θ or, for a v-prediction model (``prediction_type_of``), v_θ =
√ᾱ ε − √(1−ᾱ) x0, turned into (ε_θ, f_θ) before the move; v allows a zero terminal SNR (ᾱ_{K−1} = 0), where
f_θ = −v. A model without a carried config (every paper-world UNet, every file written before the
``toy_v2`` recipe) runs exactly as before: linear β, ε. ``clip_x0`` (off by default: Eq. 30 does not
clip) clamps f_θ to [-1, 1] at every step and re-derives ε from it.

The preserving edit (not in the paper; ``EditConfig.preserve_threshold``, docs/errata.md "The preserving
edit"), DiffEdit's idea (Couairon et al., 2022) on the invert-then-regenerate edit: run the reverse chain
from x_t0 with c = None (the reconstruction, every level kept) and with c (the plain edit); the edit mask m
(B, 1, H, W) is where the two results differ by more than the threshold (``edit_mask``); then run the
conditioned chain again, putting the reconstruction's level back outside m after every move,
x_τ ← m x_τ + (1 − m) x_τ^rec. m = 0 gives the reconstruction, m = 1 the plain edit. The mask comes from the
model's own two chains (no judge reads anything); it costs the shared reconstruction chain plus one more
reverse chain per condition.

Gradients. ``sample``/``invert``/``generate``/``edit`` run under the caller's autograd mode: with
parameters that require grad, gradients flow through every step ("full" mode, memory grows with the
number of steps; wrap inference in ``torch.inference_mode()``). ``sample_with_stepwise_grad`` is
DiffusionCLIP's GPU-efficient mode: a loss on each step's f_θ is backpropagated at once and the
chain continues from the detached x_{t−1}.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from cff_lib.conditional_unet import alphas_cumprod as _alphas_cumprod
from cff_lib.conditional_unet import prediction_type_of, scheduler_config_of

SPACINGS = ("diffusionclip", "leading")
DEFAULT_SPACING = "diffusionclip"


@dataclass(frozen=True)
class EditConfig:
    """Hyper-parameters of the zero-shot edit (``edit(model, x_ref, c, **asdict(cfg))``)."""

    t0: int = 500  # return step of the inversion: paper t0 ∈ [300, 600]; DiffusionCLIP's faces use 500
    n_inv_steps: int = 40  # UNet calls of the inversion, Eq. (9) (DiffusionCLIP's n_inv_step)
    n_gen_steps: int = 40  # UNet calls of the reverse process, Eq. (30) (DiffusionCLIP's n_test_step)
    spacing: str = DEFAULT_SPACING  # step grid, see ``ddim_timesteps``
    preserve_threshold: float | None = None  # the preserving edit's mask threshold (module docstring); None: off

    def __post_init__(self):
        ddim_timesteps(self.t0, self.n_inv_steps, self.spacing)
        ddim_timesteps(self.t0, self.n_gen_steps, self.spacing)
        if self.preserve_threshold is not None and not self.preserve_threshold > 0:
            raise ValueError(f"preserve_threshold={self.preserve_threshold!r} must be None or > 0")

    @classmethod
    def from_profile(cls, profile, *, t0: int | None = None, train_steps: int | None = None) -> EditConfig:
        """The edit a profile's ``ddim`` section describes: a trained model's edit starts at ``edit_start()``
        and preserves with ``preserve_threshold``. ``train_steps``: a training sample's short chain (inversion
        and reverse both take that many steps, from the training ``t0``, never preserving); ``t0`` replaces
        the profile's."""
        d = profile.ddim
        if train_steps:
            return cls(t0=int(t0 or d.t0), n_inv_steps=int(train_steps), n_gen_steps=int(train_steps),
                       spacing=d.spacing)
        return cls(t0=int(t0 or d.edit_start()), n_inv_steps=int(d.n_inv_steps), n_gen_steps=int(d.n_gen_steps),
                   spacing=d.spacing, preserve_threshold=d.preserve_threshold)


# ----------------------------------------------------------------------------------------------- grid
def ddim_timesteps(
    t0: int, n_steps: int, spacing: str = DEFAULT_SPACING, num_train_timesteps: int = 1000
) -> torch.Tensor:
    """The n_steps UNet timesteps of a DDIM chain from t0 down to 0, descending (sampling order), int64.

    - ``"diffusionclip"`` (default): ``(linspace(0, 1, n) * t0).astype(int)``, starting exactly at t0
      (n = 1: the single step [t0]).
    - ``"leading"``: diffusers' ``DDIMScheduler``: ``arange(n) * ((t0 + 1) // n)``; for t0 = 999 identical to
      ``set_timesteps(n)`` with ``timestep_spacing="leading"``, ``steps_offset=0``.
    """
    if not isinstance(t0, numbers.Integral) or isinstance(t0, bool) or not 1 <= t0 <= num_train_timesteps - 1:
        raise ValueError(f"t0={t0!r} must be an int in [1, {num_train_timesteps - 1}]")
    if not isinstance(n_steps, numbers.Integral) or isinstance(n_steps, bool) or not 1 <= n_steps <= t0:
        raise ValueError(f"n_steps={n_steps!r} must be an int in [1, t0={t0}]")
    if spacing == "diffusionclip":
        seq = (np.linspace(0, 1, n_steps) * t0).astype(int) if n_steps > 1 else np.array([t0])
    elif spacing == "leading":
        seq = np.arange(n_steps) * ((t0 + 1) // n_steps)
    else:
        raise ValueError(f"spacing={spacing!r} must be one of {SPACINGS}")
    return torch.from_numpy(seq[::-1].copy()).to(torch.int64)


def _resolve_schedule(model: nn.Module, schedule: Any) -> Any:
    """The ᾱ source of a chain: the caller's ``schedule``, else the one the model carries, else the paper's."""
    return schedule if schedule is not None else scheduler_config_of(model)


class _Level(NamedTuple):
    """A noise level of the chain: the UNet's timestep label and √ᾱ, √(1 − ᾱ)."""

    t: int
    sqrt_a: float
    sqrt_1ma: float


def _levels(t0: int, n_steps: int, spacing: str, schedule: Any) -> list[_Level]:
    """The n + 1 levels τ_0 > … > τ_{n−1} > clean (ᾱ = 1, labelled τ_{n−1}).

    Coefficients are Python floats computed once in float32 (as diffusers), so the loop never syncs.
    """
    a = _alphas_cumprod(schedule)  # (K,) float32
    ts = ddim_timesteps(t0, n_steps, spacing, num_train_timesteps=a.numel())
    a_t = a[ts]  # (n,) float32
    sqrt_a, sqrt_1ma = (a_t**0.5).tolist(), ((1 - a_t) ** 0.5).tolist()  # float32 arithmetic, as diffusers
    levels = [_Level(int(t), sa, s1) for t, sa, s1 in zip(ts.tolist(), sqrt_a, sqrt_1ma, strict=True)]
    return levels + [_Level(levels[-1].t, 1.0, 0.0)]


def _eps_and_x0(
    x: torch.Tensor, out: torch.Tensor, src: _Level, prediction: str, clip_x0: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε_θ, f_θ) at level ``src`` from the network output ``out`` (B, C, H, W).

    ε-prediction: f_θ = (x_t − √(1−ᾱ) ε_θ) / √ᾱ (Eq. 9's f_θ). v-prediction (v = √ᾱ ε − √(1−ᾱ) x0):
    f_θ = √ᾱ x_t − √(1−ᾱ) v and ε_θ = √(1−ᾱ) x_t + √ᾱ v, with no division, so a level with ᾱ = 0 (zero
    terminal SNR) is fine. ``clip_x0``: f_θ is clamped to [-1, 1] and ε re-derived from it so that x_t =
    √ᾱ f_θ + √(1−ᾱ) ε still holds: ε ← ε + (√ᾱ / √(1−ᾱ)) (f_θ − clip(f_θ)) (exactly ε where nothing was clipped;
    at ᾱ = 1, f_θ = x_t is left as is).
    """
    if prediction == "epsilon":
        eps = out
        x0_pred = (x - src.sqrt_1ma * eps) / src.sqrt_a  # f_θ(x_t, t): predicted clean image  (B, C, H, W)
    else:  # "v_prediction"
        x0_pred = src.sqrt_a * x - src.sqrt_1ma * out
        eps = src.sqrt_1ma * x + src.sqrt_a * out
    if clip_x0 and src.sqrt_1ma > 0:
        clipped = x0_pred.clamp(-1.0, 1.0)
        eps = eps + (src.sqrt_a / src.sqrt_1ma) * (x0_pred - clipped)
        x0_pred = clipped
    return eps, x0_pred


def _ddim_move(
    x: torch.Tensor, out: torch.Tensor, src: _Level, dst: _Level, prediction: str = "epsilon", clip_x0: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM move src → dst (Eq. 9 upward, Eq. 30 downward); returns (x_dst, f_θ).

    ``out`` is the network's output at (x_src, src.t): ε_θ or v_θ (``prediction``).
    """
    eps, x0_pred = _eps_and_x0(x, out, src, prediction, clip_x0)  # f_θ and ε_θ of the source level
    return dst.sqrt_a * x0_pred + dst.sqrt_1ma * eps, x0_pred  # √ᾱ_dst f_θ + √(1−ᾱ_dst) ε_θ


def _check_start(levels: list[_Level], prediction: str) -> None:
    """A reverse chain from a level with ᾱ = 0 needs an x0-recovering target (ε alone cannot give f_θ there)."""
    if prediction == "epsilon" and levels[0].sqrt_a == 0.0:
        raise ValueError(
            f"t0={levels[0].t}: ᾱ = 0 there (zero terminal SNR) and an ε-prediction model cannot recover f_θ at "
            "that level; start below it or use a v-prediction model"
        )


# ----------------------------------------------------------------------------------------------- model glue
def _geometry(model: nn.Module) -> tuple[int | None, int | None]:
    """(in_channels, sample_size) of a ConditionalUNet or UNet2DModel; None where unknown."""
    cfg = getattr(model, "config", None)
    if cfg is None and hasattr(model, "in_channels") and hasattr(model, "sample_size"):  # ConditionalUNet
        return model.in_channels, model.sample_size
    return getattr(cfg, "in_channels", None), getattr(cfg, "sample_size", None)


def _is_plain_unet(model: nn.Module) -> bool:
    from diffusers import UNet2DModel

    return isinstance(model, UNet2DModel)


def _eps(model: nn.Module, x: torch.Tensor, t: int, c: torch.Tensor | None) -> torch.Tensor:
    """The network's output at (x_t, t, c) (B, C, H, W): ε_θ, or v_θ for a v-prediction model
    (``prediction_type_of(model)``); a plain UNet2DModel is accepted when c is None."""
    tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)  # (B,)
    if _is_plain_unet(model):
        return model(x, tt).sample
    return model(x, tt, c)


def _model_param(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())


def _check_image(x: Any, name: str, model: nn.Module, in_range: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor of shape (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
    channels, size = _geometry(model)
    hw = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels, the model expects {channels}")
    if hw is not None and tuple(x.shape[2:]) != hw:
        raise ValueError(f"{name} is {tuple(x.shape[2:])} pixels, the model expects {hw}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    if in_range and (x.min() < -1 or x.max() > 1):
        raise ValueError(f"{name} must lie in [-1, 1] (got [{float(x.min()):.3f}, {float(x.max()):.3f}])")


def _check_cond(c: Any, batch: int, model: nn.Module) -> None:
    if c is None:
        return
    if _is_plain_unet(model):
        raise ValueError("c must be None for an unconditional UNet2DModel; wrap it in ConditionalUNet")
    if not isinstance(c, torch.Tensor) or c.ndim != 2 or not c.is_floating_point():
        raise ValueError(f"c must be a float tensor of shape (B, cond_dim), got {getattr(c, 'shape', type(c))}")
    cond_dim = getattr(model, "cond_dim", c.shape[1])
    if c.shape[0] not in (1, batch) or c.shape[1] != cond_dim:
        raise ValueError(f"c must have shape ({batch}, {cond_dim}), got {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueError("c contains NaN or inf")


# ----------------------------------------------------------------------------------------------- samplers
def invert(
    model: nn.Module,
    x0: torch.Tensor,
    c: torch.Tensor | None = None,
    t0: int = 500,
    n_steps: int = 40,
    *,
    spacing: str = DEFAULT_SPACING,
    schedule: Any = None,
    clip_x0: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM inversion, Eq. (9): clean x0 (B, C, H, W) in [-1, 1] → x_{t0} (B, C, H, W).

    ``schedule``: ᾱ_t (a scheduler, its config or a tensor); None: the model's own (``noise_scheduler_config``,
    see ``cff_lib.conditional_unet.attach_scheduler``), else the paper's. ``clip_x0``: clamp f_θ to [-1, 1]
    at every step (off by default, as Eq. 9 has no clipping; see ``sample``).
    """
    _check_image(x0, "x0", model, in_range=True)
    _check_cond(c, x0.shape[0], model)
    levels = _levels(t0, n_steps, spacing, _resolve_schedule(model, schedule))
    prediction = prediction_type_of(model)
    x = x0
    for src, dst in zip(levels[:0:-1], levels[-2::-1], strict=True):  # clean → τ_{n−1} → … → τ_0 = t0
        out = _eps(model, x, src.t, c)  # 1. ε_θ(x_t, t) (or v_θ) at the source level (Eq. 9)
        # 2. f_θ(x_t, t) (Eq. 9; clamped to [-1, 1] if clip_x0, ε re-derived), then
        # 3. x_{t+1} = √ᾱ_{t+1} f_θ(x_t, t) + √(1−ᾱ_{t+1}) ε_θ (Eq. 9)
        x, _ = _ddim_move(x, out, src, dst, prediction, clip_x0)
    return x


def sample(
    model: nn.Module,
    x_t: torch.Tensor,
    c: torch.Tensor | None = None,
    t0: int = 500,
    n_steps: int = 40,
    *,
    spacing: str = DEFAULT_SPACING,
    schedule: Any = None,
    clip_x0: bool = False,
    keep: Sequence[torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    levels_out: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Conditioned reverse DDIM, Eq. (30), from x_t (B, C, H, W) at level t0 down to x0 (B, C, H, W).

    The preserving edit (module docstring): with ``mask`` m (B, 1, H, W) and ``keep`` (the n + 1 levels of
    another chain from the same x_t), each level outside m is ``keep``'s. ``levels_out``: a list that receives
    every level of this chain (x_t first, x0 last).

    ``schedule``: ᾱ_t; None: the model's own (``noise_scheduler_config``), else the paper's. The network's
    output is read as ε or v according to ``prediction_type_of(model)``. ``clip_x0`` (default off: Eq. 30 does
    not clip): clamp the predicted clean image f_θ to [-1, 1] at every step and re-derive ε_θ from it (the
    ``clip_sample`` of diffusers' schedulers), which keeps a poorly trained model's chain from saturating.
    """
    _check_image(x_t, "x_t", model, in_range=False)
    _check_cond(c, x_t.shape[0], model)
    levels = _levels(t0, n_steps, spacing, _resolve_schedule(model, schedule))
    prediction = prediction_type_of(model)
    _check_start(levels, prediction)
    if (keep is None) != (mask is None) or (keep is not None and len(keep) != len(levels)):
        raise ValueError(f"keep and mask go together, keep holding the chain's {len(levels)} levels")
    x = x_t
    if levels_out is not None:
        levels_out.append(x)
    for k, (src, dst) in enumerate(zip(levels[:-1], levels[1:], strict=True)):  # τ_0 → τ_1 → … → clean
        out = _eps(model, x, src.t, c)  # 1. ε_θ(x_t, t, c) (or v_θ)
        # 2. f_θ(x_t, t, c) (Eq. 30; clamped to [-1, 1] if clip_x0, ε re-derived), then
        # 3. x_{t−1} = √ᾱ_{t−1} f_θ(x_t, t, c) + √(1−ᾱ_{t−1}) ε_θ (Eq. 30)
        x, _ = _ddim_move(x, out, src, dst, prediction, clip_x0)
        if mask is not None:  # 4. the preserving edit: the other chain's level outside the mask
            x = mask * x + (1 - mask) * keep[k + 1]
        if levels_out is not None:
            levels_out.append(x)
    return x


def edit_mask(edited: torch.Tensor, reconstruction: torch.Tensor, threshold: float) -> torch.Tensor:
    """The preserving edit's mask m (B, 1, H, W) in [0, 1] from two (B, C, H, W) images in [-1, 1]: the
    channel-mean absolute difference, 3x3-smoothed, rising linearly from ``threshold`` to 2 x ``threshold``,
    dilated by one pixel so the boundary blends."""
    import torch.nn.functional as F

    if not threshold > 0:
        raise ValueError(f"threshold={threshold!r} must be > 0 (pixel units in [-1, 1])")
    d = (edited.clamp(-1, 1) - reconstruction.clamp(-1, 1)).abs().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    d = F.avg_pool2d(d, 3, stride=1, padding=1, count_include_pad=False)
    m = ((d - threshold) / threshold).clamp(0.0, 1.0)
    return F.max_pool2d(m, 3, stride=1, padding=1)


def preserving_sample(model: nn.Module, x_t: torch.Tensor, c: torch.Tensor, t0: int, n_steps: int,
                      keep: Sequence[torch.Tensor], threshold: float, *, spacing: str = DEFAULT_SPACING
                      ) -> torch.Tensor:
    """The preserving edit's conditioned half (module docstring) from x_t (B, C, H, W) at ``t0``, given ``keep``:
    the n + 1 levels of the c = None chain from the same x_t (``sample(..., levels_out=keep)``), each (B or 1, C,
    H, W). The plain edit, its mask against the reconstruction ``keep[-1]``, then the chain again with ``keep``'s
    levels outside the mask. Returns x0 (B, C, H, W), unclamped."""
    keep = [lv.expand_as(x_t) for lv in keep]
    plain = sample(model, x_t, c, t0, n_steps, spacing=spacing)  # 1. the plain edit, Eq. (30)
    m = edit_mask(plain, keep[-1], threshold)  # 2. (B, 1, H, W)
    return sample(model, x_t, c, t0, n_steps, spacing=spacing, keep=keep, mask=m)  # 3. the reconstruction outside m


def sample_with_stepwise_grad(
    model: nn.Module,
    x_t: torch.Tensor,
    c: torch.Tensor | None,
    t0: int,
    n_steps: int,
    loss_fn: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    spacing: str = DEFAULT_SPACING,
    schedule: Any = None,
    clip_x0: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Eq. (30) with a loss backpropagated at every step; memory independent of ``n_steps``.

    At step k the predicted clean image f_θ (B, C, H, W) goes to ``loss_fn(x0_pred, k)`` (a scalar), whose
    gradient is accumulated at once into the trainable parameters (``.grad``); the chain then
    continues from the detached x_{t−1}, so no graph outlives its step (DiffusionCLIP's GPU-efficient
    fine-tuning). No gradient reaches ``x_t``. If ``c`` requires grad (e.g. it comes from the fusion
    module), its gradient is summed over the steps and pushed through c's own graph once at the end.
    Call ``optimizer.step()`` afterwards.

    ``schedule`` and ``clip_x0`` as in ``sample`` (with ``clip_x0`` the loss sees the clamped f_θ).

    Returns the final x0 (detached, (B, C, H, W)) and the per-step losses as floats.
    """
    _check_image(x_t, "x_t", model, in_range=False)
    _check_cond(c, x_t.shape[0], model)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable (x0_pred, step_index) -> scalar, got {type(loss_fn).__name__}")
    levels = _levels(t0, n_steps, spacing, _resolve_schedule(model, schedule))
    prediction = prediction_type_of(model)
    _check_start(levels, prediction)
    c_leaf = c.detach().requires_grad_(True) if c is not None and c.requires_grad else c
    x, losses = x_t.detach(), []
    for k, (src, dst) in enumerate(zip(levels[:-1], levels[1:], strict=True)):  # τ_0 = t0 → … → clean
        with torch.enable_grad():
            out = _eps(model, x, src.t, c_leaf)  # 1. ε_θ(x_t, t, c) (or v_θ)
            # 2. Eq. (30), keeping f_θ (clamped to [-1, 1] if clip_x0, ε re-derived)
            x_next, x0_pred = _ddim_move(x, out, src, dst, prediction, clip_x0)
            loss = loss_fn(x0_pred, k)  # 3. loss on the predicted clean image
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
            if loss.requires_grad:
                loss.backward()  # 4. accumulate this step's gradient, free its graph
        losses.append(float(loss.detach()))
        x = x_next.detach()  # 5. continue from the detached x_{t−1}
    if c_leaf is not c and c_leaf.grad is not None:
        torch.autograd.backward(c, grad_tensors=c_leaf.grad)  # one pass through c's upstream graph
    return x, losses


def generate(
    model: nn.Module,
    c: torch.Tensor | None = None,
    n_steps: int = 50,
    shape: tuple[int, int, int, int] | None = None,
    generator: torch.Generator | None = None,
    *,
    spacing: str = DEFAULT_SPACING,
    schedule: Any = None,
    clip_x0: bool = False,
) -> torch.Tensor:
    """Text/multi-modal-to-face: x_T ~ N(0, I) (B, C, H, W) through the full chain (t0 = K − 1 = 999) to x0.

    ``schedule``/``clip_x0``: as in ``sample`` (None: the model's own schedule, else the paper's).

    ``shape`` defaults to (B, in_channels, sample_size, sample_size) with B = len(c) (1 without c).
    The noise is drawn as diffusers' pipelines draw it (``randn_tensor`` with ``generator``), in the
    model's dtype and on its device.
    """
    from diffusers.utils.torch_utils import randn_tensor

    param = _model_param(model)
    channels, size = _geometry(model)
    if shape is None:
        if channels is None or size is None:
            raise ValueError("shape is required for a model without in_channels/sample_size")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        shape = (c.shape[0] if isinstance(c, torch.Tensor) else 1, channels, *hw)
    if len(shape) != 4 or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape):
        raise ValueError(f"shape={shape!r} must be four positive ints (B, C, H, W)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    schedule = _resolve_schedule(model, schedule)
    t_max = _alphas_cumprod(schedule).numel() - 1
    x_T = randn_tensor(tuple(int(s) for s in shape), generator=generator, device=param.device, dtype=param.dtype)
    return sample(model, x_T, c, t_max, n_steps, spacing=spacing, schedule=schedule, clip_x0=clip_x0)


def _check_chains_meet(schedule: Any, t0: int, n_inv_steps: int, n_gen_steps: int, spacing: str) -> None:
    """The reverse chain must start where the inversion ends."""
    k = _alphas_cumprod(schedule).numel()
    top_inv = int(ddim_timesteps(t0, n_inv_steps, spacing, num_train_timesteps=k)[0])
    top_gen = int(ddim_timesteps(t0, n_gen_steps, spacing, num_train_timesteps=k)[0])
    if top_inv != top_gen:  # only possible with "leading", whose grid need not end at t0
        raise ValueError(
            f"n_gen_steps={n_gen_steps}: with spacing={spacing!r} the reverse chain would start at "
            f"t={top_gen} but the inversion ends at t={top_inv}; use equal step counts"
        )


def edit(
    model: nn.Module,
    x_ref: torch.Tensor,
    c: torch.Tensor | None,
    t0: int = 500,
    n_inv_steps: int = 40,
    n_gen_steps: int = 40,
    *,
    spacing: str = DEFAULT_SPACING,
    schedule: Any = None,
    clip_x0: bool = False,
) -> torch.Tensor:
    """The paper's zero-shot edit: invert x_ref (B, C, H, W) unconditionally to t0 (Eq. 9, c = None, as
    DiffusionCLIP), then run the reverse process conditioned on c (Eq. 30). No per-image optimisation.

    ``schedule``: None: the model's own, else the paper's. ``clip_x0`` applies to the reverse process only
    (clipping inside the inversion would break its mirror symmetry with sampling)."""
    _check_image(x_ref, "x_ref", model, in_range=True)
    _check_cond(c, x_ref.shape[0], model)
    schedule = _resolve_schedule(model, schedule)
    _check_chains_meet(schedule, t0, n_inv_steps, n_gen_steps, spacing)
    x_t0 = invert(model, x_ref, None, t0, n_inv_steps, spacing=spacing, schedule=schedule)  # 1. Eq. (9)
    return sample(model, x_t0, c, t0, n_gen_steps, spacing=spacing, schedule=schedule, clip_x0=clip_x0)  # 2. Eq. 30


def edit_variants(model: nn.Module, x_ref: torch.Tensor, conditions: Mapping[str, torch.Tensor | None],
                  cfg: EditConfig, samplers: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """The zero-shot edit of ``x_ref`` (B, C, H, W) under several conditions at once: one inversion to
    ``cfg.t0`` (Eq. 9, c = None, never differentiated: it does not depend on c), then one reverse chain per
    entry of ``conditions`` ({name: c (B, cond_dim) or None}; Eq. 30), all from that x_t0. The reverse chains
    keep their graph when gradients are enabled (training) unless ``cfg.preserve_threshold`` asks for the
    preserving edit (module docstring; run without gradients). Returns {name: x0 (B, C, H, W)}, unclamped.
    What control, evaluation, the baseline and training all run; ``edit`` is the one-condition case.

    ``samplers``: {name: the network of that entry's reverse chain} where it is not ``model`` -- the same
    backbone in another conditioning wrapper (the text-only baseline's 512-d projection on the pretrained DDPM
    beside ClipFaceFusion's on the same DDPM), which shares ``model``'s c = None inversion."""
    if not conditions:
        raise ValueError("conditions is empty: name at least one c (None = the reconstruction)")
    samplers = dict(samplers or {})
    unknown = sorted(set(samplers) - set(conditions))
    if unknown:
        raise ValueError(f"samplers names {unknown}, which are not among the conditions {sorted(conditions)}")
    _check_chains_meet(_resolve_schedule(model, None), cfg.t0, cfg.n_inv_steps, cfg.n_gen_steps, cfg.spacing)
    with torch.no_grad():
        x_t0 = invert(model, x_ref, None, cfg.t0, cfg.n_inv_steps, spacing=cfg.spacing)  # 1. Eq. (9)
    if cfg.preserve_threshold is None:
        return {name: sample(samplers.get(name, model), x_t0, c, cfg.t0, cfg.n_gen_steps,  # 2. Eq. (30) per c
                             spacing=cfg.spacing)
                for name, c in conditions.items()}
    rec: list[torch.Tensor] = []  # the preserving edit (module docstring), never differentiated
    with torch.no_grad():
        sample(model, x_t0, None, cfg.t0, cfg.n_gen_steps, spacing=cfg.spacing, levels_out=rec)  # 2. c = None
        out = {}
        for name, c in conditions.items():
            if c is None:
                out[name] = rec[-1]
                continue
            out[name] = preserving_sample(samplers.get(name, model), x_t0, c, cfg.t0, cfg.n_gen_steps, rec,
                                          cfg.preserve_threshold, spacing=cfg.spacing)  # 3.-4.
    return out
