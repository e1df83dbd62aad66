"""CLIP text and image encoders (paper Eq. 1 ``f_T = CLIP_text(T)`` and Eq. 8 ``f_I = CLIP_image(I)``).

One class, :class:`ClipEncoder`, wraps an ``open_clip.model.CLIP``; one factory, :func:`create_clip`, builds
it for either backend:

- ``"pretrained"``: open_clip's ``ViT-B-32`` architecture (the paper's CLIP ViT-B/32, 224x224, context 77),
  loaded from a local checkpoint file -- never downloaded. Recommended weights: open_clip's
  ``ViT-B-32`` / ``laion2b_s34b_b79k`` (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin`` of
  the Hugging Face repo ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K``). OpenAI's original weights need
  ``quick_gelu=True`` and a plain state dict (open_clip's ``openai`` file is a TorchScript archive; load it
  once on a machine with open_clip, ``create_model("ViT-B-32-quickgelu", pretrained="openai")``, and save its
  ``state_dict()``).
- ``"synthetic"``: the same ``CLIP`` class with a small vision tower (64x64 input, patch 8, width 256,
  4 layers) and text tower (width 256, 4 layers, context 32). ``embed_dim`` stays 512 so every feature is
  512-d as in the paper. Saved/loaded as safetensors with the config in the file's metadata.

Both use open_clip's BPE tokenizer (its vocabulary ships inside the package; no network needed).
Images follow the project convention, float ``(B, 3, H, W)`` in [-1, 1]; they are resized (bicubic,
antialiased) and normalised with CLIP's mean/std inside the module, differentiably.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from cff_lib.encoder_base import (
    Freezable,
    check_backend,
    check_images,
    check_prompts,
    config_from_dict,
    read_safetensors,
    require_file,
    save_safetensors,
)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PRETRAINED_NAME = "ViT-B-32"
HOW_TO_GET = (
    "Download open_clip's 'ViT-B-32' 'laion2b_s34b_b79k' checkpoint (Hugging Face repo "
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K, file open_clip_model.safetensors) on a machine with internet "
    "and point `clip_checkpoint` (weights['clip']) at it."
)


@dataclass(frozen=True)
class ClipConfig:
    """Architecture of a (small) open_clip CLIP; the fields map onto CLIPVisionCfg / CLIPTextCfg."""

    embed_dim: int = 512  # joint embedding size (512 = ViT-B/32's, so f_T and f_I are 512-d)
    image_size: int = 64  # vision input H = W
    patch_size: int = 8  # ViT patch size (64 / 8 -> 8x8 = 64 tokens)
    vision_width: int = 256  # vision transformer width
    vision_layers: int = 4  # vision transformer depth
    vision_head_width: int = 64  # per-head width (heads = width / head_width)
    context_length: int = 32  # text tokens, incl. start/end tokens
    vocab_size: int = 49408  # open_clip BPE vocabulary (fixed by the tokenizer)
    text_width: int = 256  # text transformer width
    text_heads: int = 4  # text attention heads
    text_layers: int = 4  # text transformer depth
    quick_gelu: bool = False  # QuickGELU activations (OpenAI's original weights)


def synthetic_clip_config(image_size: int) -> ClipConfig:
    """The synthetic world's CLIP (what notebooks/02 trains) at ``image_size``: a small ViT (patch = size/8,
    width 128, 3 layers) and a narrow text tower (width 64, 2 layers) -- the 49408-token embedding is
    vocab x text_width, so the text width sets the file size (64 -> ~13 MB)."""
    return ClipConfig(image_size=image_size, patch_size=image_size // 8, vision_width=128, vision_layers=3,
                      vision_head_width=32, context_length=32, text_width=64, text_heads=4, text_layers=2)


class ClipEncoder(Freezable):
    """L2-normalised CLIP image and text features, (B, embed_dim), from [-1, 1] images and strings."""

    def __init__(self, model, tokenizer, image_size: int, config: ClipConfig | None = None):
        super().__init__()
        self.model = model  # open_clip.model.CLIP
        self.tokenizer = tokenizer  # open_clip SimpleTokenizer with the model's context length
        self.image_size = image_size  # vision input H = W
        self.config = config  # ClipConfig for synthetic models, None for the named ViT-B-32
        self.register_buffer("mean", torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's learned temperature (the exp() is taken here: multiply cosine similarities by it)."""
        return self.model.logit_scale.exp()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] (B, 3, H, W) -> CLIP-normalised (B, 3, S, S), differentiable."""
        x = (images.float() + 1.0) / 2.0  # (B, 3, H, W) in [0, 1]
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                              align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, argument="images")
        return self.model.encode_image(self.preprocess(images), normalize=True)  # (B, 512)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenize(prompts)  # (B, context_length)
        return self.model.encode_text(tokens, normalize=True)  # (B, 512)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        prompts = check_prompts(prompts, argument="prompts")
        return self.tokenizer(prompts).to(self.model.logit_scale.device)  # (B, context_length)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)

    def save(self, path: str | os.PathLike) -> Path:
        """Save a synthetic model's weights (safetensors, config in the metadata)."""
        if self.config is None:
            raise ValueError("save() is for synthetic CLIP models; the pretrained one is a published "
                             "checkpoint")
        return save_safetensors(self.model, path, self.config, kind="ClipEncoder")


def _tokenizer(context_length: int):
    import open_clip

    return open_clip.get_tokenizer(PRETRAINED_NAME, context_length=context_length)


def build_synthetic_clip(config: ClipConfig = ClipConfig()) -> ClipEncoder:
    """A randomly initialised small CLIP of the same open_clip ``CLIP`` class."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    if config.image_size % config.patch_size:
        raise ValueError(f"config.image_size={config.image_size} must be a multiple of patch_size")
    vision = CLIPVisionCfg(layers=config.vision_layers, width=config.vision_width,
                           head_width=config.vision_head_width, patch_size=config.patch_size,
                           image_size=config.image_size)
    text = CLIPTextCfg(context_length=config.context_length, vocab_size=config.vocab_size,
                       width=config.text_width, heads=config.text_heads, layers=config.text_layers)
    model = CLIP(embed_dim=config.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=config.quick_gelu)
    return ClipEncoder(model, _tokenizer(config.context_length), config.image_size, config)


def load_synthetic_clip(path: str | os.PathLike) -> ClipEncoder:
    path = require_file("synthetic CLIP", path, "Train one with this project (ClipEncoder.save) first.")
    state, cfg = read_safetensors(path, kind="ClipEncoder")
    enc = build_synthetic_clip(config_from_dict(ClipConfig, cfg) if cfg else ClipConfig())
    enc.model.load_state_dict(state, strict=True)
    return enc


def load_pretrained_clip(checkpoint: str | os.PathLike | None, quick_gelu: bool = False) -> ClipEncoder:
    """open_clip ViT-B-32 from a local state-dict file (.safetensors, .bin, .pt, .pth; torch files are read
    with ``weights_only=True``)."""
    path = require_file("CLIP ViT-B/32", checkpoint, HOW_TO_GET)
    import open_clip

    model = open_clip.create_model(PRETRAINED_NAME, pretrained=None, force_quick_gelu=quick_gelu)
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except (RuntimeError, AssertionError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is not an open_clip ViT-B-32 state dict ({e.__class__.__name__}: "
                         f"{str(e)[:300]}). {HOW_TO_GET}") from e
    return ClipEncoder(model.eval(), _tokenizer(model.context_length), model.visual.image_size[0])


def create_clip(backend: str, checkpoint: str | os.PathLike | None = None, image_size_synthetic: int = 64,
                *, quick_gelu: bool = False) -> ClipEncoder:
    """The CLIP encoder of a backend.

    ``"pretrained"``: ViT-B-32 from ``checkpoint`` (required). ``"synthetic"``: the small config at
    ``image_size_synthetic`` (patch size = image_size / 8), from ``checkpoint`` if given, else random init.
    """
    check_backend(backend)
    if backend == "pretrained":
        return load_pretrained_clip(checkpoint, quick_gelu=quick_gelu)
    if checkpoint is not None:
        return load_synthetic_clip(checkpoint)
    if image_size_synthetic < 8 or image_size_synthetic % 8:
        raise ValueError(f"image_size_synthetic={image_size_synthetic} must be a positive multiple of 8")
    size = image_size_synthetic
    return build_synthetic_clip(ClipConfig(image_size=size, patch_size=size // 8))
