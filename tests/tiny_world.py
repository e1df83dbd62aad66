"""A tiny composite set on disk (12 random 32² faces, 3 noise clips, 10 rows over train/val and every source) for
training tests that must not depend on trained weights or the generated worlds (tests/test_training.py, the
accelerate parity worker). Deterministic: the same files and rows on every call and in every process."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from cff_lib.composite import CompositeSample, CompositeSet


def _row(split, source, i, audio=None, age=40.0, emotion="happy"):
    return CompositeSample(split=split, source=source, image=f"ffhq/{i:05d}.png", audio=audio, target_image=None,
                           target_age=age, target_emotion=emotion, target_intensity=1.0 if emotion else None,
                           caption="a face", source_age=30.0, source_emotion="neutral", gender="female",
                           identity=f"ffhq:{i}", speaker=None)


def write_tiny_world(root: Path) -> CompositeSet:
    """Write the faces and clips under ``root`` and return the composite set that reads them."""
    rng = np.random.default_rng(0)
    (root / "ffhq").mkdir(parents=True, exist_ok=True)
    (root / "ravdess").mkdir(parents=True, exist_ok=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "ffhq" / f"{i:05d}.png")
    for i in range(3):
        sf.write(root / "ravdess" / f"{i}.wav", rng.standard_normal(8000 + 800 * i) * 0.1, 16000)
    rows = []
    for split, offset in (("train", 0), ("val", 8)):
        rows += [_row(split, "ffhq", offset, "ravdess/0.wav", 70.0, "sad"), _row(split, "ffhq", offset + 1),
                 _row(split, "cacd", offset + 2, None, 25.0, None),
                 _row(split, "ravdess", offset + 3, "ravdess/1.wav", None, "angry"),
                 _row(split, "voxceleb", offset + 1, "ravdess/2.wav", None, None)]
    return CompositeSet(seed=42, ratios={"ffhq": .5, "cacd": .3, "ravdess": .1, "voxceleb": .1},
                        samples=tuple(rows), manifest_digests={})
