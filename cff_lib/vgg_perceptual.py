"""VGG-16 features for the perceptual identity loss (paper "Identity preservation mechanism":
``L_ID,Perc = Σ_l λ_l ||VGG_l(I_gen) - VGG_l(I_ref)||²`` over l ∈ {conv3_3, conv4_3}, λ = 0.1, 0.2).

:class:`PerceptualVGG` runs torchvision's VGG feature stack (``torchvision.models.vgg.make_layers`` -- the
module torchvision's ``VGG`` holds as ``.features``) up to conv4_3 and returns, for each layer, the output of
the ReLU right after that convolution (``relu3_3``, ``relu4_3``; the usual perceptual-loss choice):
``{"conv3_3": (B, C3, H/4, W/4), "conv4_3": (B, C4, H/8, W/8)}``.

- ``"pretrained"``: VGG-16 (cfg "D": 64-64-M-128-128-M-256x3-M-512x3-M-512x3-M), C3 = 256, C4 = 512,
  loaded from torchvision's ``vgg16-397923af.pth`` (``torch.load(weights_only=True)``). Only the
  ``features.*`` tensors are used; the classifier in that file is checked for presence and ignored (the
  loss never needs it, so the 120 M-parameter head is not built).
- ``"synthetic"``: the same stack with every width divided by 4 (16-16-M-32-32-M-64x3-M-128x3-M-128x3-M),
  so C3 = 64 and C4 = 128 -- channel counts differ from the pretrained ones; code must read them from
  :attr:`PerceptualVGG.channels`. Saved/loaded as safetensors in the same ``features.N.*`` key layout.

Input: the project's [-1, 1] images, mapped to [0, 1] and normalised with ImageNet's mean/std inside, at
their own resolution (no resize; a 64x64 image gives 16x16 conv3_3 and 8x8 conv4_3 maps).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cff_lib.encoder_base import (
    Freezable,
    check_backend,
    check_images,
    config_from_dict,
    read_safetensors,
    require_file,
    save_safetensors,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
LAYERS = ("conv3_3", "conv4_3")
HOW_TO_GET = (
    "Download torchvision's VGG-16 ImageNet weights vgg16-397923af.pth "
    "(https://download.pytorch.org/models/vgg16-397923af.pth) on a machine with internet and point "
    "`vgg_checkpoint` (weights['vgg']) at it."
)


@dataclass(frozen=True)
class VGGConfig:
    width_divisor: int = 1  # every VGG-16 width is divided by this (1 = VGG-16, 4 = synthetic)


def _cfg(width_divisor: int) -> list:
    return [v if v == "M" else v // width_divisor for v in VGG16_CFG]


def _layer_indices(cfg: list) -> dict[str, int]:
    """Index in ``features`` of the ReLU after conv{block}_{k} for each name in LAYERS."""
    out, idx, block, k = {}, 0, 1, 0
    for v in cfg:
        if v == "M":
            idx, block, k = idx + 1, block + 1, 0
            continue
        k += 1
        out[f"conv{block}_{k}"] = idx + 1  # conv at idx, its ReLU at idx + 1
        idx += 2
    return {name: out[name] for name in LAYERS}


class PerceptualVGG(Freezable):
    """VGG-16-shaped features at relu3_3 and relu4_3 of [-1, 1] images."""

    def __init__(self, config: VGGConfig = VGGConfig()):
        super().__init__()
        from torchvision.models.vgg import make_layers

        if config.width_divisor < 1 or 64 % config.width_divisor:
            raise ValueError(f"config.width_divisor={config.width_divisor} must divide 64")
        self.config = config
        cfg = _cfg(config.width_divisor)
        self.indices = _layer_indices(cfg)  # name -> index of its ReLU in features
        features = make_layers(cfg, batch_norm=False)
        for m in features:  # not in place: the returned maps must not be overwritten downstream
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.features = features[: max(self.indices.values()) + 1]  # up to relu4_3
        self.channels = {n: features[i - 1].out_channels for n, i in self.indices.items()}  # name -> C
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        check_images(images, argument="images")
        x = ((images.float() + 1.0) / 2.0 - self.mean) / self.std  # (B, 3, H, W)
        out, wanted = {}, {i: n for n, i in self.indices.items()}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x  # conv3_3: (B, C3, H/4, W/4); conv4_3: (B, C4, H/8, W/8)
        return out

    def state_dict_for_file(self) -> dict[str, torch.Tensor]:
        return {f"features.{k}": v for k, v in self.features.state_dict().items()}

    def load_features(self, state: dict[str, torch.Tensor], source: str) -> None:
        mine = self.features.state_dict()
        missing = [f"features.{k}" for k in mine if f"features.{k}" not in state]
        if missing:
            raise ValueError(f"{source} is not a VGG-16-shaped state dict: missing {missing[:4]}")
        try:
            self.features.load_state_dict({k: state[f"features.{k}"].float() for k in mine}, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{source} does not match {self.config}: {str(e)[:300]}") from e

    def save(self, path: str | os.PathLike) -> Path:
        part = nn.ModuleDict({"features": self.features})
        return save_safetensors(part, path, self.config, kind="PerceptualVGG")


def create_vgg(backend: str, checkpoint: str | os.PathLike | None = None) -> PerceptualVGG:
    """PerceptualVGG of a backend: "pretrained" = VGG-16 from ``checkpoint`` (required; torchvision .pth or
    our safetensors); "synthetic" = width/4 from ``checkpoint`` if given, else random init."""
    check_backend(backend)
    if backend == "pretrained":
        path = require_file("VGG-16", checkpoint, HOW_TO_GET)
    elif checkpoint is None:
        return PerceptualVGG(VGGConfig(width_divisor=4)).eval()
    else:
        path = require_file("synthetic VGG", checkpoint,
                            "Train one with this project (PerceptualVGG.save) first.")
    if path.suffix == ".safetensors":
        state, cfg = read_safetensors(path, kind="PerceptualVGG")
        config = config_from_dict(VGGConfig, cfg) if cfg else VGGConfig()
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = VGGConfig()
        if backend == "pretrained" and not any(k.startswith("classifier.") for k in state):
            raise ValueError(f"{path} has no classifier.* tensors: not torchvision's "
                             "vgg16-397923af.pth format")
    if backend == "pretrained" and config.width_divisor != 1:
        raise ValueError(f"{path} holds a width/{config.width_divisor} VGG, not VGG-16")
    vgg = PerceptualVGG(config)
    vgg.load_features(state, str(path))
    return vgg.eval()
