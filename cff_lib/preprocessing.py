"""Image, audio and age preprocessing (paper "Training procedure": "Dataset alignment and normalization").

- Images (FFHQ, CACD) are centre-cropped to a square and resized (256 x 256 in the paper) with PIL's bicubic
  filter, then mapped to float32 ``(3, size, size)`` in [-1, 1], the range the DDIM backbone works in. The
  "CLIP preprocessing" the paper mentions is the CLIP encoder's own resize/normalise step and is applied
  there, not here.
- Audio (RAVDESS, VoxCeleb) is read from WAV, mixed down to mono by averaging the channels with equal
  weights, resampled to 16 kHz with a polyphase filter (``scipy.signal.resample_poly``), truncated to the
  first 5 s (shorter clips are kept as they are, not padded) and normalised to zero mean and unit variance.
- Ages (CACD, 16-99 years in the paper's "Datasets") are min-max scaled to [0, 1].

Every loader raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for one that
cannot be decoded or holds unusable content (empty, silent, NaN).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image
from scipy.signal import resample_poly

from cff_lib.ages import AGE_MAX, AGE_MIN

SAMPLE_RATE = 16000
"""Audio sample rate of the paper (Hz)."""

MAX_SECONDS = 5.0
"""Clip length the paper truncates audio to (seconds)."""

IMAGE_SIZE = 256
"""Image side of the paper (pixels)."""


def _existing(path: str | os.PathLike, argument: str = "path") -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}={str(path)!r}: file does not exist")
    return path


def load_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Centre-crop ``path`` square, resize to ``size`` (bicubic); float32 (3, size, size) in [-1, 1]."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size={size!r} must be a positive integer")
    path = _existing(path)
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {str(path)!r}: {exc}") from None
    w, h = rgb.size
    side = min(w, h)
    if side < 1:
        raise ValueError(f"image {str(path)!r} is empty ({w}x{h})")
    left, top = (w - side) // 2, (h - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray((arr / 127.5 - 1.0).transpose(2, 0, 1))


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
               max_seconds: float | None = MAX_SECONDS) -> np.ndarray:
    """Mono float32 waveform of ``path`` at ``sample_rate``, at most ``max_seconds`` long, zero mean and
    unit variance.

    Stereo (or more channels) is mixed down by averaging. ``max_seconds=None`` keeps the whole clip.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1:
        raise ValueError(f"sample_rate={sample_rate!r} must be a positive integer (Hz)")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds={max_seconds!r} must be positive or None")
    path = _existing(path)
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read audio {str(path)!r}: {exc}") from None
    if data.size == 0:
        raise ValueError(f"audio {str(path)!r} is empty (no samples)")
    if not np.isfinite(data).all():
        raise ValueError(f"audio {str(path)!r} contains NaN or infinite samples")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        g = math.gcd(int(rate), int(sample_rate))
        mono = resample_poly(mono, int(sample_rate) // g, int(rate) // g)
    if max_seconds is not None:
        mono = mono[: int(round(max_seconds * sample_rate))]
    std = float(mono.std())
    if mono.size == 0 or not std > 1e-8 * max(1.0, float(np.abs(mono).max())):
        raise ValueError(f"audio {str(path)!r} is silent (zero variance); cannot normalise")
    return ((mono - mono.mean()) / std).astype(np.float32)


def _check_range(lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"age range lo={lo}, hi={hi} must be finite with lo < hi")


def scale_age(age, lo: float = AGE_MIN, hi: float = AGE_MAX):
    """Min-max scale ``age`` (years; scalar or array) from [lo, hi] to [0, 1]; outside is a ValueError."""
    _check_range(lo, hi)
    a = np.asarray(age, dtype=np.float64)
    if not np.isfinite(a).all() or (a < lo).any() or (a > hi).any():
        raise ValueError(f"age={age!r} must lie in [{lo:g}, {hi:g}] years")
    out = (a - lo) / (hi - lo)
    return float(out) if out.ndim == 0 else out


def unscale_age(scaled, lo: float = AGE_MIN, hi: float = AGE_MAX):
    """Inverse of :func:`scale_age`: [0, 1] back to years; outside [0, 1] is a ValueError."""
    _check_range(lo, hi)
    s = np.asarray(scaled, dtype=np.float64)
    if not np.isfinite(s).all() or (s < 0.0).any() or (s > 1.0).any():
        raise ValueError(f"scaled={scaled!r} must lie in [0, 1]")
    out = lo + s * (hi - lo)
    return float(out) if out.ndim == 0 else out
