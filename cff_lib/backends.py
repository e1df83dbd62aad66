"""The one factory of the backends: every encoder, judge and the unconditional UNet of one world.

ClipFaceFusion stands on frozen networks it never trains (CLIP, Wav2Vec2, the audio emotion head, ArcFace, the
perceptual VGG, AgeEst, EmoEst) and on an unconditional face DDPM (``UNet2DModel``). This module is the only
place that turns "a part, a world, a file or nothing" into such a network:

- :func:`create_backend` builds one part: from a file when given one, else randomly initialised at the world's
  architecture (the synthetic world's as notebooks/02 trains it, at the world's image size; the paper's
  published architecture for the ``"pretrained"`` world). The pretraining trainers take their fresh networks
  from it, and load what they wrote back through it.
- :func:`create_encoders` builds every encoder of one world from explicit paths (:data:`WEIGHT_KEYS`).
- :func:`build_backends` builds all of one world's backends, UNet included, from a weights folder: the
  synthetic world's files as notebooks/02 writes them (:data:`SYNTHETIC_FILES`, each sha256-checked against
  its provenance record), the paper world's under the names of :data:`PRETRAINED_FILES` (pre-flighted by
  :func:`cff_lib.paper_world.check_weights` first). ``cff_lib.model.build_model`` calls it.

The encoder classes and their loaders stay with their network families (``clip_encoder``, ``audio_encoder``,
``arcface``, ``estimators``, ``vgg_perceptual``, ``conditional_unet``); this module only dispatches to them.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

from torch import nn

from cff_lib.encoder_base import check_backend, missing_weights
from cff_lib.encoders import PROJECT_TRAINED, WEIGHT_KEYS, EncoderSet, MultiModalEncoder, load_multimodal_heads

PARTS = tuple(k for k in WEIGHT_KEYS if k != "multimodal") + ("unet",)
"""What :func:`create_backend` builds: the networks of :data:`cff_lib.encoders.WEIGHT_KEYS` (``multimodal``,
the α, β and age-embedding heads, belongs to ``MultiModalEncoder``) and the unconditional UNet."""

PRETRAINED_IMAGE_SIZE = 256  # the paper's reference images are 256x256
SYNTHETIC_IMAGE_SIZE = 64  # create_encoders' default for the synthetic world when no image_size is given

PRETRAINED_FILES: dict[str, tuple[str, ...]] = {
    # paper world: part -> candidate names inside weights_dir (the first is the published name)
    "clip": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "clip.safetensors"),
    "audio": ("wav2vec2-base", "audio"),  # save_pretrained folder
    "arcface": ("backbone.pth", "arcface_r50.pth", "arcface.safetensors"),
    "vgg": ("vgg16-397923af.pth", "vgg.safetensors"),
    "audio_emotion": ("audio_emotion.safetensors",),
    "age": ("age_estimator.safetensors",),
    "emotion": ("emotion_estimator.safetensors",),
    "unet": ("ddpm-ema-celebahq-256", "unet"),  # diffusers UNet2DModel folder
}
SYNTHETIC_FILES: dict[str, str] = {
    # synthetic world: part -> safetensors written by notebooks/02 (cff_lib.pretrain_*; sha256-checked
    # against its .provenance.json by cff_lib.weights)
    "clip": "clip.safetensors", "age": "age_estimator.safetensors", "emotion": "emotion_estimator.safetensors",
    "arcface": "arcface.safetensors", "vgg": "vgg.safetensors", "audio": "audio.safetensors",
    "audio_emotion": "audio_emotion.safetensors", "unet": "ddpm.safetensors",
}

# The order each world builds its encoders in. Random stand-ins draw from the global RNG, so the order fixes
# their values: these are the orders each world has always used, kept so that a seeded untrained build is
# bit-identical to earlier ones (bench/condition_fingerprint.py).
_BUILD_ORDER = {"synthetic": ("clip", "audio", "audio_emotion", "arcface", "age", "emotion", "vgg"),
                "pretrained": ("clip", "audio", "audio_emotion", "arcface", "vgg", "age", "emotion")}
_PUBLISHED_WHAT = {"clip": ("CLIP ViT-B/32", "clip_encoder"), "arcface": ("ArcFace iresnet50", "arcface"),
                   "vgg": ("VGG-16", "vgg_perceptual")}
_WAV2VEC2_KIND = "Wav2Vec2Model"  # cff_kind of the synthetic world's audio.safetensors
_UNET_KIND = "UNet2DModel"  # cff_kind of the synthetic world's ddpm.safetensors


class Backends(NamedTuple):
    encoders: EncoderSet  # Eqs. 1-8 and the frozen judges
    unet: nn.Module  # the unconditional diffusers UNet2DModel (ε_θ before conditioning)
    digests: dict[str, str]  # part -> sha256 of the file it was built from, or "untrained"


# ------------------------------------------------------------------------------------------ files on disk
def locate_pretrained(weights_dir: str | os.PathLike) -> tuple[dict[str, str | None], list[str]]:
    """(part -> path or None, parts not found) for every entry of :data:`PRETRAINED_FILES` in ``weights_dir``."""
    root = Path(weights_dir)
    found: dict[str, str | None] = {}
    for key, names in PRETRAINED_FILES.items():
        hits = [root / n for n in names if (root / n).exists()]
        found[key] = str(hits[0]) if hits else None
    return found, [k for k, v in found.items() if v is None]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files (sorted relative names and bytes)."""
    path, h = Path(path), hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def unet_from_weights(loaded):
    """The ``UNet2DModel`` (eval mode) of a hash-checked DDPM file (``cff_lib.weights.load_verified``), carrying
    the scheduler config it was trained with (``noise_scheduler_config``: ᾱ schedule + prediction type, read
    by :mod:`cff_lib.ddim`). Files written before the config was honoured record the paper's linear-β,
    ε config, so they load and sample exactly as before."""
    from diffusers import UNet2DModel

    from cff_lib.conditional_unet import attach_scheduler

    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in loaded.config["architecture"].items()}
    unet = UNet2DModel(**arch)
    unet.load_state_dict(loaded.tensors, strict=True)
    return attach_scheduler(unet.eval(), loaded.config.get("scheduler"))


def _audio_from_weights(loaded):
    """The AudioEncoder of a hash-checked synthetic ``audio.safetensors`` (Wav2Vec2Model + its architecture)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from cff_lib.audio_encoder import AudioEncoder

    model = Wav2Vec2Model(Wav2Vec2Config(**loaded.config["architecture"]))
    model.load_state_dict(loaded.tensors, strict=True)
    return AudioEncoder(model.eval())


def _is_weights_file(path) -> bool:
    return Path(path).suffix == ".safetensors" or Path(str(path) + ".safetensors").is_file()


# ------------------------------------------------------------------------------------------ one part
def create_backend(part: str, backend: str, path: str | os.PathLike | None = None, *,
                   image_size: int | None = None) -> nn.Module:
    """One backend network of one world (eval mode, not frozen).

    ``part``: one of :data:`PARTS`. ``backend``: ``"synthetic"`` or ``"pretrained"``. ``path``: the file (or
    folder) to load; None builds a random network of the world's architecture -- the synthetic world's at
    ``image_size`` (``clip_encoder.synthetic_clip_config``, ``arcface.synthetic_arcface_config``,
    ``estimators.synthetic_estimator_config``, ``conditional_unet.synthetic_unet_config``, the width/4 VGG, the
    small Wav2Vec2), the paper's for ``"pretrained"`` (published parts then raise FileNotFoundError: nothing is
    downloaded). A synthetic ``audio`` or ``unet`` weights file (``audio.safetensors``, ``ddpm.safetensors``,
    written with its provenance record by ``cff_lib.weights.save_weights``) is read hash-checked.
    """
    from cff_lib.arcface import create_arcface
    from cff_lib.audio_encoder import create_audio_emotion_head, create_audio_encoder
    from cff_lib.clip_encoder import build_synthetic_clip, create_clip, synthetic_clip_config
    from cff_lib.estimators import create_age_estimator, create_emotion_estimator
    from cff_lib.vgg_perceptual import create_vgg

    check_backend(backend)
    if part not in PARTS:
        raise ValueError(f"part={part!r} must be one of {PARTS}")
    random_synthetic = backend == "synthetic" and path is None
    if random_synthetic and part in ("clip", "arcface", "age", "emotion", "unet"):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size={image_size!r} must be the world's image size (an int >= 8) to build "
                             f"a random synthetic {part}")
    if part == "clip":
        if random_synthetic:
            return build_synthetic_clip(synthetic_clip_config(image_size)).eval()
        return create_clip(backend, path)
    if part == "audio":
        if backend == "synthetic" and path is not None and _is_weights_file(path):
            from cff_lib.weights import load_verified

            return _audio_from_weights(load_verified(path, kind=_WAV2VEC2_KIND))
        return create_audio_encoder(backend, path)
    if part == "audio_emotion":
        return create_audio_emotion_head(path).eval()
    if part == "arcface":
        return create_arcface(backend, path, image_size=image_size or 64)
    if part == "vgg":
        return create_vgg(backend, path)
    if part in ("age", "emotion"):
        make = create_age_estimator if part == "age" else create_emotion_estimator
        return make(backend, path, allow_untrained=True, image_size=image_size or 64)
    # the unconditional UNet
    from diffusers import UNet2DModel

    from cff_lib.conditional_unet import load_unet, paper_unet_config, synthetic_unet_config

    if path is None:
        return UNet2DModel(**(synthetic_unet_config(image_size) if backend == "synthetic" else paper_unet_config()))
    if backend == "synthetic" and _is_weights_file(path):
        from cff_lib.weights import load_verified

        return unet_from_weights(load_verified(path, kind=_UNET_KIND))
    p = Path(path)
    return load_unet(p / "unet" if (p / "unet" / "config.json").is_file() else p)


# ------------------------------------------------------------------------------------------ the encoders
def create_encoders(
    backend: str,
    weights: dict[str, str | None] | None = None,
    *,
    image_size: int | None = None,
    frozen: bool = True,
) -> EncoderSet:
    """Build every encoder of one world.

    ``weights`` maps WEIGHT_KEYS to file/folder paths (None or absent = not given):
    clip (open_clip state dict / our safetensors), audio (Wav2Vec2 save_pretrained folder, or the synthetic
    world's audio.safetensors), arcface (.pth or safetensors), vgg (vgg16-397923af.pth or safetensors),
    audio_emotion / age / emotion (safetensors) and multimodal (α, β, age embedding; safetensors). With
    ``backend="pretrained"`` the PUBLISHED weights must exist (FileNotFoundError otherwise); project-trained
    parts left None are freshly initialised and listed in ``EncoderSet.untrained``. ``image_size``: the
    world's image size (default 256 pretrained, 64 synthetic).
    ``frozen``: freeze the networks the losses use (CLIP, Wav2Vec2, audio emotion head, ArcFace, VGG,
    estimators); α, β and the age embedding always stay trainable.
    """
    check_backend(backend)
    weights = dict(weights or {})
    unknown = set(weights) - set(WEIGHT_KEYS)
    if unknown:
        raise ValueError(f"weights has unknown keys {sorted(unknown)}; expected some of {WEIGHT_KEYS}")
    if image_size is None:
        image_size = PRETRAINED_IMAGE_SIZE if backend == "pretrained" else SYNTHETIC_IMAGE_SIZE
    w = {k: weights.get(k) for k in WEIGHT_KEYS}
    untrained = tuple(k for k in PROJECT_TRAINED if w[k] is None)
    # published models first: a missing file fails before anything heavy is built
    if backend == "pretrained":
        for key, (what, module) in _PUBLISHED_WHAT.items():
            if w[key] is None or not Path(w[key]).is_file():
                raise missing_weights(what, w[key], f"Set weights[{key!r}]; see cff_lib/{module}.py.")
        if w["audio"] is None or not Path(w["audio"]).is_dir():
            raise missing_weights("Wav2Vec 2.0 base", w["audio"],
                                  "Set weights['audio']; see cff_lib/audio_encoder.py.")
    parts: dict[str, nn.Module] = {}
    mm = None
    for key in _BUILD_ORDER[backend]:
        parts[key] = create_backend(key, backend, w[key], image_size=image_size)
        if key == "audio_emotion":  # the numeric age embedding is drawn right after the audio emotion head
            mm = MultiModalEncoder(parts["clip"], parts["audio"], parts["audio_emotion"], image_size=image_size)
    if w["multimodal"] is not None:
        load_multimodal_heads(mm, w["multimodal"])
    if frozen:
        for key in _BUILD_ORDER[backend]:
            parts[key].freeze()
    return EncoderSet(backend, mm, parts["arcface"], parts["vgg"], parts["age"], parts["emotion"], untrained)


# ------------------------------------------------------------------------------------------ a world's folder
def build_backends(backend: str, weights_dir: str | os.PathLike, *, image_size: int,
                   allow_untrained: bool = False) -> Backends:
    """Every backend of one world from ``weights_dir``: the encoders (frozen) and the unconditional UNet.

    Synthetic: the files of :data:`SYNTHETIC_FILES`, each checked against its provenance record. Paper world:
    the files of :data:`PRETRAINED_FILES`, pre-flighted against the true architectures (headers only, in
    seconds) before anything is built. A missing file is a FileNotFoundError naming it and how to get it,
    unless ``allow_untrained``: then that part is random (see :func:`create_backend`) and its digest reads
    ``"untrained"``. Seed the global RNG first for reproducible random parts.
    """
    check_backend(backend)
    root = Path(weights_dir)
    if backend == "synthetic":
        from cff_lib.weights import verified_path

        present = {k: (root / f).is_file() for k, f in SYNTHETIC_FILES.items()}
        missing = [f"{k} ({SYNTHETIC_FILES[k]})" for k, ok in present.items() if not ok]
        if missing and not allow_untrained:
            raise FileNotFoundError(f"synthetic backend weights missing in {root}: {', '.join(missing)}. Run "
                                    "notebooks/02_encoders for this profile (it trains them), or pass "
                                    "allow_untrained=True for random ones")
        path: dict[str, str | None] = {k: (str(verified_path(root / f)) if present[k] else None)
                                       for k, f in SYNTHETIC_FILES.items()}
    else:
        path, missing = locate_pretrained(root)
        if missing and not allow_untrained:
            names = ", ".join(f"{k} ({' | '.join(PRETRAINED_FILES[k])})" for k in missing)
            raise FileNotFoundError(f"pretrained weights missing in {root}: {names}. Nothing is downloaded: "
                                    "see docs/paper_world.md for where to get each")
        from cff_lib.paper_world import PaperWorldError, check_weights

        problems = check_weights(path, root)  # headers only: a wrong or truncated file fails here, in seconds
        if problems:
            raise PaperWorldError(problems)
    encoders = create_encoders(backend, {k: path.get(k) for k in WEIGHT_KEYS if k in path},
                               image_size=image_size)
    unet = create_backend("unet", backend, path["unet"], image_size=image_size)
    digests = {k: (file_digest(p) if p is not None else "untrained") for k, p in path.items()}
    return Backends(encoders, unet, digests)


__all__ = ["Backends", "PARTS", "PRETRAINED_FILES", "SYNTHETIC_FILES", "build_backends", "create_backend",
           "create_encoders", "file_digest", "locate_pretrained", "unet_from_weights"]
