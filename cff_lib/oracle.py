"""Ground-truth edit targets: the same synthetic person rendered at the row's target age, emotion and intensity.

The synthetic world knows who every held-out face is (:mod:`cff_lib.synthetic_world` derives each file from
its seed), so for an edit request "this face, aged 70, happy" it can draw the answer: the identity, framing,
background and clothes of the source (its ``variation_seed``), with only the asked attributes changed. An
edit is then judged by its distance to that *oracle target* (:func:`oracle_distances`: SSIM, PSNR and the
referees' LPIPS-formula distance, a feature space no loss used), next to the paper's metrics.

Rows without ground truth (the paper world; an image that is not one of the world's FFHQ / CACD files) have
no oracle: :func:`oracle_targets` raises ValueError naming the row, and :func:`has_oracle` lets tables print
"n/a" instead.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from cff_lib.emotions import EMOTIONS

NEUTRAL_INTENSITY = 1.0  # the world renders "neutral" at intensity 1 (synthetic_world._face_emotion)


@functools.lru_cache(maxsize=4)
def _world_faces(spec) -> dict[str, object]:
    """"ffhq/<path>" / "cacd/<path>" -> FaceSample for every face file of the world (metadata only)."""
    from cff_lib.synthetic_world import cacd_samples, ffhq_sample

    out = {}
    for i in range(spec.n_ffhq):
        s = ffhq_sample(spec, i)
        out[f"ffhq/{s.path}"] = s
    for j in range(spec.n_cacd_identities):
        for s in cacd_samples(spec, j):
            out[f"cacd/{s.path}"] = s
    return out


def has_oracle(profile) -> bool:
    """True for the synthetic world (every face file has ground truth); False for the paper world."""
    return profile.data.world == "synthetic"


def world_face(profile, image: str):
    """The FaceSample (identity, attributes, variation seed) behind a world face path ("ffhq/00000/00042.png")."""
    from cff_lib.world import world_spec

    if not has_oracle(profile):
        raise ValueError(f"profile {profile.name!r} is the paper world: image {image!r} has no ground truth to "
                         "render an oracle target from")
    face = _world_faces(world_spec(profile)).get(str(image))
    if face is None:
        raise ValueError(f"image {image!r} is not a face file of the {profile.name!r} synthetic world "
                         "(want 'ffhq/NNNNN/NNNNN.png' or 'cacd/<age>_<Name>_<idx>.jpg'); no oracle target")
    return face


def oracle_image(profile, image: str, target_age: float | None, target_emotion: str | None,
                 target_intensity: float | None = None) -> torch.Tensor:
    """(3, S, S) in [-1, 1]: the person of ``image`` rendered at the target attributes (None keeps the source's).

    Renders are memoised (:data:`RENDER_CACHE_SIZE` of them): the conditional prior asks for the same training
    rows' targets every epoch (measured: 0.046 s of a 0.5 s toy step). The returned tensor is a fresh copy."""
    from cff_lib.world import world_spec

    world_face(profile, image)  # a clear error for a paper-world profile or an unknown image
    if target_emotion is not None and target_emotion not in EMOTIONS:
        raise ValueError(f"target_emotion={target_emotion!r} is not one of {EMOTIONS}")
    age = None if target_age is None else float(target_age)
    intensity = None if target_intensity is None else float(target_intensity)
    return _render(world_spec(profile), str(image), age, target_emotion, intensity).clone()


RENDER_CACHE_SIZE = 40_000
"""Oracle renders kept in memory (12 KiB each at 32², 0.5 GiB at most; toy training uses ~11,000)."""


@functools.lru_cache(maxsize=RENDER_CACHE_SIZE)
def _render(spec, image: str, target_age: float | None, target_emotion: str | None,
            target_intensity: float | None) -> torch.Tensor:
    from cff_lib.synthetic_faces import FaceAttributes, render_face

    face = _world_faces(spec)[image]
    src = face.attrs
    emotion = src.emotion if target_emotion is None else target_emotion
    if target_emotion is None:
        intensity = src.intensity
    elif emotion == "neutral":
        intensity = NEUTRAL_INTENSITY
    else:
        intensity = target_intensity if target_intensity is not None else 1.0
    age = src.age if target_age is None else target_age
    img = render_face(FaceAttributes(src.identity, age, emotion, intensity), spec.image_size,
                      variation_seed=face.variation_seed)
    arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    return torch.from_numpy(arr)


def oracle_targets(profile, rows: Sequence) -> torch.Tensor:
    """(B, 3, S, S) oracle targets of composite rows (their ``image``, ``target_age``, ``target_emotion``,
    ``target_intensity``). ValueError naming the first row without ground truth."""
    if len(rows) == 0:
        raise ValueError("rows is empty: no oracle targets to render")
    out = []
    for k, r in enumerate(rows):
        if getattr(r, "image", None) is None:
            raise ValueError(f"rows[{k}] has no face image: no oracle target")
        try:
            out.append(oracle_image(profile, r.image, r.target_age, r.target_emotion, r.target_intensity))
        except ValueError as e:
            raise ValueError(f"rows[{k}]: {e}") from e
    return torch.stack(out)


def same_expression_targets(profile, rows: Sequence) -> torch.Tensor:
    """(B, 3, S, S): the person of each row at its ``target_age`` with the source's own expression -- the
    oracle target minus its expression change (the conditional prior's expression mask, losses.py)."""
    if len(rows) == 0:
        raise ValueError("rows is empty: no targets to render")
    return torch.stack([oracle_image(profile, r.image, r.target_age, None) for r in rows])


def scenario_targets(profile, resolved) -> torch.Tensor:
    """(B, 3, S, S) oracle targets of resolved Fig. 4 scenarios (``qualitative.resolve_scenarios``): each face
    at its scenario's age and emotion (intensity 1 for an intense clip, 0.5 otherwise, as the conditions)."""
    return torch.stack([oracle_image(profile, r.image, float(r.scenario.age), r.scenario.emotion,
                                     1.0 if r.scenario.intensity_code == 2 else 0.5) for r in resolved])


@torch.no_grad()
def oracle_distances(referees, generated: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
    """Per pair distance of each edit to its oracle target: ``oracle_ssim`` (higher = closer), ``oracle_psnr``
    (dB), ``oracle_lpips_ref`` (uniform-weight LPIPS formula on the referees' maps, lower = closer) and
    ``oracle_mse`` (pixel MSE on [-1, 1])."""
    from cff_lib import metrics

    metrics._check_pair(generated, targets, ("generated", "targets"))
    lp = metrics.Lpips("synthetic", vgg=referees.feature_maps)
    mse = (generated.double() - targets.double()).pow(2).mean(dim=(1, 2, 3))
    psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-12))  # peak-to-peak 2 on [-1, 1] = peak 1 on [0, 1]
    return {"oracle_ssim": np.asarray(metrics.ssim(generated, targets).per_item),
            "oracle_psnr": psnr.numpy(), "oracle_lpips_ref": np.asarray(lp(generated, targets).per_item),
            "oracle_mse": mse.numpy()}
