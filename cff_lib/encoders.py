"""The paper's input encoders as one module: f_T, f_A, f_Age, f_Emo and f_I (Eqs. 1-8).

Paper sections "Input taxonomy and encoding" and "Reference image and DDIM inversion":

- Eq. 1  ``f_T = CLIP_text(T)``                           -> :meth:`MultiModalEncoder.encode_text`, (B, 512)
- Eq. 2  ``f_A = Wav2Vec2(A)``                            -> :meth:`MultiModalEncoder.encode_audio`, (B, 768)
- Eq. 4  ``f_Age,num = AgeEmb(Age)``                      -> :class:`NumericAgeEmbedding`, (B, 512)
- Eq. 5  ``f_Age = α f_Age,Text + (1 - α) f_Age,num``     -> :meth:`MultiModalEncoder.mix_age`
- Eq. 6  ``f_Emo,Audio = EmoRec(A)``                      -> :class:`cff_lib.audio_encoder.AudioEmotionHead`
- Eq. 7  ``f_Emo = β f_Emo,Text + (1 - β) f_Emo,Audio``   -> :meth:`MultiModalEncoder.mix_emotion`
- Eq. 8  ``f_I = CLIP_image(I)``                          -> :meth:`MultiModalEncoder.encode_image`

(Eq. 3, the audio-visual projection ``f_AV = Normalize(W_A f_A + b_A)``, belongs to the fusion module.)

:class:`EncoderSet` holds every encoder of one world -- the paper's published models ("pretrained") or the
same classes at small sizes ("synthetic") -- plus the identity / perceptual / age / emotion networks the losses
use; :func:`cff_lib.backends.create_encoders` builds it (the one backend factory). The plumbing the encoder
modules share (input checks, :class:`Freezable`, safetensors I/O, the "weights not found" error) lives in
:mod:`cff_lib.encoder_base`, which imports no encoder.

Every 512-d feature produced at the source (CLIP text/image, f_Age,num, f_Emo,Audio) is L2-normalised; the
mixtures of Eqs. 5 and 7 are kept exactly as written (a convex combination of unit vectors, not renormalised).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cff_lib.ages import AGE_LIMITS, AGE_MAX, AGE_MIN
from cff_lib.coefficients import UnitCoefficient
from cff_lib.emotions import emotion_index
from cff_lib.encoder_base import (
    check_feature,
    check_images,
    check_prompts,
    config_from_dict,
    read_safetensors,
    require_file,
    save_safetensors,
)

if TYPE_CHECKING:  # heavy imports only when a factory runs
    from cff_lib.arcface import ArcFace
    from cff_lib.audio_encoder import AudioEmotionHead, AudioEncoder
    from cff_lib.clip_encoder import ClipEncoder
    from cff_lib.estimators import AgeEstimator, EmotionEstimator
    from cff_lib.vgg_perceptual import PerceptualVGG


# ---------------------------------------------------------------------------------- Eq. 4: numeric age
@dataclass(frozen=True)
class AgeEmbeddingConfig:
    num_frequencies: int = 16  # K: features sin/cos(ω_k a), ω_k = π 2^(k/2), k < K, of the scaled age a
    hidden: int = 256  # width of the MLP's hidden layer
    dim: int = 512  # output size: f_Age,num ∈ R^512


class NumericAgeEmbedding(nn.Module):
    """Eq. 4: a scalar age in years -> f_Age,num ∈ R^512 (L2-normalised).

    The age is min-max scaled with (AGE_MIN, AGE_MAX) = (16, 99) to a ∈ [0, 1] (ages outside extrapolate),
    expanded into Fourier features [a, sin(ω_k a), cos(ω_k a)] and passed through a 2-layer MLP.
    """

    def __init__(self, config: AgeEmbeddingConfig = AgeEmbeddingConfig()):
        super().__init__()
        self.config = config
        k = torch.arange(config.num_frequencies, dtype=torch.float32)
        self.register_buffer("omega", math.pi * 2.0 ** (k / 2), persistent=False)  # (K,)
        self.mlp = nn.Sequential(
            nn.Linear(1 + 2 * config.num_frequencies, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, config.dim),
        )

    def forward(self, age: torch.Tensor) -> torch.Tensor:
        a = ((age.float() - AGE_MIN) / (AGE_MAX - AGE_MIN))[:, None]  # (B, 1)
        phase = a * self.omega  # (B, K)
        feats = torch.cat([a, phase.sin(), phase.cos()], dim=1)  # (B, 1 + 2K)
        return F.normalize(self.mlp(feats), dim=-1)  # (B, 512)


def check_age(age: Any, *, argument: str = "age") -> torch.Tensor:
    if not isinstance(age, torch.Tensor):
        if isinstance(age, (int, float)):
            raise ValueError(f"{argument} must be a tensor of shape (B,) in years, got a bare number {age}")
        raise ValueError(f"{argument} must be a tensor of shape (B,) in years, got {type(age).__name__}")
    if age.ndim != 1 or age.shape[0] == 0:
        raise ValueError(f"{argument} must have shape (B,) with B >= 1, got {tuple(age.shape)}")
    if not torch.isfinite(age.float()).all():
        raise ValueError(f"{argument} contains NaN or inf")
    lo, hi = AGE_LIMITS
    bad = (age < lo) | (age > hi)
    if bad.any():
        raise ValueError(f"{argument} must lie in [{lo:g}, {hi:g}] years, got {age[bad].tolist()}")
    return age


# ------------------------------------------------------------------------------------------ Eqs. 1-8 together
EMOTION_PROMPT = "a photo of a {} face"  # how an emotion category becomes CLIP text (f_Emo,Text)


class MultiModalEncoder(nn.Module):
    """Eqs. 1, 2, 4-8: text, audio, age, emotion and image features for the fusion module.

    Holds the (frozen) CLIP and Wav2Vec2 encoders, the audio emotion recogniser, the numeric age embedding
    and the trainable mixing coefficients α (Eq. 5) and β (Eq. 7).
    """

    def __init__(
        self,
        clip: ClipEncoder,
        audio: AudioEncoder,
        audio_emotion: AudioEmotionHead,
        age_embedding: NumericAgeEmbedding | None = None,
        image_size: int | None = None,
        alpha_init: float = 0.5,
        beta_init: float = 0.5,
    ):
        super().__init__()
        self.clip = clip
        self.audio = audio
        self.audio_emotion = audio_emotion
        self.age_embedding = age_embedding if age_embedding is not None else NumericAgeEmbedding()
        self.image_size = image_size  # expected H = W of f_I's input (None: any square size)
        self.alpha = UnitCoefficient(alpha_init)  # Eq. 5: weight of f_Age,Text
        self.beta = UnitCoefficient(beta_init)  # Eq. 7: weight of f_Emo,Text

    # Eq. 1
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.clip.encode_text(check_prompts(prompts, argument="prompts"))  # (B, 512)

    # Eq. 2
    def encode_audio(self, wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.audio(wave, sample_rate=sample_rate)  # (B, 768)

    # Eqs. 4-5
    def encode_age(self, age: torch.Tensor | None = None,
                   age_text: Sequence[str] | None = None) -> torch.Tensor:
        """f_Age (B, 512). With both inputs: α f_Age,Text + (1 - α) f_Age,num; with one: that one alone."""
        if age is None and age_text is None:
            raise ValueError("encode_age needs age (B,) in years, age_text (list of B strings), or both")
        f_num = f_text = None
        if age is not None:
            age = check_age(age, argument="age")
            f_num = self.age_embedding(age.to(self.alpha.raw.device))  # (B, 512)
        if age_text is not None:
            f_text = self.clip.encode_text(check_prompts(age_text, argument="age_text"))  # (B, 512)
        if f_num is None:
            return f_text
        if f_text is None:
            return f_num
        if f_num.shape[0] != f_text.shape[0]:
            raise ValueError(f"age has {f_num.shape[0]} entries but age_text has {f_text.shape[0]}")
        return self.mix_age(f_text, f_num)  # (B, 512)

    def mix_age(self, f_age_text: torch.Tensor, f_age_num: torch.Tensor) -> torch.Tensor:
        """Eq. 5, its one home: f_Age = α f_Age,Text + (1 - α) f_Age,num, both (B, 512), not renormalised."""
        a = self.alpha()
        return a * f_age_text + (1 - a) * f_age_num  # (B, 512)

    # Eqs. 6-7
    def encode_emotion(
        self,
        emotion_text: Sequence[str] | None = None,
        audio_features: torch.Tensor | None = None,
        *,
        emotion: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """f_Emo (B, 512) from free text, or category names (``emotion``), and/or f_A (B, 768).

        ``emotion`` names are RAVDESS categories (cff_lib.emotions.EMOTIONS) turned into
        ``EMOTION_PROMPT``; an unknown name raises ValueError. With text and audio:
        β f_Emo,Text + (1 - β) f_Emo,Audio; with one of them: that one alone.
        """
        if emotion is not None:
            if emotion_text is not None:
                raise ValueError("give either emotion_text (free text) or emotion (category names), not both")
            names = check_prompts(emotion, argument="emotion")
            for i, name in enumerate(names):
                emotion_index(name, argument=f"emotion[{i}]")
            emotion_text = [EMOTION_PROMPT.format(n) for n in names]
        if emotion_text is None and audio_features is None:
            raise ValueError("encode_emotion needs emotion_text / emotion, audio_features (B, 768), or both")
        f_text = f_audio = None
        if emotion_text is not None:
            f_text = self.clip.encode_text(check_prompts(emotion_text, argument="emotion_text"))  # (B, 512)
        if audio_features is not None:
            check_feature(audio_features, argument="audio_features", dim=768)
            f_audio = self.audio_emotion(audio_features).feature  # (B, 512)
        if f_audio is None:
            return f_text
        if f_text is None:
            return f_audio
        if f_text.shape[0] != f_audio.shape[0]:
            raise ValueError(f"emotion_text has {f_text.shape[0]} entries but audio_features "
                             f"{f_audio.shape[0]}")
        return self.mix_emotion(f_text, f_audio)  # (B, 512)

    def mix_emotion(self, f_emo_text: torch.Tensor, f_emo_audio: torch.Tensor) -> torch.Tensor:
        """Eq. 7, its one home: f_Emo = β f_Emo,Text + (1 - β) f_Emo,Audio, both (B, 512), not renormalised."""
        b = self.beta()
        return b * f_emo_text + (1 - b) * f_emo_audio  # (B, 512)

    # Eq. 8
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, argument="images", size=self.image_size)
        return self.clip.encode_image(images)  # (B, 512)


# ------------------------------------------------------------------------------------------ one world's encoders
PUBLISHED = ("clip", "audio", "arcface", "vgg")  # published models: must be given for "pretrained"
PROJECT_TRAINED = ("audio_emotion", "age", "emotion", "multimodal")  # trained here; None = fresh init
WEIGHT_KEYS = PUBLISHED + PROJECT_TRAINED


class EncoderSet(nn.Module):
    """Every encoder of one world; ``untrained`` names the project-trained parts freshly initialised."""

    def __init__(self, backend: str, multimodal: MultiModalEncoder, arcface: ArcFace, vgg: PerceptualVGG,
                 age: AgeEstimator, emotion: EmotionEstimator, untrained: tuple[str, ...]):
        super().__init__()
        self.backend = backend  # "pretrained" or "synthetic"
        self.multimodal = multimodal  # Eqs. 1-8
        self.arcface = arcface  # f_ID (identity loss)
        self.vgg = vgg  # perceptual loss features (conv3_3, conv4_3)
        self.age = age  # AgeEst (age consistency loss)
        self.emotion = emotion  # EmoEst (emotion consistency loss)
        self.untrained = untrained  # keys of WEIGHT_KEYS built with random weights


def save_multimodal_heads(encoder: MultiModalEncoder, path: str | os.PathLike) -> Path:
    """Save the project-trained part of a MultiModalEncoder (α, β, numeric age embedding) as safetensors."""
    return save_safetensors(_heads(encoder), path, encoder.age_embedding.config, kind="MultiModalHeads")


def _heads(encoder: MultiModalEncoder) -> nn.ModuleDict:
    return nn.ModuleDict({"age_embedding": encoder.age_embedding, "alpha": encoder.alpha,
                          "beta": encoder.beta})


def load_multimodal_heads(encoder: MultiModalEncoder, path: str | os.PathLike) -> MultiModalEncoder:
    path = require_file("MultiModalEncoder heads (α, β, age embedding)", path,
                        "Train them with this project and save with save_multimodal_heads().")
    state, config = read_safetensors(path, kind="MultiModalHeads")
    if config is not None and config_from_dict(AgeEmbeddingConfig, config) != encoder.age_embedding.config:
        encoder.age_embedding = NumericAgeEmbedding(config_from_dict(AgeEmbeddingConfig, config))
    _heads(encoder).load_state_dict(state, strict=True)
    return encoder
