"""The training losses of ClipFaceFusion, each an ``nn.Module`` returning named scalar terms.

Paper sections "Multi-modal fusion" (cross-modal loss), "Audio-visual alignment" (Eq. 17), "Age and emotion
consistency losses" (Eq. 18 and the regularisers), "Identity preservation mechanism" and "Diffusion process
and optimization" (Eq. 32 and the directional CLIP loss). Equations implemented:

- L_Cross-Modal = sum_{m != n} (1 - cos(f'_m, f'_n))                      ("Multi-modal fusion")
- L_AV = 1 - cos(CLIP_image(I_gen), f_AV^final)                            (Eq. 17)
- L_Age,reg = lambda_Age ||(1 + alpha) AgeEst(I_gen) - (f_Age + alpha f_Age,ref)||^2,
  f_Age,ref = AgeEst(I_ref)
- L_Age,total = L_Age + lambda_Age.reg L_Age,reg
- L_Emo,reg = lambda_Emo ||(1 + nu) EmoEst(I_gen) - (f_Emo + nu f_Emo,ref)||^2
- L_Emo,total = L_Emo + lambda_Emo.reg L_Emo,reg
- L_ID = lambda_ArcFace (1 - cos(f_ID,ref, f_ID,gen))
         + lambda_Perc sum_l lambda_l ||VGG_l(I_gen) - VGG_l(I_ref)||^2
- L_Total = lambda_1 L_CLIP + lambda_2 L_AV + lambda_3 L_Age,total + lambda_4 L_Emo,total + lambda_5 L_ID
            + lambda_Cross-Modal L_Cross-Modal               (Eq. 32, plus the separately named 0.1)

Display equations missing from the paper, reconstructed here (each is listed in docs/errata.md):

- L_CLIP (DiffusionCLIP's directional loss plus the reference term weighted by "partial = 0.1"):
  Delta_T = f_T,target - f_T,src, Delta_I = f_I,gen - f_I,ref,
  L_CLIP = (1 - cos(Delta_I, Delta_T)) + partial * (1 - cos(f_I,gen, f_I,ref)).
  The reference term lives in CLIP image space, not in pixels as DiffusionCLIP's L1 term does, because the
  paper derives "f_I,gen, f_I,ref by substituting I_gen and I_ref into Eq. (8)" (the CLIP image encoder).
  Without a reference image (pure generation) there is no image direction; L_CLIP then falls back to the
  global CLIP loss 1 - cos(f_I,gen, f_T,target) (plus no reference term), reported as "global".
- L_AV^ref = L_AV + delta * (1 - cos(CLIP_image(I_gen), CLIP_image(I_ref))), delta = 0.05.
- L_Age = mean_b ((AgeEst_age(I_gen) - age_target) / sigma)^2, sigma = 10 years, optionally
  + w_feat * (1 - cos(AgeEst_feat(I_gen), f_Age)) (w_feat = 0 by default). Regression on the frozen
  estimator's scalar reading: its only minimiser is an image the estimator reads as the target age, so no
  trainable head can satisfy it by collapsing (the feature terms alone could: f_Age is produced by a
  trainable encoder and can chase the estimator's feature).
- L_Emo = CE(EmoEst_logits(I_gen), target) + w_va * mean_b ||EmoEst_va(I_gen) - (v_t, a_t)||^2 (w_va = 1;
  the valence-arousal term is present only when a target (v, a) is given; target may be a class index or a
  probability vector over cff_lib.emotions.EMOTIONS).

Reductions: every term is a mean over the batch. ||.||^2 in the age / emotion regularisers is summed over the
feature dimension (the paper's norm); in the perceptual loss it is *averaged* over the C x H x W elements of
each VGG map, so the layer weights 0.1 / 0.2 mean the same at any resolution and the term stays on the scale
of the ArcFace cosine term. The cross-modal sum runs over unordered pairs {m, n} (the literal ordered sum
over m != n is exactly twice that; the 0.1 weight absorbs the factor).

Absence is explicit: a term whose inputs are absent is not computed and its name is listed in
``LossTerms.absent`` (it is never a silent zero). Without a reference image the regularisers drop their
alpha / nu reference terms: ||AgeEst(I_gen) - f_Age||^2 (alpha is not needed then).

Frozen networks (CLIP, ArcFace, VGG, the age and emotion estimators) get ``requires_grad=False`` and eval
mode in the loss constructors and stay in eval mode under ``.train()``; gradients still flow through them to
the generated image.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cff_lib.coefficients import UnitCoefficient
from cff_lib.emotions import EMOTIONS

Coefficient = UnitCoefficient | Tensor | float


class LossTerms(dict):
    """``name -> scalar Tensor`` of present terms, ``"loss"`` their weighted total; ``.absent`` the rest."""

    def __init__(self, terms: Mapping[str, Tensor], absent: Sequence[str] = ()):
        super().__init__(terms)
        self.absent: tuple[str, ...] = tuple(absent)

    def __repr__(self) -> str:
        vals = ", ".join(f"{k}={float(v):.4g}" for k, v in self.items())
        return f"LossTerms({vals}; absent={list(self.absent)})"


# ------------------------------------------------------------------------------------------ helpers
def _cos_loss(a: Tensor, b: Tensor) -> Tensor:
    """mean_b (1 - cos(a_b, b_b)) for (B, D) tensors (b may broadcast from (1, D))."""
    return (1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-8)).mean()


def _check_images(x: object, name: str, batch: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an image batch (B, 3, H, W) in [-1, 1], got {shape}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has batch size {x.shape[0]}, expected {batch}")
    return x


def _check_features(x: object, name: str, batch: int, width: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] != batch:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must have shape ({batch}, D), got {shape}")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name} must have width {width}, got {x.shape[1]}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating tensor, got {x.dtype}")
    return x


def _coefficient(value: object, name: str) -> Tensor:
    """A [0, 1] scalar from a UnitCoefficient (gradient kept), a scalar tensor or a float."""
    if isinstance(value, UnitCoefficient):
        return value()
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        out = value.reshape(())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out = torch.tensor(float(value))
    else:
        raise ValueError(f"{name} must be a UnitCoefficient, a scalar tensor or a float, got {value!r}")
    if not 0.0 <= float(out.detach()) <= 1.0:
        raise ValueError(f"{name}={float(out.detach())} must lie in [0, 1]")
    return out


def _nonneg(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0.0:
        raise ValueError(f"{name}={value!r} must be a non-negative number")
    return float(value)


class _FrozenNetsLoss(nn.Module):
    """Base: registers frozen networks (no grad, eval mode, kept in eval by ``train()``)."""

    def __init__(self) -> None:
        super().__init__()
        self._frozen_names: tuple[str, ...] = ()

    def _freeze(self, name: str, module: object, methods: Sequence[str] = ()) -> None:
        if not isinstance(module, nn.Module):
            raise ValueError(f"{name} must be an nn.Module, got {type(module).__name__}")
        for method in methods:
            if not callable(getattr(module, method, None)):
                raise ValueError(f"{name} must provide .{method}()")
        module.requires_grad_(False)
        module.eval()
        setattr(self, name, module)
        self._frozen_names += (name,)

    def train(self, mode: bool = True) -> _FrozenNetsLoss:
        super().train(mode)
        for name in self._frozen_names:
            getattr(self, name).eval()
        return self

    def _reference_terms(self, reference, coefficient, coef_name: str, batch: int, feature_index: int):
        """(f_ref, coefficient) of the reference-aware regulariser, or (None, None) without a reference.
        ``feature_index`` picks the estimator reading's feature; the coefficient is required with a reference."""
        if reference is None:
            return None, None
        _check_images(reference, "reference", batch)
        if coefficient is None:
            raise ValueError(f"{coef_name} is required when reference is given (the regulariser uses {coef_name})")
        coef = _coefficient(coefficient, coef_name)
        with torch.no_grad():
            ref_feat = self._reading(reference, "reference")[feature_index]  # (B, D)
        return ref_feat, coef


# ------------------------------------------------------------------------------ directional CLIP
class DirectionalClipLoss(_FrozenNetsLoss):
    """L_CLIP = (1 - cos(Delta_I, Delta_T)) + partial (1 - cos(f_I,gen, f_I,ref)) (module docstring)."""

    def __init__(self, clip: nn.Module, ref_weight: float = 0.1):
        super().__init__()
        self._freeze("clip", clip, ("encode_image", "encode_text"))
        self.ref_weight = _nonneg(ref_weight, "ref_weight")  # partial = 0.1 in the paper

    def text_features(self, text: object, name: str, batch: int) -> Tensor:
        """(B, 512) or (1, 512) CLIP text features of a str, a list of str, or precomputed features."""
        if isinstance(text, str):
            text = [text]
        if isinstance(text, Tensor):
            feats = text if text.dim() == 2 else text.reshape(1, -1)
        elif isinstance(text, Sequence) and text and all(isinstance(t, str) for t in text):
            with torch.no_grad():
                feats = self.clip.encode_text(list(text))
        else:
            raise ValueError(f"{name} must be a str, a non-empty list of str or a (B, 512) tensor")
        if feats.dim() != 2 or feats.shape[0] not in (1, batch):
            raise ValueError(f"{name} must give 1 or {batch} text features, got shape {tuple(feats.shape)}")
        return feats

    def forward(
        self,
        generated: Tensor,
        target_text: str | Sequence[str] | Tensor,
        reference: Tensor | None = None,
        source_text: str | Sequence[str] | Tensor | None = None,
    ) -> LossTerms:
        """``generated`` / ``reference`` (B, 3, H, W); texts as str, list[str] (1 or B) or features."""
        _check_images(generated, "generated")
        batch = generated.shape[0]
        if source_text is not None and reference is None:
            raise ValueError("source_text needs reference: the image direction is I_gen - I_ref")
        f_gen = self.clip.encode_image(generated)  # (B, 512)
        f_tgt = self.text_features(target_text, "target_text", batch)  # (B|1, 512)
        terms: dict[str, Tensor] = {}
        absent: list[str] = []
        f_ref = None
        if reference is not None:
            _check_images(reference, "reference", batch)
            with torch.no_grad():
                f_ref = self.clip.encode_image(reference)  # (B, 512)
        if f_ref is not None and source_text is not None:
            f_src = self.text_features(source_text, "source_text", batch)  # (B|1, 512)
            terms["direction"] = _cos_loss(f_gen - f_ref, (f_tgt - f_src).expand(batch, -1))
            absent.append("global")
            main = terms["direction"]
        else:
            terms["global"] = _cos_loss(f_gen, f_tgt.expand(batch, -1))
            absent.append("direction")
            main = terms["global"]
        if f_ref is not None:
            terms["ref"] = _cos_loss(f_gen, f_ref)
            terms["loss"] = main + self.ref_weight * terms["ref"]
        else:
            absent.append("ref")
            terms["loss"] = main
        return LossTerms(terms, absent)


# ----------------------------------------------------------------------------------- audio-visual
class AudioVisualLoss(_FrozenNetsLoss):
    """Eq. 17 L_AV = 1 - cos(CLIP(I_gen), f_AV^final) and
    L_AV^ref = L_AV + delta (1 - cos(CLIP(I_gen), CLIP(I_ref)))."""

    def __init__(self, clip: nn.Module, ref_weight: float = 0.05):
        super().__init__()
        self._freeze("clip", clip, ("encode_image",))
        self.ref_weight = _nonneg(ref_weight, "ref_weight")  # delta = 0.05 in the paper

    def forward(self, generated: Tensor, av_final: Tensor, reference: Tensor | None = None) -> LossTerms:
        """``av_final`` f_AV^final (B, 512). ``loss`` is L_AV^ref with a reference, L_AV without."""
        _check_images(generated, "generated")
        batch = generated.shape[0]
        f_gen = self.clip.encode_image(generated)  # (B, 512)
        _check_features(av_final, "av_final", batch, f_gen.shape[1])
        terms = {"av": _cos_loss(f_gen, av_final)}
        if reference is None:
            terms["loss"] = terms["av"]
            return LossTerms(terms, ("ref", "av_ref"))
        _check_images(reference, "reference", batch)
        with torch.no_grad():
            f_ref = self.clip.encode_image(reference)  # (B, 512)
        terms["ref"] = _cos_loss(f_gen, f_ref)
        terms["av_ref"] = terms["av"] + self.ref_weight * terms["ref"]
        terms["loss"] = terms["av_ref"]
        return LossTerms(terms)


# ------------------------------------------------------------------------------------ regulariser
def _reference_regulariser(
    gen_feat: Tensor, target_feat: Tensor, ref_feat: Tensor | None, coef: Tensor | None
) -> Tensor:
    """mean_b ||(1 + c) g - (f + c r)||^2 (summed over features); ||g - f||^2 without a reference."""
    if ref_feat is None:
        diff = gen_feat - target_feat  # (B, D)
    else:
        diff = (1.0 + coef) * gen_feat - (target_feat + coef * ref_feat)  # (B, D)
    return diff.pow(2).sum(dim=1).mean()


# -------------------------------------------------------------------------------------------- age
class AgeConsistencyLoss(_FrozenNetsLoss):
    """L_Age,total = L_Age + lambda_Age.reg L_Age,reg (module docstring for the reconstructed L_Age)."""

    def __init__(
        self,
        age_est: nn.Module,
        lambda_age: float = 0.1,
        lambda_age_reg: float = 0.1,
        sigma: float = 10.0,
        feature_weight: float = 0.0,
    ):
        super().__init__()
        self._freeze("age_est", age_est)
        self.lambda_age = _nonneg(lambda_age, "lambda_age")  # lambda_Age inside L_Age,reg (paper 0.1)
        self.lambda_age_reg = _nonneg(lambda_age_reg, "lambda_age_reg")  # lambda_Age.reg (0.1 or 0.09)
        if not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"sigma={sigma!r} must be a positive number of years")
        self.sigma = float(sigma)  # years that count as one unit of squared error
        self.feature_weight = _nonneg(feature_weight, "feature_weight")  # weight of 1 - cos(feat, f_Age)

    def _reading(self, images: Tensor, name: str):
        reading = self.age_est(images)
        batch = images.shape[0]
        age, feat = getattr(reading, "age", None), getattr(reading, "feature", None)
        if not isinstance(age, Tensor) or age.shape != (batch,):
            raise ValueError(f"age_est({name}).age must be a ({batch},) tensor")
        _check_features(feat, f"age_est({name}).feature", batch)
        return age, feat

    def forward(
        self,
        generated: Tensor,
        age_target: Tensor | float | None = None,
        age_feature: Tensor | None = None,
        reference: Tensor | None = None,
        alpha: Coefficient | None = None,
    ) -> LossTerms:
        """``age_target`` years (B,) or scalar; ``age_feature`` f_Age (B, 512); ``alpha`` Eq. 5's alpha."""
        _check_images(generated, "generated")
        batch = generated.shape[0]
        if age_target is None and age_feature is None:
            raise ValueError("age_target and age_feature are both None: nothing to compare the age with")
        age, feat = self._reading(generated, "generated")  # (B,), (B, D)
        terms: dict[str, Tensor] = {}
        absent: list[str] = []
        l_age = None
        if age_target is not None:
            target = torch.as_tensor(age_target, dtype=age.dtype, device=age.device)
            if target.dim() == 0:
                target = target.expand(batch)
            if target.shape != (batch,) or not bool(torch.isfinite(target).all()):
                raise ValueError(f"age_target must be finite years of shape ({batch},) or a scalar")
            terms["age"] = (((age - target) / self.sigma) ** 2).mean()
            l_age = terms["age"]
        else:
            absent.append("age")
        if age_feature is not None:
            _check_features(age_feature, "age_feature", batch, feat.shape[1])
            if self.feature_weight > 0:
                terms["feature"] = _cos_loss(feat, age_feature)
                part = self.feature_weight * terms["feature"]
                l_age = part if l_age is None else l_age + part
            else:
                absent.append("feature")
            ref_feat, coef = self._reference_terms(reference, alpha, "alpha", batch, 1)  # f_Age,ref (B, D)
            terms["reg"] = self.lambda_age * _reference_regulariser(feat, age_feature, ref_feat, coef)
            reg = self.lambda_age_reg * terms["reg"]
            terms["loss"] = reg if l_age is None else l_age + reg
        else:
            absent += ["feature", "reg"]
            terms["loss"] = l_age
        return LossTerms(terms, absent)


# ---------------------------------------------------------------------------------------- emotion
class EmotionConsistencyLoss(_FrozenNetsLoss):
    """L_Emo,total = L_Emo + lambda_Emo.reg L_Emo,reg (module docstring for the reconstructed L_Emo)."""

    def __init__(
        self,
        emo_est: nn.Module,
        lambda_emo: float = 0.05,
        lambda_emo_reg: float = 0.05,
        va_weight: float = 1.0,
    ):
        super().__init__()
        self._freeze("emo_est", emo_est)
        self.lambda_emo = _nonneg(lambda_emo, "lambda_emo")  # lambda_Emo inside L_Emo,reg (paper 0.05)
        self.lambda_emo_reg = _nonneg(lambda_emo_reg, "lambda_emo_reg")  # lambda_Emo.reg (0.05 or 0.06)
        self.va_weight = _nonneg(va_weight, "va_weight")  # weight of the valence-arousal MSE in L_Emo

    def _reading(self, images: Tensor, name: str):
        reading = self.emo_est(images)
        batch = images.shape[0]
        logits = getattr(reading, "logits", None)
        va = getattr(reading, "valence_arousal", None)
        feat = getattr(reading, "feature", None)
        if not isinstance(logits, Tensor) or logits.shape != (batch, len(EMOTIONS)):
            raise ValueError(f"emo_est({name}).logits must have shape ({batch}, {len(EMOTIONS)})")
        if not isinstance(va, Tensor) or va.shape != (batch, 2):
            raise ValueError(f"emo_est({name}).valence_arousal must have shape ({batch}, 2)")
        _check_features(feat, f"emo_est({name}).feature", batch)
        return logits, va, feat

    def forward(
        self,
        generated: Tensor,
        emotion_target: Tensor | None = None,
        valence_arousal: Tensor | None = None,
        emotion_feature: Tensor | None = None,
        reference: Tensor | None = None,
        nu: Coefficient | None = None,
    ) -> LossTerms:
        """``emotion_target`` (B,) class indices or (B, 8) probabilities; ``valence_arousal`` (B, 2) target;
        ``emotion_feature`` f_Emo (B, 512); ``nu`` the regulariser's trainable nu."""
        _check_images(generated, "generated")
        batch = generated.shape[0]
        if emotion_target is None and valence_arousal is None and emotion_feature is None:
            raise ValueError("emotion_target, valence_arousal and emotion_feature are all None")
        logits, va, feat = self._reading(generated, "generated")
        terms: dict[str, Tensor] = {}
        absent: list[str] = []
        parts: list[Tensor] = []
        if emotion_target is not None:
            t = emotion_target
            if not isinstance(t, Tensor):
                raise ValueError("emotion_target must be a tensor: indices (B,) or probabilities (B, 8)")
            if t.dtype in (torch.int64, torch.int32) and t.shape == (batch,):
                if bool(((t < 0) | (t >= len(EMOTIONS))).any()):
                    raise ValueError(f"emotion_target indices must lie in [0, {len(EMOTIONS) - 1}]")
                terms["ce"] = F.cross_entropy(logits, t.long())
            elif torch.is_floating_point(t) and t.shape == (batch, len(EMOTIONS)):
                if bool((t < 0).any()) or not torch.allclose(t.sum(1), torch.ones_like(t[:, 0]), atol=1e-4):
                    raise ValueError("emotion_target probabilities must be non-negative and sum to 1")
                terms["ce"] = F.cross_entropy(logits, t)
            else:
                raise ValueError(
                    f"emotion_target must be int (B,)={batch} indices or float ({batch}, {len(EMOTIONS)}), "
                    f"got {t.dtype} {tuple(t.shape)}"
                )
            parts.append(terms["ce"])
        else:
            absent.append("ce")
        if valence_arousal is not None:
            _check_features(valence_arousal, "valence_arousal", batch, 2)
            terms["va"] = (va - valence_arousal).pow(2).sum(1).mean()
            parts.append(self.va_weight * terms["va"])
        else:
            absent.append("va")
        if emotion_feature is not None:
            _check_features(emotion_feature, "emotion_feature", batch, feat.shape[1])
            ref_feat, coef = self._reference_terms(reference, nu, "nu", batch, 2)  # f_Emo,ref (B, D)
            terms["reg"] = self.lambda_emo * _reference_regulariser(feat, emotion_feature, ref_feat, coef)
            parts.append(self.lambda_emo_reg * terms["reg"])
        else:
            absent.append("reg")
        terms["loss"] = torch.stack(parts).sum()
        return LossTerms(terms, absent)


# --------------------------------------------------------------------------------------- identity
class IdentityLoss(_FrozenNetsLoss):
    """L_ID = 0.6 (1 - cos(ArcFace(I_gen), ArcFace(I_ref))) + 0.4 sum_l lambda_l mean ||VGG_l diff||^2."""

    def __init__(
        self,
        arcface: nn.Module,
        vgg: nn.Module,
        arcface_weight: float = 0.6,
        perceptual_weight: float = 0.4,
        layer_weights: Mapping[str, float] | None = None,
    ):
        super().__init__()
        self._freeze("arcface", arcface)
        self._freeze("vgg", vgg)
        self.arcface_weight = _nonneg(arcface_weight, "arcface_weight")  # lambda_ArcFace = 0.6
        self.perceptual_weight = _nonneg(perceptual_weight, "perceptual_weight")  # lambda_Perc = 0.4
        if layer_weights is None:
            layer_weights = {"conv3_3": 0.1, "conv4_3": 0.2}  # lambda_l of the paper
        if not isinstance(layer_weights, Mapping) or not layer_weights:
            raise ValueError("layer_weights must be a non-empty dict layer name -> weight")
        self.layer_weights = {str(k): _nonneg(v, f"layer_weights[{k!r}]") for k, v in layer_weights.items()}

    def forward(self, generated: Tensor, reference: Tensor) -> LossTerms:
        _check_images(generated, "generated")
        batch = generated.shape[0]
        _check_images(reference, "reference", batch)
        with torch.no_grad():
            id_ref = self.arcface(reference)  # (B, 512)
            vgg_ref = self.vgg(reference)
        id_gen = self.arcface(generated)  # (B, 512)
        vgg_gen = self.vgg(generated)
        terms = {"arcface": _cos_loss(id_gen, id_ref)}
        perceptual = []
        for layer, w in self.layer_weights.items():
            if layer not in vgg_gen or layer not in vgg_ref:
                raise ValueError(f"layer_weights names {layer!r} but vgg returned {sorted(vgg_gen)}")
            terms[f"vgg_{layer}"] = (vgg_gen[layer] - vgg_ref[layer]).pow(2).flatten(1).mean(1).mean()
            perceptual.append(w * terms[f"vgg_{layer}"])
        terms["perceptual"] = torch.stack(perceptual).sum()
        terms["loss"] = self.arcface_weight * terms["arcface"] + self.perceptual_weight * terms["perceptual"]
        return LossTerms(terms)


# ------------------------------------------------------------------------------------- cross-modal
class SourceL1Loss(nn.Module):
    """Not in the paper: mean |generated − I_ref| per value. DiffusionCLIP fine-tunes with this L1 to the
    source (weight 1 beside CLIP 3); it pins every pixel the edit has no reason to move, which the guides'
    gradients alone do not (docs/errata.md, "Robust guides"). Weighted by ``LossWeights.lambda_l1_source``."""

    def forward(self, generated: Tensor, reference: Tensor) -> LossTerms:
        reference = _check_images(reference, "reference", generated.shape[0])
        return LossTerms({"loss": (generated - reference).abs().mean()})


class ConditionalDenoisingLoss(nn.Module):
    """Not in the paper: the training loss of the *conditional prior* (docs/errata.md, "A conditional prior"),
    the denoising error of ε_θ(x_t, t, c) on oracle targets, optionally with extra weight on two pixel masks:

        L = mean err + changed_weight · mean_{|x0 − I_ref| > τ} err + expression_weight · mean_{|x0 − same| > τ} err

    err = (prediction − target)², τ = ``mask_threshold`` in any channel; "same" is the source person at the
    target age with the source's own expression (:func:`cff_lib.oracle.same_expression_targets`), so the last
    mask holds the expression's own pixels, which the age change outnumbers among the changed ones."""

    def __init__(self, changed_weight: float = 0.0, expression_weight: float = 0.0, mask_threshold: float = 0.05):
        super().__init__()
        for name, value in (("changed_weight", changed_weight), ("expression_weight", expression_weight)):
            if not value >= 0:
                raise ValueError(f"{name}={value!r} must be >= 0")
        self.changed_weight, self.expression_weight = float(changed_weight), float(expression_weight)
        self.mask_threshold = float(mask_threshold)

    def forward(self, prediction: Tensor, target: Tensor, x0: Tensor, reference: Tensor,
                same_expression: Tensor | None = None) -> LossTerms:
        """``prediction``/``target``: the UNet's output and what it should be (B, 3, S, S); ``x0`` the oracle
        targets and ``reference`` I_ref (B, 3, S, S); ``same_expression`` (B, 3, S, S), needed when
        ``expression_weight`` > 0."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
        err = (prediction - target).pow(2)  # (B, 3, S, S)
        terms = {"denoise/mse": err.mean()}
        loss = terms["denoise/mse"]

        def masked(a: Tensor, b: Tensor) -> Tensor:  # mean err on the pixels where a and b differ, ()
            mask = ((a - b).abs().amax(1, keepdim=True) > self.mask_threshold).to(err)  # (B, 1, S, S)
            return (err * mask).sum() / (err.shape[1] * mask.sum()).clamp(min=1)

        if self.changed_weight:
            terms["denoise/changed_mse"] = masked(x0, _check_images(reference, "reference", x0.shape[0]))
            loss = loss + self.changed_weight * terms["denoise/changed_mse"]
        if self.expression_weight:
            if same_expression is None:
                raise ValueError("expression_weight > 0 needs same_expression (the targets at the source's "
                                 "expression; batch['same_expression'])")
            terms["denoise/expression_mse"] = masked(x0, _check_images(same_expression, "same_expression",
                                                                       x0.shape[0]))
            loss = loss + self.expression_weight * terms["denoise/expression_mse"]
        return LossTerms({**terms, "loss": loss})


class CrossModalLoss(nn.Module):
    """weight * mean_b sum_{unordered {m, n}, both present} (1 - cos(f'_m, f'_n))."""

    def __init__(self, weight: float = 0.1):
        super().__init__()
        self.weight = _nonneg(weight, "weight")  # lambda_Cross-Modal = 0.1 in the paper

    def forward(
        self, normalized: Mapping[str, Tensor | None], present: Mapping[str, Tensor] | None = None
    ) -> LossTerms:
        """``normalized`` f'_m (B, D) per present modality (FusionOutput.normalized); ``present`` optional
        (B,) bool masks (FusionOutput.present). Samples with < 2 present modalities are left out of the
        batch mean."""
        if not isinstance(normalized, Mapping):
            raise ValueError("normalized must be a dict modality -> (B, D) tensor")
        feats = {k: v for k, v in normalized.items() if v is not None}
        if len(feats) < 2:
            raise ValueError(f"normalized needs at least 2 present modalities, got {sorted(feats)}")
        first = next(iter(feats.values()))
        batch = first.shape[0] if isinstance(first, Tensor) else 0
        for k, v in feats.items():
            _check_features(v, f"normalized[{k!r}]", batch, first.shape[1])
        masks: dict[str, Tensor] = {}
        for k in feats:
            m = None if present is None else present.get(k)
            if m is None:
                m = torch.ones(batch, dtype=torch.bool, device=first.device)
            elif not isinstance(m, Tensor) or m.dtype != torch.bool or m.shape != (batch,):
                raise ValueError(f"present[{k!r}] must be a bool tensor of shape ({batch},)")
            masks[k] = m
        total = first.new_zeros(batch)  # (B,)
        pairs = first.new_zeros(batch)  # (B,) number of present pairs per sample
        for m, n in itertools.combinations(feats, 2):
            both = (masks[m] & masks[n]).to(first.dtype)  # (B,)
            cos = F.cosine_similarity(feats[m], feats[n], dim=-1, eps=1e-8)  # (B,)
            total = total + both * (1.0 - cos)
            pairs = pairs + both
        has_pair = pairs > 0
        if not bool(has_pair.any()):
            raise ValueError("present leaves no sample with two present modalities")
        value = total[has_pair].mean()
        return LossTerms({"cross_modal": value, "loss": self.weight * value})


# ------------------------------------------------------------------------------------------ total
@dataclass(frozen=True)
class LossWeights:
    lambda_clip: float = 0.3  # lambda_1 of Eq. 32 ("Diffusion process and optimization": 0.3)
    lambda_av: float = 0.2  # lambda_2 (0.2)
    lambda_age: float = 0.2  # lambda_3 (0.2)
    lambda_emo: float = 0.2  # lambda_4 (0.2)
    lambda_id: float = 0.3  # lambda_5 (0.3)
    lambda_cross_modal: float = 0.1  # lambda_Cross-Modal ("Multi-modal fusion": 0.1), added to Eq. 32
    lambda_age_reg: float = 0.1  # lambda_Age.reg ("Age and emotion consistency losses": 0.1; Sect. 4: 0.09)
    lambda_emo_reg: float = 0.05  # lambda_Emo.reg (0.05; Sect. 4 "Hyperparameter optimization": 0.06)
    age_ref_lambda: float = 0.1  # lambda_Age inside L_Age,reg (0.1)
    emo_ref_lambda: float = 0.05  # lambda_Emo inside L_Emo,reg (0.05)
    clip_ref_weight: float = 0.1  # partial: weight of the I_ref term of L_CLIP (0.1)
    av_ref_weight: float = 0.05  # delta: weight of the I_ref term of L_AV^ref (0.05)
    arcface_weight: float = 0.6  # lambda_ArcFace of L_ID (0.6)
    perceptual_weight: float = 0.4  # lambda_Perc of L_ID (0.4)
    vgg_layer_weights: tuple[tuple[str, float], ...] = (("conv3_3", 0.1), ("conv4_3", 0.2))  # lambda_l
    age_sigma: float = 10.0  # years per unit of the reconstructed L_Age (not in the paper)
    age_feature_weight: float = 0.0  # weight of the optional 1 - cos(AgeEst_feat, f_Age) term (off)
    emo_va_weight: float = 1.0  # weight of the valence-arousal MSE inside the reconstructed L_Emo
    lambda_l1_source: float = 0.0  # not in the paper: weight of SourceL1Loss (0: the term is not computed)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "vgg_layer_weights":
                _nonneg(getattr(self, f.name), f.name)
        if self.age_sigma <= 0:
            raise ValueError(f"age_sigma={self.age_sigma} must be positive")
        for layer, w in self.vgg_layer_weights:
            _nonneg(w, f"vgg_layer_weights[{layer!r}]")

    @classmethod
    def from_config(cls, loss) -> "LossWeights":
        """The weights of a profile's ``loss`` section (cff_lib.config.LossConfig); the paper's three
        conflicting sets are the presets ``paper``, ``paper_method`` and ``paper_hparam``."""
        layers = (("conv3_3", loss.vgg_conv3_3), ("conv4_3", loss.vgg_conv4_3))
        shared = {f.name for f in fields(cls)} & set(vars(loss))
        return cls(vgg_layer_weights=layers, **{name: getattr(loss, name) for name in shared})


class TotalLoss(nn.Module):
    """Eq. 32 plus lambda_Cross-Modal L_Cross-Modal; modules with absent inputs are skipped and listed."""

    def __init__(
        self,
        clip: nn.Module,
        arcface: nn.Module,
        vgg: nn.Module,
        age_est: nn.Module,
        emo_est: nn.Module,
        weights: LossWeights = LossWeights(),
    ):
        super().__init__()
        if not isinstance(weights, LossWeights):
            raise ValueError(f"weights must be a LossWeights, got {type(weights).__name__}")
        self.weights = weights
        w = weights
        self.clip_loss = DirectionalClipLoss(clip, ref_weight=w.clip_ref_weight)
        self.av_loss = AudioVisualLoss(clip, ref_weight=w.av_ref_weight)
        self.age_loss = AgeConsistencyLoss(
            age_est, w.age_ref_lambda, w.lambda_age_reg, sigma=w.age_sigma,
            feature_weight=w.age_feature_weight,
        )
        self.emo_loss = EmotionConsistencyLoss(
            emo_est, w.emo_ref_lambda, w.lambda_emo_reg, va_weight=w.emo_va_weight
        )
        self.id_loss = IdentityLoss(
            arcface, vgg, w.arcface_weight, w.perceptual_weight, layer_weights=dict(w.vgg_layer_weights)
        )
        self.cross_modal_loss = CrossModalLoss(weight=1.0)
        self.l1_source_loss = SourceL1Loss()

    def forward(
        self,
        generated: Tensor,
        *,
        reference: Tensor | None = None,
        target_text: str | Sequence[str] | Tensor | None = None,
        source_text: str | Sequence[str] | Tensor | None = None,
        av_final: Tensor | None = None,
        age_target: Tensor | float | None = None,
        age_feature: Tensor | None = None,
        alpha: Coefficient | None = None,
        emotion_target: Tensor | None = None,
        valence_arousal: Tensor | None = None,
        emotion_feature: Tensor | None = None,
        nu: Coefficient | None = None,
        modality_features: Mapping[str, Tensor | None] | None = None,
        modality_present: Mapping[str, Tensor] | None = None,
    ) -> LossTerms:
        """All terms as ``"<module>/<term>"`` plus ``"loss"``; ``.absent`` names skipped modules / terms.

        Modules: clip (needs target_text), av (av_final), age (age_target or age_feature), emo (any emotion
        input), id (reference), l1_source (reference; only when its weight > 0), cross_modal (>= 2 present
        modality_features, e.g. FusionOutput.normalized).
        """
        _check_images(generated, "generated")
        w = self.weights
        runs: list[tuple[str, float, Callable[[], LossTerms]]] = []
        absent: list[str] = []

        def plan(name: str, weight: float, present: bool, call: Callable[[], LossTerms]) -> None:
            if present:
                runs.append((name, weight, call))
            else:
                absent.append(name)

        plan("clip", w.lambda_clip, target_text is not None,
             lambda: self.clip_loss(generated, target_text, reference, source_text))
        plan("av", w.lambda_av, av_final is not None, lambda: self.av_loss(generated, av_final, reference))
        plan("age", w.lambda_age, age_target is not None or age_feature is not None,
             lambda: self.age_loss(generated, age_target, age_feature, reference, alpha))
        has_emo = emotion_target is not None or valence_arousal is not None or emotion_feature is not None
        plan("emo", w.lambda_emo, has_emo, lambda: self.emo_loss(
            generated, emotion_target, valence_arousal, emotion_feature, reference, nu))
        plan("id", w.lambda_id, reference is not None, lambda: self.id_loss(generated, reference))
        if w.lambda_l1_source > 0:  # off (the paper): not planned at all, so the terms stay as they were
            plan("l1_source", w.lambda_l1_source, reference is not None,
                 lambda: self.l1_source_loss(generated, reference))
        n_modal = 0 if modality_features is None else sum(v is not None for v in modality_features.values())
        plan("cross_modal", w.lambda_cross_modal, n_modal >= 2,
             lambda: self.cross_modal_loss(modality_features, modality_present))
        if not runs:
            raise ValueError("no loss has its inputs: give at least target_text, av_final, an age or emotion "
                             "target, reference or two modality_features")
        terms: dict[str, Tensor] = {}
        parts: list[Tensor] = []
        for name, weight, call in runs:
            sub = call()
            terms.update({f"{name}/{k}": v for k, v in sub.items()})
            absent += [f"{name}/{k}" for k in sub.absent]
            parts.append(weight * sub["loss"])
        terms["loss"] = torch.stack(parts).sum()
        return LossTerms(terms, absent)
