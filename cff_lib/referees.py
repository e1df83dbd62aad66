"""Referees: independent judges that only ever *evaluate* (never a loss, model selection or early stopping).

Why. The estimators inside ClipFaceFusion's losses (AgeEst, EmoEst, ArcFace, the synthetic CLIP, the
perceptual VGG) are the *guides*: the generator is trained against them, so an edit can move their readings
without changing the face (an adversarial example). A reading by a network that any loss or selection step
saw is a guide, never evidence. The referees are a second set of judges that no loss has seen:

- a different architecture from every guide: :class:`RefereeNet`, a MobileNet-style stack of inverted
  residual blocks (1x1 expand, depthwise 3x3, 1x1 project) with GroupNorm and SiLU, global average + max
  pooling (the guides are a pre-activation ResNet with BatchNorm, an IResNet, a ViT and a VGG);
- its own training stream of renders (:data:`REFEREE_STREAM`, a seed no other trainer uses; never the
  world's files and never the renders the guides saw), with augmentation: shifts, colour jitter, blur and
  Gaussian noise (:func:`augment`);
- its own losses: age by bounded regression (not DEX bins), identity by a CosFace margin (not ArcFace's
  additive angle), text-image by InfoNCE with a hashed bag-of-words text tower (not a transformer).

The suite (:class:`Referees`, :func:`load_referees`):

- ``attributes`` (:class:`AttributeReferee`): age regressor, 8-way RAVDESS emotion classifier and valence /
  arousal, one network with three heads;
- ``identity`` (:class:`IdentityReferee`): a 128-d face verifier with its own 1%-false-accept threshold
  (read from its weight record);
- ``clip`` (:class:`TextImageReferee`): a second text-image model for CLIPScore, text-image cosine and S_dir;
- feature spaces built from the two image referees: :meth:`Referees.features` (pooled, for Fréchet distance /
  KID realism) and :meth:`Referees.feature_maps` (spatial, for the uniform-weight LPIPS formula and oracle
  distances).

Nothing here is ever passed to an optimiser: :func:`load_referees` freezes every parameter, and
``tests/test_referees.py`` checks that no training path reaches them.

Paper world: the referees would be judges independent of the paper's guides (e.g. a face-attribute model
other than DeepFace / EmoRec, an identity model other than the ArcFace of the loss, a CLIP other than
ViT-B/32 such as ViT-L/14); docs/paper_world.md names them. They are not shipped; :func:`load_referees`
fails fast naming the missing files.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.captions import caption_variant
from cff_lib.emotions import EMOTIONS
from cff_lib.encoder_base import (
    Freezable,
    check_images,
    config_from_dict,
    missing_weights,
    read_safetensors,
    save_safetensors,
)
from cff_lib.encoders import EMOTION_PROMPT

REFEREE_FILES = {"attributes": "referee_attributes", "identity": "referee_identity", "clip": "referee_clip"}
"""Referee key -> file stem in the profile's weights folder (``<stem>.safetensors`` + provenance record)."""
REFEREE_STREAM = 0x2EF  # seed stream of the referees' training renders (guides use 1 and 2, the DDPM 0xD0F*)
REALISM_STREAM = 0x2F0  # seed stream of the fresh renders realism is measured against (held-out identities)
REFEREE_SEED_OFFSET = 7919  # added to the profile's seed: the referees' RNGs never share a seed with a guide's
CAPTION_MIX = (0.55, 0.7, 0.8, 0.9)  # captions.caption_variant cut-offs of the text-image referee's captions
FAR = 0.01  # false-accept rate of the identity referee's verification threshold
HOW_TO_GET = ("train them with `python -m cff_lib.referees --profile {profile}` (or notebooks/02_encoders), "
              "which writes {files} into {folder}")
PAPER_HOW_TO_GET = ("the paper world has no shipped referees: bring judges independent of the loss's guides "
                    "(docs/paper_world.md, 'Referees') and save them under these names")


# ------------------------------------------------------------------------------------------ architecture
@dataclass(frozen=True)
class RefereeNetConfig:
    widths: tuple[int, ...] = (24, 48, 96, 160)  # channels of the four stages (strides 1, 2, 2, 2)
    blocks: tuple[int, ...] = (1, 2, 2, 1)  # inverted residual blocks per stage
    expand: int = 3  # expansion ratio of each block's hidden width
    groups: int = 8  # GroupNorm groups (every width must be divisible by it)
    input_size: int = 32  # images are resized to input_size x input_size
    feature_dim: int = 256  # pooled feature size (average + max pooling, projected)
    head: str = "pool"  # "pool": global average + max pooling; "flatten": the last map flattened (keeps layout)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class _InvertedResidual(nn.Module):
    """1x1 expand -> GN -> SiLU -> depthwise 3x3 (stride) -> GN -> SiLU -> 1x1 project -> GN (+ input)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, groups: int):
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), _norm(hidden, groups), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), _norm(hidden, groups), nn.SiLU(),
            nn.Conv2d(hidden, cout, 1, bias=False), _norm(cout, groups))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return x + h if self.residual else h


class RefereeNet(nn.Module):
    """[-1, 1] images (B, 3, H, W) -> pooled feature (B, feature_dim); :meth:`maps` gives the stage maps."""

    def __init__(self, config: RefereeNetConfig):
        super().__init__()
        if len(config.widths) != 4 or len(config.blocks) != 4:
            raise ValueError(f"config.widths / config.blocks need 4 stages, got {config.widths}, {config.blocks}")
        self.config = config
        w0 = config.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 1, 1, bias=False), _norm(w0, config.groups), nn.SiLU())
        stages, cin = [], w0
        for i, (w, n) in enumerate(zip(config.widths, config.blocks, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(_InvertedResidual(cin, w, 2 if (j == 0 and i > 0) else 1, config.expand,
                                                config.groups))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        if config.head not in ("pool", "flatten"):
            raise ValueError(f"config.head={config.head!r} must be 'pool' or 'flatten'")
        side = -(-config.input_size // 8)  # three stride-2 stages
        self.proj = nn.Linear(2 * cin if config.head == "pool" else cin * side * side, config.feature_dim)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        s = self.config.input_size
        x = images.float()
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    def maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage outputs {"stage1": (B, w0, s, s), ..., "stage4": (B, w3, s/8, s/8)}."""
        h = self.stem(self._resize(images))
        out = {}
        for i, stage in enumerate(self.stages):
            h = stage(h)
            out[f"stage{i + 1}"] = h
        return out

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        h = F.silu(last)
        if self.config.head == "flatten":
            return self.proj(h.flatten(1))  # (B, feature_dim)
        return self.proj(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))  # (B, feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.maps(images)["stage4"])


# ------------------------------------------------------------------------------------------ the three referees
class AttributeReading(NamedTuple):
    age: torch.Tensor  # (B,) years in [AGE_MIN, AGE_MAX]
    logits: torch.Tensor  # (B, 8) over cff_lib.emotions.EMOTIONS
    valence_arousal: torch.Tensor  # (B, 2) in [-1, 1]
    feature: torch.Tensor  # (B, feature_dim) L2-normalised pooled feature


class AttributeReferee(Freezable):
    """Age (bounded regression), emotion (8 classes) and valence/arousal from one RefereeNet."""

    kind = "AttributeReferee"

    def __init__(self, config: RefereeNetConfig = RefereeNetConfig()):
        super().__init__()
        self.config = config
        self.net = RefereeNet(config)
        self.age_head = nn.Linear(config.feature_dim, 1)
        self.emotion_head = nn.Linear(config.feature_dim, len(EMOTIONS))
        self.va_head = nn.Linear(config.feature_dim, 2)

    def forward(self, images: torch.Tensor) -> AttributeReading:
        check_images(images, argument="images")
        h = self.net(images)  # (B, D)
        age = AGE_MIN + (AGE_MAX - AGE_MIN) * torch.sigmoid(self.age_head(h).squeeze(1))  # (B,)
        return AttributeReading(age, self.emotion_head(h), torch.tanh(self.va_head(h)), F.normalize(h, dim=-1))

    def save(self, path) -> Path:
        return save_safetensors(self, path, self.config, kind=self.kind)


class IdentityReferee(Freezable):
    """Face verifier: images -> L2-normalised 128-d embedding (cosine = identity similarity)."""

    kind = "IdentityReferee"
    embedding_dim = 128

    def __init__(self, config: RefereeNetConfig = RefereeNetConfig()):
        super().__init__()
        self.config = config
        self.net = RefereeNet(config)
        self.embed = nn.Linear(config.feature_dim, self.embedding_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, argument="images")
        return F.normalize(self.embed(F.silu(self.net(images))), dim=-1)  # (B, 128)

    def save(self, path) -> Path:
        return save_safetensors(self, path, self.config, kind=self.kind)


_WORD = re.compile(r"[a-z]+|\d+")


def hashed_words(text: str, buckets: int) -> list[int]:
    """Lower-cased words and numbers of ``text`` hashed (crc32) into ``buckets`` ids; a stable tokenizer."""
    return [zlib.crc32(w.encode()) % buckets for w in _WORD.findall(text.lower())] or [0]


class TextImageReferee(Freezable):
    """A second text-image model: RefereeNet image tower, hashed bag-of-words text tower, joint 256-d space."""

    kind = "TextImageReferee"
    joint_dim = 256
    text_buckets = 4096

    def __init__(self, config: RefereeNetConfig = RefereeNetConfig()):
        super().__init__()
        self.config = config
        self.net = RefereeNet(config)
        self.image_proj = nn.Linear(config.feature_dim, self.joint_dim)
        self.words = nn.EmbeddingBag(self.text_buckets, 128, mode="mean")
        self.text_mlp = nn.Sequential(nn.Linear(128, 256), nn.SiLU(), nn.Linear(256, self.joint_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, argument="images")
        return F.normalize(self.image_proj(F.silu(self.net(images))), dim=-1)  # (B, 256)

    def encode_text(self, texts) -> torch.Tensor:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or len(texts) == 0:
            raise ValueError("texts must be a non-empty list of strings")
        ids = [hashed_words(t, self.text_buckets) for t in texts]
        flat = torch.tensor([i for seq in ids for i in seq], device=self.logit_scale.device)
        offsets = torch.tensor([0] + [len(s) for s in ids[:-1]], device=flat.device).cumsum(0)
        return F.normalize(self.text_mlp(self.words(flat, offsets)), dim=-1)  # (B, 256)

    def save(self, path) -> Path:
        return save_safetensors(self, path, self.config, kind=self.kind)


REFEREE_CLASSES = {"attributes": AttributeReferee, "identity": IdentityReferee, "clip": TextImageReferee}


class _FeatureMaps(nn.Module):
    """Spatial maps of both image referees (the feature network of the referee LPIPS)."""

    def __init__(self, attributes: AttributeReferee, identity: IdentityReferee):
        super().__init__()
        self.attributes, self.identity = attributes, identity

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        a, i = self.attributes.net.maps(images), self.identity.net.maps(images)
        return {f"attr_{k}": a[k] for k in ("stage2", "stage3")} | {f"id_{k}": i[k] for k in ("stage2", "stage3")}


@dataclass(frozen=True)
class Referees:
    """The frozen referee suite of a profile (see the module docstring)."""

    attributes: AttributeReferee
    identity: IdentityReferee
    clip: TextImageReferee
    identity_threshold: float  # identity cosine at 1% false accepts on clean held-out renders (weight record)
    source: str  # where the weights came from (folder)

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch: int = 128) -> dict[str, np.ndarray]:
        """{"age": (B,), "emotion_probs": (B, 8), "valence_arousal": (B, 2)} as numpy."""
        parts = [self.attributes(images[s:s + batch]) for s in range(0, images.shape[0], batch)]
        return {"age": torch.cat([p.age for p in parts]).double().numpy(),
                "emotion_probs": torch.cat([p.logits for p in parts]).softmax(1).double().numpy(),
                "valence_arousal": torch.cat([p.valence_arousal for p in parts]).double().numpy()}

    @torch.no_grad()
    def identity_similarity(self, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        """Per pair cosine of the identity referee's embeddings, (B,)."""
        if a.shape != b.shape:
            raise ValueError(f"identity_similarity needs images of one shape, got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        return (self.identity(a).double() * self.identity(b).double()).sum(-1).numpy()

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 128) -> np.ndarray:
        """Pooled realism features (B, 2 * feature_dim): both image referees, each L2-normalised."""
        out = []
        for s in range(0, images.shape[0], batch):
            x = images[s:s + batch]
            out.append(torch.cat([F.normalize(self.attributes.net(x), dim=-1),
                                  F.normalize(self.identity.net(x), dim=-1)], dim=1).double())
        return torch.cat(out).numpy()

    @property
    def feature_maps(self) -> nn.Module:
        return _FeatureMaps(self.attributes, self.identity).eval()

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.attributes, self.identity, self.clip)

    def parameters(self):
        for m in self.modules():
            yield from m.parameters()


# ------------------------------------------------------------------------------------------ loading
def referee_paths(weights_dir) -> dict[str, Path]:
    return {k: Path(weights_dir) / f"{stem}.safetensors" for k, stem in REFEREE_FILES.items()}


def _load_one(key: str, path: Path) -> nn.Module:
    cls = REFEREE_CLASSES[key]
    state, cfg = read_safetensors(path, kind=cls.kind)  # ValueError naming the file on another kind
    try:
        model = cls(config_from_dict(RefereeNetConfig, cfg) if cfg else RefereeNetConfig())
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"{path} does not hold a {cls.__name__} of this project's architecture: "
                         f"{str(e)[:300]}") from e
    return model.freeze()


def load_referees(profile_or_dir) -> Referees:
    """The frozen referees of a profile (its ``model.weights_dir``) or of a folder.

    Every file is checked against its provenance record (sha256); a missing file raises
    FileNotFoundError naming it and how to get it; a file of another architecture raises ValueError naming it.
    """
    from cff_lib.weights import read_record, verified_path

    if hasattr(profile_or_dir, "model"):
        from cff_lib.model import weights_root

        folder, profile_name = weights_root(profile_or_dir), profile_or_dir.name
        paper = profile_or_dir.data.world != "synthetic"
    else:
        folder, profile_name, paper = Path(profile_or_dir), "toy", False
    paths = referee_paths(folder)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        how = PAPER_HOW_TO_GET if paper else HOW_TO_GET.format(
            profile=profile_name, files=", ".join(p.name for p in paths.values()), folder=folder)
        raise missing_weights("referee", missing[0], f"{len(missing)} of {len(paths)} referee files are "
                              f"missing ({', '.join(missing)}); {how}")
    models = {k: _load_one(k, verified_path(p)) for k, p in paths.items()}
    threshold = read_record(paths["identity"]).metrics.get("threshold_clean")
    if threshold is None:
        raise ValueError(f"{paths['identity']}'s record has no 'threshold_clean'; retrain the referees")
    return Referees(models["attributes"], models["identity"], models["clip"], float(threshold), str(folder))


# ------------------------------------------------------------------------------------------ augmentation
def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (5-tap, separable) with std ``sigma`` (B,) pixels."""
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-0.5 * (r[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, 5)
    b, c, h, w = x.shape
    xf = x.reshape(1, b * c, h, w)
    kh = k.repeat_interleave(c, 0)[:, None, None, :]  # (B*C, 1, 1, 5)
    xf = F.conv2d(F.pad(xf, (2, 2, 0, 0), mode="reflect"), kh, groups=b * c)
    xf = F.conv2d(F.pad(xf, (0, 0, 2, 2), mode="reflect"), kh.transpose(2, 3), groups=b * c)
    return xf.reshape(b, c, h, w)


def augment(x: torch.Tensor, gen: torch.Generator, colour: float = 1.0) -> torch.Tensor:
    """Shifts (±2 px), colour jitter (gain, offset, contrast, saturation; scaled by ``colour``), blur (p 0.5)
    and noise (p 0.7)."""
    b, _, h, w = x.shape
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dx, dy = torch.randint(0, 5, (b,), generator=gen), torch.randint(0, 5, (b,), generator=gen)
    x = torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    flip = u(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * (1 + colour * 0.8 * (u(b, 1, 1, 1) - 0.5))  # saturation 0.6-1.4 at colour 1
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (1 + colour * 0.5 * (u(b, 1, 1, 1) - 0.5))  # contrast 0.75-1.25
    x = x * (1 + colour * 0.3 * (u(b, 3, 1, 1) - 0.5)) + colour * 0.2 * (u(b, 3, 1, 1) - 0.5)  # gain, offset
    blur = u(b) < 0.5
    x = torch.where(blur[:, None, None, None], _blur(x, 0.3 + 0.9 * u(b)), x)
    noisy = (u(b) < 0.7).float()[:, None, None, None]
    x = x + noisy * (0.12 * u(b, 1, 1, 1)) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def corrupt(x: torch.Tensor, noise: float = 0.08, blur_sigma: float = 0.8, seed: int = 0) -> torch.Tensor:
    """A fixed degradation for held-out scores 'under noise/blur': Gaussian blur then Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    y = _blur(x.float(), torch.full((x.shape[0],), float(blur_sigma)))
    return (y + noise * torch.randn(y.shape, generator=gen)).clamp(-1, 1)


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class RefereeScale:
    n_identities: int  # rendered training identities (referee stream)
    images_per_identity: int  # renders per identity (random age, emotion, variation)
    batch_size: int  # images per optimiser step
    attribute_steps: int  # AttributeReferee steps
    identity_steps: int  # IdentityReferee steps
    clip_steps: int  # TextImageReferee steps
    learning_rate: float  # AdamW peak (5% warm-up, cosine decay)


SCALES = {
    "ci": RefereeScale(n_identities=24, images_per_identity=4, batch_size=16, attribute_steps=12,
                       identity_steps=12, clip_steps=12, learning_rate=2e-3),
    "toy": RefereeScale(n_identities=2000, images_per_identity=8, batch_size=64, attribute_steps=1500,
                        identity_steps=2000, clip_steps=1000, learning_rate=2e-3),
    # toy: measured 0.35 / 0.38 / 0.37 s per step on one thread (2 cores shared) -> about 35 min in all
}


def referee_config(image_size: int) -> RefereeNetConfig:
    return RefereeNetConfig(input_size=int(image_size))


def scale_for(profile) -> RefereeScale:
    if profile.data.world != "synthetic":
        raise ValueError(f"profile {profile.name!r} is the paper world: its referees are brought, not trained "
                         "(docs/paper_world.md)")
    return SCALES["ci" if profile.name == "ci" else "toy"]


def referee_bank(profile, *, progress: bool = False):
    """The referees' training renders: their own seed stream, varied renders (never the world's files)."""
    from cff_lib.face_banks import render_bank

    sc = scale_for(profile)
    return render_bank(profile.train.seed + REFEREE_SEED_OFFSET, REFEREE_STREAM, sc.n_identities,
                       sc.images_per_identity, profile.data.image_size, clean=False,
                       name="referee training renders", progress=progress)


def realism_reference(profile, n: int) -> torch.Tensor:
    """What "real" means for realism (KID / Fréchet distance): ``n`` images (B, 3, S, S) in [-1, 1].

    Synthetic world: fresh renders of new identities, one image each, drawn like the world's FFHQ faces (random
    age, emotion, per-image variation); a pure function of (profile seed, n, size), never a file of the world,
    never a training render. Paper world: the first ``n`` FFHQ test-split faces (:func:`_real_reference`)."""
    from cff_lib.face_banks import render_bank

    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n={n!r} must be an integer >= 2 (a covariance needs two images)")
    if profile.data.world != "synthetic":
        return _real_reference(profile, n)
    bank = render_bank(profile.train.seed + REFEREE_SEED_OFFSET, REALISM_STREAM, n, 1, profile.data.image_size,
                       clean=False, name="fresh renders (realism reference)")
    return bank.floats(slice(None))


def realism_reference_size(profile) -> int | None:
    """How many reference images :func:`realism_reference` can give: None (any number) in the synthetic world,
    where they are fresh renders; the FFHQ test split's size in the paper world (FileNotFoundError naming the
    manifest where it is missing)."""
    if profile.data.world == "synthetic":
        return None
    return len(_real_test_split(profile))


def _real_test_split(profile) -> list:
    from cff_lib.manifests import manifest_filename, read_manifest
    from cff_lib.world import manifest_dir

    path = manifest_dir(profile) / manifest_filename("ffhq")
    if not path.is_file():
        raise FileNotFoundError(f"profile {profile.name!r}: the realism reference is the FFHQ test split, but the "
                                f"manifest {path} is missing; run notebooks/01_data_assembly for this profile first")
    return list(read_manifest(path).split("test"))


def _real_reference(profile, n: int) -> torch.Tensor:
    """The paper world's realism reference: the first ``n`` FFHQ test-split faces of the profile's manifest (path
    order; never a training or validation face), preprocessed as every face is (``preprocessing.load_image``)."""
    from cff_lib.manifests import manifest_filename
    from cff_lib.preprocessing import load_image
    from cff_lib.world import data_root, manifest_dir

    path = manifest_dir(profile) / manifest_filename("ffhq")
    test = _real_test_split(profile)
    if len(test) < n:
        raise ValueError(f"profile {profile.name!r}: the realism reference needs n={n} FFHQ test faces, but {path} "
                         f"has {len(test)}; ask for fewer (n <= {len(test)})")
    root = data_root(profile) / "ffhq"
    size = profile.data.image_size
    return torch.stack([torch.from_numpy(load_image(root / e.path, size)) for e in test[:n]])  # (n, 3, S, S)


def _optimise(params, steps: int, lr: float, loss_at, desc: str, progress: bool) -> list[float]:
    """``pretraining.optimise`` as the referees train: weight decay 5e-4, no gradient clipping."""
    from cff_lib.pretraining import optimise

    return optimise(params, steps, lr, loss_at, desc, progress, weight_decay=5e-4, grad_clip=None)


def train_attribute_referee(profile, bank, steps: int, *, progress: bool = True) -> tuple[AttributeReferee, list]:
    sc = scale_for(profile)
    torch.manual_seed(profile.train.seed + REFEREE_SEED_OFFSET + 1)
    gen = torch.Generator().manual_seed(profile.train.seed + REFEREE_SEED_OFFSET + 1)
    model = AttributeReferee(referee_config(profile.data.image_size)).train()
    va, span = bank.valence_arousal(), AGE_MAX - AGE_MIN

    def loss_at(_: int) -> torch.Tensor:
        idx = torch.randint(0, len(bank), (sc.batch_size,), generator=gen)
        r = model(augment(bank.floats(idx), gen))
        age = F.smooth_l1_loss((r.age - AGE_MIN) / span, (bank.age[idx] - AGE_MIN) / span, beta=0.02)
        emo = F.cross_entropy(r.logits, bank.emotion[idx], label_smoothing=0.05)
        return 10.0 * age + emo + F.mse_loss(r.valence_arousal, va[idx])

    return model, _optimise(model.parameters(), steps, sc.learning_rate, loss_at, "referee: attributes", progress)


IDENTITY_COLOUR_JITTER = 0.3  # skin, hair and eye colour carry identity: milder colour jitter for the verifier


def train_identity_referee(profile, bank, steps: int, *, progress: bool = True) -> tuple[IdentityReferee, list]:
    """Supervised-contrastive verification training (not ArcFace's angular-margin classifier): each batch
    holds ``batch_size // 4`` identities x 4 augmented renders; every other render of the same identity is a
    positive (temperature 0.1). Measured: a CosFace head over the 2,000 training identities at this budget
    (1,500 steps) collapsed the embeddings (TAR 0.35 at FAR 1% on clean held-out renders)."""
    sc = scale_for(profile)
    torch.manual_seed(profile.train.seed + REFEREE_SEED_OFFSET + 2)
    gen = torch.Generator().manual_seed(profile.train.seed + REFEREE_SEED_OFFSET + 2)
    model = IdentityReferee(dataclasses.replace(referee_config(profile.data.image_size), head="flatten")).train()
    per_id = 4
    by_id = [torch.nonzero(bank.identity == i).flatten() for i in range(bank.n_identities)]
    by_id = [ix for ix in by_id if len(ix) >= 2]
    n_ids = max(2, min(len(by_id), sc.batch_size // per_id))
    temperature = 0.1

    def loss_at(_: int) -> torch.Tensor:
        who = torch.randperm(len(by_id), generator=gen)[:n_ids].tolist()
        idx = torch.cat([by_id[i][torch.randperm(len(by_id[i]), generator=gen)[:per_id]] for i in who])
        emb = model(augment(bank.floats(idx), gen, colour=IDENTITY_COLOUR_JITTER))  # (B, 128), unit norm
        labels = bank.identity[idx]
        eye = torch.eye(len(idx), dtype=torch.bool)
        logits = (emb @ emb.T / temperature).masked_fill(eye, -1e9)  # (B, B), self excluded
        pos = (labels[:, None] == labels[None]) & ~eye
        log_p = logits.log_softmax(dim=1)
        return -(log_p * pos).sum(1).div(pos.sum(1).clamp_min(1)).mean()

    return model, _optimise(model.parameters(), steps, sc.learning_rate, loss_at, "referee: identity", progress)


def train_clip_referee(profile, bank, steps: int, *, progress: bool = True) -> tuple[TextImageReferee, list]:
    sc = scale_for(profile)
    torch.manual_seed(profile.train.seed + REFEREE_SEED_OFFSET + 3)
    gen = torch.Generator().manual_seed(profile.train.seed + REFEREE_SEED_OFFSET + 3)
    rng = np.random.default_rng(profile.train.seed + REFEREE_SEED_OFFSET + 3)
    model = TextImageReferee(referee_config(profile.data.image_size)).train()

    def loss_at(_: int) -> torch.Tensor:
        idx = torch.randint(0, len(bank), (sc.batch_size,), generator=gen)
        texts = [caption_variant(rng, float(bank.age[i]), EMOTIONS[int(bank.emotion[i])], bank.gender[i],
                                 EMOTION_PROMPT, CAPTION_MIX) for i in idx.tolist()]
        img, txt = model.encode_image(augment(bank.floats(idx), gen)), model.encode_text(texts)
        logits = model.logit_scale.clamp(max=math.log(100.0)).exp() * img @ txt.T  # (B, B)
        # captions may fit several images of the batch: every fitting pair is a positive (multi-positive NCE)
        same = torch.tensor([[texts[i] == texts[j] for j in range(len(texts))] for i in range(len(texts))])
        target = same.float() / same.float().sum(1, keepdim=True)
        i2t = -(target * logits.log_softmax(1)).sum(1).mean()
        t2i = -(target * logits.T.log_softmax(1)).sum(1).mean()
        return 0.5 * (i2t + t2i)

    return model, _optimise(model.parameters(), steps, sc.learning_rate, loss_at, "referee: text-image", progress)


# ------------------------------------------------------------------------------------------ held-out scores
@torch.no_grad()
def _judge_scores(age, emotion, verifier, clip, bank) -> dict[str, float]:
    """One set of judges (age and emotion readers, a verifier, a text-image model) scored on one bank."""
    from cff_lib.vision_heldout import evaluate_clip, evaluate_estimators, evaluate_identity

    est = evaluate_estimators(age, emotion, bank).metrics
    ver = evaluate_identity(verifier, bank, FAR).metrics
    t2i = evaluate_clip(clip, bank).metrics
    return {"age_mae": est["age_mae"], "emotion_accuracy": est["emotion_accuracy"], "va_mae": est["va_mae"],
            "tar_at_far": ver["tar_at_far"], "threshold": ver["threshold"], "t2i_top1": t2i["t2i_top1"],
            "t2i_top1_chance": t2i["t2i_top1_chance"], "zero_shot_emotion_acc": t2i["zero_shot_emotion_acc"]}


def _conditions(banks: dict):
    """(bank key, condition suffix, bank) for every held-out bank as rendered ("") and degraded."""
    for key, bank in banks.items():
        yield key, "", bank
        yield key, "_degraded", _degraded(bank)


def evaluate_referees(models: dict[str, nn.Module], banks: dict) -> dict[str, float]:
    """Held-out scores per bank and condition ("clean" as rendered, "degraded" = :func:`corrupt`):
    age MAE, emotion accuracy, valence/arousal MAE, identity TAR at 1% FAR (+ threshold), text->image top-1."""
    att = models["attributes"]
    return {f"{name}_{key}{cond}": value for key, cond, bank in _conditions(banks)
            for name, value in _judge_scores(att, att, models["identity"], models["clip"], bank).items()}


def _degraded(bank):
    from cff_lib.face_banks import FaceBank

    x = ((corrupt(bank.floats(slice(None))) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return FaceBank(x, bank.identity, bank.age, bank.emotion, bank.intensity, bank.gender, bank.name + " (degraded)")


_TABLE_ROWS = (  # (quantity shown, key of _judge_scores, referee name, guide name)
    ("age MAE (years)", "age_mae", "AttributeReferee", "AgeEst"),
    ("emotion accuracy", "emotion_accuracy", "AttributeReferee", "EmoEst"),
    ("valence/arousal MAE", "va_mae", "AttributeReferee", "EmoEst"),
    ("identity TAR @ FAR 1%", "tar_at_far", "IdentityReferee", "ArcFace"),
    ("text->image top-1 (fits caption)", "t2i_top1", "TextImageReferee", "CLIP"),
)


def heldout_table(referees: Referees, guides, banks: dict):
    """Referees beside the guides they check, on held-out identities as rendered and degraded
    (:func:`corrupt`): one row per (quantity, role, judge), one column per bank and condition (pandas)."""
    import pandas as pd

    names = {"clean": "clean renders", "test": "ffhq+cacd test"}
    cols = {}
    for key, cond, bank in _conditions(banks):
        column = names.get(key, key) + (", degraded" if cond else "")
        cols[column] = {"referee": _judge_scores(referees.attributes, referees.attributes, referees.identity,
                                                 referees.clip, bank),
                        "guide": _judge_scores(guides.age, guides.emotion, guides.arcface, guides.clip, bank)}
    rows = []
    for shown, metric, referee, guide in _TABLE_ROWS:
        for role, judge in (("referee", referee), ("guide", guide)):
            rows.append({"quantity": shown, "role": role, "judge": judge,
                         **{c: scores[role][metric] for c, scores in cols.items()}})
    return pd.DataFrame(rows)


def heldout_figure(table):
    """Grouped bars of :func:`heldout_table`: per quantity, guide vs referee in each bank and condition."""
    import matplotlib.pyplot as plt

    quantities = list(dict.fromkeys(table["quantity"]))
    conds = [c for c in table.columns if c not in ("quantity", "role", "judge")]
    fig, axes = plt.subplots(1, len(quantities), figsize=(3.0 * len(quantities), 3.2), squeeze=False)
    x = np.arange(len(conds))
    for ax, q in zip(axes[0], quantities, strict=True):
        part = table[table["quantity"] == q]
        for k, (_, row) in enumerate(part.iterrows()):
            ax.bar(x + (k - 0.5) * 0.4, [row[c] for c in conds], 0.4, label=f"{row['role']}: {row['judge']}",
                   color="C0" if row["role"] == "referee" else "0.7")
        ax.set_xticks(x, [c.replace(", ", ",\n") for c in conds], fontsize=6, rotation=30)
        ax.set_title(q, fontsize=8)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    fig.suptitle("Referees (evaluation only) and guides (inside the losses) on held-out identities", fontsize=9)
    fig.tight_layout()
    return fig


def train_referees(profile, out_dir=None, *, steps: int | None = None, progress: bool = True,
                   only: tuple[str, ...] | None = None) -> dict[str, float]:
    """Train the three referees on their own render stream, score them on held-out identities and write
    ``referee_*.safetensors`` + provenance records into ``out_dir`` (default: the profile's weights folder).
    ``steps`` overrides every step count (tests). ``only``: retrain just these keys of REFEREE_FILES and load
    the others from ``out_dir`` (their records keep their own training config). Returns the held-out metrics."""
    from cff_lib.config import load_profile
    from cff_lib.model import weights_root
    from cff_lib.pretrain_vision import heldout_banks
    from cff_lib.pretraining import loss_curve
    from cff_lib.weights import save_weights

    profile = load_profile(profile) if isinstance(profile, str) else profile
    sc = scale_for(profile)
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps={steps!r} must be a positive integer or None")
    out_dir = Path(out_dir) if out_dir is not None else weights_root(profile)
    t0 = time.perf_counter()
    unknown = set(only or ()) - set(REFEREE_FILES)
    if unknown:
        raise ValueError(f"only={only!r}: unknown referees {sorted(unknown)}; choose from {list(REFEREE_FILES)}")
    bank = referee_bank(profile, progress=progress)
    trained, curves, seconds, kept, n_steps = {}, {}, {}, {}, {}
    for key, fn, n in (("attributes", train_attribute_referee, sc.attribute_steps),
                       ("identity", train_identity_referee, sc.identity_steps),
                       ("clip", train_clip_referee, sc.clip_steps)):
        if only is not None and key not in only:
            from cff_lib.weights import read_record, verified_path

            path = referee_paths(out_dir)[key]
            trained[key] = _load_one(key, verified_path(path))
            kept[key] = read_record(path)
            continue
        t = time.perf_counter()
        n_steps[key] = steps or n
        model, losses = fn(profile, bank, n_steps[key], progress=progress)
        trained[key], curves[key], seconds[key] = model.eval(), loss_curve(losses), time.perf_counter() - t
    metrics = evaluate_referees(trained, heldout_banks(profile, progress=progress))
    command = f"python -m cff_lib.referees --profile {profile.name}"
    for key, model in trained.items():
        if key in kept:  # not retrained: same tensors, record updated with the suite's new held-out scores
            config = {k: v for k, v in kept[key].config.items() if k != "architecture"}
            save_weights(model, out_dir / REFEREE_FILES[key], profile=profile, command=kept[key].command,
                         metrics=metrics, config=config)
            continue
        save_weights(model, out_dir / REFEREE_FILES[key], profile=profile, command=command, metrics=metrics,
                     config={"steps": n_steps[key],
                             "scale": sc.__dict__, "train_seconds": round(seconds[key], 1),
                             "stream": REFEREE_STREAM, "seed": profile.train.seed + REFEREE_SEED_OFFSET,
                             "loss_curve": curves[key], "role": "referee (evaluation only)"})
    metrics["train_seconds_total"] = time.perf_counter() - t0
    return metrics


def ensure_referees(profile, *, retrain: bool = False, progress: bool = True) -> tuple[Referees, dict]:
    """Train when ``retrain`` or a referee file is missing (synthetic world), then load them verified."""
    from cff_lib.model import weights_root

    folder = weights_root(profile)
    report = {}
    if profile.data.world == "synthetic" and (retrain or any(not p.is_file() for p in referee_paths(folder).values())):
        report = train_referees(profile, folder, progress=progress)
    return load_referees(profile), report


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Train the synthetic world's referees (evaluation-only judges).")
    parser.add_argument("--profile", default="toy")
    parser.add_argument("--out", default=None, help="weights folder (default: the profile's)")
    args = parser.parse_args(argv)
    metrics = train_referees(args.profile, args.out)
    for k, v in sorted(metrics.items()):
        print(f"{k:40s} {v:.4f}")


if __name__ == "__main__":
    main()
