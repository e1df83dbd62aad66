"""The composite rows as model inputs: one home for reading the training / validation / test data.

:func:`load_composite` reads the composite set notebooks/01 wrote; :func:`dataset_for` turns its rows into a
:class:`CompositeDataset` (the face as I_ref, (3, H, W) in [-1, 1], with its target conditions, and a 5-s
audio window drawn once per row from the audio seed); :func:`collate` stacks a batch; :func:`load_rows` gives a
few rows as one batch of faces and conditions. Training, control, evaluation and the baselines all read data
through here.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cff_lib.captions import source_caption
from cff_lib.composite import CompositeSample, CompositeSet, read_composite
from cff_lib.preprocessing import load_audio, load_image
from cff_lib.world import COMPOSITE_NAME, data_root, manifest_dir


class CompositeDataset(torch.utils.data.Dataset):
    """Composite rows -> model inputs: the face (I_ref, (3, H, W) in [-1, 1]) and its target conditions.

    Items: ``image``, ``caption`` (target text), ``source_caption``, ``target_age``, ``target_emotion``,
    ``intensity``, ``audio`` (1-D waveform tensor or None), ``index``. Audio-only rows (no face) are refused.
    """

    def __init__(self, samples: Sequence[CompositeSample], root: str | os.PathLike, *, image_size: int,
                 sample_rate: int, max_audio_seconds: float, audio_seed: int = 123):
        self.samples = tuple(samples)
        self.root = Path(root)
        self.image_size = int(image_size)
        self.sample_rate = int(sample_rate)
        self.max_audio_seconds = float(max_audio_seconds)
        self.audio_seed = int(audio_seed)
        faceless = [i for i, s in enumerate(self.samples) if s.image is None]
        if faceless:
            raise ValueError(f"samples {faceless[:5]} have no image; ClipFaceFusion edits faces")
        if not self.root.is_dir():
            raise FileNotFoundError(f"data root {str(self.root)!r} does not exist; run notebooks/01 first")

    def __len__(self) -> int:
        return len(self.samples)

    def _audio(self, index: int, rel: str) -> Tensor:
        wave = load_audio(self.root / rel, self.sample_rate, max_seconds=None)
        keep = int(round(self.max_audio_seconds * self.sample_rate))
        if wave.size > keep:  # a 5-s window, drawn once per row from the audio seed (Table 3: 123)
            start = int(np.random.default_rng([self.audio_seed, index]).integers(0, wave.size - keep + 1))
            wave = wave[start:start + keep]
            wave = (wave - wave.mean()) / max(float(wave.std()), 1e-8)
        return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        return {
            "index": index,
            "image": torch.from_numpy(load_image(self.root / s.image, self.image_size)),
            "caption": s.caption,
            "source_caption": source_caption(s.gender),
            "target_age": s.target_age,
            "target_emotion": s.target_emotion,
            "intensity": s.target_intensity,
            "audio": None if s.audio is None else self._audio(index, s.audio),
        }


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack images to (B, 3, H, W) and ``index`` to (B,); every other field becomes a list of B entries."""
    if not items:
        raise ValueError("collate got an empty batch")
    out: dict[str, Any] = {k: [it[k] for it in items] for k in items[0]}
    out["image"] = torch.stack(out["image"])
    out["index"] = torch.tensor(out["index"], dtype=torch.long)
    return out


def dataset_for(profile, samples: Sequence[CompositeSample], root: str | os.PathLike | None = None
                ) -> CompositeDataset:
    d = profile.data
    return CompositeDataset(samples, root if root is not None else data_root(profile), image_size=d.image_size,
                            sample_rate=d.sample_rate, max_audio_seconds=d.max_audio_seconds,
                            audio_seed=profile.train.audio_seed)


def load_rows(profile, rows: Sequence[CompositeSample]) -> tuple[Tensor, dict[str, Any]]:
    """(faces (B, 3, H, W) in [-1, 1], conditions) of composite rows in one batch, through :func:`dataset_for`
    and :func:`collate` (the conditions without ``image`` and ``index``)."""
    ds = dataset_for(profile, rows)
    batch = collate([ds[i] for i in range(len(ds))])
    images = batch.pop("image")
    batch.pop("index")
    return images, batch


def load_composite(profile) -> CompositeSet:
    """The composite set notebooks/01 wrote for ``profile`` (data_manifests/<world>/<profile>/composite.csv)."""
    path = manifest_dir(profile) / COMPOSITE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no composite set at {path}; run notebooks/01_data_assembly for profile "
                                f"{profile.name!r} first")
    return read_composite(path)


__all__ = ["CompositeDataset", "collate", "dataset_for", "load_composite", "load_rows"]
