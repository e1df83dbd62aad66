"""ClipFaceFusion assembled from a profile: encoders, AV alignment, fusion, c, ε_θ(x_t, t, c) and L_Total.

Paper sections "Input taxonomy and encoding" (Eqs. 1-8), "Multi-modal fusion" (Eqs. 10-12), "Audio-visual
alignment" (Eqs. 15-16), "Reference image and DDIM inversion" (Eq. 9) and "Diffusion process and
optimization" (Eq. 30, the conditioning vector c and L_Total, Eq. 32). One conditional model, trained once
(``cff_lib.training``), edits any face toward any target conditions with no per-image optimisation:

    c      = ConditioningVector(ModalityFusion(f_T, f_AV, f_Age, f_Emo, f_I), ArcFace(I_ref), VGG(I_ref))
    x_t0   = DDIM-invert(I_ref)                  (Eq. 9, unconditional, as DiffusionCLIP)
    I_gen  = DDIM-sample(x_t0, c)                (Eq. 30)

Conditions (one dict for a batch of B faces; lists have B entries, ``None`` = that input is absent):

- ``caption``: target text T (str), e.g. "a 70-year-old sad woman" (always given)
- ``source_caption``: source text of the directional CLIP loss (default ``captions.source_caption()``)
- ``target_age``: years (float) or None -> f_Age (Eq. 5: CLIP text "a 70-year-old person" and AgeEmb)
- ``target_emotion``: one of ``cff_lib.emotions.EMOTIONS`` or None -> f_Emo,Text (Eq. 7)
- ``intensity``: emotion intensity in [0, 1] (default 1) -> the valence/arousal target of L_Emo
- ``audio``: 1-D float waveform tensor at ``profile.data.sample_rate``, or None -> f_A, f_Emo,Audio, f_AV
- ``reference``: I_ref, float (B, 3, H, W) in [-1, 1]; ``edit`` fills it with the images being edited

Features of the frozen encoders that depend only on the input (CLIP text of a caption, Wav2Vec2 f_A of a
clip) are computed once per distinct input and cached in memory (``_memo``).

A modality absent for one sample is masked for that sample only (fusion's ``key_padding_mask``), and each
sample's loss uses only the terms whose inputs it has: samples are grouped by which inputs they carry and
L_Total is the sample-weighted mean of the groups' losses (so a batch mean over samples, as in Eq. 32).

Table 7's model switches (``profile.model``; docs/errata.md, "Ablations and sweeps"), constructor keywords
whose defaults are the full model:

- ``drop_inputs``: inputs treated as absent for every sample, through the missing-input path above. "audio":
  no f_A, no AV token, f_Emo from text alone, no L_AV; "age": no Age token, no L_Age,total; "emotion": no Emo
  token (neither route of Eq. 7), no L_Emo,total, while audio still forms the AV token; "text": no T token,
  no directional CLIP loss. A sample left with no modality at all is a ValueError.
- ``fusion_mode="mean"``: f_final is the mean of the present LayerNormed tokens (``ModalityFusion.mean``).
- ``av_alignment=False``: no AV token and no L_AV; audio reaches c only through f_Emo,Audio (Eq. 7).
- ``reference_in_condition=False``: c's reference slots hold the "no reference" embeddings for every sample;
  I_ref is still inverted, still f_I and still the losses' reference.

What trains (``profile.model.trainable``): ``"fusion"`` = the encoders' α, β and numeric age embedding, the AV
alignment (W_A, b_A, η, γ), the fusion (Eqs. 10-12), the conditioning vector's "no reference" embeddings,
ν of L_Emo,reg and the UNet's zero-initialised c projection; ``"fusion+unet"`` adds the whole UNet;
``"adapter"`` adds a zero-initialised bottleneck adapter driven by c (``conditional_unet.BottleneckAdapter``)
and keeps the backbone frozen. CLIP, Wav2Vec2, the audio emotion head, ArcFace,
VGG and the age/emotion estimators are always frozen (they are the losses' judges).

Backend weights live in ``profile.model.weights_dir``, built by the one backend factory
(:func:`cff_lib.backends.build_backends`): the synthetic world's as notebooks/02 writes them
(``backends.SYNTHETIC_FILES``, each sha256-checked against its provenance record), the paper world's under the
names of ``backends.PRETRAINED_FILES``; the trained ClipFaceFusion parts in ``MODEL_FILE`` there (safetensors;
only the trainable tensors, with the sha256 of every backend file they were trained on, so they cannot
silently be loaded onto other backends).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from cff_lib import ddim
from cff_lib.atomic import atomic_path
from cff_lib.backends import build_backends
from cff_lib.captions import caption_from_attributes, source_caption
from cff_lib.coefficients import UnitCoefficient
from cff_lib.conditional_unet import ConditionalUNet
from cff_lib.config import DROPPABLE_INPUTS, FUSION_MODES
from cff_lib.emotions import EMOTIONS, emotion_index, valence_arousal
from cff_lib.encoders import EMOTION_PROMPT, EncoderSet, check_age
from cff_lib.fusion import (
    AudioVisualAlignment,
    ConditioningVector,
    FusionConfig,
    FusionOutput,
    ModalityFusion,
    reference_features,
)
from cff_lib.losses import ConditionalDenoisingLoss, LossTerms, LossWeights, TotalLoss
from cff_lib.provenance import REPO_ROOT

MODEL_FILE = "clipfacefusion.safetensors"
"""File name of the trained ClipFaceFusion parts inside ``profile.model.weights_dir``."""

FEATURE_CACHE_SIZE = 50_000
"""Distinct texts / clips whose frozen features ClipFaceFusion keeps in memory (per kind)."""

MODEL_KIND = "ClipFaceFusion"
"""``cff_kind`` metadata of ClipFaceFusion checkpoints (other kinds are refused by name)."""

TRAINABLE_MODES = ("fusion", "fusion+unet", "adapter")

# parts each trainable mode updates: attribute paths on ClipFaceFusion
_FUSION_PARTS = ("encoders.multimodal.age_embedding", "encoders.multimodal.alpha", "encoders.multimodal.beta",
                 "av", "fusion", "conditioning", "nu", "unet.cond_proj")
_TRAINABLE_PARTS = {"fusion": _FUSION_PARTS, "fusion+unet": _FUSION_PARTS + ("unet.unet",),
                    "adapter": _FUSION_PARTS + ("unet.adapter",)}


# ------------------------------------------------------------------------------------------ weights on disk
def weights_root(profile, weights_dir: str | os.PathLike | None = None) -> Path:
    """``weights_dir`` or the profile's ``model.weights_dir``; relative paths are from the repository root."""
    root = Path(weights_dir if weights_dir is not None else profile.model.weights_dir)
    return root if root.is_absolute() else REPO_ROOT / root


# ------------------------------------------------------------------------------------------ conditions
class ConditionInputs(NamedTuple):
    captions: list[str]  # B target texts T
    source_captions: list[str]  # B source texts of the directional CLIP loss
    age: Tensor  # (B,) target ages in years (0 where absent)
    has_age: Tensor  # (B,) bool
    emotion: Tensor  # (B,) int64 EMOTIONS index (0 where absent)
    has_emotion: Tensor  # (B,) bool
    valence_arousal: Tensor  # (B, 2) target (v, a) of the emotion at its intensity (0 where absent)
    audio: list[Tensor | None]  # B waveforms (N_b,) on the model's device, or None
    has_audio: Tensor  # (B,) bool
    reference: Tensor | None  # (B, 3, H, W) I_ref in [-1, 1], or None (pure generation)


class Condition(NamedTuple):
    c: Tensor  # (B, cond_dim) the conditioning vector of ε_θ(x_t, t, c)
    fusion: FusionOutput  # Eqs. 10-12 outputs (normalized tokens and per-sample presence for L_Cross-Modal)
    text: Tensor  # (B, 512) f_T of the target captions (Eq. 1)
    source_text: Tensor  # (B, 512) f_T of the source captions
    av_final: Tensor  # (B, 512) f_AV^final (Eq. 16); rows without audio are 0 and unused
    age: Tensor  # (B, 512) f_Age (Eq. 5); rows without a target age are 0 and unused
    emotion: Tensor  # (B, 512) f_Emo (Eq. 7); rows without emotion label or audio are 0 and unused
    inputs: ConditionInputs  # the validated inputs


def _column(conditions: Mapping[str, Any], key: str, batch: int, default: Any = None) -> list:
    value = conditions.get(key)
    if value is None:
        return [default] * batch
    if isinstance(value, (str, Tensor)) or not isinstance(value, Sequence):
        raise ValueError(f"conditions[{key!r}] must be a list of {batch} entries, got {type(value).__name__}")
    if len(value) != batch:
        raise ValueError(f"conditions[{key!r}] has {len(value)} entries but conditions['caption'] has {batch}")
    return list(value)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ------------------------------------------------------------------------------------------ the model
class ClipFaceFusion(nn.Module):
    """The whole model; build it with :func:`build_model`. ``forward(batch)`` is one training step's loss."""

    def __init__(self, encoders: EncoderSet, unet: nn.Module, loss_weights: LossWeights, *,
                 fusion_config: FusionConfig, sample_rate: int, image_size: int, trainable: str = "fusion",
                 gradient_checkpointing: bool = False, drop_inputs: Sequence[str] = (),
                 fusion_mode: str = "attention", av_alignment: bool = True, reference_in_condition: bool = True):
        super().__init__()
        drop_inputs = tuple(drop_inputs)
        if any(d not in DROPPABLE_INPUTS for d in drop_inputs) or len(set(drop_inputs)) != len(drop_inputs):
            raise ValueError(f"drop_inputs={list(drop_inputs)} must list each of {DROPPABLE_INPUTS} at most once "
                             "(profile model.drop_inputs)")
        if fusion_mode not in FUSION_MODES:
            raise ValueError(f"fusion_mode={fusion_mode!r} must be one of {FUSION_MODES} (profile model.fusion)")
        self.encoders = encoders  # Eqs. 1-8 and the frozen judges (ArcFace, VGG, AgeEst, EmoEst)
        self.av = AudioVisualAlignment(fusion_config)  # Eqs. 3/15-16
        self.fusion = ModalityFusion(fusion_config)  # Eqs. 10-12
        self.conditioning = ConditioningVector(fusion_config)  # c = [f_final; ArcFace(I_ref); VGG(I_ref)]
        self.unet = ConditionalUNet(unet, fusion_config.cond_dim, gradient_checkpointing)  # ε_θ(x_t, t, c)
        self.nu = UnitCoefficient(0.5)  # ν of L_Emo,reg (trainable, in [0, 1])
        self.loss_fn = TotalLoss(encoders.multimodal.clip, encoders.arcface, encoders.vgg, encoders.age,
                                 encoders.emotion, loss_weights)  # Eq. 32 + λ_CM L_Cross-Modal
        self.fusion_config = fusion_config
        self.sample_rate = int(sample_rate)  # Hz of the waveforms in conditions["audio"]
        self.image_size = int(image_size)  # H = W of the images
        self.untrained: tuple[str, ...] = ()  # backend parts built with random weights (set by build_model)
        self.backend_digests: dict[str, str] = {}  # key -> sha256 of the backend file used ("untrained")
        self.trainable = trainable
        # Table 7's switches (module docstring); the defaults are the full model
        self.drop_inputs: tuple[str, ...] = drop_inputs
        self.fusion_mode = fusion_mode
        self.av_alignment = bool(av_alignment)
        self.reference_in_condition = bool(reference_in_condition)
        # the training objective (build_model sets these from the profile's train section): "edit_chain" is the
        # paper's (L_Total through the DDIM chain, Eq. 32); "conditional_prior" is not in the paper (prior_step)
        self.objective = "edit_chain"
        self.p_uncond = 0.1  # share of conditional-prior batches trained with c = None (classifier-free guidance)
        self.prior_loss = ConditionalDenoisingLoss()
        self._feature_cache: dict[str, dict[str, Tensor]] = {}  # frozen encoders' features (see _memo)
        self._pretrained_unet: dict[str, Tensor] | None = None  # CPU copy of the backbone before fine-tuning
        self.set_trainable(trainable)

    # ------------------------------------------------------------------ what trains
    def set_trainable(self, mode: str) -> None:
        """Freeze everything, then unfreeze the parts of ``mode`` ("fusion" or "fusion+unet")."""
        if mode not in TRAINABLE_MODES:
            raise ValueError(f"trainable={mode!r} must be one of {TRAINABLE_MODES}")
        if mode == "adapter":
            self.unet.add_adapter()  # zero-initialised: the model still edits exactly as before training
        if "unet.unet" in _TRAINABLE_PARTS[mode] and self._pretrained_unet is None:
            # the backbone is about to be fine-tuned: keep the pretrained weights the baselines run on
            self._pretrained_unet = {k: v.detach().cpu().clone() for k, v in self.unet.unet.state_dict().items()}
        self.requires_grad_(False)
        for part in _TRAINABLE_PARTS[mode]:
            self.get_submodule(part).requires_grad_(True)
        self.trainable = mode
        self.train(self.training)

    def pretrained_unet(self) -> nn.Module:
        """A copy of the unconditional backbone as loaded, before any fine-tuning (on the model's device).

        Under ``trainable='fusion'`` that is the model's own frozen UNet; under ``'fusion+unet'`` the weights
        kept when the backbone became trainable (``load_trained`` does not touch that copy).
        """
        plain = self.unet.plain_unet_copy()
        if self._pretrained_unet is not None:
            plain.load_state_dict(self._pretrained_unet)
        return plain.requires_grad_(False).eval()

    @property
    def fine_tunes_unet(self) -> bool:
        """Whether the backbone UNet trains under the current mode (then it drifts from the pretrained DDPM)."""
        return "unet.unet" in _TRAINABLE_PARTS[self.trainable]

    def trainable_parts(self) -> tuple[str, ...]:
        return _TRAINABLE_PARTS[self.trainable]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        """Only the trainable parts change mode; frozen networks stay in eval (BatchNorm, dropout)."""
        super().train(False)
        self.training = mode
        if mode:
            for part in self.trainable_parts():
                self.get_submodule(part).train(True)
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The tensors of the trainable parts, by their names in ``self.state_dict()``."""
        out: dict[str, Tensor] = {}
        for part in self.trainable_parts():
            for k, v in self.get_submodule(part).state_dict().items():
                out[f"{part}.{k}"] = v
        return out

    def signature(self) -> dict[str, list[int]]:
        """Name -> shape of every trainable tensor: two checkpoints load into each other iff equal."""
        return {k: list(v.shape) for k, v in sorted(self.trainable_state_dict().items())}

    @property
    def device(self) -> torch.device:
        return self.unet.cond_proj.weight.device

    # ------------------------------------------------------------------ conditions -> c
    def _inputs(self, conditions: Mapping[str, Any]) -> ConditionInputs:
        if not isinstance(conditions, Mapping) or "caption" not in conditions:
            raise ValueError("conditions must be a dict with at least 'caption' (a list of B target texts)")
        captions = conditions["caption"]
        if isinstance(captions, str) or not isinstance(captions, Sequence) or not captions:
            raise ValueError("conditions['caption'] must be a non-empty list of strings")
        batch, dev = len(captions), self.device
        sources = [s if s is not None else source_caption() for s in _column(conditions, "source_caption", batch)]
        ages = _column(conditions, "target_age", batch)
        emotions = _column(conditions, "target_emotion", batch)
        intensities = _column(conditions, "intensity", batch)
        audio = _column(conditions, "audio", batch)
        has_age = [not _is_missing(a) for a in ages]
        has_emo = [not _is_missing(e) for e in emotions]
        emo_idx = [emotion_index(e, argument=f"conditions['target_emotion'][{i}]") if h else 0
                   for i, (e, h) in enumerate(zip(emotions, has_emo, strict=True))]
        va = [valence_arousal(e, 1.0 if _is_missing(s) else float(s)) if h else (0.0, 0.0)
              for e, s, h in zip(emotions, intensities, has_emo, strict=True)]
        waves: list[Tensor | None] = []
        for i, w in enumerate(audio):
            if w is None:
                waves.append(None)
                continue
            w = torch.as_tensor(w)
            if w.ndim != 1 or w.numel() == 0 or not w.is_floating_point():
                raise ValueError(f"conditions['audio'][{i}] must be a 1-D float waveform, got {tuple(w.shape)}")
            waves.append(w.to(dev, torch.float32))
        reference = conditions.get("reference")
        if reference is not None:
            if not isinstance(reference, Tensor) or reference.ndim != 4 or reference.shape[0] != batch:
                raise ValueError(f"conditions['reference'] must be a (B={batch}, 3, H, W) tensor, got "
                                 f"{getattr(reference, 'shape', type(reference).__name__)}")
            reference = reference.to(dev, torch.float32)
        return ConditionInputs(
            captions=[str(c) for c in captions], source_captions=sources,
            age=torch.tensor([float(a) if h else 0.0 for a, h in zip(ages, has_age, strict=True)], device=dev),
            has_age=torch.tensor(has_age, dtype=torch.bool, device=dev),
            emotion=torch.tensor(emo_idx, dtype=torch.long, device=dev),
            has_emotion=torch.tensor(has_emo, dtype=torch.bool, device=dev),
            valence_arousal=torch.tensor(va, dtype=torch.float32, device=dev),
            audio=waves, has_audio=torch.tensor([w is not None for w in waves], dtype=torch.bool, device=dev),
            reference=reference)

    def _memo(self, kind: str, key: str, compute: Callable[[], Tensor]) -> Tensor:
        """Features of the *frozen* encoders, computed once per distinct input, one input at a time.

        One at a time makes every feature independent of which batch first met its input, so a resumed run
        reads bit-for-bit the features of an uninterrupted one; the cache is not part of the state dict.
        Always computed in float32, autocast off: a feature first met inside a bf16 training step would
        otherwise be memoised in bf16 and clash with float32 layers and rows outside autocast.
        """
        cache = self._feature_cache.setdefault(kind, {})
        if key not in cache:
            if len(cache) >= FEATURE_CACHE_SIZE:
                cache.clear()
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                cache[key] = compute().detach().float()
        return cache[key]

    def _text_features(self, texts: Sequence[str]) -> Tensor:
        """Frozen CLIP text features (B, 512) of ``texts`` (Eq. 1)."""
        clip = self.encoders.multimodal
        return torch.stack([self._memo("text", t, lambda t=t: clip.encode_text([t])[0]) for t in texts])

    def _audio_features(self, waves: list[Tensor | None]) -> dict[int, Tensor]:
        """Frozen Wav2Vec2 f_A (768,) per sample with audio (Eq. 2)."""
        mm, out = self.encoders.multimodal, {}
        for i, w in enumerate(waves):
            if w is not None:
                key = hashlib.sha1(w.detach().cpu().numpy().tobytes()).hexdigest() + f":{w.numel()}"
                out[i] = self._memo("audio", key, lambda w=w: mm.encode_audio(w[None], self.sample_rate)[0])
        return out

    def _drop(self, x: ConditionInputs) -> ConditionInputs:
        """``x`` with the inputs of ``drop_inputs`` made absent for every sample (the path of a batch row
        without them). "text" is not an input of this path: :meth:`condition` leaves its token out."""
        if not self.drop_inputs:
            return x
        if "audio" in self.drop_inputs:
            x = x._replace(audio=[None] * len(x.audio), has_audio=torch.zeros_like(x.has_audio))
        if "age" in self.drop_inputs:
            x = x._replace(age=torch.zeros_like(x.age), has_age=torch.zeros_like(x.has_age))
        if "emotion" in self.drop_inputs:  # the audio route of Eq. 7 is cut in condition
            x = x._replace(emotion=torch.zeros_like(x.emotion), has_emotion=torch.zeros_like(x.has_emotion),
                           valence_arousal=torch.zeros_like(x.valence_arousal))
        return x

    def _check_some_modality(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor],
                             batch: int) -> None:
        """A ValueError naming ``model.drop_inputs`` when it leaves a sample with no modality at all."""
        has_any = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for k in features:  # a token without a mask is present for every sample
            has_any = has_any | (present[k] if k in present else torch.ones_like(has_any))
        if not bool(has_any.all()):
            bad = (~has_any).nonzero().flatten().tolist()
            also = "" if self.av_alignment else " (with model.av_alignment=False)"
            raise ValueError(f"model.drop_inputs={list(self.drop_inputs)}{also} leaves samples {bad} with no "
                             "modality at all (no text, audio-visual, age, emotion or reference token): give "
                             "those samples another input, or drop fewer inputs")

    def condition(self, conditions: Mapping[str, Any]) -> Condition:
        """The conditioning vector c (B, cond_dim) and the features the losses need (module docstring)."""
        x = self._drop(self._inputs(conditions))
        mm, dev, batch, d = self.encoders.multimodal, self.device, len(x.captions), self.fusion_config.dim
        zeros = torch.zeros(batch, d, device=dev)
        f_text = self._text_features(x.captions)  # (B, 512) f_T (Eq. 1), frozen CLIP
        f_src = self._text_features(x.source_captions)  # (B, 512)
        with torch.no_grad():  # frozen CLIP: f_I (Eq. 8)
            f_img = mm.encode_image(x.reference) if x.reference is not None else None  # (B, 512)
        features: dict[str, Tensor] = {} if "text" in self.drop_inputs else {"T": f_text}
        present: dict[str, Tensor] = {}
        # Eqs. 4-5: f_Age = α f_Age,Text + (1 - α) AgeEmb(age)
        f_age = zeros
        if bool(x.has_age.any()):
            idx = x.has_age.nonzero().flatten()
            ages = check_age(x.age[idx], argument="conditions['target_age']")
            texts = [caption_from_attributes(age=float(a)) for a in ages.tolist()]
            f_num = mm.age_embedding(ages)  # (b, 512) AgeEmb (Eq. 4), trainable
            f_age = zeros.index_copy(0, idx, mm.mix_age(self._text_features(texts), f_num))  # (B, 512) Eq. 5
            features["Age"], present["Age"] = f_age, x.has_age
        # Eqs. 2, 6, 3/15-16: f_A, f_Emo,Audio, f_AV^final
        f_av, f_emo_audio = zeros, zeros
        if bool(x.has_audio.any()):
            fa = self._audio_features(x.audio)
            idx = x.has_audio.nonzero().flatten()
            f_a = torch.stack([fa[i] for i in idx.tolist()])  # (b, 768)
            with torch.no_grad():
                emo_audio = mm.audio_emotion(f_a).feature  # (b, 512) frozen EmoRec (Eq. 6)
            if self.av_alignment:  # off: no Eqs. 3/15-16, no AV token (audio only through Eq. 7)
                av = self.av(f_a, emo_audio, None if f_img is None else f_img[idx])
                f_av = zeros.index_copy(0, idx, av.final)  # (B, 512)
                features["AV"], present["AV"] = f_av, x.has_audio
            f_emo_audio = zeros.index_copy(0, idx, emo_audio)
        # Eq. 7: f_Emo = β f_Emo,Text + (1 - β) f_Emo,Audio (one of them alone where the other is absent)
        has_emo_feat = x.has_emotion if "emotion" in self.drop_inputs else (x.has_emotion | x.has_audio)
        f_emo = zeros
        if bool(has_emo_feat.any()):
            f_emo_text = zeros
            if bool(x.has_emotion.any()):
                idx = x.has_emotion.nonzero().flatten()
                prompts = [EMOTION_PROMPT.format(EMOTIONS[i]) for i in x.emotion[idx].tolist()]
                f_emo_text = zeros.index_copy(0, idx, self._text_features(prompts))
            both = (x.has_emotion & x.has_audio)[:, None]
            f_emo = torch.where(both, mm.mix_emotion(f_emo_text, f_emo_audio),
                                torch.where(x.has_emotion[:, None], f_emo_text, f_emo_audio))  # (B, 512)
            features["Emo"], present["Emo"] = f_emo, has_emo_feat
        identity = appearance = None
        if x.reference is not None:
            features["I"] = f_img
            if self.reference_in_condition:  # off: c's reference slots hold the "no reference" embeddings
                with torch.no_grad():
                    identity, appearance = reference_features(self.encoders.arcface, self.encoders.vgg,
                                                              x.reference)
        if self.drop_inputs:
            self._check_some_modality(features, present, batch)
        if self.fusion_mode == "mean":
            fused = self.fusion.mean(features, present)  # Eq. 10, then the mean of the present tokens
        else:
            fused = self.fusion(features, present)  # Eqs. 10-12
        c = self.conditioning(fused.final, identity, appearance)  # (B, cond_dim)
        return Condition(c=c, fusion=fused, text=f_text, source_text=f_src, av_final=f_av, age=f_age,
                         emotion=f_emo, inputs=x)

    # ------------------------------------------------------------------ L_Total on a mixed batch
    def loss(self, generated: Tensor, cond: Condition) -> LossTerms:
        """L_Total per sample with the terms its inputs allow, averaged over the batch (module docstring).

        Every term is reported as its mean over the samples that have it; ``"loss"`` is the batch mean
        of the per-sample L_Total.
        """
        x, batch = cond.inputs, generated.shape[0]
        keys = torch.stack([x.has_age, x.has_emotion, x.has_audio], 1).tolist()
        groups: dict[tuple[bool, ...], list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(tuple(k), []).append(i)
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        total = generated.new_zeros(())
        mm = self.encoders.multimodal
        no_text, emo_from_audio = "text" in self.drop_inputs, "emotion" not in self.drop_inputs
        for (has_age, has_emo, has_audio), members in groups.items():
            idx = torch.tensor(members, device=generated.device)
            terms = self.loss_fn(
                generated[idx], reference=None if x.reference is None else x.reference[idx],
                target_text=None if no_text else cond.text[idx],
                source_text=cond.source_text[idx] if x.reference is not None and not no_text else None,
                av_final=cond.av_final[idx] if has_audio and self.av_alignment else None,
                age_target=x.age[idx] if has_age else None, age_feature=cond.age[idx] if has_age else None,
                alpha=mm.alpha, emotion_target=x.emotion[idx] if has_emo else None,
                valence_arousal=x.valence_arousal[idx] if has_emo else None,
                emotion_feature=cond.emotion[idx] if (has_emo or (has_audio and emo_from_audio)) else None,
                nu=self.nu,
                modality_features={k: v[idx] for k, v in cond.fusion.normalized.items()},
                modality_present={k: v[idx] for k, v in cond.fusion.present.items()})
            n = len(members)
            total = total + terms["loss"] * (n / batch)
            for k, v in terms.items():
                if k != "loss":
                    sums[k] = sums.get(k, 0) + v * n
                    counts[k] = counts.get(k, 0) + n
        out = {k: sums[k] / counts[k] for k in sorted(sums)}
        out["loss"] = total
        return LossTerms(out)

    # ------------------------------------------------------------------ training step and editing
    def forward(self, batch: Mapping[str, Any], *, t0: int, n_inv_steps: int, n_gen_steps: int,
                spacing: str = ddim.DEFAULT_SPACING) -> tuple[LossTerms, Tensor]:
        """One training step's L_Total on ``batch`` (conditions + ``image`` (B, 3, H, W) = I_ref).

        Full backpropagation through the ``n_gen_steps`` reverse DDIM steps (cff_lib.training explains the
        choice). Returns (loss terms, the edited images (B, 3, H, W), detached).
        """
        if self.objective == "conditional_prior":
            return self.prior_step(batch)
        images = batch["image"]
        cond = self.condition({**batch, "reference": images})  # 1. c from T, A, Age, Emo, I_ref (Eqs. 1-12)
        chain = ddim.EditConfig(t0=t0, n_inv_steps=n_inv_steps, n_gen_steps=n_gen_steps, spacing=spacing)
        # 2. DDIM inversion of I_ref with c = None (Eq. 9, no graph), 3. reverse chain on c (Eq. 30, graph kept)
        x0 = ddim.edit_variants(self.unet, images, {"edit": cond.c}, chain)["edit"]
        generated = x0.clamp(-1.0, 1.0)  # the judges read images in [-1, 1]
        return self.loss(generated, cond), generated.detach()  # 4. L_Total (Eq. 32)

    def prior_step(self, batch: Mapping[str, Any]) -> tuple[LossTerms, Tensor]:
        """One training step of the conditional prior (not in the paper; docs/errata.md "A conditional prior"):
        the denoising loss of ε_θ(x_t, t, c) on the batch's oracle targets ``batch["target"]`` (B, 3, H, W),
        c dropped on a ``p_uncond`` share of batches. Returns (loss terms, the targets, detached)."""
        from diffusers import DDPMScheduler

        from cff_lib.conditional_unet import paper_scheduler_config, training_target

        if "target" not in batch:
            raise ValueError("the conditional prior trains on batch['target'] (the oracle targets; "
                             "cff_lib.training adds them in the synthetic world)")
        images = batch["image"]
        cond = self.condition({**batch, "reference": images})  # 1. c from T, A, Age, Emo, I_ref (Eqs. 1-12)
        x0 = batch["target"].to(images)  # (B, 3, H, W) the same person at the target age and emotion
        scheduler = DDPMScheduler(**(self.unet.noise_scheduler_config or paper_scheduler_config()))
        t = torch.randint(0, int(scheduler.config.num_train_timesteps), (x0.shape[0],), device=x0.device)  # (B,)
        noise = torch.randn_like(x0)
        x_t = scheduler.add_noise(x0, noise, t)  # 2. forward diffusion of the target
        c = None if float(torch.rand(())) < self.p_uncond else cond.c  # 3. classifier-free dropout of c
        prediction = self.unet.predict(x_t, t, c)  # 4. one unguided pass
        target = training_target(scheduler, x0, noise, t, self.unet.prediction_type)
        same = batch.get("same_expression")
        terms = self.prior_loss(prediction, target, x0, images, None if same is None else same.to(images))
        return terms, x0.detach()  # 5. the denoising loss, masks weighted

    @torch.no_grad()
    def edit(self, images: Tensor, conditions: Mapping[str, Any] | None, t0: int, steps: int, *,
             n_inv_steps: int | None = None, spacing: str = ddim.DEFAULT_SPACING,
             preserve_threshold: float | None = None) -> Tensor:
        """Zero-shot edit of ``images`` (B, 3, H, W) in [-1, 1] toward ``conditions`` (I_ref = ``images``).

        ``conditions=None`` is the unconditioned reconstruction (invert, then sample with c = None).
        ``steps`` reverse DDIM steps from ``t0``; the inversion uses ``n_inv_steps`` (default ``steps``).
        ``preserve_threshold``: the preserving edit (``cff_lib.ddim``; None: the plain edit).
        Returns (B, 3, H, W) clamped to [-1, 1].
        """
        cfg = ddim.EditConfig(t0=t0, n_inv_steps=n_inv_steps or steps, n_gen_steps=steps, spacing=spacing,
                              preserve_threshold=preserve_threshold)
        return self.edit_with(images, conditions, cfg)

    @torch.no_grad()
    def edit_with(self, images: Tensor, conditions: Mapping[str, Any] | None, cfg: ddim.EditConfig) -> Tensor:
        """:meth:`edit` under an :class:`ddim.EditConfig`; ``ddim.EditConfig.from_profile(profile)`` is the edit
        a profile describes (its edit start and preserving edit). Returns (B, 3, H, W) clamped to [-1, 1]."""
        was = self.training
        self.eval()
        try:
            c = None if conditions is None else self.condition({**conditions, "reference": images}).c
            out = ddim.edit_variants(self.unet, images.to(self.device), {"edit": c}, cfg)["edit"]
        finally:
            self.train(was)
        return out.clamp(-1.0, 1.0)

    @torch.no_grad()
    def generate(self, conditions: Mapping[str, Any], steps: int, generator: torch.Generator | None = None,
                 spacing: str = ddim.DEFAULT_SPACING) -> Tensor:
        """Pure generation from x_T ~ N(0, I) conditioned on ``conditions`` (no reference image)."""
        was = self.training
        self.eval()
        try:
            c = self.condition({k: v for k, v in conditions.items() if k != "reference"}).c
            out = ddim.generate(self.unet, c, steps, generator=generator, spacing=spacing)
        finally:
            self.train(was)
        return out.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ save / load the trained parts
    def metadata(self) -> dict[str, str]:
        return {"cff_kind": MODEL_KIND, "trainable": self.trainable,
                "signature": json.dumps(self.signature(), sort_keys=True),
                "backend_digests": json.dumps(self.backend_digests, sort_keys=True)}

    def save_trained(self, path: str | os.PathLike, extra: Mapping[str, str] | None = None) -> Path:
        """Write the trainable tensors to ``path`` (safetensors, atomically) with the model's metadata."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        meta = {**self.metadata(), **{k: str(v) for k, v in (extra or {}).items()}}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    def load_trained(self, path: str | os.PathLike, *, check_backends: bool = True) -> dict[str, str]:
        """Load tensors written by :meth:`save_trained` (or a training checkpoint); returns its metadata.

        A missing, corrupt, other-kind or other-architecture file is a clear error naming ``path``.
        """
        state, meta = read_checkpoint(path)
        self.load_trainable_state(state, meta, path, check_backends=check_backends)
        return meta

    def load_trainable_state(self, state: Mapping[str, Tensor], meta: Mapping[str, str], path: Any, *,
                             check_backends: bool = True) -> None:
        if meta.get("trainable") != self.trainable:
            raise ValueError(f"{path} was trained with trainable={meta.get('trainable')!r}, this model has "
                             f"trainable={self.trainable!r} (profile model.trainable)")
        mine, theirs = self.signature(), json.loads(meta.get("signature", "{}"))
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"{path} holds another ClipFaceFusion architecture: {len(diff)} tensors differ, "
                             f"e.g. {[(k, theirs.get(k), mine.get(k)) for k in diff[:3]]} (saved, this model)")
        if check_backends:
            saved = json.loads(meta.get("backend_digests", "{}"))
            bad = [k for k in set(saved) | set(self.backend_digests) if saved.get(k) != self.backend_digests.get(k)]
            if bad:
                raise ValueError(f"{path} was trained on other backend weights ({', '.join(sorted(bad))} "
                                 "differ); retrain it or pass check_backends=False")
        current = self.trainable_state_dict()
        with torch.no_grad():
            for k, v in current.items():
                v.copy_(state[k].to(v.device, v.dtype))


# ------------------------------------------------------------------------------------------ checkpoint files
def read_checkpoint(path: str | os.PathLike, prefix: str = "") -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors whose names start with ``prefix``, prefix removed; metadata) of a ClipFaceFusion file.

    FileNotFoundError for a missing file; ValueError naming the file when it is not readable safetensors
    (truncated, corrupt) or holds another kind of checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if meta.get("cff_kind") != MODEL_KIND:
                raise ValueError(f"{path} holds a {meta.get('cff_kind', 'non-cff')!r} checkpoint, expected "
                                 f"{MODEL_KIND!r}")
            tensors = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {path} is corrupt or not a safetensors file ({err})") from None
    return tensors, meta


# ------------------------------------------------------------------------------------------ assembly
def build_model(profile, weights_dir: str | os.PathLike | None = None, *, allow_untrained: bool = False,
                unet_config: Mapping[str, Any] | None = None, device: str | torch.device | None = None
                ) -> ClipFaceFusion:
    """ClipFaceFusion of ``profile`` with the backends found in ``weights_dir`` (default the profile's).

    Missing backend files are a FileNotFoundError naming them (the synthetic backends are trained by
    notebooks/02), unless ``allow_untrained``: then they are randomly initialised (seeded by the profile's
    global seed) and listed in ``model.untrained``. ``unet_config`` replaces an *untrained* UNet's
    architecture (tests use ``conditional_unet.tiny_unet_config``). The trained ClipFaceFusion parts are
    not loaded here: see :func:`load_trained_model`.
    """
    root = weights_root(profile, weights_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(profile.train.seed)
        encoders, unet, digests = build_backends(profile.model.backend, root, image_size=profile.data.image_size,
                                                 allow_untrained=allow_untrained)
        if unet_config is not None and digests.get("unet") == "untrained":
            from diffusers import UNet2DModel

            unet = UNet2DModel(**dict(unet_config))
            digests["unet"] = "untrained:" + hashlib.sha256(
                json.dumps(dict(unet_config), sort_keys=True, default=str).encode()).hexdigest()[:16]
        fusion_config = FusionConfig(heads=profile.model.fusion_heads, dropout=profile.model.dropout,
                                     vgg_dim=encoders.vgg.channels["conv4_3"])
        model = ClipFaceFusion(encoders, unet, LossWeights.from_config(profile.loss), fusion_config=fusion_config,
                               sample_rate=profile.data.sample_rate, image_size=profile.data.image_size,
                               trainable=profile.model.trainable,
                               gradient_checkpointing=profile.train.gradient_checkpointing,
                               drop_inputs=profile.model.drop_inputs, fusion_mode=profile.model.fusion,
                               av_alignment=profile.model.av_alignment,
                               reference_in_condition=profile.model.reference_in_condition)
    model.untrained = tuple(k for k, v in digests.items() if v.startswith("untrained"))
    model.backend_digests = digests
    model.objective, model.p_uncond = profile.train.objective, profile.train.p_uncond  # not in the paper
    model.prior_loss = ConditionalDenoisingLoss(profile.train.changed_weight, profile.train.expression_weight)
    model.unet.guidance_scale = profile.ddim.guidance_scale
    if device is not None:
        model.to(device)
    return model


def load_trained_model(profile, weights_dir: str | os.PathLike | None = None, *,
                       allow_untrained: bool = False) -> ClipFaceFusion:
    """:func:`build_model` plus the trained parts from ``weights_dir/MODEL_FILE`` (verified first)."""
    model = build_model(profile, weights_dir, allow_untrained=allow_untrained)
    model.load_trained(weights_root(profile, weights_dir) / MODEL_FILE)
    return model.eval()


__all__ = ["ClipFaceFusion", "Condition", "ConditionInputs", "MODEL_FILE", "build_model", "load_trained_model",
           "read_checkpoint", "weights_root"]
