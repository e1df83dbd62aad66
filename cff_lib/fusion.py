"""Multi-modal fusion, audio-visual alignment and the DDIM conditioning vector.

Paper sections "Multi-modal fusion", "Audio-visual alignment" and "Diffusion process and optimization".
Equations implemented (numbering as in the paper):

- Eq. (3) / (15)  f_A' = Normalize(W_A f_A + b_A), W_A in R^{512x768}, b_A in R^512.
  Eq. 15 prints "W_A in R^{512}" (a typo; Eq. 3 gives 512x768) and "Normlize" (typo) while its next
  sentence says "LayerNorm guarantees stable feature normalization": Normalize is taken to be LayerNorm.
- Eq. (16)  f_AV^final = LayerNorm(eta f_A' + (1 - eta) f_Emo,Audio + gamma f_I), eta, gamma in [0, 1]
  trainable (``UnitCoefficient``).
- Eq. (10)  f'_m = LayerNorm(f_m), m in {T, AV, Age, Emo, I}.
- Eq. (11)  f_fused = MultiHeadAttention(f'_T, f'_AV, f'_Age, f'_Emo, f'_I) in R^512.
- Eq. (12)  f_final = FFN(f_fused) + f_fused, FFN = Linear -> ReLU -> Dropout(0.1) -> Linear.
- The conditioning vector c of the DDIM update (Eq. 31 context): "c is augmented with features from I_ref
  (encoded using ArcFace and VGG-16) in conjunction with" the fused features.

Choices the paper leaves open (each is listed in docs/errata.md):

1. Every LayerNorm here (Eqs. 3/15, 10, 16) is a *standardisation without learned affine*
   (``elementwise_affine=False``). With a learned per-modality affine, the cross-modal loss
   sum_{m != n} (1 - cos(f'_m, f'_n)) has a trivial minimum that ignores the inputs (all gains -> 0, one
   shared bias): the loss would be satisfied by collapse. Without affine, f'_m carries no trainable
   parameter of this module, so that loss can only be lowered by the upstream encoders actually agreeing.
   The same argument applies to L_AV = 1 - cos(CLIP(I_gen), f_AV^final) and the Eq. 16 LayerNorm.
   Before Eq. 16 ``W_A`` and ``b_A`` are already an affine map, so Eq. 3 loses no expressiveness.
2. Eq. 16 mixes vectors of very different norms (f_A' is a LayerNorm output, norm ~ sqrt(512); CLIP's f_I
   is unit-norm). With ``FusionConfig.standardize_av_inputs`` (default) f_Emo,Audio and f_I are
   standardised first, so eta and gamma weigh vectors of comparable scale, as the paper intends
   ("eta moderating emotion-specific signals and generic auditory characteristics").
3. Absence. A modality is absent when its key is missing from the features dict (a key mapped to ``None`` is
   also absent). Absent modalities contribute *no token*: they are neither zero vectors nor learned
   placeholders. For mixed batches, ``present`` masks per sample mark a token absent for some samples; it
   is then excluded through ``key_padding_mask`` (its attention weight is exactly 0). In Eq. 16 an absent
   f_Emo,Audio or f_I means its term is omitted (numerically the same as adding a zero vector, since the
   terms are summed; the code path is explicit). Absent audio means AV is absent altogether
   (``AudioVisualAlignment`` returns ``None``).
4. Eq. 11 pooling: a single learned query token attends over the present modality tokens, each token being
   f'_m plus a learned modality-type embedding (attention pooling, as in Set Transformer's PMA or a CLS
   query). It yields one R^512 vector for any subset of modalities, is invariant to the order the
   modalities are given in, handles per-sample absence with a padding mask, and its softmax weights
   (B, n_present) say how much each modality contributed (the plots use them). The type embeddings are
   needed because standardised tokens carry no trace of which encoder produced them. Table 7's "w/o
   multi-modal fusion" replaces Eqs. 11-12 by ``ModalityFusion.mean``, the mean of the present f'_m.
5. Conditioning vector: c = [f_final ; LN(ArcFace(I_ref)) ; LN(GAP(VGG16_conv4_3(I_ref)))] in R^1536
   (``cond_dim``). Without a reference image (pure generation) both reference slots hold learned
   "no reference" embeddings (random init, never zeros), so the denoiser can tell "no reference" from any
   real reference. conv4_3 has 512 channels in VGG-16; global average pooling makes it resolution-free.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cff_lib.coefficients import UnitCoefficient

MODALITIES: tuple[str, ...] = ("T", "AV", "Age", "Emo", "I")
"""Token names of Eq. 10 in their canonical order: text, audio-visual, age, emotion, reference image."""


@dataclass(frozen=True)
class FusionConfig:
    dim: int = 512  # width of every modality token, of f_A', f_AV^final and f_final (paper: 512)
    audio_dim: int = 768  # width of the Wav2Vec 2.0 feature f_A (Eq. 2)
    heads: int = 8  # attention heads of Eq. 11 (paper gives none; Transformer default)
    ffn_dim: int = 2048  # hidden width of the Eq. 12 FFN (paper gives none; 4 x dim)
    dropout: float = 0.1  # dropout inside the Eq. 12 FFN (paper: "a dropout rate of 0.1")
    attn_dropout: float = 0.0  # dropout on the Eq. 11 attention weights (not in the paper; off)
    eta_init: float = 0.5  # initial eta of Eq. 16, strictly inside (0, 1); paper gives no value
    gamma_init: float = 0.5  # initial gamma of Eq. 16, strictly inside (0, 1); paper gives no value
    standardize_av_inputs: bool = True  # LayerNorm f_Emo,Audio and f_I before the Eq. 16 mix (choice 2)
    embed_std: float = 0.02  # init std of the modality-type embeddings and the Eq. 11 query token
    id_dim: int = 512  # width of the ArcFace identity embedding placed in c
    vgg_dim: int = 512  # channels of VGG-16 conv4_3, pooled and placed in c
    use_vgg_in_condition: bool = True  # put pooled VGG conv4_3 of I_ref into c (paper: "ArcFace and VGG-16")
    eps: float = 1e-5  # LayerNorm epsilon

    def __post_init__(self) -> None:
        for name in ("dim", "audio_dim", "heads", "ffn_dim", "id_dim", "vgg_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.dim % self.heads:
            raise ValueError(f"heads={self.heads} must divide dim={self.dim}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1)")
        for name in ("eta_init", "gamma_init"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie strictly inside (0, 1)")
        if self.embed_std <= 0 or self.eps <= 0:
            raise ValueError(f"embed_std={self.embed_std} and eps={self.eps} must be positive")

    @property
    def cond_dim(self) -> int:
        """Width of the conditioning vector c built by ``ConditioningVector``."""
        return self.dim + self.id_dim + (self.vgg_dim if self.use_vgg_in_condition else 0)


# ------------------------------------------------------------------------------------------ helpers
def _standardize(x: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last dimension without learned affine (module docstring, choice 1)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def _check_matrix(x: object, name: str, width: int, batch: int | None = None) -> Tensor:
    """``x`` must be a floating (B, width) tensor (with B == batch when given)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, {width}), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != width or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, {width}) with B >= 1, got {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has batch size {x.shape[0]}, expected {batch}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating tensor, got {x.dtype}")
    return x


def _check_mask(m: object, name: str, batch: int) -> Tensor:
    """``m`` must be a bool (B,) tensor."""
    if not isinstance(m, Tensor) or m.dtype != torch.bool or m.shape != (batch,):
        shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise ValueError(f"{name} must be a bool tensor of shape ({batch},), got {shape}")
    return m


# --------------------------------------------------------------------------- audio-visual alignment
class AVOutput(NamedTuple):
    final: Tensor  # (B, 512) f_AV^final of Eq. 16 (the "AV" token and the L_AV target)
    projected: Tensor  # (B, 512) f_A' of Eq. 3 / 15


class AudioVisualAlignment(nn.Module):
    """Eq. 3/15 projection of Wav2Vec features into the CLIP-aligned space and the Eq. 16 mix."""

    def __init__(self, config: FusionConfig = FusionConfig()):
        super().__init__()
        if not isinstance(config, FusionConfig):
            raise ValueError(f"config must be a FusionConfig, got {type(config).__name__}")
        self.config = config
        self.proj = nn.Linear(config.audio_dim, config.dim)  # W_A (512 x 768), b_A (512)
        self.eta = UnitCoefficient(config.eta_init)  # eta of Eq. 16
        self.gamma = UnitCoefficient(config.gamma_init)  # gamma of Eq. 16

    def project(self, audio: Tensor) -> Tensor:
        """Eq. 3 / 15: f_A' = LayerNorm(W_A f_A + b_A). ``audio`` (B, 768) -> (B, 512)."""
        _check_matrix(audio, "audio", self.config.audio_dim)
        return _standardize(self.proj(audio), self.config.eps)  # (B, 512)

    def forward(
        self,
        audio: Tensor | None,
        emotion_audio: Tensor | None = None,
        image: Tensor | None = None,
        *,
        emotion_audio_present: Tensor | None = None,
        image_present: Tensor | None = None,
    ) -> AVOutput | None:
        """Eq. 16. ``audio`` f_A (B, 768), ``emotion_audio`` f_Emo,Audio (B, 512), ``image`` f_I (B, 512).

        Returns ``None`` when ``audio`` is ``None`` (no audio: the AV modality is absent altogether).
        An absent ``emotion_audio`` / ``image`` omits its term; the optional ``*_present`` (B,) bool masks
        omit it for some samples only.
        """
        if audio is None:
            if emotion_audio is not None:
                raise ValueError("emotion_audio is given but audio is None (f_Emo,Audio comes from audio)")
            return None
        cfg = self.config
        projected = self.project(audio)  # (B, 512)
        batch = projected.shape[0]
        eta, gamma = self.eta(), self.gamma()
        mixed = eta * projected  # (B, 512)
        if emotion_audio is not None:
            e = _check_matrix(emotion_audio, "emotion_audio", cfg.dim, batch)
            e = _standardize(e, cfg.eps) if cfg.standardize_av_inputs else e
            term = (1.0 - eta) * e  # (B, 512)
            if emotion_audio_present is not None:
                keep = _check_mask(emotion_audio_present, "emotion_audio_present", batch)
                term = term * keep[:, None].to(term.dtype)
            mixed = mixed + term
        elif emotion_audio_present is not None:
            raise ValueError("emotion_audio_present is given but emotion_audio is None")
        if image is not None:
            i = _check_matrix(image, "image", cfg.dim, batch)
            i = _standardize(i, cfg.eps) if cfg.standardize_av_inputs else i
            term = gamma * i  # (B, 512)
            if image_present is not None:
                keep = _check_mask(image_present, "image_present", batch)
                term = term * keep[:, None].to(term.dtype)
            mixed = mixed + term
        elif image_present is not None:
            raise ValueError("image_present is given but image is None")
        return AVOutput(final=_standardize(mixed, cfg.eps), projected=projected)


# -------------------------------------------------------------------------------- modality fusion
class FusionOutput(NamedTuple):
    final: Tensor  # (B, 512) f_final of Eq. 12
    fused: Tensor  # (B, 512) f_fused of Eq. 11
    normalized: dict[str, Tensor]  # name -> (B, 512) f'_m of Eq. 10, present modalities only
    present: dict[str, Tensor]  # name -> (B,) bool, True where that sample has the modality
    keys: tuple[str, ...]  # modality names of the attention columns, in MODALITIES order
    attention: Tensor  # (B, len(keys)) attention weights over ``keys`` (0 where absent; rows sum to 1)


class ModalityFusion(nn.Module):
    """Eqs. 10-12: per-modality LayerNorm, attention pooling over present tokens, residual FFN."""

    def __init__(self, config: FusionConfig = FusionConfig()):
        super().__init__()
        if not isinstance(config, FusionConfig):
            raise ValueError(f"config must be a FusionConfig, got {type(config).__name__}")
        self.config = config
        d = config.dim
        self.type_embed = nn.Parameter(torch.randn(len(MODALITIES), d) * config.embed_std)  # (5, 512)
        self.query = nn.Parameter(torch.randn(1, 1, d) * config.embed_std)  # (1, 1, 512)
        self.attn = nn.MultiheadAttention(d, config.heads, dropout=config.attn_dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.ffn_dim),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.ffn_dim, d),
        )

    def _validate(
        self, features: object, present: object
    ) -> tuple[list[str], dict[str, Tensor], dict[str, Tensor], int]:
        if not isinstance(features, Mapping):
            raise ValueError(f"features must be a dict name -> (B, {self.config.dim}) tensor")
        for k in features:
            if k not in MODALITIES:
                raise ValueError(f"features has unknown modality {k!r}; expected keys among {MODALITIES}")
        keys = [m for m in MODALITIES if features.get(m) is not None]
        if not keys:
            raise ValueError(f"features must contain at least one present modality among {MODALITIES}")
        batch = None
        feats: dict[str, Tensor] = {}
        for k in keys:
            feats[k] = _check_matrix(features[k], f"features[{k!r}]", self.config.dim, batch)
            batch = feats[k].shape[0]
        masks: dict[str, Tensor] = {}
        if present is not None:
            if not isinstance(present, Mapping):
                raise ValueError("present must be a dict name -> (B,) bool tensor")
            for k, m in present.items():
                if k not in keys:
                    raise ValueError(f"present has key {k!r} that is not a present modality of features")
                masks[k] = _check_mask(m, f"present[{k!r}]", batch)
        for k in keys:
            masks.setdefault(k, torch.ones(batch, dtype=torch.bool, device=feats[k].device))
        any_present = torch.stack([masks[k] for k in keys], 1).any(1)  # (B,)
        if not bool(any_present.all()):
            bad = torch.nonzero(~any_present).flatten().tolist()
            raise ValueError(f"present leaves samples {bad} with no modality at all")
        return keys, feats, masks, batch

    def forward(
        self, features: Mapping[str, Tensor | None], present: Mapping[str, Tensor] | None = None
    ) -> FusionOutput:
        """Fuse ``features`` (name -> (B, 512); keys a non-empty subset of MODALITIES, missing = absent).

        ``present`` optionally maps some of those names to (B,) bool masks for per-sample absence.
        """
        keys, feats, masks, batch = self._validate(features, present)
        eps = self.config.eps
        normalized = {k: _standardize(feats[k], eps) for k in keys}  # Eq. 10, each (B, 512)
        type_idx = [MODALITIES.index(k) for k in keys]
        tokens = torch.stack([normalized[k] for k in keys], 1) + self.type_embed[type_idx]  # (B, n, 512)
        keep = torch.stack([masks[k] for k in keys], 1)  # (B, n)
        query = self.query.expand(batch, 1, -1)  # (B, 1, 512)
        padding = None if bool(keep.all()) else ~keep
        out, weights = self.attn(query, tokens, tokens, key_padding_mask=padding, need_weights=True)
        fused = out[:, 0]  # (B, 512) Eq. 11
        final = self.ffn(fused) + fused  # (B, 512) Eq. 12
        return FusionOutput(
            final=final,
            fused=fused,
            normalized=normalized,
            present=masks,
            keys=tuple(keys),
            attention=weights[:, 0],  # (B, n)
        )

    def mean(
        self, features: Mapping[str, Tensor | None], present: Mapping[str, Tensor] | None = None
    ) -> FusionOutput:
        """Table 7's "w/o multi-modal fusion" (``model.fusion: mean``): Eqs. 11-12 replaced by the mean of
        each sample's present f'_m (Eq. 10). No attention, no FFN, no modality-type embedding: this uses no
        parameter of the module. Same inputs and checks as :meth:`forward`, same :class:`FusionOutput`:
        ``fused`` and ``final`` are the mean, ``attention`` the uniform weights 1/n over the present tokens.
        """
        keys, feats, masks, _ = self._validate(features, present)
        normalized = {k: _standardize(feats[k], self.config.eps) for k in keys}  # Eq. 10, each (B, 512)
        keep = torch.stack([masks[k] for k in keys], 1)  # (B, n)
        tokens = torch.stack([normalized[k] for k in keys], 1).masked_fill(~keep[..., None], 0.0)  # (B, n, 512)
        weights = keep.to(tokens.dtype) / keep.sum(1, keepdim=True).to(tokens.dtype)  # (B, n), rows sum to 1
        fused = (weights[..., None] * tokens).sum(1)  # (B, 512)
        return FusionOutput(final=fused, fused=fused, normalized=normalized, present=masks, keys=tuple(keys),
                            attention=weights)


# --------------------------------------------------------------------------- conditioning vector
class ReferenceFeatures(NamedTuple):
    identity: Tensor  # (B, 512) ArcFace(I_ref), f_ID,ref
    appearance: Tensor  # (B, C) global-average-pooled VGG-16 conv4_3(I_ref)


def reference_features(arcface: nn.Module, vgg: nn.Module, reference: Tensor) -> ReferenceFeatures:
    """ArcFace and pooled VGG-16 conv4_3 features of ``reference`` (B, 3, H, W) in [-1, 1]."""
    if not isinstance(reference, Tensor) or reference.dim() != 4 or reference.shape[1] != 3:
        shape = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
        raise ValueError(f"reference must be an image batch (B, 3, H, W), got {shape}")
    identity = arcface(reference)  # (B, 512)
    maps = vgg(reference)
    if "conv4_3" not in maps:
        raise ValueError("vgg must return a dict with a 'conv4_3' feature map")
    appearance = maps["conv4_3"].mean(dim=(2, 3))  # (B, C)
    return ReferenceFeatures(identity=identity, appearance=appearance)


class ConditioningVector(nn.Module):
    """c = [f_final ; LN(f_ID,ref) ; LN(pooled VGG conv4_3 of I_ref)] (module docstring, choice 5)."""

    def __init__(self, config: FusionConfig = FusionConfig()):
        super().__init__()
        if not isinstance(config, FusionConfig):
            raise ValueError(f"config must be a FusionConfig, got {type(config).__name__}")
        self.config = config
        self.null_identity = nn.Parameter(torch.randn(config.id_dim))  # (512,) learned "no reference"
        if config.use_vgg_in_condition:
            self.null_appearance = nn.Parameter(torch.randn(config.vgg_dim))  # (512,) learned "no reference"

    @property
    def cond_dim(self) -> int:
        return self.config.cond_dim

    def forward(
        self,
        fused: Tensor,
        identity: Tensor | None = None,
        appearance: Tensor | None = None,
        *,
        reference_present: Tensor | None = None,
    ) -> Tensor:
        """``fused`` f_final (B, 512); ``identity`` (B, 512) and ``appearance`` (B, 512) from I_ref or None.

        ``reference_present`` (B,) bool marks samples that really have a reference (mixed batches); the
        others get the learned "no reference" embeddings. Returns c (B, cond_dim).
        """
        cfg = self.config
        _check_matrix(fused, "fused", cfg.dim)
        batch = fused.shape[0]
        if not cfg.use_vgg_in_condition and appearance is not None:
            raise ValueError("appearance is given but config.use_vgg_in_condition is False")
        if cfg.use_vgg_in_condition and (identity is None) != (appearance is None):
            raise ValueError("identity and appearance both come from I_ref: give both or neither")
        parts_null = [self.null_identity] + ([self.null_appearance] if cfg.use_vgg_in_condition else [])
        if identity is None:
            if reference_present is not None:
                raise ValueError("reference_present is given but identity is None")
            refs = [p.expand(batch, -1) for p in parts_null]
        else:
            ident = _standardize(_check_matrix(identity, "identity", cfg.id_dim, batch), cfg.eps)
            refs = [ident]
            if cfg.use_vgg_in_condition:
                app = _check_matrix(appearance, "appearance", cfg.vgg_dim, batch)
                refs.append(_standardize(app, cfg.eps))
            if reference_present is not None:
                keep = _check_mask(reference_present, "reference_present", batch)[:, None]
                pairs = zip(refs, parts_null, strict=True)
                refs = [torch.where(keep, r, p.expand(batch, -1)) for r, p in pairs]
        return torch.cat([fused, *refs], dim=1)  # (B, cond_dim)
