"""``cff rehearse build``: the paper world in miniature, so every path a reviewer takes runs before they do.

A rehearsal profile (``presets/paper_rehearsal.yaml``: ``extends: paper``, ``runner.rehearsal: true``) reads
exactly what the paper profile reads -- the same loaders, file names and formats -- from a git-ignored folder
this module writes:

- data (``profile.data.root``): the synthetic world rendered at the profile's 256² in the real datasets'
  layouts (FFHQ thousand-folders, CACD2000 names, RAVDESS codes, VoxCeleb ids + ``vox1_meta.csv``), a few
  dozen files each, *without* the synthetic ground-truth sidecars (real copies have none);
- weights (``profile.model.weights_dir``): seeded *random* weights of the true architectures, each in the
  file and format the paper world reads (:data:`cff_lib.backends.PRETRAINED_FILES`): open_clip ViT-B-32 state
  dict (safetensors), wav2vec2-base ``save_pretrained`` folder, arcface_torch iresnet50 ``backbone.pth``,
  torchvision ``vgg16-397923af.pth``, an insightface recognition ONNX export (``w600k_r50.onnx``), the
  ``ddpm-ema-celebahq-256`` ``save_pretrained`` folder (with its scheduler config), the age / emotion
  estimators and audio emotion head, and the three referee files with provenance records.

After writing, the folder is checked with the same pre-flight a reviewer's files get
(:mod:`cff_lib.paper_world`). Nothing is downloaded; a non-rehearsal profile is refused (random weights must
never land in ``weights/pretrained``).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from cff_lib.atomic import atomic_directory, atomic_path, atomic_write_text

ONNX_FILE = "w600k_r50.onnx"
"""The insightface recognition model's file name in buffalo_l (the identity *metric*'s slot)."""
MARKER = "REHEARSAL.json"
"""Written into the weights folder: what was built, and that the weights are random."""
RAVDESS_STATEMENTS = (1,)  # one statement, one repetition: 15 clips per actor (a few dozen in all)
RAVDESS_REPETITIONS = (1,)


def _require_rehearsal(profile) -> None:
    if not profile.runner.rehearsal:
        raise ValueError(f"profile {profile.name!r} is not a rehearsal (runner.rehearsal is false): `cff rehearse "
                         "build` writes random weights and would put them where real ones belong; use "
                         "--profile paper_rehearsal")
    if profile.data.world != "real" or profile.model.backend != "pretrained":
        raise ValueError(f"profile {profile.name!r}: a rehearsal rehearses the paper world (data.world: real, "
                         "model.backend: pretrained)")


def rehearsal_spec(profile):
    """The miniature world a rehearsal profile renders (its data.* counts, at its image size)."""
    from cff_lib.synthetic_world import WorldSpec

    d = profile.data
    return WorldSpec(seed=profile.train.seed, image_size=d.image_size, n_ffhq=d.n_ffhq,
                     n_cacd_identities=d.n_cacd_identities, cacd_images_per_identity=d.cacd_images_per_identity,
                     n_ravdess_actors=d.n_ravdess_actors, ravdess_statements=RAVDESS_STATEMENTS,
                     ravdess_repetitions=RAVDESS_REPETITIONS, n_vox_speakers=d.n_vox_speakers,
                     vox_videos_per_speaker=d.vox_videos_per_speaker,
                     vox_utterances_per_video=d.vox_utterances_per_video, voice_seconds=d.voice_seconds,
                     sample_rate=d.sample_rate)


def build_data(profile, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Render the miniature data root (real layouts, no sidecars); kept if already complete. A rewrite drops
    the manifests of the earlier build, which notebooks/01 then rebuilds for the new files."""
    from cff_lib.manifests import DATASETS, SIDECAR_NAME
    from cff_lib.synthetic_world import write_world
    from cff_lib.world import data_root, manifest_dir

    _require_rehearsal(profile)
    root = data_root(profile)
    if all((root / n).is_dir() for n in DATASETS) and not overwrite:
        return root
    write_world(root, rehearsal_spec(profile), progress=progress, overwrite=True)
    # manifests of an earlier build describe other files (git-ignored, rebuilt by notebooks/01)
    shutil.rmtree(manifest_dir(profile), ignore_errors=True)
    for name in DATASETS:  # real copies carry no ground truth: the rehearsal reads what a reviewer has
        (root / name / SIDECAR_NAME).unlink(missing_ok=True)
    return root


def _save_torch(state: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _writers(weights_dir: Path, image_size: int) -> dict:
    """file name -> function writing it (random weights of the true architecture, published format)."""
    from safetensors.torch import save_file

    def clip(path):
        import open_clip

        from cff_lib.clip_encoder import PRETRAINED_NAME

        state = open_clip.create_model(PRETRAINED_NAME, pretrained=None).state_dict()
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))

    def audio(path):
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        with atomic_directory(path) as tmp:
            Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(tmp, safe_serialization=True)

    def arcface(path):
        from cff_lib.arcface import IRESNET50, IResNet

        _save_torch(IResNet(IRESNET50).state_dict(), path)

    def onnx(path):
        from cff_lib.arcface import IRESNET50, IResNet, export_onnx

        export_onnx(IResNet(IRESNET50), path)

    def vgg(path):
        from torchvision.models import vgg16

        _save_torch(vgg16(weights=None).state_dict(), path)

    def unet(path):
        from diffusers import DDPMScheduler, UNet2DModel

        from cff_lib.conditional_unet import paper_unet_config

        with atomic_directory(path) as tmp:
            UNet2DModel(**paper_unet_config()).save_pretrained(tmp, safe_serialization=True)
            DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(tmp)

    def age(path):
        from cff_lib.estimators import PRETRAINED_ESTIMATOR, AgeEstimator

        AgeEstimator(PRETRAINED_ESTIMATOR).save(path)

    def emotion(path):
        from cff_lib.estimators import PRETRAINED_ESTIMATOR, EmotionEstimator

        EmotionEstimator(PRETRAINED_ESTIMATOR).save(path)

    def audio_emotion(path):
        from cff_lib.audio_encoder import AudioEmotionHead

        AudioEmotionHead().save(path)

    from cff_lib.backends import PRETRAINED_FILES

    first = {k: names[0] for k, names in PRETRAINED_FILES.items()}  # the published names
    return {first["clip"]: clip, first["audio"]: audio, first["arcface"]: arcface, ONNX_FILE: onnx,
            first["vgg"]: vgg, first["unet"]: unet, first["age"]: age, first["emotion"]: emotion,
            first["audio_emotion"]: audio_emotion}


def _write_referees(profile, weights_dir: Path) -> list[str]:
    """Random referees (evaluation-only judges a reviewer brings) with provenance records."""
    from cff_lib.referees import (
        REFEREE_FILES,
        AttributeReferee,
        IdentityReferee,
        TextImageReferee,
        referee_config,
    )
    from cff_lib.weights import save_weights

    written = []
    classes = {"attributes": AttributeReferee, "identity": IdentityReferee, "clip": TextImageReferee}
    for key, stem in REFEREE_FILES.items():
        if (weights_dir / f"{stem}.safetensors").is_file():
            continue
        metrics = {"threshold_clean": 0.5} if key == "identity" else {}  # a made-up threshold: random weights
        save_weights(classes[key](referee_config(profile.data.image_size)), weights_dir / stem, profile=profile,
                     command=f"cff rehearse build --profile {profile.name}", metrics=metrics,
                     config={"rehearsal": True, "random_weights": True})
        written.append(f"{stem}.safetensors")
    return written


def build_weights(profile, *, overwrite: bool = False, echo=print) -> dict[str, float]:
    """Write every missing weights file of the rehearsal (``overwrite``: all); returns seconds per file."""
    from cff_lib.model import weights_root

    _require_rehearsal(profile)
    root = weights_root(profile)
    root.mkdir(parents=True, exist_ok=True)
    seconds = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(profile.train.seed)
        for name, write in _writers(root, profile.data.image_size).items():
            path = root / name
            if path.exists() and not overwrite:
                continue
            t = time.perf_counter()
            write(path)
            seconds[name] = round(time.perf_counter() - t, 2)
            echo(f"   wrote {path} ({seconds[name]:.1f} s)")
        if overwrite:
            for stem in ("referee_attributes", "referee_identity", "referee_clip"):
                for suffix in (".safetensors", ".provenance.json"):
                    (root / (stem + suffix)).unlink(missing_ok=True)
        t = time.perf_counter()
        for name in _write_referees(profile, root):
            seconds[name] = round(time.perf_counter() - t, 2)
            echo(f"   wrote {root / name}")
    return seconds


def check(profile) -> list[str]:
    """The pre-flight of the paper world on the rehearsal's folders (what ``cff weights verify`` runs)."""
    from cff_lib.backends import PRETRAINED_FILES, locate_pretrained
    from cff_lib.model import weights_root
    from cff_lib.paper_world import check_data_root, check_weights
    from cff_lib.world import data_root

    root = weights_root(profile)
    found, missing = locate_pretrained(root)
    problems = [f"{root}: missing {k} ({' | '.join(PRETRAINED_FILES[k])})" for k in missing]
    return problems + check_weights(found, root) + check_data_root(data_root(profile))


def build(profile, *, overwrite: bool = False, progress: bool = True, echo=print) -> dict:
    """Data and weights of a rehearsal profile, then the pre-flight on them; returns what was done."""
    from cff_lib.model import weights_root
    from cff_lib.provenance import REHEARSAL_NOTE, make_stamp

    _require_rehearsal(profile)
    t = time.perf_counter()
    echo(f"== rehearsal {profile.name}: random weights of the paper architectures, miniature data")
    data = build_data(profile, overwrite=overwrite, progress=progress)
    data_s = time.perf_counter() - t
    echo(f"   data at {data} ({data_s:.1f} s)")
    seconds = build_weights(profile, overwrite=overwrite, echo=echo)
    problems = check(profile)
    if problems:
        raise ValueError("the rehearsal's own files fail the paper-world pre-flight:\n  " + "\n  ".join(problems))
    root = weights_root(profile)
    info = {"note": REHEARSAL_NOTE, "stamp": make_stamp(profile).to_dict(), "data_root": str(data),
            "weights_dir": str(root), "data_seconds": round(data_s, 1), "weights_seconds": seconds,
            "bytes": {p.name: _size(p) for p in sorted(root.iterdir()) if not p.name.startswith(".")}}
    atomic_write_text(root / MARKER, json.dumps(info, indent=2) + "\n")
    echo(f"== rehearsal ready in {time.perf_counter() - t:.1f} s: pre-flight clean "
         f"({sum(info['bytes'].values()) / 2**30:.2f} GiB of weights)")
    return info


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def clean(profile) -> list[Path]:
    """Delete a rehearsal's data and weights folders (never a non-rehearsal profile's)."""
    from cff_lib.model import weights_root
    from cff_lib.world import data_root

    _require_rehearsal(profile)
    removed = []
    for folder in (data_root(profile), weights_root(profile)):
        if folder.exists():
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


__all__ = ["MARKER", "ONNX_FILE", "build", "build_data", "build_weights", "check", "clean", "rehearsal_spec"]
