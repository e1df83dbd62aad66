"""What every pretraining trainer shares: the learning-rate schedules, the resumable training state and the loop.

The synthetic world's stand-in backends (``pretrain_vision``, ``pretrain_audio``, ``pretrain_ddpm``) and the
referees (``referees``) train with plain AdamW steps. This module is the one home of those steps:

- :func:`run_loop`: set the step's learning rate, compute the loss, clear the gradients, back-propagate, clip,
  step, record the loss; optionally a hook after each step (an EMA), a resumable checkpoint every n steps and a
  wall-clock budget (stop, save, return what was reached).
- two schedules, each bit-identical to what its trainers have always used (shipped weights were trained under
  them): :func:`warmup_times_cosine` (the vision backends and the referees: a linear warm-up over the first 5 %
  multiplied by a cosine decay to 0 over the whole run) and :func:`warmup_then_cosine` (the audio encoder and
  the DDPM: a linear warm-up, then a cosine decay to ``floor`` of the peak, or a constant rate).
- :func:`optimise`: AdamW + :func:`warmup_times_cosine` + :func:`run_loop`, for trainers without resumable state.
- :func:`save_train_state` / :func:`load_train_state` / :func:`state_path`: the resumable state (module weights,
  AdamW state, step, losses, the run's config and the torch RNG) as safetensors under ``build/pretrain_state/``.
- :func:`check_steps` and :func:`loss_curve`, the step-count check and the recorded loss curve.

It imports no model or encoder: the trainers pass in their modules, optimiser and loss.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cff_lib.atomic import atomic_path
from cff_lib.provenance import REPO_ROOT


# ------------------------------------------------------------------------------------------ schedules
def warmup_times_cosine(step: int, steps: int, warmup: int) -> float:
    """min(1, (step + 1) / warmup) · ½ (1 + cos(π min(1, step / steps))): the vision and referee schedule."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))


def warmup_then_cosine(step: int, steps: int, warmup: int, *, floor: float = 0.1, constant: bool = False) -> float:
    """(step + 1) / warmup during the warm-up, then 1 (``constant``) or a cosine decay from 1 to ``floor`` at
    ``steps``: the audio-encoder and DDPM schedule."""
    if step < warmup:
        return (step + 1) / warmup
    if constant:
        return 1.0
    t = (step - warmup) / max(1, steps - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def check_steps(steps, default: int | None = None, *, argument: str = "steps") -> int:
    """``steps`` as a positive int (``default`` when None); a ValueError naming ``argument`` otherwise."""
    if steps is None and default is not None:
        return default
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        hint = " (or None for the profile's default)" if default is not None else ""
        raise ValueError(f"{argument}={steps!r} must be a positive int{hint}")
    return steps


def loss_curve(losses: Sequence[float], points: int = 100) -> list[float]:
    """The loss averaged over ``points`` equal chunks of steps (what records and plots keep)."""
    if not losses:
        return []
    chunks = np.array_split(np.asarray(losses, dtype=np.float64), min(points, len(losses)))
    return [round(float(c.mean()), 5) for c in chunks]


# ------------------------------------------------------------------------------------------ resumable state
def state_path(profile, name: str) -> Path:
    """Where a stopped run of ``profile`` keeps its resumable state ``name`` (scratch, under build/)."""
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
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    # a field added after the state was written counts as its default (older states stay resumable)
    saved = {**json.loads(json.dumps(defaults)), **json.loads(meta.get("config", "{}"))}
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


# ------------------------------------------------------------------------------------------ the loop
def run_loop(opt: torch.optim.Optimizer, step_loss: Callable[[int], torch.Tensor], *, steps: int, lr: float,
             lr_factor: Callable[[int], float], clip: Iterable[torch.Tensor] | None = None,
             grad_clip: float | None = None, start: int = 0, losses: Sequence[float] = (),
             after_step: Callable[[int], None] | None = None,
             checkpoint: Callable[[int, list[float]], None] | None = None, checkpoint_every: int = 0,
             max_wall_s: float | None = None, started: float | None = None, desc: str = "train",
             progress: bool = True, leave: bool = True, postfix_every: int = 1, postfix_window: int = 20,
             postfix_format: str = ".3f") -> tuple[list[float], int]:
    """Steps ``start`` .. ``steps - 1`` of one optimiser; returns (the loss of every step so far, steps done).

    Each step: every param group's lr = ``lr · lr_factor(step)``; ``loss = step_loss(step)``; zero the
    gradients; backward; clip the global norm of ``clip`` to ``grad_clip`` (None: no clipping); ``opt.step()``;
    ``after_step(step)``. ``checkpoint(done, losses)`` is called, before the run's end, every
    ``checkpoint_every`` steps (0: never) and when ``max_wall_s`` seconds have passed since ``started`` (default:
    now), after which the loop stops. ``losses``: those of the steps before ``start`` (a resumed run).
    """
    if grad_clip is not None and clip is None:
        raise ValueError("grad_clip needs clip= (the parameters whose gradient norm is clipped)")
    if max_wall_s is not None and not max_wall_s > 0:
        raise ValueError(f"max_wall_s={max_wall_s!r} must be positive or None")
    clip = list(clip) if clip is not None else None
    t_start = time.time() if started is None else started
    losses, done = list(losses), start
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps, leave=leave)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(step)
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(clip, grad_clip)
        opt.step()
        if after_step is not None:
            after_step(step)
        losses.append(float(loss.detach()))
        done = step + 1
        if step % postfix_every == 0:
            bar.set_postfix(loss=format(float(np.mean(losses[-postfix_window:])), postfix_format))
        out_of_time = max_wall_s is not None and time.time() - t_start > max_wall_s
        if checkpoint is not None and done < steps and (
                (checkpoint_every and done % checkpoint_every == 0) or out_of_time):
            checkpoint(done, losses)
        if out_of_time:
            break
    return losses, done


def optimise(params, steps: int, lr: float, step_fn: Callable[[int], torch.Tensor], desc: str,
             progress: bool, *, weight_decay: float = 1e-4, grad_clip: float | None = 5.0) -> list[float]:
    """AdamW under :func:`warmup_times_cosine` (warm-up over the first 5 % of ``steps``); ``grad_clip`` None:
    no clipping. Returns the loss of every step. The vision trainers' and the referees' optimiser."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, steps // 20)
    losses, _ = run_loop(opt, step_fn, steps=steps, lr=lr, lr_factor=lambda s: warmup_times_cosine(s, steps, warm),
                         clip=params, grad_clip=grad_clip, desc=desc, progress=progress, leave=False,
                         postfix_every=20)
    return losses


__all__ = ["check_steps", "load_train_state", "loss_curve", "optimise", "run_loop", "save_train_state",
           "state_path", "warmup_then_cosine", "warmup_times_cosine"]
