"""Edit your own face, or generate faces, with a trained ClipFaceFusion (``cff edit``, ``cff generate``, the
web editor of ``cff_lib.app`` and notebook 04's interactive cell all run through here).

Inputs are checked before anything heavy is loaded, and a bad one is an :class:`InputError` (a ValueError)
naming it; nothing is written then:

- a face: any file Pillow reads (its first frame), at most :data:`FACE_MAX_PIXELS` pixels (decompression
  bombs are refused, whatever ``PIL.Image.MAX_IMAGE_PIXELS`` says), centre-cropped to a square and resized to
  the profile's resolution (``cff_lib.preprocessing.load_image``);
- a voice: any file soundfile reads, at most :data:`MAX_CLIP_SECONDS` long, not silent, no NaN; mixed to mono,
  resampled to the profile's rate (16 kHz), its first ``data.max_audio_seconds`` used, normalised
  (``cff_lib.preprocessing.load_audio``);
- target age in ``cff_lib.ages.AGE_LIMITS`` (0-120 years), emotion one of ``cff_lib.emotions.EMOTIONS``,
  intensity in [0, 1], 1 <= t0 <= 999 and 1 <= steps <= t0.

The edit is the paper's zero-shot edit (``ClipFaceFusion.edit``): invert the face unconditionally to t0
(Eq. 9), then sample conditioned on c (Eq. 30); ``steps`` DDIM steps each way.

Emotion intensity. The model's c does not depend on ``intensity`` (it only sets the valence/arousal target
of L_Emo in training), so an intensity below 1 here blends c linearly between the target without the emotion
label and with it: c = c_without + s (c_with - c_without). At s = 1 the edit is exactly ``model.edit``'s.

:class:`Editor` keeps the inversion (and the unconditioned reconstruction) of the last faces, so moving a
slider in the web editor re-runs only the conditioned half.

What the result looks like is read by the *referees* (``cff_lib.referees``), judges no loss has seen: age,
emotion and identity similarity to the input. When the referee weights are missing the edit is still
written and one line says why there are no readings.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cff_lib.emotions import EMOTIONS

FACE_MAX_PIXELS = 40_000_000
"""Largest face image accepted (width x height): a 40-megapixel photo; more is treated as a decompression bomb."""

EXIF_ORIENTATION = 0x0112
"""EXIF tag of how a photo is stored (1 = upright; phones often store portraits turned, with 6 or 8)."""

FACE_MAX_BYTES = 100 * 1024 * 1024
"""Largest face file accepted (bytes)."""

MAX_CLIP_SECONDS = 30.0
"""Longest voice clip accepted (seconds); the model reads only its first ``data.max_audio_seconds``."""

MAX_GENERATE = 64
"""Most faces one ``cff generate`` draws."""

SATURATED = 0.25
"""``cff generate`` warns when more than this share of the pixels left [-1, 1] before clamping (a saturated chain)."""

OUTPUT_SUFFIXES = (".png",)
"""What ``--out`` may end in (lossless: the result's pixels are exactly the model's)."""

ProgressFn = Callable[[int, int, str], None]
"""progress(done, total, stage): called after every UNet evaluation of a DDIM chain."""


class InputError(ValueError):
    """A user input that cannot be used; the message names the input and what is wrong."""


# ------------------------------------------------------------------------------------------ checks
def _finite_number(value: Any, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(x):
        raise InputError(f"{name}={value!r} must be a finite number")
    return x


def check_age(age: Any) -> float | None:
    """Target age in years (``cff_lib.ages.AGE_LIMITS``), or None."""
    if age is None:
        return None
    from cff_lib.ages import AGE_LIMITS

    years = _finite_number(age, "age")
    lo, hi = AGE_LIMITS
    if not lo <= years <= hi:
        raise InputError(f"age={age!r} is outside [{lo:g}, {hi:g}] years")
    return years


def check_emotion(emotion: Any) -> str | None:
    """One of ``EMOTIONS`` (case and surrounding blanks ignored), or None."""
    if emotion is None or (isinstance(emotion, str) and emotion.strip().lower() in ("", "none", "(none)")):
        return None
    name = str(emotion).strip().lower()
    if name not in EMOTIONS:
        raise InputError(f"emotion={emotion!r} is not an emotion; expected one of {', '.join(EMOTIONS)}")
    return name


def check_intensity(intensity: Any) -> float:
    x = _finite_number(intensity, "intensity")
    if not 0.0 <= x <= 1.0:
        raise InputError(f"intensity={intensity!r} must lie in [0, 1]")
    return x


def check_gender(gender: Any) -> str | None:
    from cff_lib.captions import GENDERS

    if gender is None or gender == "":
        return None
    if gender not in GENDERS:
        raise InputError(f"gender={gender!r} must be one of {', '.join(GENDERS)}")
    return str(gender)


def check_text(text: Any) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    text = " ".join(text.split())
    if len(text) > 500:
        raise InputError(f"text is {len(text)} characters long; at most 500")
    return text or None


def check_schedule(t0: Any, steps: Any) -> tuple[int, int]:
    """(t0, steps) as ints with 1 <= t0 <= 999 and 1 <= steps <= t0."""
    out = []
    for name, v in (("t0", t0), ("steps", steps)):
        x = _finite_number(v, name)
        if x != int(x):
            raise InputError(f"{name}={v!r} must be a whole number")
        out.append(int(x))
    t0_, steps_ = out
    if not 1 <= t0_ <= 999:
        raise InputError(f"t0={t0!r} is outside [1, 999] (the DDPM's timesteps)")
    if not 1 <= steps_ <= t0_:
        raise InputError(f"steps={steps!r} must lie in [1, t0={t0_}] (one DDIM step per timestep at most)")
    return t0_, steps_


def check_output(out: Any, *, inputs: Sequence[Any] = ()) -> Path:
    """An output path ending in .png that is not a folder and not one of ``inputs``."""
    if out is None or str(out) == "":
        raise InputError("--out is required (where to write the PNG)")
    path = Path(out)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"out={str(path)!r} must end in {' or '.join(OUTPUT_SUFFIXES)}")
    if path.is_dir():
        raise InputError(f"out={str(path)!r} is a folder")
    for p in inputs:
        if p is not None and Path(p).exists() and path.exists() and os.path.samefile(p, path):
            raise InputError(f"out={str(path)!r} is an input file; refusing to overwrite it")
    return path


# ------------------------------------------------------------------------------------------ reading inputs
@dataclass(frozen=True)
class Face:
    image: torch.Tensor  # (3, size, size) float32 in [-1, 1]
    note: str  # what was done to the file, for the user


@dataclass(frozen=True)
class Voice:
    wave: torch.Tensor  # (N,) float32 at the profile's rate, zero mean, unit variance
    note: str


def read_face(path: str | os.PathLike, size: int) -> Face:
    """A face file -> (3, size, size) in [-1, 1], centre-cropped and resized; InputError naming the file.

    Refuses empty, truncated and non-image files and images over :data:`FACE_MAX_PIXELS` pixels
    (``DecompressionBombError`` / ``DecompressionBombWarning`` are errors here).
    """
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    from cff_lib.preprocessing import load_image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"face {str(path)!r}: no such file")
    nbytes = path.stat().st_size
    if nbytes == 0:
        raise InputError(f"face {str(path)!r} is an empty file")
    if nbytes > FACE_MAX_BYTES:
        raise InputError(f"face {str(path)!r} is {nbytes / 2**20:.0f} MiB; at most {FACE_MAX_BYTES // 2**20} MiB")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone in this process allows truncated files; we do not
        raise InputError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process: cannot tell a truncated "
                         f"face file ({str(path)!r}) from a whole one")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
                fmt, mode = im.format, im.mode
                if w * h > FACE_MAX_PIXELS:
                    raise InputError(f"face {str(path)!r} is {w}x{h} = {w * h / 1e6:.0f} megapixels; at most "
                                     f"{FACE_MAX_PIXELS / 1e6:.0f} (a decompression bomb?)")
                im.load()  # decodes: a truncated or corrupt file fails here
                orientation = im.getexif().get(EXIF_ORIENTATION, 1)
                upright = ImageOps.exif_transpose(im) if orientation not in (1, None) else None
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"face {str(path)!r} is refused as a decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise InputError(f"face {str(path)!r} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InputError(f"face {str(path)!r} cannot be decoded (truncated or corrupt?): {err}") from None
    if min(w, h) < 1:
        raise InputError(f"face {str(path)!r} is empty ({w}x{h})")
    try:
        if upright is None:
            image = load_image(path, size)
        else:  # a phone photo stored sideways: crop and resize the upright picture (a temporary lossless copy)
            w, h = upright.size
            with tempfile.TemporaryDirectory(prefix="cff-face-") as tmp:
                upright.save(Path(tmp) / "upright.png", format="PNG")
                image = load_image(Path(tmp) / "upright.png", size)
    except ValueError as err:
        raise InputError(str(err)) from None
    side = min(w, h)
    crop = f"centre-cropped to {side}x{side} and " if w != h else ""
    resize = f"resized to {size}x{size}" if side != size else f"kept at {size}x{size}"
    rotated = f"turned upright (EXIF orientation {orientation}), " if upright is not None else ""
    return Face(torch.from_numpy(image), f"face {path.name}: {fmt} {w}x{h} {mode}, {rotated}{crop}{resize} (the "
                                         "profile's resolution)")


def read_voice(path: str | os.PathLike, sample_rate: int, max_seconds: float) -> Voice:
    """A voice clip -> mono waveform at ``sample_rate``, first ``max_seconds``, normalised; InputError naming
    the file for an unreadable, empty, over-long (> :data:`MAX_CLIP_SECONDS`), NaN or silent clip."""
    import soundfile as sf

    from cff_lib.preprocessing import load_audio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio {str(path)!r}: no such file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise InputError(f"audio {str(path)!r} is not a sound file soundfile can read: {err}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise InputError(f"audio {str(path)!r} is empty (no samples)")
    seconds = info.frames / info.samplerate
    if seconds > MAX_CLIP_SECONDS:
        raise InputError(f"audio {str(path)!r} is {seconds:.1f} s long; at most {MAX_CLIP_SECONDS:g} s "
                         f"(the model reads the first {max_seconds:g} s: trim it)")
    try:
        wave = load_audio(path, sample_rate, max_seconds=max_seconds)
    except ValueError as err:
        raise InputError(str(err)) from None
    mono = f"{info.channels} channels mixed to mono, " if info.channels > 1 else ""
    rate = (f"resampled {info.samplerate} -> {sample_rate} Hz" if info.samplerate != sample_rate
            else f"at {sample_rate} Hz")
    used = f", first {max_seconds:g} s used" if seconds > max_seconds else ""
    return Voice(torch.from_numpy(wave), f"audio {path.name}: {info.format} {seconds:.2f} s, {mono}{rate}{used}, "
                                         "normalised to zero mean and unit variance")


# ------------------------------------------------------------------------------------------ conditions
@dataclass(frozen=True)
class Target:
    """What to edit toward (every field optional; validated by :func:`make_target`)."""

    text: str | None = None
    age: float | None = None
    emotion: str | None = None
    intensity: float = 1.0
    gender: str | None = None  # "female" | "male": only words the default caption
    voice: Voice | None = None

    @property
    def empty(self) -> bool:
        return self.text is None and self.age is None and self.emotion is None and self.voice is None

    @property
    def caption(self) -> str:
        """The target text T: ``text`` if given, else built from age, emotion and gender."""
        from cff_lib.captions import caption_from_attributes, source_caption

        if self.text:
            return self.text
        if self.age is None and self.emotion is None:
            return source_caption(self.gender)
        return caption_from_attributes(self.age, self.emotion, self.gender)

    def describe(self) -> str:
        parts = [f"text {self.caption!r}" + ("" if self.text else " (from the other targets)")]
        if self.age is not None:
            parts.append(f"age {self.age:g} y")
        if self.emotion is not None:
            parts.append(f"emotion {self.emotion} at intensity {self.intensity:g}")
        if self.voice is not None:
            parts.append("a voice clip")
        return ", ".join(parts)


def make_target(text: Any = None, age: Any = None, emotion: Any = None, intensity: Any = 1.0,
                gender: Any = None, voice: Voice | None = None) -> Target:
    """A validated :class:`Target` (InputError naming the first bad input)."""
    return Target(check_text(text), check_age(age), check_emotion(emotion), check_intensity(intensity),
                  check_gender(gender), voice)


def conditions_for(target: Target, batch: int) -> dict[str, Any] | None:
    """The model's condition dict (``cff_lib.model``) for ``batch`` copies of ``target``; None if it is empty
    (then the edit is the unconditioned reconstruction)."""
    from cff_lib.captions import source_caption

    if target.empty:
        return None
    cond = {"caption": [target.caption] * batch, "source_caption": [source_caption(target.gender)] * batch,
            "target_age": [target.age] * batch, "target_emotion": [target.emotion] * batch,
            "intensity": [target.intensity if target.emotion is not None else None] * batch,
            "audio": [target.voice.wave if target.voice is not None else None] * batch}
    return cond


def _batch_conditions(targets: Sequence[Target]) -> dict[str, list]:
    """One condition dict for several targets; an empty target conditions on its caption alone."""
    conds = [conditions_for(t, 1) or conditions_for(Target(text=t.caption, gender=t.gender), 1) for t in targets]
    return {k: [c[k][0] for c in conds] for k in conds[0]}


def _without_emotion(t: Target) -> Target:
    from dataclasses import replace

    return replace(t, emotion=None, intensity=1.0)


# ------------------------------------------------------------------------------------------ the editor
@contextmanager
def _counting_unet_calls(unet: torch.nn.Module, total: int, stage: str, progress: ProgressFn | None,
                         done: list[int]):
    """Call ``progress(done, total, stage)`` after every forward of ``unet`` (one per DDIM step)."""
    if progress is None:
        yield
        return

    def hook(*_):
        done[0] += 1
        progress(done[0], total, stage)

    handle = unet.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class Readings:
    """The referees' readings of a batch of images."""

    age: np.ndarray  # (B,) years
    emotion: list[str]  # (B,) most probable emotion
    emotion_prob: np.ndarray  # (B,) its probability
    identity: np.ndarray | None  # (B,) cosine to the source images, or None
    threshold: float  # the identity referee's same-person threshold (1% false accepts)


@dataclass
class Editor:
    """A loaded model (and, lazily, the referees) that edits, reconstructs and generates faces.

    ``referees``: a ``cff_lib.referees.Referees``, or None to load the profile's on first use; when they
    cannot be loaded, :attr:`referee_note` says why and readings are None.
    """

    model: Any
    profile: Any
    referees: Any = None
    cache_size: int = 16
    referee_note: str | None = None
    last_clipped: float | None = None  # share of the last generation's pixels outside [-1, 1] before clamping
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _referees_tried: bool = False

    @classmethod
    def load(cls, profile: str | Any = "toy", **kwargs) -> Editor:
        """The trained ClipFaceFusion of ``profile`` (``model.load_trained_model``)."""
        from cff_lib.config import load_profile
        from cff_lib.model import load_trained_model

        p = load_profile(profile) if isinstance(profile, str) else profile
        return cls(load_trained_model(p), p, **kwargs)

    @property
    def size(self) -> int:
        return int(self.profile.data.image_size)

    @property
    def spacing(self) -> str:
        return self.profile.ddim.spacing

    def default_schedule(self) -> tuple[int, int]:
        return int(self.profile.ddim.edit_start()), int(self.profile.ddim.n_gen_steps)

    def read_face(self, path) -> Face:
        return read_face(path, self.size)

    def read_voice(self, path) -> Voice:
        d = self.profile.data
        return read_voice(path, d.sample_rate, d.max_audio_seconds)

    def condition(self, targets: Sequence[Target], reference: torch.Tensor | None) -> torch.Tensor:
        """c (N, cond_dim) of ``targets`` (with I_ref = ``reference`` (N, 3, H, W) or none), each emotion
        weighted by its intensity (module docstring)."""
        model = self.model
        ref = {} if reference is None else {"reference": reference.to(model.device)}
        c = model.condition({**_batch_conditions(targets), **ref}).c
        s = torch.tensor([t.intensity if t.emotion is not None else 1.0 for t in targets], device=c.device)
        if bool((s < 1.0).any()):
            c0 = model.condition({**_batch_conditions([_without_emotion(t) for t in targets]), **ref}).c
            c = torch.where((s < 1.0)[:, None], c0 + s[:, None].to(c.dtype) * (c - c0), c)
        return c

    # -------------------------------------------------------------- DDIM halves (cached per face)
    def _key(self, image: torch.Tensor, t0: int, steps: int) -> tuple:
        digest = hashlib.sha1(image.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
        return digest, int(t0), int(steps), self.spacing

    def _remember(self, key, value) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    @torch.no_grad()
    def _inverted(self, image: torch.Tensor, t0: int, steps: int, progress, done, total) -> dict:
        """{"x_t0": (1, 3, H, W)} of ``image`` (3, H, W), inverted with c = None (Eq. 9); cached."""
        from cff_lib import ddim

        key = self._key(image, t0, steps)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        x = image[None].to(self.model.device)
        with _counting_unet_calls(self.model.unet, total, "inverting", progress, done):
            entry = {"x_t0": ddim.invert(self.model.unet, x, None, t0, steps, spacing=self.spacing)}
        self._remember(key, entry)
        return entry

    def _chains(self, preserve: float | None) -> int:
        """Conditioned reverse chains per edit: 1, or 2 for the preserving edit (plain edit, then preserved)."""
        return 1 if preserve is None else 2

    @torch.no_grad()
    def _reconstructed(self, entry: dict, t0: int, steps: int, progress, done, total) -> dict:
        """``entry`` with the reconstruction (3, H, W) and every level of its chain (the preserving edit keeps
        them outside its mask, ``cff_lib.ddim``), computed once per face and schedule."""
        from cff_lib import ddim

        if "levels" not in entry:
            levels: list[torch.Tensor] = []
            with _counting_unet_calls(self.model.unet, total, "reconstructing", progress, done):
                ddim.sample(self.model.unet, entry["x_t0"], None, t0, steps, spacing=self.spacing, levels_out=levels)
            entry["levels"], entry["reconstruction"] = levels, levels[-1].clamp(-1, 1)[0].cpu()
        return entry

    def _edited(self, entry: dict, c: torch.Tensor | None, t0: int, steps: int, preserve: float | None):
        """The reverse chain(s) from the cached x_t0 under c (N, D): the plain edit, or the preserving edit
        (``ddim.preserving_sample`` on the cached reconstruction's levels). (N, 3, H, W), unclamped."""
        from cff_lib import ddim

        n = 1 if c is None else c.shape[0]
        x_t0 = entry["x_t0"].expand(n, -1, -1, -1)
        if preserve is None or c is None:
            return ddim.sample(self.model.unet, x_t0, c, t0, steps, spacing=self.spacing)
        return ddim.preserving_sample(self.model.unet, x_t0, c, t0, steps, entry["levels"], preserve,
                                      spacing=self.spacing)

    @torch.no_grad()
    def edit(self, image: torch.Tensor, target: Target, t0: int, steps: int, *, reconstruction: bool = False,
             progress: ProgressFn | None = None) -> dict[str, torch.Tensor]:
        """Edit one face (3, H, W) toward ``target``: {"edit": (3, H, W)} and, if asked, {"reconstruction"}.

        Equal to ``model.edit(image[None], conditions_for(target, 1), t0, steps, preserve_threshold=...)`` with
        the profile's ``ddim.preserve_threshold``. The inversion and the reconstruction (with its levels) are
        reused for a face seen with the same t0 and steps; the preserving edit runs two conditioned chains.
        """
        from cff_lib.encoder_base import check_images

        t0, steps = check_schedule(t0, steps)
        check_images(image[None], argument="image", size=self.size)
        cached = self._cache.get(self._key(image, t0, steps))
        preserve = None if target.empty else self.profile.ddim.preserve_threshold
        need_recon = (reconstruction or preserve is not None) and not (cached and "levels" in cached)
        total = (0 if cached else steps) + steps * self._chains(preserve) + (steps if need_recon else 0)
        done = [0]
        self.model.eval()
        entry = self._inverted(image, t0, steps, progress, done, total)
        if reconstruction or preserve is not None:
            self._reconstructed(entry, t0, steps, progress, done, total)
        with _counting_unet_calls(self.model.unet, total, "editing", progress, done):
            c = None if target.empty else self.condition([target], image[None])
            out = {"edit": self._edited(entry, c, t0, steps, preserve).clamp(-1, 1)[0].cpu()}
        if reconstruction:
            out["reconstruction"] = entry["reconstruction"]
        return out

    @torch.no_grad()
    def reconstruct(self, image: torch.Tensor, t0: int, steps: int, *,
                    progress: ProgressFn | None = None) -> torch.Tensor:
        """The unconditioned reconstruction (3, H, W) of ``image`` (invert, sample with c = None); cached with
        the inversion and its levels, so a later :meth:`edit` of the face runs only the conditioned chain(s)."""
        t0, steps = check_schedule(t0, steps)
        cached = self._cache.get(self._key(image, t0, steps))
        if cached and "levels" in cached:
            return cached["reconstruction"]
        total, done = (0 if cached else steps) + steps, [0]
        self.model.eval()
        entry = self._inverted(image, t0, steps, progress, done, total)
        return self._reconstructed(entry, t0, steps, progress, done, total)["reconstruction"]

    def is_prepared(self, image: torch.Tensor, t0: int, steps: int) -> bool:
        """Whether ``image``'s inversion for (t0, steps) is cached."""
        return self._key(image, t0, steps) in self._cache

    @torch.no_grad()
    def edit_many(self, image: torch.Tensor, targets: Sequence[Target], t0: int, steps: int, *,
                  progress: ProgressFn | None = None) -> torch.Tensor:
        """One face edited toward each target (e.g. an age strip) in one batch: (N, 3, H, W), preserving
        as :meth:`edit` does."""
        if len(targets) == 0:
            raise InputError("no targets to edit toward")
        t0, steps = check_schedule(t0, steps)
        if any(t.empty for t in targets):
            raise InputError("every target of a series needs at least one condition")
        cached = self._cache.get(self._key(image, t0, steps))
        preserve = self.profile.ddim.preserve_threshold
        need_recon = preserve is not None and not (cached and "levels" in cached)
        total, done = (0 if cached else steps) + steps * self._chains(preserve) + (steps if need_recon else 0), [0]
        self.model.eval()
        entry = self._inverted(image, t0, steps, progress, done, total)
        if preserve is not None:
            self._reconstructed(entry, t0, steps, progress, done, total)
        n = len(targets)
        with _counting_unet_calls(self.model.unet, total, "editing", progress, done):
            c = self.condition(targets, image[None].expand(n, -1, -1, -1))
            out = self._edited(entry, c, t0, steps, preserve)
        return out.clamp(-1, 1).cpu()

    @torch.no_grad()
    def generate(self, target: Target, n: int, steps: int, seed: int = 0, *,
                 progress: ProgressFn | None = None) -> torch.Tensor:
        """``n`` faces drawn from x_T ~ N(0, I) toward ``target`` (no reference image): (n, 3, H, W)."""
        from cff_lib import ddim

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_GENERATE:
            raise InputError(f"n={n!r} must be a whole number in [1, {MAX_GENERATE}]")
        _, steps = check_schedule(999, steps)
        gen = torch.Generator(device=self.model.device).manual_seed(int(seed))
        self.model.eval()
        with _counting_unet_calls(self.model.unet, steps, "generating", progress, [0]):
            c = self.condition([target] * int(n), None)  # as model.generate: no reference image
            out = ddim.generate(self.model.unet, c, steps, generator=gen, spacing=self.spacing)
        self.last_clipped = float((out.abs() > 1.0).float().mean())  # share of pixels outside [-1, 1]
        return out.clamp(-1, 1).cpu()

    # -------------------------------------------------------------- referees
    def _load_referees(self):
        if self.referees is None and not self._referees_tried:
            from cff_lib.referees import load_referees

            self._referees_tried = True
            try:
                self.referees = load_referees(self.profile)
            except FileNotFoundError:
                from cff_lib.model import weights_root

                self.referee_note = (f"no readings: the referee weights of profile {self.profile.name!r} are not "
                                     f"in {weights_root(self.profile)} yet (`python -m cff_lib.referees --profile "
                                     f"{self.profile.name}` trains them); the result is written without readings")
            except ValueError as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                self.referee_note = f"no readings: the referees cannot be loaded ({first[:200]})"
        return self.referees

    def read(self, images: torch.Tensor, source: torch.Tensor | None = None) -> Readings | None:
        """The referees' readings of ``images`` (B, 3, H, W), with identity similarity to ``source`` (same
        shape) if given; None (and :attr:`referee_note` set) when the referees are unavailable."""
        refs = self._load_referees()
        if refs is None:
            return None
        r = refs.read(images.float())
        probs = r["emotion_probs"]
        idx = probs.argmax(1)
        ident = None if source is None else refs.identity_similarity(source.float(), images.float())
        return Readings(np.asarray(r["age"]), [EMOTIONS[i] for i in idx], probs[np.arange(len(idx)), idx],
                        None if ident is None else np.asarray(ident), float(refs.identity_threshold))


# ------------------------------------------------------------------------------------------ formatting, images
def describe_edit(before: Readings | None, after: Readings | None, target: Target, note: str | None,
                  i: int = 0) -> list[str]:
    """Lines reporting the referees' readings of source (``before``) and edit (``after``), sample ``i``."""
    if after is None:
        return [f"referees: {note or 'no referee readings'}"]
    lines = ["referees (evaluation-only judges, never trained against):"]
    tgt = f"   (target {target.age:g})" if target.age is not None else ""
    src = f"{before.age[i]:.1f} y -> " if before is not None else ""
    lines.append(f"  age       {src}{after.age[i]:.1f} y{tgt}")
    src = f"{before.emotion[i]} {before.emotion_prob[i]:.2f} -> " if before is not None else ""
    tgt = f"   (target {target.emotion})" if target.emotion is not None else ""
    lines.append(f"  emotion   {src}{after.emotion[i]} {after.emotion_prob[i]:.2f}{tgt}")
    if after.identity is not None:
        same = "same person" if after.identity[i] >= after.threshold else "NOT the same person"
        lines.append(f"  identity  {after.identity[i]:.3f} cosine to the input ({same} at the referee's "
                     f"1%-false-accept threshold {after.threshold:.3f})")
    return lines


def to_pil(image: torch.Tensor, upscale: int = 1):
    """(3, H, W) in [-1, 1] -> RGB PIL image, enlarged ``upscale`` times (nearest neighbour)."""
    from PIL import Image

    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    im = Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")
    if upscale > 1:
        im = im.resize((im.width * upscale, im.height * upscale), Image.Resampling.NEAREST)
    return im


def image_grid(images: torch.Tensor, columns: int | None = None, gap: int = 2, upscale: int = 1):
    """(N, 3, H, W) in [-1, 1] -> one RGB PIL image, ``columns`` per row (default about sqrt(N)), white gaps."""
    from PIL import Image

    n = images.shape[0]
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    tiles = [to_pil(x, upscale) for x in images]
    w, h = tiles[0].size
    grid = Image.new("RGB", (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap), "white")
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % cols) * (w + gap), (k // cols) * (h + gap)))
    return grid


def difference_heatmap(a: torch.Tensor, b: torch.Tensor, upscale: int = 1):
    """(RGB PIL heat map of the per-pixel mean |a - b| over channels, its mean) for (3, H, W) images in
    [-1, 1]; the colour scale is fixed (0 = black, 1 = half the [-1, 1] range and above = white-hot)."""
    from matplotlib import colormaps
    from PIL import Image

    diff = (a.float() - b.float()).abs().mean(0).cpu().numpy()  # (H, W) in [0, 2]
    rgb = (colormaps["inferno"](np.clip(diff, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)
    im = Image.fromarray(rgb, "RGB")
    if upscale > 1:
        im = im.resize((im.width * upscale, im.height * upscale), Image.Resampling.NEAREST)
    return im, float(diff.mean())


def save_png(image, out: str | os.PathLike) -> Path:
    """Write a PIL image to ``out`` atomically (``cff_lib.atomic``)."""
    from cff_lib.atomic import atomic_path

    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG")
    return Path(out)


# ------------------------------------------------------------------------------------------ the commands
def _tqdm_progress(desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=1, desc=desc, unit="step", leave=False)

    def progress(done: int, total: int, stage: str) -> None:
        if bar.total != total:
            bar.total = total
        bar.set_description(f"{desc}: {stage}", refresh=False)
        bar.update(done - bar.n)  # respects tqdm's minimum refresh interval

    return bar, progress


def run_edit(face: str | os.PathLike, out: str | os.PathLike, *, text=None, age=None, emotion=None,
             intensity=1.0, gender=None, audio=None, t0=None, steps=None, profile: str = "toy", upscale: int = 1,
             editor: Editor | None = None, echo: Callable[[str], None] = print) -> Path:
    """``cff edit``: check every input, edit ``face``, write ``out`` (PNG, atomically), print the referees'
    readings. Raises InputError (nothing written) for a bad input."""
    from cff_lib.config import load_profile

    out = check_output(out, inputs=[face, audio])
    upscale = _check_upscale(upscale)
    target = make_target(text, age, emotion, intensity, gender)  # cheap checks first: no model loaded yet
    p = editor.profile if editor is not None else load_profile(profile)
    t0, steps = check_schedule(p.ddim.edit_start() if t0 is None else t0,
                               p.ddim.n_gen_steps if steps is None else steps)
    d = p.data
    src = read_face(face, d.image_size)
    echo(src.note)
    if audio is not None:
        voice = read_voice(audio, d.sample_rate, d.max_audio_seconds)
        echo(voice.note)
        target = Target(target.text, target.age, target.emotion, target.intensity, target.gender, voice)
    echo(f"target: {target.describe()}" if not target.empty else
         "target: none given -> the unconditioned reconstruction (inversion, then sampling with c = None)")
    echo(f"DDIM: invert to t0={t0} in {steps} steps, sample back in {steps} steps (profile {p.name})")
    if editor is None:
        echo(f"loading the trained ClipFaceFusion of profile {p.name} ...")
        editor = Editor.load(p)
    bar, progress = _tqdm_progress("edit")
    try:
        result = editor.edit(src.image, target, t0, steps, progress=progress)["edit"]
    finally:
        bar.close()
    source = src.image[None]
    after = editor.read(result[None], source)
    before = editor.read(source) if after is not None else None
    for line in describe_edit(before, after, target, editor.referee_note):
        echo(line)
    save_png(to_pil(result, upscale), out)
    echo(f"wrote {out} ({result.shape[-1] * upscale}x{result.shape[-2] * upscale} PNG)")
    return out


def run_generate(out: str | os.PathLike, n: int, *, text=None, age=None, emotion=None, intensity=1.0,
                 gender=None, audio=None, steps=None, seed: int = 0, profile: str = "toy", upscale: int = 1,
                 editor: Editor | None = None, echo: Callable[[str], None] = print) -> Path:
    """``cff generate``: ``n`` faces toward the target from pure noise, written as one grid PNG (atomically),
    each sample's referee readings printed."""
    from cff_lib.config import load_profile

    out = check_output(out, inputs=[audio])
    upscale = _check_upscale(upscale)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_GENERATE:
        raise InputError(f"n={n!r} must be a whole number in [1, {MAX_GENERATE}]")
    target = make_target(text, age, emotion, intensity, gender)
    p = editor.profile if editor is not None else load_profile(profile)
    _, steps = check_schedule(999, p.ddim.n_gen_steps if steps is None else steps)
    if audio is not None:
        voice = read_voice(audio, p.data.sample_rate, p.data.max_audio_seconds)
        echo(voice.note)
        target = Target(target.text, target.age, target.emotion, target.intensity, target.gender, voice)
    echo(f"target: {target.describe()}")
    echo(f"DDIM: {n} faces from x_T ~ N(0, I), {steps} steps from t = 999, seed {seed} (profile {p.name})")
    if editor is None:
        echo(f"loading the trained ClipFaceFusion of profile {p.name} ...")
        editor = Editor.load(p)
    bar, progress = _tqdm_progress("generate")
    try:
        faces = editor.generate(target, int(n), steps, seed, progress=progress)
    finally:
        bar.close()
    if editor.last_clipped is not None and editor.last_clipped > SATURATED:
        echo(f"warning: {100 * editor.last_clipped:.0f}% of the pixels fell outside [-1, 1] before clamping: "
             f"this model does not turn pure noise into faces (profile {p.name}); editing a real face "
             "(cff edit) is what it was trained for")
    readings = editor.read(faces)
    if readings is None:
        echo(f"referees: {editor.referee_note}")
    else:
        echo("referees (evaluation-only judges, never trained against):")
        for i in range(faces.shape[0]):
            echo(f"  face {i + 1:>2}: age {readings.age[i]:5.1f} y, emotion {readings.emotion[i]} "
                 f"{readings.emotion_prob[i]:.2f}")
    save_png(image_grid(faces, upscale=upscale), out)
    echo(f"wrote {out} ({faces.shape[0]} faces of {faces.shape[-1]}x{faces.shape[-2]}, grid PNG)")
    return out


def _check_upscale(upscale: Any) -> int:
    if isinstance(upscale, bool) or not isinstance(upscale, (int, np.integer)) or not 1 <= upscale <= 32:
        raise InputError(f"upscale={upscale!r} must be a whole number in [1, 32]")
    return int(upscale)


__all__ = ["Editor", "Face", "InputError", "Readings", "Target", "Voice", "check_age", "check_emotion",
           "check_intensity", "check_output", "check_schedule", "conditions_for", "describe_edit",
           "difference_heatmap", "image_grid", "make_target", "read_face", "read_voice", "run_edit",
           "run_generate", "save_png", "to_pil"]
