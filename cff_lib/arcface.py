"""ArcFace identity embeddings (paper "Identity preservation mechanism": ``f_ID = ArcFace(I)`` and
``L_ID,ArcFace = 1 - cos(f_ID,ref, f_ID,gen)``).

Two things live here:

1. :class:`ArcFace`, a *differentiable* torch ArcFace for the identity loss: insightface's arcface_torch
   ``IResNet`` (improved residual blocks BN-Conv-BN-PReLU-Conv-BN, 112x112 input, 512-d output), written
   here with the same module names so arcface_torch's published ``backbone.pth`` files (e.g.
   ``ms1mv3_arcface_r50_fp16/backbone.pth``, ``glint360k_cosface_r50_fp16_0.1/backbone.pth``) load strictly.
   ``"pretrained"`` = iresnet50 (layers 3-4-14-3, widths 64-128-256-512); ``"synthetic"`` = the same class
   with one block per stage and widths 16-32-64-128. Input: the project's [-1, 1] images, resized to 112x112
   inside (bilinear, antialiased; arcface_torch normalises pixels to [-1, 1] too); output L2-normalised.
   :class:`ArcMarginProduct` is the additive angular margin head (s = 64, m = 0.5) to train it.
2. :class:`InsightFaceIdentityMetric`, the identity *metric* via insightface's ONNX runtime recognition
   models (``insightface.model_zoo.get_model(path)`` -> ``ArcFaceONNX``, e.g. buffalo_l's ``w600k_r50.onnx``).
   It carries no gradients. :func:`export_onnx` writes a torch IResNet in the layout insightface routes to
   ArcFaceONNX (one input ``(N, 3, 112, 112)`` with a dynamic batch, one output, pixels pre-normalised to
   [-1, 1] so insightface applies mean = std = 127.5).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cff_lib.atomic import atomic_path
from cff_lib.encoder_base import (
    Freezable,
    check_backend,
    check_images,
    config_from_dict,
    read_safetensors,
    require_file,
    save_safetensors,
)

HOW_TO_GET = (
    "Download an arcface_torch iresnet50 backbone (e.g. insightface's model zoo "
    "'ms1mv3_arcface_r50_fp16/backbone.pth') on a machine with internet and point `arcface_checkpoint` "
    "(weights['arcface']) at the .pth (or a .safetensors conversion)."
)
HOW_TO_GET_ONNX = (
    "Download insightface's 'buffalo_l' model pack on a machine with internet and point `onnx_path` at its "
    "recognition model w600k_r50.onnx."
)


@dataclass(frozen=True)
class IResNetConfig:
    layers: tuple[int, ...] = (3, 4, 14, 3)  # IBasicBlocks per stage (iresnet50)
    widths: tuple[int, ...] = (64, 128, 256, 512)  # channels per stage; the stem has widths[0]
    num_features: int = 512  # embedding size
    input_size: int = 112  # network input H = W; each stage halves it
    dropout: float = 0.0  # dropout before the fc layer (training only)


IRESNET50 = IResNetConfig()


def synthetic_arcface_config(image_size: int) -> IResNetConfig:
    """The synthetic world's ArcFace (what notebooks/02 trains): IResNet, one block per stage, widths
    16-32-64-128, at the world's image size."""
    return IResNetConfig(layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), input_size=max(16, image_size))


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """arcface_torch's improved residual block: BN-Conv3x3-BN-PReLU-Conv3x3(stride)-BN (+ shortcut)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + identity


class IResNet(nn.Module):
    """arcface_torch's IResNet: 112x112 [-1, 1] input -> (B, num_features) (not normalised)."""

    def __init__(self, config: IResNetConfig = IRESNET50):
        super().__init__()
        if len(config.layers) != 4 or len(config.widths) != 4:
            raise ValueError(f"config.layers / config.widths need 4 stages, got {config.layers}, "
                             f"{config.widths}")
        if config.input_size % 16:
            raise ValueError(f"config.input_size={config.input_size} must be a multiple of 16")
        self.config = config
        self.conv1 = nn.Conv2d(3, config.widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(config.widths[0], eps=1e-05)
        self.prelu = nn.PReLU(config.widths[0])
        inplanes = config.widths[0]
        for i, (n, planes) in enumerate(zip(config.layers, config.widths, strict=True), start=1):
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=2, bias=False),
                nn.BatchNorm2d(planes, eps=1e-05),
            )
            blocks = [IBasicBlock(inplanes, planes, 2, downsample)]
            blocks += [IBasicBlock(planes, planes) for _ in range(1, n)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.dropout = nn.Dropout(p=config.dropout)
        side = config.input_size // 16
        self.fc = nn.Linear(inplanes * side * side, config.num_features)
        self.features = nn.BatchNorm1d(config.num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # as arcface_torch: a fixed-scale BN on the embedding
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))  # (B, w0, 112, 112)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, w3, 7, 7)
        x = self.dropout(torch.flatten(self.bn2(x), 1))  # (B, w3 * 49)
        return self.features(self.fc(x))  # (B, 512)


class ArcFace(Freezable):
    """Differentiable identity embedding: [-1, 1] images (B, 3, H, W) -> (B, 512), L2-normalised."""

    def __init__(self, backbone: IResNet):
        super().__init__()
        self.backbone = backbone  # IResNet

    @property
    def config(self) -> IResNetConfig:
        return self.backbone.config

    def unfreeze(self):
        super().unfreeze()
        self.backbone.features.weight.requires_grad = False  # stays fixed, as in arcface_torch
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] (B, 3, H, W) -> [-1, 1] (B, 3, 112, 112)."""
        s = self.config.input_size
        x = images.float()
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, argument="images")
        return F.normalize(self.backbone(self.preprocess(images)), dim=-1)  # (B, 512)

    def save(self, path: str | os.PathLike) -> Path:
        return save_safetensors(self.backbone, path, self.config, kind="IResNet")


class ArcMarginProduct(nn.Module):
    """Additive angular margin head (ArcFace, Deng et al. 2019): logits ``s cos(θ_y + m)`` for the true class,
    ``s cos θ_j`` for the others; train with ``F.cross_entropy(head(emb, labels), labels)``."""

    def __init__(self, in_features: int = 512, num_classes: int = 1000, s: float = 64.0, m: float = 0.5):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes} must be >= 2")
        self.in_features = in_features  # embedding size
        self.num_classes = num_classes  # identities
        self.s = s  # scale (64)
        self.m = m  # additive angular margin in radians (0.5)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))  # (C, 512) class centres
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.in_features:
            raise ValueError(f"embeddings must be (B, {self.in_features}), got {tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1] or labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"labels must be integer (B,), got {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        cos = F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1))  # (B, C)
        cos = cos.clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, labels[:, None].long())  # (B, 1)
        theta = torch.acos(target)
        # past π - m the margin would make the logit grow again; fall back to CosFace-like cos θ - m sin(m)
        with_margin = torch.where(theta + self.m < math.pi, torch.cos(theta + self.m),
                                  target - self.m * math.sin(self.m))
        logits = cos.scatter(1, labels[:, None].long(), with_margin)
        return self.s * logits  # (B, C)


# ------------------------------------------------------------------------------------------ loading
def load_iresnet_state(path: str | os.PathLike, config: IResNetConfig | None = None) -> IResNet:
    """An IResNet from a torch ``.pth`` state dict (arcface_torch's format, read with weights_only=True) or
    our safetensors (config from its metadata). ``config`` defaults to iresnet50 for .pth files."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, cfg = read_safetensors(path, kind="IResNet")
        config = config or (config_from_dict(IResNetConfig, cfg) if cfg else IRESNET50)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        config = config or IRESNET50
    net = IResNet(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} is not an arcface_torch IResNet state dict for {config}: "
                         f"{str(e)[:300]}") from e
    return net


def create_arcface(backend: str, checkpoint: str | os.PathLike | None = None,
                   config: IResNetConfig | None = None, image_size: int = 64) -> ArcFace:
    """ArcFace of a backend: "pretrained" = iresnet50 from ``checkpoint`` (required); "synthetic" = the small
    IResNet from ``checkpoint`` if given, else random init of :func:`synthetic_arcface_config` at
    ``image_size`` (``config`` overrides the architecture)."""
    check_backend(backend)
    if backend == "pretrained":
        path = require_file("ArcFace iresnet50", checkpoint, HOW_TO_GET)
        return ArcFace(load_iresnet_state(path, config or IRESNET50).eval())
    if checkpoint is None:
        return ArcFace(IResNet(config or synthetic_arcface_config(image_size)).eval())
    path = require_file("synthetic ArcFace", checkpoint, "Train one with this project (ArcFace.save) first.")
    return ArcFace(load_iresnet_state(path, config).eval())


def export_onnx(backbone: IResNet, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write ``backbone`` as an insightface-compatible recognition ONNX (input "input.1" (N, 3, S, S) in
    [-1, 1], output "embedding" (N, 512)); atomically."""
    s = backbone.config.input_size
    was_training = backbone.training
    backbone.eval()
    try:
        with atomic_path(path) as tmp, torch.no_grad():
            torch.onnx.export(
                backbone, (torch.zeros(1, 3, s, s),), str(tmp), dynamo=False, opset_version=opset,
                input_names=["input.1"], output_names=["embedding"],
                dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
            )
    finally:
        backbone.train(was_training)
    return Path(path)


# ------------------------------------------------------------------------------------------ metric (ONNX)
class InsightFaceIdentityMetric:
    """Identity embeddings from an insightface ONNX recognition model (no gradients), (B, 512) L2-normalised.

    ``embed`` takes either the project's tensors (float (B, 3, H, W) in [-1, 1], RGB; resized to the model's
    input like :class:`ArcFace` does) or uint8 images (B, H, W, 3) / a list of (H, W, 3) arrays, RGB by
    default (``channel_order="bgr"`` for OpenCV images), which insightface resizes itself. Faces are assumed
    already aligned/cropped (the synthetic world and FFHQ are); no detector runs here.
    """

    def __init__(self, onnx_path: str | os.PathLike | None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        path = require_file("insightface recognition ONNX", onnx_path, HOW_TO_GET_ONNX)
        from insightface.model_zoo import get_model
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        model = get_model(str(path), providers=list(providers))
        if not isinstance(model, ArcFaceONNX):
            raise ValueError(f"onnx_path={str(path)!r} is not a recognition model to insightface "
                             f"(routed to {type(model).__name__}); it needs one (N, 3, S, S) input with "
                             "S >= 112, S % 16 == 0, and fewer than 5 outputs")
        self.model = model  # insightface ArcFaceONNX
        self.path = path  # the ONNX file
        self.input_size = int(model.input_size[0])  # S

    def embed(self, images: Any, channel_order: str = "rgb") -> torch.Tensor:
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order={channel_order!r} must be 'rgb' or 'bgr'")
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            check_images(images, argument="images")
            s = self.input_size
            with torch.no_grad():
                x = images.detach().float().cpu()
                if channel_order == "bgr":
                    x = x.flip(1)
                if x.shape[-1] != s:
                    x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
                blob = ((x + 1.0) * 127.5).numpy()  # (B, 3, S, S) pixel scale, RGB
            out = self.model.forward(blob)  # insightface normalises with its input_mean / input_std
        else:
            imgs = self._uint8_list(images)
            if channel_order == "rgb":
                imgs = [np.ascontiguousarray(im[:, :, ::-1]) for im in imgs]  # insightface expects BGR
            out = self.model.get_feat(imgs)
        return F.normalize(torch.from_numpy(np.asarray(out, dtype=np.float32)), dim=-1)  # (B, 512)

    @staticmethod
    def _uint8_list(images: Any) -> list[np.ndarray]:
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        if isinstance(images, np.ndarray):
            if images.ndim == 3:
                images = images[None]
            images = list(images)
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("images must be a float tensor (B, 3, H, W) in [-1, 1] or uint8 (B, H, W, 3) "
                             "images")
        for i, im in enumerate(images):
            im = np.asarray(im)
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"images[{i}] must be a uint8 (H, W, 3) image, got {im.dtype} {im.shape}")
        return [np.asarray(im) for im in images]
