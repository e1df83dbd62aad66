"""Wav2Vec 2.0 audio features (paper Eq. 2, ``f_A = Wav2Vec2(A) ∈ R^768``) and the audio emotion recogniser
(Eq. 6, ``f_Emo,Audio = EmoRec(A) ∈ R^512``).

:class:`AudioEncoder` wraps a transformers ``Wav2Vec2Model``: a mono 16 kHz waveform batch (B, N) is
normalised per clip to zero mean / unit variance (as ``Wav2Vec2FeatureExtractor`` with ``do_normalize=True``
does for facebook/wav2vec2-base), encoded, and the last hidden states are mean-pooled over time -> (B, 768).

:func:`create_audio_encoder` builds it for either backend, through the same ``Wav2Vec2Model`` class:

- ``"pretrained"``: ``Wav2Vec2Model.from_pretrained(path, local_files_only=True)`` with ``path`` a local
  folder holding facebook/wav2vec2-base (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``).
- ``"synthetic"``: ``Wav2Vec2Model(SYNTHETIC_CONFIG)`` -- hidden size kept at 768 (f_A must be 768-d per the
  paper), 2 transformer layers, a 128-channel convolutional feature encoder with wav2vec2-base's kernels and
  strides (so still 50 frames/s, 400-sample receptive field) and a 16-tap positional convolution: ~10 M
  parameters instead of 95 M. SpecAugment masking and LayerDrop are off (``mask_time_prob=0``,
  ``layerdrop=0``) so training-mode outputs are deterministic apart from dropout. Saved with
  ``save_pretrained`` and reloaded by the same ``from_pretrained`` path.

:class:`AudioEmotionHead` is the emotion recogniser on top of f_A (trained on RAVDESS, or on the synthetic
world's RAVDESS-named clips): an MLP giving an L2-normalised 512-d feature (f_Emo,Audio) and logits over
the 8 RAVDESS categories in ``cff_lib.emotions.EMOTIONS`` order.

Waveform convention: a float tensor (B, N) -- a batch of B mono clips of N samples at 16 kHz. A 3-D
(B, C, N) tensor is accepted only with C = 1. Note that a 2-D (2, N) tensor is necessarily read as two
mono clips: a stereo clip must be passed as (1, 2, N) (which is rejected) or downmixed first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cff_lib.emotions import EMOTIONS
from cff_lib.encoder_base import (
    Freezable,
    check_backend,
    check_feature,
    config_from_dict,
    missing_weights,
    read_safetensors,
    require_file,
    save_safetensors,
)

SAMPLE_RATE = 16_000
FEATURE_DIM = 768  # f_A ∈ R^768
HOW_TO_GET = (
    "On a machine with internet run `transformers.Wav2Vec2Model.from_pretrained('facebook/wav2vec2-base')"
    ".save_pretrained(<folder>)` (or download the Hugging Face repo facebook/wav2vec2-base) and point "
    "`audio_checkpoint` (weights['audio']) at that folder."
)

SYNTHETIC_CONFIG: dict[str, Any] = dict(
    hidden_size=768,  # f_A stays 768-d
    num_hidden_layers=2,
    num_attention_heads=12,
    intermediate_size=1536,
    conv_dim=(128,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=16,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    mask_time_prob=0.0,
    mask_feature_prob=0.0,
    layerdrop=0.0,  # with only 2 layers, dropping one at random would change the model too much
)


def check_waveform(waveform: Any, sample_rate: Any, *, argument: str = "waveform",
                   min_samples: int = 400) -> torch.Tensor:
    """Validate a mono 16 kHz batch; returns it as (B, N) float. ``ValueError`` naming the argument."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate!r}: Wav2Vec 2.0 needs {SAMPLE_RATE} Hz audio; "
                         "resample first")
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(f"{argument} must be a torch.Tensor (B, N), got {type(waveform).__name__}")
    if waveform.ndim == 3:
        if waveform.shape[1] != 1:
            raise ValueError(f"{argument} has {waveform.shape[1]} channels (shape {tuple(waveform.shape)}); "
                             "it must be mono (B, N): downmix stereo first, e.g. waveform.mean(dim=1)")
        waveform = waveform[:, 0]
    elif waveform.ndim != 2:
        raise ValueError(f"{argument} must be a mono batch (B, N), got shape {tuple(waveform.shape)}"
                         + ("; add a batch axis: waveform[None]" if waveform.ndim == 1 else ""))
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"{argument} is empty, shape {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        raise ValueError(f"{argument} must be float samples in [-1, 1], got dtype {waveform.dtype}")
    if waveform.shape[1] < min_samples:
        raise ValueError(f"{argument} has {waveform.shape[1]} samples; Wav2Vec 2.0 needs at least "
                         f"{min_samples} "
                         f"({min_samples / SAMPLE_RATE * 1000:.0f} ms at {SAMPLE_RATE} Hz)")
    with torch.no_grad():
        if not torch.isfinite(waveform).all():
            raise ValueError(f"{argument} contains NaN or inf")
        silent = (waveform.abs().amax(dim=1) == 0).nonzero().flatten().tolist()
    if silent:
        raise ValueError(f"{argument} clip(s) {silent} are silent (all zeros); there is nothing to encode")
    return waveform


class AudioEncoder(Freezable):
    """f_A (B, 768): mean over time of Wav2Vec2's last hidden states (Eq. 2)."""

    def __init__(self, model):
        super().__init__()
        self.model = model  # transformers.Wav2Vec2Model

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame (400 for wav2vec2-base's conv stack)."""
        r = 1
        cfg = self.model.config
        for k, s in zip(reversed(cfg.conv_kernel), reversed(cfg.conv_stride), strict=True):
            r = (r - 1) * s + k
        return r

    def forward(self, waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        x = check_waveform(waveform, sample_rate, argument="waveform", min_samples=self.receptive_field)
        x = x.float()  # (B, N)
        x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
        hidden = self.model(input_values=x).last_hidden_state  # (B, T, 768)
        return hidden.mean(dim=1)  # (B, 768)

    def save(self, path: str | os.PathLike) -> Path:
        """``save_pretrained`` into folder ``path`` (config.json + model.safetensors), written atomically."""
        from cff_lib.atomic import atomic_directory

        with atomic_directory(path) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
        return Path(path)


def create_audio_encoder(backend: str, path: str | os.PathLike | None = None) -> AudioEncoder:
    """Wav2Vec2 encoder of a backend: ``path`` is a save_pretrained folder (required for "pretrained";
    optional for "synthetic", where None means a randomly initialised SYNTHETIC_CONFIG model)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    check_backend(backend)
    if path is None and backend == "synthetic":
        return AudioEncoder(Wav2Vec2Model(Wav2Vec2Config(**SYNTHETIC_CONFIG)).eval())
    what = "Wav2Vec 2.0 base" if backend == "pretrained" else "synthetic Wav2Vec 2.0"
    how = HOW_TO_GET if backend == "pretrained" else "Train one with this project (AudioEncoder.save) first."
    if path is None or not (Path(path) / "config.json").is_file():
        raise missing_weights(what, path, how)
    model = Wav2Vec2Model.from_pretrained(str(path), local_files_only=True)
    if model.config.hidden_size != FEATURE_DIM:
        raise ValueError(f"{path}: hidden_size={model.config.hidden_size}, but f_A must be {FEATURE_DIM}-d")
    return AudioEncoder(model.eval())


# ------------------------------------------------------------------------------------------ Eq. 6
@dataclass(frozen=True)
class AudioEmotionConfig:
    in_dim: int = FEATURE_DIM  # input: f_A
    hidden: int = 512  # MLP hidden width
    feature_dim: int = 512  # f_Emo,Audio ∈ R^512
    num_classes: int = len(EMOTIONS)  # RAVDESS categories, EMOTIONS order
    dropout: float = 0.1  # dropout before the last layer (training only)


class AudioEmotionReading(NamedTuple):
    feature: torch.Tensor  # (B, 512) f_Emo,Audio, L2-normalised
    logits: torch.Tensor  # (B, 8) over cff_lib.emotions.EMOTIONS


class AudioEmotionHead(Freezable):
    """Audio emotion recogniser on f_A: (B, 768) -> feature (B, 512) + logits (B, 8)."""

    def __init__(self, config: AudioEmotionConfig = AudioEmotionConfig()):
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(
            nn.LayerNorm(config.in_dim),
            nn.Linear(config.in_dim, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.feature_dim),
        )
        self.classifier = nn.Linear(config.feature_dim, config.num_classes)

    def forward(self, audio_features: torch.Tensor) -> AudioEmotionReading:
        check_feature(audio_features, argument="audio_features", dim=self.config.in_dim)
        h = self.mlp(audio_features)  # (B, 512)
        return AudioEmotionReading(feature=F.normalize(h, dim=-1), logits=self.classifier(h))

    def save(self, path: str | os.PathLike) -> Path:
        return save_safetensors(self, path, self.config, kind="AudioEmotionHead")


def create_audio_emotion_head(checkpoint: str | os.PathLike | None = None) -> AudioEmotionHead:
    """The audio emotion head; from a safetensors ``checkpoint`` if given, else randomly initialised
    (it is trained by this project for both backends)."""
    if checkpoint is None:
        return AudioEmotionHead()
    path = require_file("audio emotion head", checkpoint,
                        "Train it on RAVDESS (or the synthetic world) and save with AudioEmotionHead.save().")
    state, cfg = read_safetensors(path, kind="AudioEmotionHead")
    head = AudioEmotionHead(config_from_dict(AudioEmotionConfig, cfg) if cfg else AudioEmotionConfig())
    head.load_state_dict(state, strict=True)
    return head.eval()
