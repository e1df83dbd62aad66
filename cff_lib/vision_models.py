"""The trained synthetic vision backends on disk: their weight files, loading them hash-checked, and the loss
curves their provenance records keep (notebook 02, the referees' trials, bench/).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cff_lib.weights import verified_path

FILES = {"clip": "clip", "age": "age_estimator", "emotion": "emotion_estimator", "arcface": "arcface",
         "vgg": "vgg"}
"""backends.create_backend part -> file stem in the weights folder (``<stem>.safetensors``)."""


@dataclass(frozen=True)
class VisionModels:
    """The trained synthetic vision backends, hash-checked and frozen."""

    clip: object  # cff_lib.clip_encoder.ClipEncoder
    age: object  # cff_lib.estimators.AgeEstimator
    emotion: object  # cff_lib.estimators.EmotionEstimator
    arcface: object  # cff_lib.arcface.ArcFace
    vgg: object  # cff_lib.vgg_perceptual.PerceptualVGG


def vision_weight_files(out_dir) -> dict[str, Path]:
    """backends.create_backend part -> safetensors path in ``out_dir``."""
    return {k: Path(out_dir) / f"{stem}.safetensors" for k, stem in FILES.items()}


def missing_vision_weights(out_dir) -> list[str]:
    """Keys of FILES whose safetensors or provenance record is absent from ``out_dir``."""
    from cff_lib.weights import weight_paths as _pair

    return [k for k, p in vision_weight_files(out_dir).items() if not all(q.is_file() for q in _pair(p))]


def load_vision_models(out_dir) -> VisionModels:
    """Verify every file's sha256 against its provenance record, then build each model with the backend
    factory (:func:`cff_lib.backends.create_backend`)."""
    from cff_lib.backends import create_backend

    p = {k: verified_path(v) for k, v in vision_weight_files(out_dir).items()}
    models = VisionModels(**{k: create_backend(k, "synthetic", p[k]) for k in ("clip", "age", "emotion", "arcface",
                                                                              "vgg")})
    for m in (models.clip, models.age, models.emotion, models.arcface, models.vgg):
        m.freeze()
    return models


def recorded_loss_curves(out_dir) -> dict[str, list[float]]:
    """Training-loss curves stored in the provenance records (available without retraining)."""
    from cff_lib.weights import read_record

    names = {"clip": "clip", "estimators": "age", "arcface": "arcface", "vgg": "vgg"}
    files = vision_weight_files(out_dir)
    return {k: list(read_record(files[v]).config.get("loss_curve", [])) for k, v in names.items()}


__all__ = ["FILES", "VisionModels", "load_vision_models", "missing_vision_weights", "recorded_loss_curves",
           "vision_weight_files"]
