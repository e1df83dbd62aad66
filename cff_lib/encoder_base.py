"""What every encoder module shares, importing no encoder: the one image convention, input checks,
:class:`Freezable`, safetensors save/load with the architecture config in the file's metadata, and the
"weights not found" error.

Images are float ``(B, 3, H, W)`` in [-1, 1] everywhere (:func:`check_images`). The concrete encoders
(``arcface``, ``clip_encoder``, ``audio_encoder``, ``estimators``, ``vgg_perceptual``, ``referees``) import
this module; :mod:`cff_lib.encoders` builds them all and imports them, so nothing here may import them back.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cff_lib.atomic import atomic_path

BACKENDS = ("pretrained", "synthetic")
RANGE_TOLERANCE = 1e-3  # images may exceed [-1, 1] by this much (DDPM outputs are clamped, not exact)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {BACKENDS}")
    return backend


def check_images(images: Any, *, argument: str = "images", size: int | None = None) -> torch.Tensor:
    """Validate the project's image convention: float ``(B, 3, H, W)``, square, values in [-1, 1].

    ``size``: if given, H and W must equal it. Raises ``ValueError`` naming ``argument``.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{argument} must be a torch.Tensor (B, 3, H, W) in [-1, 1], "
                         f"got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{argument} must have shape (B, 3, H, W), got {tuple(images.shape)}")
    b, c, h, w = images.shape
    if b == 0:
        raise ValueError(f"{argument} is an empty batch (B=0)")
    if c != 3:
        raise ValueError(f"{argument} must have 3 (RGB) channels, got {c} in shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{argument} must be a float tensor in [-1, 1], got dtype {images.dtype}")
    if h != w:
        raise ValueError(f"{argument} must be square, got H={h}, W={w}")
    if size is not None and h != size:
        raise ValueError(f"{argument} must be {size}x{size}, got {h}x{w}")
    with torch.no_grad():
        if not torch.isfinite(images).all():
            raise ValueError(f"{argument} contains NaN or inf")
        lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise ValueError(f"{argument} must lie in [-1, 1] (the DDPM range), "
                         f"got values in [{lo:.4g}, {hi:.4g}]")
    return images


def check_feature(x: Any, *, argument: str, dim: int) -> torch.Tensor:
    """Validate a float ``(B, dim)`` feature batch; ``ValueError`` naming ``argument`` otherwise."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != dim or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{argument} must be a float tensor of shape (B, {dim}) with B >= 1, got {shape}")
    if not x.is_floating_point() or not torch.isfinite(x).all():
        raise ValueError(f"{argument} must be finite floats")
    return x


def check_prompts(prompts: Any, *, argument: str = "prompts") -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise ValueError(f"{argument} must be a list of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError(f"{argument} is empty")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"{argument}[{i}] must be a string, got {type(p).__name__}")
    return list(prompts)


def missing_weights(what: str, path: str | os.PathLike | None, how: str) -> FileNotFoundError:
    """The error every loader raises, fast, when a weights file is absent (nothing is ever downloaded)."""
    where = f"not found at {str(path)!r}" if path is not None else "not given (path is None)"
    return FileNotFoundError(f"{what} weights {where}. {how}")


def require_file(what: str, path: str | os.PathLike | None, how: str) -> Path:
    if path is None or not Path(path).is_file():
        raise missing_weights(what, path, how)
    return Path(path)


class Freezable(nn.Module):
    """A module that can be frozen: parameters stop requiring grad and it stays in eval mode.

    A frozen module ignores ``.train()`` from a parent, so BatchNorm statistics and dropout of the frozen
    networks used inside losses never change; gradients still flow through it to its *input*.
    """

    _frozen: bool = False

    def freeze(self):
        self._frozen = True
        self.requires_grad_(False)
        return self.eval()

    def unfreeze(self):
        self._frozen = False
        self.requires_grad_(True)
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    def train(self, mode: bool = True):
        return super().train(mode and not self._frozen)


def _config_to_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def save_safetensors(module: nn.Module, path: str | os.PathLike, config: Any, kind: str) -> Path:
    """Write ``module.state_dict()`` to ``path`` as safetensors, atomically, with its config in the metadata.

    ``kind`` names the class (checked on load); ``config`` is a frozen dataclass rebuilt on load.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    meta = {"cff_kind": kind, "cff_config": _config_to_json(config)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def read_safetensors(path: str | os.PathLike, kind: str
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """State dict and config dict (None if the file carries none) of a safetensors file written above."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "cff_kind" in meta and meta["cff_kind"] != kind:
        raise ValueError(f"{path} holds a {meta['cff_kind']!r} checkpoint, expected {kind!r}")
    config = json.loads(meta["cff_config"]) if "cff_config" in meta else None
    return load_file(str(path), device="cpu"), config


def config_from_dict(cls: type, data: dict[str, Any]):
    """Rebuild a frozen config dataclass from JSON (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"checkpoint config has fields {sorted(unknown)} unknown to {cls.__name__}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
