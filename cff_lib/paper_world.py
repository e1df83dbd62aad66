"""Pre-flight checks of the paper world: the brought weights and data, checked in seconds before any long work.

``cff weights verify --profile paper``, ``build_model`` on a pretrained profile and ``cff rehearse build`` call
:func:`check_weights` and :func:`check_data_root`. They read only file headers (safetensors headers, the
lazy tensors of a torch zip, ``config.json``) and compare each file's tensor names and shapes with the true
architecture built on the ``meta`` device (no memory, no weights), so

- a file of another architecture (a ViT-L/14 where ViT-B/32 belongs, a VGG-19 as ``vgg16-397923af.pth``, a
  64² UNet folder as ``ddpm-ema-celebahq-256``) fails naming the file, the first differences and how to fix it;
- a truncated or corrupt safetensors / torch file fails naming the file;
- a data root lacking a dataset (or holding a folder with no file of that dataset's naming) fails naming it.

Every problem is one line that starts with the offending path. :class:`PaperWorldError` carries them all.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

HOW_TO_FIX = {
    "clip": "place open_clip's ViT-B-32 state dict (laion2b_s34b_b79k open_clip_model.safetensors) there",
    "audio": "write it with Wav2Vec2Model.from_pretrained('facebook/wav2vec2-base').save_pretrained(folder)",
    "arcface": "place arcface_torch's ms1mv3_arcface_r50_fp16/backbone.pth (iresnet50) there",
    "vgg": "place torchvision's ImageNet VGG-16 file vgg16-397923af.pth there",
    "audio_emotion": "train it with this project (AudioEmotionHead.save) on RAVDESS",
    "age": "save an AgeEstimator with AgeEstimator.save (docs/paper_world.md)",
    "emotion": "save an EmotionEstimator with EmotionEstimator.save (docs/paper_world.md)",
    "unet": "write google/ddpm-ema-celebahq-256 with UNet2DModel.from_pretrained(...).save_pretrained(folder)",
}
"""Key of :data:`cff_lib.backends.PRETRAINED_FILES` -> how to put the right file in place."""

DOC = "docs/paper_world.md"


class PaperWorldError(ValueError):
    """Brought weights or data that do not fit the paper world; ``problems`` lists one line per file."""

    def __init__(self, problems: list[str], what: str = "paper-world weights"):
        self.problems = list(problems)
        super().__init__(f"{len(problems)} problem(s) with the {what} (see {DOC}):\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------ reading shapes
def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header; ValueError naming ``path`` if it is truncated/corrupt."""
    from safetensors import safe_open

    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or 8 + n > size:
                raise ValueError(f"header of {n} bytes does not fit a {size}-byte file")
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            raise ValueError(f"the header describes {8 + n + end} bytes, the file has {size}: truncated or "
                             "padded (an interrupted download or copy?)")
        with safe_open(str(path), framework="pt") as f:  # the library's own validation too
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 -- every failure becomes one message naming the file
        raise ValueError(f"{path}: not a readable safetensors file ({e.__class__.__name__}: {e}); copy it "
                         "again (compare its sha256 with the source's)") from None


def _torch_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a torch state-dict file (weights_only, memory-mapped: nothing is read)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable torch state-dict file ({e.__class__.__name__}: "
                         f"{str(e)[:200]}); copy it again") from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict (a TorchScript or whole-"
                         "model file? save model.state_dict() instead)")
    return {str(k).removeprefix("module."): tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def file_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a weights file (``.safetensors`` or a torch file), headers only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    return _safetensors_shapes(path) if path.suffix == ".safetensors" else _torch_shapes(path)


def _folder_weights(folder: Path, stems: tuple[str, ...]) -> Path:
    for stem in stems:
        for ext in (".safetensors", ".bin"):
            if (folder / (stem + ext)).is_file():
                return folder / (stem + ext)
    raise FileNotFoundError(f"{folder}: no {' / '.join(s + '.safetensors|.bin' for s in stems)} inside")


def _config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a save_pretrained folder has a config.json)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


# ------------------------------------------------------------------------------------------ true architectures
def _meta_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _normalise_wav2vec(name: str) -> str:
    # transformers' weight-norm of the positional conv: old files say weight_g/weight_v, new ones parametrizations
    return (name.replace("conv.weight_g", "conv.parametrizations.weight.original0")
            .replace("conv.weight_v", "conv.parametrizations.weight.original1"))


def expected_shapes(key: str, found_path: str | os.PathLike) -> tuple[dict[str, tuple[int, ...]], Callable]:
    """(the true architecture's tensor shapes, a name normaliser) for one :data:`PRETRAINED_FILES` key.

    For the project-trained parts (estimators, audio emotion head) the architecture is the one their file's
    metadata records (they are this project's own files); for the published ones it is fixed."""
    path = Path(found_path)
    same = lambda name: name  # noqa: E731
    if key == "clip":
        import open_clip

        from cff_lib.clip_encoder import PRETRAINED_NAME

        return _meta_shapes(lambda: open_clip.create_model(PRETRAINED_NAME, pretrained=None, device="meta")), same
    if key == "audio":
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        return {_normalise_wav2vec(k): v for k, v in _meta_shapes(
            lambda: Wav2Vec2Model(Wav2Vec2Config())).items()}, _normalise_wav2vec
    if key == "arcface":
        from cff_lib.arcface import IRESNET50, IResNet

        return _meta_shapes(lambda: IResNet(IRESNET50)), same
    if key == "vgg":
        from torchvision.models import vgg16

        return _meta_shapes(lambda: vgg16(weights=None)), same
    if key == "unet":
        from diffusers import UNet2DModel

        from cff_lib.conditional_unet import paper_unet_config

        return _meta_shapes(lambda: UNet2DModel(**paper_unet_config())), same
    if key in ("age", "emotion", "audio_emotion"):
        from safetensors import safe_open

        from cff_lib.audio_encoder import AudioEmotionConfig, AudioEmotionHead
        from cff_lib.encoder_base import config_from_dict
        from cff_lib.estimators import PRETRAINED_ESTIMATOR, AgeEstimator, EmotionEstimator, EstimatorConfig

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        cls, cfg_cls, default = {"age": (AgeEstimator, EstimatorConfig, PRETRAINED_ESTIMATOR),
                                 "emotion": (EmotionEstimator, EstimatorConfig, PRETRAINED_ESTIMATOR),
                                 "audio_emotion": (AudioEmotionHead, AudioEmotionConfig, AudioEmotionConfig())}[key]
        kind = getattr(cls, "kind", cls.__name__)
        if meta.get("cff_kind", kind) != kind:
            raise ValueError(f"{path}: holds a {meta['cff_kind']!r} checkpoint where a {kind!r} belongs "
                             f"(files swapped?); {HOW_TO_FIX[key]}")
        cfg = json.loads(meta["cff_config"]) if meta.get("cff_config") else None
        config = config_from_dict(cfg_cls, cfg) if cfg else default
        return _meta_shapes(lambda: cls(config)), same
    raise ValueError(f"key={key!r} is not a paper-world weights slot")


def _compare(path: Path, key: str, got: dict, want: dict, normalise: Callable, what: str) -> list[str]:
    got = {normalise(k): v for k, v in got.items()}
    if key == "vgg":  # the perceptual loss reads the features; a file without the classifier is fine
        want = {k: v for k, v in want.items() if k.startswith("features.")}
        got = {k: v for k, v in got.items() if not k.startswith("classifier.")}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = [f"{k} {got[k]} (want {want[k]})" for k in want if k in got and got[k] != want[k]]
    if not (missing or unexpected or shapes):
        return []
    parts = [f"{len(missing)} missing e.g. {missing[:3]}" if missing else "",
             f"{len(unexpected)} unexpected e.g. {unexpected[:3]}" if unexpected else "",
             f"{len(shapes)} of other shape e.g. {shapes[:2]}" if shapes else ""]
    return [f"{path}: not the {what} architecture ({'; '.join(p for p in parts if p)}); {HOW_TO_FIX[key]}"]


WHAT = {"clip": "open_clip ViT-B-32", "audio": "wav2vec2-base", "arcface": "iresnet50", "vgg": "VGG-16",
        "audio_emotion": "AudioEmotionHead", "age": "AgeEstimator", "emotion": "EmotionEstimator",
        "unet": "google/ddpm-ema-celebahq-256 UNet2DModel"}


def check_one(key: str, path: str | os.PathLike) -> list[str]:
    """Problems (one line each, naming the file) of the file or folder ``path`` in the slot ``key``."""
    path = Path(path)
    try:
        if key in ("audio", "unet"):
            folder = path / "unet" if key == "unet" and (path / "unet" / "config.json").is_file() else path
            cfg = _config(folder)
            if key == "unet":
                from cff_lib.conditional_unet import paper_unet_config

                want_cfg = paper_unet_config()
                diff = [f"{k}={cfg.get(k)!r} (want {v!r})" for k, v in want_cfg.items()
                        if (list(cfg[k]) if isinstance(cfg.get(k), (list, tuple)) else cfg.get(k))
                        != (list(v) if isinstance(v, tuple) else v) and k in cfg]
                if diff:
                    return [f"{folder / 'config.json'}: not the {WHAT[key]} configuration ({'; '.join(diff[:3])})"
                            f"; {HOW_TO_FIX[key]}"]
            elif int(cfg.get("hidden_size", 0)) != 768 or int(cfg.get("num_hidden_layers", 0)) != 12:
                return [f"{folder / 'config.json'}: hidden_size {cfg.get('hidden_size')}, "
                        f"{cfg.get('num_hidden_layers')} layers is not wav2vec2-base (768, 12); {HOW_TO_FIX[key]}"]
            weights = _folder_weights(folder, ("diffusion_pytorch_model",) if key == "unet"
                                      else ("model", "pytorch_model"))
            got = file_shapes(weights)
            if key == "audio":  # a Wav2Vec2ForPreTraining file keeps its "wav2vec2." prefix
                got = {k.removeprefix("wav2vec2."): v for k, v in got.items()
                       if not k.startswith(("quantizer.", "project_hid.", "project_q.", "lm_head."))}
            want, normalise = expected_shapes(key, weights)
            return _compare(weights, key, got, want, normalise, WHAT[key])
        got = file_shapes(path)
        want, normalise = expected_shapes(key, path)
        return _compare(path, key, got, want, normalise, WHAT[key])
    except (FileNotFoundError, ValueError) as e:
        msg = str(e)
        return [msg if msg.startswith(str(path)) else f"{path}: {msg}"]


def check_weights(found: Mapping[str, str | None], root: str | os.PathLike) -> list[str]:
    """Problems of every located paper-world file (``found``: key -> path or None, as
    :func:`cff_lib.backends.locate_pretrained` returns). Missing files are the caller's concern."""
    problems = []
    for key, path in found.items():
        if path is not None:
            problems += check_one(key, path)
    return problems


# ------------------------------------------------------------------------------------------ data
def _has_one(dataset: str, folder: Path) -> bool:
    """True when ``folder`` holds a file the manifest scan would take (its extension, any case) whose name parses."""
    from cff_lib import naming
    from cff_lib.manifests import EXTENSIONS

    parse = {"ffhq": naming.parse_ffhq, "cacd": naming.parse_cacd, "ravdess": naming.parse_ravdess,
             "voxceleb": naming.parse_voxceleb}[dataset]
    for p in folder.rglob("*"):
        if p.suffix.lower() == EXTENSIONS[dataset] and p.is_file():
            try:
                parse(p.relative_to(folder).as_posix())
                return True
            except ValueError:
                continue
    return False


LAYOUT = {"ffhq": "ffhq/00000/00042.png (the thousand-folders of images1024x1024 or a resized copy)",
          "cacd": "cacd/<age>_<Name>_<idx>.jpg (CACD2000's flat folder)",
          "ravdess": "ravdess/Actor_NN/03-01-EE-II-SS-RR-NN.wav (the audio-only speech zips)",
          "voxceleb": "voxceleb/idNNNNN/<video>/NNNNN.wav plus vox1_meta.csv"}


def check_data_root(root: str | os.PathLike) -> list[str]:
    """Problems of a real data root: each of the four datasets must be a folder holding at least one file
    under its dataset's own naming (docs/data.md)."""
    from cff_lib.manifests import DATASETS

    root = Path(root)
    if not root.is_dir():
        return [f"{root}: the data root does not exist; place ffhq/, cacd/, ravdess/, voxceleb/ there "
                "(docs/data.md) or set data.root in the profile"]
    problems = []
    for name in DATASETS:
        folder = root / name
        if not folder.is_dir():
            problems.append(f"{folder}: missing dataset {name}; expected {LAYOUT[name]} (docs/data.md)")
        elif not _has_one(name, folder):
            problems.append(f"{folder}: holds no {name} file under its naming; expected {LAYOUT[name]} "
                            "(docs/data.md)")
    return problems


__all__ = ["HOW_TO_FIX", "PaperWorldError", "check_data_root", "check_one", "check_weights", "expected_shapes",
           "file_shapes"]
