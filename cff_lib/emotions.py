"""The emotion vocabulary shared by every part of the companion.

RAVDESS (paper, "Datasets") labels eight categories, coded 01..08 in its file names. The paper treats emotion
as a point in a continuous valence/arousal space ("Continuous attribute metrics"); the prototype coordinates
below place each category in that space (valence and arousal in [-1, 1]) following the circumplex model's
usual layout. They are the synthetic world's ground truth and the targets of the AVD metric.
"""
from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)
"""RAVDESS order: ``EMOTIONS[code - 1]`` is the category of RAVDESS emotion code ``code``."""

VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    # name: (valence, arousal) of the category at full intensity
    "neutral": (0.0, 0.0),
    "calm": (0.3, -0.6),
    "happy": (0.8, 0.5),
    "sad": (-0.7, -0.4),
    "angry": (-0.6, 0.8),
    "fearful": (-0.6, 0.6),
    "disgust": (-0.7, 0.2),
    "surprised": (0.3, 0.9),
}


def emotion_index(name: str, *, argument: str = "emotion") -> int:
    """0-based index of an emotion name; a clear ValueError naming ``argument`` otherwise."""
    try:
        return EMOTIONS.index(name)
    except ValueError:
        raise ValueError(
            f"{argument}={name!r} is not an emotion; expected one of {', '.join(EMOTIONS)}"
        ) from None


def valence_arousal(name: str, intensity: float = 1.0) -> tuple[float, float]:
    """Target (valence, arousal) of ``name`` at ``intensity`` in [0, 1] (0 = neutral face)."""
    emotion_index(name)
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity={intensity} must lie in [0, 1]")
    v, a = VALENCE_AROUSAL[name]
    return (v * intensity, a * intensity)
