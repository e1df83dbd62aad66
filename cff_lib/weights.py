"""Trained weights with provenance: every shipped checkpoint says how to regenerate it and is hash-checked.

Paper sections "Input taxonomy and encoding" and "Implementation details": the paper uses published models
(CLIP ViT-B/32, Wav2Vec 2.0, ArcFace, VGG-16, a CelebA-HQ DDPM); the synthetic world trains small models of
the same classes (notebooks/02_encoders). Each of them is stored as two files:

- ``<name>.safetensors``: the tensors, with the architecture (``cff_kind`` + ``cff_config``) in the file's
  metadata, written by the model's own ``save()`` (:func:`cff_lib.encoder_base.save_safetensors`) or, for
  modules without one, from its ``state_dict()``;
- ``<name>.provenance.json``: a :class:`WeightRecord` -- the command that regenerates the file, profile name
  and fingerprint, configuration, code version, date, sha256 and size of the safetensors file, and the
  held-out metrics measured when it was trained.

:func:`verify_weights` checks a folder (the CLI's ``cff weights verify``); :func:`load_verified` and
:func:`verified_path` check the sha256 before anything is read, so a stale or tampered file fails loudly,
naming the file and both hashes. Only safetensors is written or read here (no pickles).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cff_lib.atomic import atomic_path, atomic_write_text
from cff_lib.provenance import git_commit

SUFFIX = ".safetensors"
RECORD_SUFFIX = ".provenance.json"
RECORD_VERSION = 1  # bump when WeightRecord's fields change
TENSORS_KIND = "tensors"  # cff_kind of a plain tensor dict saved without a module class


@dataclass(frozen=True)
class PretrainReport:
    """What one pre-training function did (returned by cff_lib.pretrain_* train_* functions)."""

    name: str  # model name, the stem of its weight file ("clip", "arcface", ...)
    metrics: dict  # held-out metrics, name -> float (e.g. {"emotion_accuracy": 0.99})
    wall_s: float  # wall-clock seconds of training + evaluation
    steps: int  # optimiser steps taken
    weights: tuple  # paths of the safetensors files written (str)
    losses: tuple = ()  # training-loss curve, one float per logged step (for the notebook's plot)


@dataclass(frozen=True)
class WeightRecord:
    """The provenance of one weight file (``<name>.provenance.json``)."""

    name: str  # file stem ("clip")
    file: str  # safetensors file name, relative to the record's folder ("clip.safetensors")
    kind: str  # architecture tag stored in the file's metadata (cff_kind), e.g. "ClipEncoder"
    sha256: str  # hex sha256 of the safetensors file
    size_bytes: int  # size of the safetensors file
    command: str  # shell command that regenerates the file
    profile: str  # profile name used for training
    fingerprint: str  # Profile.training_fingerprint() of that profile (= fingerprint() before edit settings)
    commit: str  # git commit of the code that trained it ("+dirty" if modified)
    date: str  # UTC date and time of writing, ISO 8601
    config: dict  # training / architecture configuration (JSON-able)
    metrics: dict  # held-out metrics measured after training, name -> float
    version: int = RECORD_VERSION  # record format version

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "record") -> "WeightRecord":
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a weight record must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"{source}: weight record has missing fields {missing} / unknown fields {unknown}")
        if not isinstance(data["sha256"], str) or len(data["sha256"]) != 64:
            raise ValueError(f"{source}: sha256 must be a 64-character hex string, got {data['sha256']!r}")
        return cls(**data)


# ------------------------------------------------------------------------------------------ paths and hashes
def weight_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.provenance.json)`` for ``path`` given with or without the suffix."""
    p = Path(path)
    stem = p.with_name(p.name[: -len(SUFFIX)]) if p.name.endswith(SUFFIX) else p
    if not stem.name:
        raise ValueError(f"path={str(path)!r} has no file name")
    return stem.with_name(stem.name + SUFFIX), stem.with_name(stem.name + RECORD_SUFFIX)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    return str(x)


def _read_meta(path: Path) -> dict[str, str]:
    """The safetensors header metadata; ValueError naming ``path`` if the file is not valid safetensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # SafetensorError, OSError, ... -> one clear message
        raise ValueError(f"{path} is not a readable safetensors file ({e.__class__.__name__}: {e})") from e


# ------------------------------------------------------------------------------------------ writing
def _write_tensors(obj: Any, st_path: Path, kind: str | None, config: Any) -> None:
    from safetensors.torch import save_file

    if isinstance(obj, nn.Module):
        kind = kind or type(obj).__name__
        tensors = obj.state_dict()
    elif isinstance(obj, Mapping):
        kind = kind or TENSORS_KIND
        tensors = dict(obj)
        bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad or not tensors:
            raise ValueError(f"module_or_tensors must map str -> torch.Tensor (non-empty); bad keys: {bad[:5]}")
    else:
        raise ValueError(f"module_or_tensors must be an nn.Module or a dict of tensors, "
                         f"got {type(obj).__name__}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"cff_kind": kind, "cff_config": json.dumps(_jsonable(config or {}), sort_keys=True)}
    with atomic_path(st_path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _uses_own_save(obj: Any) -> bool:
    """Modules of cff_lib with a single-file ``save()`` and a dataclass ``config`` (ClipEncoder, ArcFace, ...)."""
    cfg = getattr(obj, "config", None)
    return (isinstance(obj, nn.Module) and callable(getattr(obj, "save", None))
            and dataclasses.is_dataclass(cfg) and not isinstance(cfg, type))


def save_weights(module_or_tensors: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, *,
                 profile, command: str, metrics: Mapping[str, float], config: Mapping | None = None,
                 kind: str | None = None) -> WeightRecord:
    """Write ``<path>.safetensors`` and ``<path>.provenance.json`` (both atomic) and return the record.

    ``module_or_tensors``: a cff_lib model with its own ``save()`` (ClipEncoder, ArcFace, PerceptualVGG,
    Age/EmotionEstimator, AudioEmotionHead; its architecture config goes into the file), any other
    ``nn.Module`` (its state_dict, tagged ``kind`` or its class name) or a dict of tensors.
    ``profile``: the Profile trained with. ``command``: the shell command that regenerates the file.
    ``metrics``: held-out metrics. ``config``: training configuration for the record (and, for modules
    without ``save()`` / tensor dicts, the architecture config stored in the file's metadata).
    """
    if not isinstance(command, str) or not command.strip():
        raise ValueError("command must be the non-empty shell command that regenerates the weights")
    if not hasattr(profile, "fingerprint") or not hasattr(profile, "name"):
        raise ValueError(f"profile must be a cff_lib.config.Profile, got {type(profile).__name__}")
    st_path, rec_path = weight_paths(path)
    if _uses_own_save(module_or_tensors):
        module_or_tensors.save(st_path)
    else:
        _write_tensors(module_or_tensors, st_path, kind, config)
    meta = _read_meta(st_path)
    record_config = dict(_jsonable(config or {}))
    if _uses_own_save(module_or_tensors):
        record_config.setdefault("architecture", _jsonable(module_or_tensors.config))
    record = WeightRecord(
        name=st_path.name[: -len(SUFFIX)], file=st_path.name, kind=meta.get("cff_kind", TENSORS_KIND),
        sha256=sha256_file(st_path), size_bytes=st_path.stat().st_size, command=command.strip(),
        profile=profile.name, fingerprint=profile.training_fingerprint(), commit=git_commit(),
        date=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        config=record_config, metrics={str(k): float(v) for k, v in dict(metrics).items()},
    )
    atomic_write_text(rec_path, json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n")
    return record


# ------------------------------------------------------------------------------------------ checking
def read_record(path: str | os.PathLike) -> WeightRecord:
    """The WeightRecord of a weight file (``path`` with or without ``.safetensors``, or the record itself)."""
    p = Path(path)
    rec_path = p if p.name.endswith(RECORD_SUFFIX) else weight_paths(p)[1]
    if not rec_path.is_file():
        raise FileNotFoundError(f"provenance record {rec_path} is missing; regenerate the weights "
                                f"(notebooks/02_encoders with retrain=True) to write it")
    try:
        data = json.loads(rec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{rec_path} is not valid JSON ({e})") from e
    return WeightRecord.from_dict(data, source=str(rec_path))


def verified_path(path: str | os.PathLike) -> Path:
    """The safetensors path after checking it against its record; raises naming the file otherwise.

    Use it to hand a checked file to a factory: ``create_clip("synthetic", verified_path(p))``.
    """
    st_path, _ = weight_paths(path)
    if not st_path.is_file():
        raise FileNotFoundError(f"weight file {st_path} is missing; regenerate it with notebooks/02_encoders "
                                f"(retrain=True) or the command in its provenance record")
    record = read_record(st_path)
    actual = sha256_file(st_path)
    if actual != record.sha256:
        raise ValueError(f"{st_path}: sha256 mismatch -- the file hashes to {actual} but its provenance "
                         f"record says {record.sha256}; it was modified or is stale. Regenerate with: "
                         f"{record.command}")
    return st_path


@dataclass(frozen=True)
class LoadedWeights:
    """A hash-checked weight file read into memory."""

    path: Path  # the safetensors file
    tensors: dict  # name -> torch.Tensor (CPU)
    kind: str  # cff_kind from the file's metadata
    config: dict  # cff_config from the file's metadata ({} if none)
    record: WeightRecord  # its provenance


def load_verified(path: str | os.PathLike, *, kind: str | None = None) -> LoadedWeights:
    """Check the sha256 of ``path`` against its record, then read it.

    ``kind``: the expected architecture tag (e.g. ``"ClipEncoder"``); a file of another architecture raises
    ValueError naming both. A corrupt file raises ValueError naming it.
    """
    from safetensors.torch import load_file

    st_path = verified_path(path)
    record = read_record(st_path)
    meta = _read_meta(st_path)
    file_kind = meta.get("cff_kind", TENSORS_KIND)
    if kind is not None and file_kind != kind:
        raise ValueError(f"{st_path} holds a {file_kind!r} checkpoint, expected {kind!r} "
                         f"(wrong file for this model?)")
    try:
        config = json.loads(meta.get("cff_config", "{}"))
        tensors = load_file(str(st_path), device="cpu")
    except Exception as e:
        raise ValueError(f"{st_path} could not be read ({e.__class__.__name__}: {e})") from e
    return LoadedWeights(st_path, tensors, file_kind, config, record)


def load_state_into(module: nn.Module, path: str | os.PathLike, *, kind: str | None = None) -> nn.Module:
    """Hash-check ``path`` and load it strictly into ``module`` (saved from a module's state_dict).

    A checkpoint of another architecture (missing / unexpected keys, shape mismatches) raises ValueError
    naming the file and the first differences.
    """
    loaded = load_verified(path, kind=kind or type(module).__name__)
    own = module.state_dict()
    missing = sorted(set(own) - set(loaded.tensors))
    unexpected = sorted(set(loaded.tensors) - set(own))
    shapes = [f"{k}: file {tuple(loaded.tensors[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in loaded.tensors and loaded.tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{loaded.path} does not fit {type(module).__name__}: missing keys {missing[:5]}, "
                         f"unexpected keys {unexpected[:5]}, shape mismatches {shapes[:3]} "
                         f"(file config: {loaded.config})")
    module.load_state_dict(loaded.tensors, strict=True)
    return module


def verify_weights(folder: str | os.PathLike, expected: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Problems with the weight files in ``folder`` (empty list: all good). Each problem names its file.

    Checks every ``*.safetensors`` has a valid record whose sha256 and size match, every record has its
    file, and every name in ``expected`` (stems, e.g. ``("clip", "arcface")``) is present.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: weights folder is missing"]
    problems = []
    stems = {p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}")}
    stems |= {p.name[: -len(RECORD_SUFFIX)] for p in folder.glob(f"*{RECORD_SUFFIX}")}
    for name in expected:
        if name not in stems:
            problems.append(f"{folder / (name + SUFFIX)}: missing (expected weight file)")
    for stem in sorted(stems):
        st_path, rec_path = weight_paths(folder / stem)
        if not st_path.is_file():
            problems.append(f"{st_path}: missing (its record {rec_path.name} exists)")
            continue
        try:
            record = read_record(st_path)
        except (FileNotFoundError, ValueError, TypeError) as e:
            problems.append(f"{st_path}: missing or invalid provenance record ({e})")
            continue
        if record.file != st_path.name:
            problems.append(f"{rec_path}: record names file {record.file!r}, not {st_path.name!r}")
        size = st_path.stat().st_size
        actual = sha256_file(st_path)
        if actual != record.sha256:
            problems.append(f"{st_path}: sha256 mismatch (file {actual}, record {record.sha256})")
        elif size != record.size_bytes:
            problems.append(f"{st_path}: size mismatch (file {size} B, record {record.size_bytes} B)")
    return problems
