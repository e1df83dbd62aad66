"""L2 projected gradient ascent on images: the attack that adversarial training of a guide defends against,
and the probe that asks whether a judge's gradients are semantic.

A guide (a network a loss reads: AgeEst, EmoEst, ArcFace, CLIP) trained on clean images has gradients that
look like noise: following them fools the guide without changing the face, which is what the toy
ClipFaceFusion's edits did (docs/errata.md, "Robust guides"). Training the guide on the worst case inside a
small L2 ball (Madry et al. 2018) makes its gradients perceptually aligned (Santurkar et al. 2019): a step
that raises its "happy" score has to move the mouth. :func:`l2_pgd` is that worst case; the same function,
run toward a target, is the probe (``bench/guide_gradient_probe.py``): an attack against a guide that an
independent referee also believes is an edit, not a fooling.

Budgets are in the images' own units ([-1, 1] per channel), per image over all C·H·W values: at 32² an L2
radius of 1.0 is an RMS change of 1/√3072 ≈ 0.018 per value (about 2.3 grey levels of 255).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _per_image_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))  # (B, 1, 1, 1)


def l2_pgd(objective: Callable[[Tensor], Tensor], images: Tensor, radius: float, steps: int, *,
           step_size: float | None = None, generator: torch.Generator | None = None,
           random_start: bool = True) -> Tensor:
    """Images inside the L2 ball of ``radius`` around each of ``images`` (B, C, H, W) in [-1, 1] that
    increase ``objective(images') -> (B,)`` (one value per image, to be *maximised*), after ``steps``
    normalised-gradient steps of ``step_size`` (default 2.5 · radius / steps, Madry et al.), each projected
    back onto the ball and into [-1, 1]. ``random_start``: begin at a random point of the ball (seeded by
    ``generator``). Returns a detached tensor; the networks inside ``objective`` are left as they are
    (put them in eval mode first if they have BatchNorm).
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive int")
    if not radius > 0:
        raise ValueError(f"radius={radius!r} must be positive")
    step = 2.5 * radius / steps if step_size is None else float(step_size)
    x = images.detach()
    if random_start:
        d = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        u = torch.rand((x.shape[0],), generator=generator, dtype=x.dtype).to(x.device)
        delta = d / _per_image_norm(d) * radius * u.view(-1, 1, 1, 1)  # uniform radius draw in the ball
    else:
        delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        value = objective((x + delta).clamp(-1.0, 1.0))  # (B,)
        if value.shape != (x.shape[0],):
            raise ValueError(f"objective must return one value per image, shape ({x.shape[0]},); got "
                             f"{tuple(value.shape)}")
        (grad,) = torch.autograd.grad(value.sum(), delta)
        with torch.no_grad():
            delta = delta + step * grad / _per_image_norm(grad)  # 1. ascend along the normalised gradient
            delta = delta * (radius / _per_image_norm(delta)).clamp(max=1.0)  # 2. project onto the L2 ball
            delta = (x + delta).clamp(-1.0, 1.0) - x  # 3. stay a valid image
    return (x + delta).detach()


__all__ = ["l2_pgd"]
