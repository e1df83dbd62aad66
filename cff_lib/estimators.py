"""Age and emotion estimators used (frozen) inside the consistency losses (paper "Age and emotion consistency
losses": ``AgeEst(I) ∈ R^512``, ``EmoEst(I) ∈ R^512``; ``f_Age,ref = AgeEst(I_ref)``).

The paper uses DeepFace's age model (trained on CACD) and an "EmoRec" emotion model (RAVDESS + FER2013).
Those are Keras / other-framework models that cannot carry torch gradients to the generator, so both slots
hold torch CNNs of one class, :class:`FaceAttributeCNN` (a ResNet-style stack: stem conv, four stages of
pre-activation basic blocks, global average pooling, a 512-d projection):

- :class:`AgeEstimator` -> ``AgeReading(age (B,) years, feature (B, 512))``. The age is a DEX-style expected
  value (as DeepFace's age model computes it) over one-year bins AGE_MIN..AGE_MAX = 16..99: differentiable
  and always inside the range.
- :class:`EmotionEstimator` -> ``EmotionReading(logits (B, 8), valence_arousal (B, 2), feature (B, 512))``:
  logits over ``cff_lib.emotions.EMOTIONS`` (RAVDESS order), valence/arousal in [-1, 1] (tanh), as in
  ``cff_lib.emotions.VALENCE_AROUSAL``.

``feature`` is L2-normalised in both. The heads read the un-normalised 512-d projection.

Backends (same class, different size): ``"synthetic"`` = widths 32-64-128-256, one block per stage, 64x64
input, randomly initialised or loaded from this project's safetensors; ``"pretrained"`` = widths
64-128-256-512, two blocks per stage, 112x112 input, loaded from a torch checkpoint the user trains (on CACD /
RAVDESS+FER2013) or converts, saved as safetensors with :meth:`save`: the files are named
``age_estimator.safetensors`` and ``emotion_estimator.safetensors`` by convention (weights['age'],
weights['emotion']). Images are the project's [-1, 1] tensors, resized to the input size inside.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.emotions import EMOTIONS
from cff_lib.encoder_base import (
    Freezable,
    check_backend,
    check_images,
    config_from_dict,
    missing_weights,
    read_safetensors,
    require_file,
    save_safetensors,
)

AGE_FILE = "age_estimator.safetensors"
EMOTION_FILE = "emotion_estimator.safetensors"
HOW_TO_GET = (
    "The paper's {model} has no torch release: train a FaceAttributeCNN {task} with this project (or convert "
    "one) and save it with {cls}.save('{file}'); then point weights['{key}'] at that file."
)


@dataclass(frozen=True)
class EstimatorConfig:
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels of the four stages; the stem has widths[0]
    blocks: tuple[int, ...] = (1, 1, 1, 1)  # residual blocks per stage
    input_size: int = 64  # images are resized to input_size x input_size
    feature_dim: int = 512  # AgeEst / EmoEst feature size (R^512)


PRETRAINED_ESTIMATOR = EstimatorConfig(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), input_size=112)


def synthetic_estimator_config(image_size: int) -> EstimatorConfig:
    """The synthetic world's AgeEst / EmoEst (what notebooks/02 trains): widths 16-32-64-128 at the world's
    image size."""
    return EstimatorConfig(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), input_size=image_size)


class _Block(nn.Module):
    """Pre-activation basic block: BN-ReLU-Conv3x3(stride)-BN-ReLU-Conv3x3 + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(x)


class FaceAttributeCNN(nn.Module):
    """[-1, 1] images -> un-normalised 512-d projection (B, feature_dim)."""

    def __init__(self, config: EstimatorConfig):
        super().__init__()
        if len(config.widths) != 4 or len(config.blocks) != 4:
            raise ValueError(f"config.widths / config.blocks need 4 stages, got {config.widths}, "
                             f"{config.blocks}")
        self.config = config
        self.stem = nn.Conv2d(3, config.widths[0], 3, 1, 1, bias=False)
        stages, cin = [], config.widths[0]
        for i, (w, n) in enumerate(zip(config.widths, config.blocks, strict=True)):
            for j in range(n):
                stages.append(_Block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(cin)
        self.proj = nn.Linear(cin, config.feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.config.input_size
        x = images.float()
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        h = self.stages(self.stem(x))  # (B, C, s/8, s/8)
        h = F.relu(self.norm(h)).mean(dim=(2, 3))  # (B, C)
        return self.proj(h)  # (B, 512)


class AgeReading(NamedTuple):
    age: torch.Tensor  # (B,) estimated age in years, in [AGE_MIN, AGE_MAX]
    feature: torch.Tensor  # (B, 512) AgeEst(I), L2-normalised


class EmotionReading(NamedTuple):
    logits: torch.Tensor  # (B, 8) over cff_lib.emotions.EMOTIONS
    valence_arousal: torch.Tensor  # (B, 2) in [-1, 1]
    feature: torch.Tensor  # (B, 512) EmoEst(I), L2-normalised


class AgeEstimator(Freezable):
    """AgeEst: images -> AgeReading(age, feature)."""

    kind = "AgeEstimator"

    def __init__(self, config: EstimatorConfig):
        super().__init__()
        self.config = config
        self.backbone = FaceAttributeCNN(config)
        n_bins = int(AGE_MAX - AGE_MIN) + 1  # one bin per year, 16..99
        self.age_head = nn.Linear(config.feature_dim, n_bins)
        self.register_buffer("bin_ages", torch.linspace(AGE_MIN, AGE_MAX, n_bins), persistent=False)  # (84,)

    def forward(self, images: torch.Tensor) -> AgeReading:
        check_images(images, argument="images")
        h = self.backbone(images)  # (B, 512)
        p = self.age_head(h).softmax(dim=-1)  # (B, 84)
        return AgeReading(age=p @ self.bin_ages, feature=F.normalize(h, dim=-1))

    def save(self, path: str | os.PathLike) -> Path:
        return save_safetensors(self, path, self.config, kind=self.kind)


class EmotionEstimator(Freezable):
    """EmoEst: images -> EmotionReading(logits, valence_arousal, feature)."""

    kind = "EmotionEstimator"

    def __init__(self, config: EstimatorConfig):
        super().__init__()
        self.config = config
        self.backbone = FaceAttributeCNN(config)
        self.emotion_head = nn.Linear(config.feature_dim, len(EMOTIONS))
        self.va_head = nn.Linear(config.feature_dim, 2)

    def forward(self, images: torch.Tensor) -> EmotionReading:
        check_images(images, argument="images")
        h = self.backbone(images)  # (B, 512)
        return EmotionReading(logits=self.emotion_head(h), valence_arousal=torch.tanh(self.va_head(h)),
                              feature=F.normalize(h, dim=-1))

    def save(self, path: str | os.PathLike) -> Path:
        return save_safetensors(self, path, self.config, kind=self.kind)


def _create(cls, backend: str, checkpoint, allow_untrained: bool, how: str, what: str, image_size: int):
    check_backend(backend)
    default = PRETRAINED_ESTIMATOR if backend == "pretrained" else synthetic_estimator_config(image_size)
    if checkpoint is None:
        if backend == "pretrained" and not allow_untrained:
            raise missing_weights(what, None, how)
        return cls(default).eval()
    path = require_file(what, checkpoint, how)
    state, cfg = read_safetensors(path, kind=cls.kind)
    model = cls(config_from_dict(EstimatorConfig, cfg) if cfg else default)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not match {cls.__name__}({model.config}): {str(e)[:300]}") from e
    return model.eval()


def create_age_estimator(backend: str, checkpoint: str | os.PathLike | None = None,
                         allow_untrained: bool = False, image_size: int = 64) -> AgeEstimator:
    """AgeEst of a backend from a safetensors ``checkpoint`` (architecture read from its metadata). Without a
    checkpoint: "synthetic" -> random init of :func:`synthetic_estimator_config` at ``image_size``;
    "pretrained" -> FileNotFoundError unless ``allow_untrained`` (then :data:`PRETRAINED_ESTIMATOR`)."""
    how = HOW_TO_GET.format(model="DeepFace age model", task="age regressor on CACD", cls="AgeEstimator",
                            file=AGE_FILE, key="age")
    return _create(AgeEstimator, backend, checkpoint, allow_untrained, how, "age estimator", image_size)


def create_emotion_estimator(backend: str, checkpoint: str | os.PathLike | None = None,
                             allow_untrained: bool = False, image_size: int = 64) -> EmotionEstimator:
    """EmoEst of a backend; as :func:`create_age_estimator`."""
    how = HOW_TO_GET.format(model="EmoRec emotion model", task="emotion recogniser on RAVDESS + FER2013",
                            cls="EmotionEstimator", file=EMOTION_FILE, key="emotion")
    return _create(EmotionEstimator, backend, checkpoint, allow_untrained, how, "emotion estimator", image_size)
