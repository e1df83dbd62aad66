"""How real are an unconditional DDPM's samples? Read in the referees' feature space, beside a floor.

Issue 11's first test of the synthetic backbone: DDIM samples from pure noise against fresh renders of the
synthetic world (:func:`cff_lib.referees.realism_reference`), as the Fréchet distance and KID in the
referees' pooled features (:meth:`cff_lib.referees.Referees.features`; no guide and no loss ever saw that
space). The same two numbers for a same-size set of *other* fresh renders are the floor: what a perfect
generator would score with this many images. The target is a sample score within 2× of the floor.
"""
from __future__ import annotations

import numpy as np
import torch

from cff_lib import metrics
from cff_lib.face_banks import render_bank
from cff_lib.pretrain_ddpm import ddpm_samples
from cff_lib.referees import REFEREE_SEED_OFFSET, realism_reference

FLOOR_STREAM = 0xF100D  # render stream of the floor set (realism_reference uses its own)
KID_SCALE = 1000.0  # KID is reported ×1000
SATURATED = 0.98  # |value| above this (images in [-1, 1]) counts as a saturated channel value


def floor_renders(profile, n: int) -> torch.Tensor:
    """``n`` fresh renders (B, 3, S, S) in [-1, 1] drawn exactly like the realism reference, from another
    stream: the set a perfect generator's samples would be indistinguishable from."""
    bank = render_bank(profile.train.seed + REFEREE_SEED_OFFSET, FLOOR_STREAM, n, 1, profile.data.image_size,
                       clean=False, name="fresh renders (realism floor)")
    return bank.floats(slice(None))


def _scores(referees, images: torch.Tensor, reference_features: np.ndarray, kid_subset: int) -> dict:
    feats = referees.features(images)
    kid, kid_std = metrics.kernel_inception_distance(feats, reference_features, subset_size=kid_subset)
    return {"fd": metrics.frechet_distance(feats, reference_features), "kid_x1000": KID_SCALE * kid,
            "kid_std_x1000": KID_SCALE * kid_std,
            "saturated_fraction": float((images.abs() > SATURATED).float().mean())}


def ddpm_realism(unet, profile, referees, *, n: int = 200, n_steps: int = 50, clip_x0: bool = False,
                 seed: int = 2024, kid_subset: int | None = None) -> dict:
    """Realism of ``n`` DDIM samples of ``unet`` (``n_steps`` steps from pure noise, seed ``seed``; see
    :func:`cff_lib.pretrain_ddpm.ddpm_samples` for ``clip_x0``) against ``n`` fresh renders, with the
    floor (``floor_*``: ``n`` other fresh renders against the same reference) and the ratios ``fd_ratio``
    (sample FD / floor FD). KID ×1000 on subsets of ``kid_subset`` (default n // 2)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise ValueError(f"n={n!r} must be an integer >= 4")
    m = kid_subset or n // 2
    reference = referees.features(realism_reference(profile, n))
    samples = ddpm_samples(unet, n, seed, n_steps, "ddim", clip_x0)
    out = {f"sample_{k}": v for k, v in _scores(referees, samples, reference, m).items()}
    out.update({f"floor_{k}": v for k, v in _scores(referees, floor_renders(profile, n), reference, m).items()})
    out["fd_ratio"] = out["sample_fd"] / out["floor_fd"]
    out.update({"n": n, "n_steps": n_steps, "clip_x0": clip_x0, "seed": seed, "kid_subset": m})
    return out


__all__ = ["FLOOR_STREAM", "ddpm_realism", "floor_renders"]
