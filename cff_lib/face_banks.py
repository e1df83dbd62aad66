"""Labelled face banks held in memory: what the vision pre-training, the referees and the realism checks read.

A :class:`FaceBank` holds uint8 faces with their identity, age, emotion, intensity and gender.
:func:`render_bank` renders fresh identities of the synthetic world (:mod:`cff_lib.synthetic_faces`; identity
i of a seed stream is always the same person), :func:`dataset_bank` reads one manifest split of FFHQ / CACD
(labels from the manifests' ground-truth columns) and :func:`concat_banks` joins banks without sharing an
identity. Which banks a profile trains and evaluates on is :mod:`cff_lib.pretrain_vision`'s
(``training_bank``, ``heldout_banks``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.captions import caption_from_attributes
from cff_lib.emotions import EMOTIONS, valence_arousal


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

    if isinstance(profile, str):
        from cff_lib.config import load_profile

        profile = load_profile(profile)
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


__all__ = ["FaceBank", "concat_banks", "dataset_bank", "render_bank"]
