"""The synthetic world: FFHQ-, CACD2000-, RAVDESS- and VoxCeleb-shaped datasets with exact ground truth.

The paper trains and evaluates on FFHQ, CACD2000, RAVDESS and VoxCeleb ("Datasets", Sect. 4.1). This module
writes seeded stand-ins under the real datasets' own file names (:mod:`cff_lib.naming`), so the same loading
code reads a real copy or a synthetic one:

- ``ffhq/``: ``00000/00042.png`` faces, each a new identity at a random age (16-99) and emotion;
- ``cacd/``: ``<age>_<Name>_<idx:04d>.jpg``, each synthetic celebrity photographed at many ages over 16-99;
- ``ravdess/``: ``Actor_AA/03-01-EE-II-SS-RR-AA.wav`` audio-only speech, odd actors male, actors aged 21-33;
- ``voxceleb/``: ``idNNNNN/<video>/NNNNN.wav`` free speech plus VoxCeleb1's tab-separated ``vox1_meta.csv``.

Ground truth the real sets lack sits in one ``synthetic_attributes.csv`` per dataset (``SIDECAR_NAME``), with
columns ``SIDECAR_COLUMNS``: the relative ``path`` first, then identity, gender, age, emotion, intensity,
valence, arousal and caption. Intensity is the expression/prosody strength in [0, 1]; RAVDESS codes map
normal -> 0.5 and strong -> 1.0, and neutral faces and VoxCeleb clips record 1.0.

Every file's randomness derives from ``np.random.SeedSequence([seed, dataset, kind, a, b])`` (fixed length,
so no two keys collide), so any file can be regenerated alone (:func:`ffhq_sample`, :func:`cacd_samples`,
:func:`ravdess_sample`, :func:`vox_samples`) and the same seed gives byte-identical files. Each dataset is
written into ``<name>.partial/`` and renamed to ``<name>`` only when complete.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.atomic import atomic_path, atomic_write_text
from cff_lib.captions import caption_from_attributes
from cff_lib.emotions import EMOTIONS, emotion_index, valence_arousal
from cff_lib.manifests import DATASETS, SIDECAR_NAME, VOX_META_NAME
from cff_lib.naming import (
    STATEMENTS,
    CacdName,
    RavdessName,
    VoxCelebName,
    format_cacd,
    format_ffhq,
    format_ravdess,
    format_voxceleb,
)
from cff_lib.synthetic_faces import FaceAttributes, Identity, render_face, sample_identity
from cff_lib.synthetic_voices import SpeakerVoice, speaker_voice, synthesize_voice, write_wav

SIDECAR_COLUMNS: tuple[str, ...] = ("path", "identity", "gender", "age", "emotion", "intensity", "valence",
                                    "arousal", "caption")
"""Columns of the sidecar, in order."""
VOX_META_COLUMNS: tuple[str, ...] = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
"""Columns of ``vox1_meta.csv`` as VoxCeleb1 spells them."""
VOX_FIRST_SPEAKER = 10001
"""VoxCeleb1 speaker ids start at id10001."""
RAVDESS_INTENSITY = {1: 0.5, 2: 1.0}
"""RAVDESS intensity code -> synthesis intensity."""

_CODE = {"ffhq": 1, "cacd": 2, "ravdess": 3, "voxceleb": 4}
_CONS, _VOWS = "bdfgklmnprstvz", "aeiou"
_SYLLABLES = tuple(c + v for c in _CONS for v in _VOWS)
_NATIONALITIES = ("USA", "UK", "Canada", "Australia", "India", "Ireland", "Germany", "France", "Italy",
                  "Spain", "Mexico", "Brazil", "Norway", "Japan", "South Africa")
_VIDEO_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class WorldSpec:
    seed: int  # master seed (>= 0); every file's randomness derives from it
    image_size: int = 64  # side of every face image, pixels
    n_ffhq: int = 0  # FFHQ-like images, each a new random identity
    n_cacd_identities: int = 0  # CACD-like celebrities
    cacd_images_per_identity: int = 0  # photos per celebrity, ages spread over 16-99
    n_ravdess_actors: int = 0  # RAVDESS actors 1..n (odd male, even female), at most 24
    ravdess_emotions: tuple[str, ...] = EMOTIONS  # emotions every actor speaks
    ravdess_intensities: tuple[int, ...] = (1, 2)  # RAVDESS intensity codes (neutral only ever gets 1)
    ravdess_statements: tuple[int, ...] = (1, 2)  # RAVDESS statements spoken (1, 2)
    ravdess_repetitions: tuple[int, ...] = (1, 2)  # repetitions of each (1, 2)
    n_vox_speakers: int = 0  # VoxCeleb-like speakers id10001..
    vox_videos_per_speaker: int = 1  # videos per speaker
    vox_utterances_per_video: int = 1  # utterances per video
    voice_seconds: float = 3.0  # length of every audio clip, seconds
    sample_rate: int = 16000  # audio sample rate, Hz
    jpeg_quality: int = 90  # CACD JPEG quality (fixed, so files are reproducible)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed={self.seed!r} must be an integer in [0, 2**32)")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size={self.image_size} must lie in [16, 1024]")
        for name in ("n_ffhq", "n_cacd_identities", "cacd_images_per_identity", "n_vox_speakers",
                     "vox_videos_per_speaker", "vox_utterances_per_video"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a non-negative integer")
        if self.n_ffhq > 100000:
            raise ValueError(f"n_ffhq={self.n_ffhq} must be at most 100000 (FFHQ names have 5 digits)")
        if self.n_cacd_identities > 100000:
            raise ValueError(f"n_cacd_identities={self.n_cacd_identities} must be at most 100000")
        if not 0 <= self.n_ravdess_actors <= 24:
            raise ValueError(f"n_ravdess_actors={self.n_ravdess_actors} must lie in [0, 24]")
        for e in self.ravdess_emotions:
            emotion_index(e, argument="ravdess_emotions")
        if not set(self.ravdess_intensities) <= {1, 2} or not self.ravdess_intensities:
            raise ValueError(f"ravdess_intensities={self.ravdess_intensities} must be codes from (1, 2)")
        if not set(self.ravdess_statements) <= set(STATEMENTS) or not self.ravdess_statements:
            raise ValueError(f"ravdess_statements={self.ravdess_statements} must be codes from (1, 2)")
        if not set(self.ravdess_repetitions) <= {1, 2} or not self.ravdess_repetitions:
            raise ValueError(f"ravdess_repetitions={self.ravdess_repetitions} must be codes from (1, 2)")
        if VOX_FIRST_SPEAKER + self.n_vox_speakers > 100000:
            raise ValueError(f"n_vox_speakers={self.n_vox_speakers} is too many for 5-digit speaker ids")
        if self.vox_utterances_per_video > 99999:
            raise ValueError(f"vox_utterances_per_video={self.vox_utterances_per_video} must be <= 99999")
        if not 0.5 <= self.voice_seconds <= 60.0:
            raise ValueError(f"voice_seconds={self.voice_seconds} must lie in [0.5, 60]")
        if not 4000 <= self.sample_rate <= 96000:
            raise ValueError(f"sample_rate={self.sample_rate} must lie in [4000, 96000]")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality} must lie in [1, 100]")

    @classmethod
    def tiny(cls, seed: int = 0) -> WorldSpec:
        """A few files per dataset at 32 px and 1.5 s clips: for tests."""
        return cls(seed=seed, image_size=32, n_ffhq=6, n_cacd_identities=2, cacd_images_per_identity=4,
                   n_ravdess_actors=2, ravdess_emotions=("neutral", "happy", "sad", "angry"),
                   ravdess_statements=(1, 2), ravdess_repetitions=(1,), n_vox_speakers=2,
                   vox_videos_per_speaker=1, vox_utterances_per_video=2, voice_seconds=1.5)

    def ravdess_items(self) -> list[RavdessName]:
        """Every RAVDESS name the world holds, actor by actor."""
        return [RavdessName(3, 1, e, i, s, r, actor)
                for actor in range(1, self.n_ravdess_actors + 1) for e in self.ravdess_emotions
                for i in self.ravdess_intensities if not (e == "neutral" and i == 2)
                for s in self.ravdess_statements for r in self.ravdess_repetitions]


@dataclass(frozen=True)
class FaceSample:
    path: str  # path relative to the dataset folder, in the dataset's naming convention
    identity_name: str  # the sidecar's identity column
    attrs: FaceAttributes  # ground truth the image is rendered from
    variation_seed: int  # render_face's per-image variation seed (background, clothes, framing)


@dataclass(frozen=True)
class VoiceSample:
    path: str  # path relative to the dataset folder, in the dataset's naming convention
    identity_name: str  # the sidecar's identity column
    speaker: SpeakerVoice  # the voice
    age: int  # speaker age, years
    emotion: str  # one of EMOTIONS
    intensity: float  # prosody strength in [0, 1]
    statement: int  # 1 or 2 (RAVDESS sentences) or 0 (free speech)
    seed: int  # synthesize_voice's seed


def _seq(spec_seed: int, dataset: str, kind: int, a: int, b: int = 0) -> np.random.SeedSequence:
    return np.random.SeedSequence([spec_seed, _CODE[dataset], kind, a, b])


def _rng(spec_seed: int, dataset: str, kind: int, a: int, b: int = 0) -> np.random.Generator:
    return np.random.default_rng(_seq(spec_seed, dataset, kind, a, b))


def _int_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _face_emotion(rng: np.random.Generator) -> tuple[str, float]:
    emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
    intensity = round(float(rng.uniform(0.3, 1.0)), 2)
    return emotion, (1.0 if emotion == "neutral" else intensity)


def synthetic_name(index: int, rng: np.random.Generator) -> str:
    """A celebrity-like "First_Last" name; the last name encodes ``index``, so names never repeat."""
    if index < 0:
        raise ValueError(f"index={index} must be non-negative")
    digits, k = [], index
    while k or len(digits) < 2:
        digits.append(_SYLLABLES[k % len(_SYLLABLES)])
        k //= len(_SYLLABLES)
    last = "".join(reversed(digits))
    first = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
    if rng.random() < 0.4:
        first += str(rng.choice(list("nlrs")))
    return f"{first.capitalize()}_{last.capitalize()}"


# ------------------------------------------------------------------------------------------ samples
def ffhq_sample(spec: WorldSpec, index: int) -> FaceSample:
    """FFHQ image ``index``: a fresh identity at a random age, emotion and intensity."""
    if not 0 <= index <= 99999:
        raise ValueError(f"index={index} must lie in [0, 99999]")
    rng = _rng(spec.seed, "ffhq", 0, index)
    identity = sample_identity(rng)
    age = round(float(rng.uniform(AGE_MIN, AGE_MAX)), 1)
    emotion, intensity = _face_emotion(rng)
    attrs = FaceAttributes(identity, age, emotion, intensity)
    return FaceSample(format_ffhq(index), f"ffhq_{index:05d}", attrs, _int_seed(rng))


def cacd_samples(spec: WorldSpec, identity_index: int) -> list[FaceSample]:
    """Every photo of CACD celebrity ``identity_index``: one identity at ages spread over 16-99."""
    if identity_index < 0:
        raise ValueError(f"identity_index={identity_index} must be non-negative")
    rng = _rng(spec.seed, "cacd", 0, identity_index)
    identity = sample_identity(rng)
    name = synthetic_name(identity_index, rng)
    m = spec.cacd_images_per_identity
    span = AGE_MAX - AGE_MIN
    ages = sorted(int(np.clip(round(AGE_MIN + (k + rng.uniform()) * span / max(m, 1)), AGE_MIN, AGE_MAX))
                  for k in range(m))
    out, seen = [], {}
    for k, age in enumerate(ages):
        seen[age] = seen.get(age, 0) + 1
        r = _rng(spec.seed, "cacd", 1, identity_index, k)
        emotion, intensity = _face_emotion(r)
        out.append(FaceSample(format_cacd(CacdName(age, name, seen[age])), name,
                              FaceAttributes(identity, float(age), emotion, intensity), _int_seed(r)))
    return out


def ravdess_actor(spec: WorldSpec, actor: int) -> tuple[Identity, SpeakerVoice, int]:
    """(face Identity, voice, age) of RAVDESS ``actor`` (1..24; odd male, even female, aged 21-33)."""
    if not 1 <= actor <= 24:
        raise ValueError(f"actor={actor} must lie in [1, 24]")
    gender = "male" if actor % 2 else "female"
    rng = _rng(spec.seed, "ravdess", 0, actor)
    identity = sample_identity(rng, gender)
    return identity, speaker_voice(rng, gender), int(rng.integers(21, 34))


def ravdess_sample(spec: WorldSpec, item: RavdessName) -> VoiceSample:
    """The clip named ``item`` (audio-only speech)."""
    path = format_ravdess(item)
    _, voice, age = ravdess_actor(spec, item.actor)
    e = EMOTIONS.index(item.emotion)
    key = ((e * 2 + item.intensity - 1) * 2 + item.statement - 1) * 2 + item.repetition
    seed = _int_seed(_rng(spec.seed, "ravdess", 1, item.actor, key))
    return VoiceSample(path, f"Actor_{item.actor:02d}", voice, age, item.emotion,
                       RAVDESS_INTENSITY[item.intensity], item.statement, seed)


@dataclass(frozen=True)
class VoxSpeaker:
    speaker: int  # numeric VoxCeleb id (10001..)
    name: str  # VGGFace1 ID, a "First_Last" celebrity-like name
    gender: str  # "female" or "male"
    nationality: str  # country name as vox1_meta.csv writes it
    split: str  # "dev" or "test"
    age: int  # speaker age, years
    voice: SpeakerVoice  # the voice
    identity: Identity  # the speaker's face


def vox_speaker(spec: WorldSpec, j: int) -> VoxSpeaker:
    """VoxCeleb speaker number ``j`` (0-based, id ``10001 + j``); the last fifth of speakers is "test"."""
    if not 0 <= j < 100000 - VOX_FIRST_SPEAKER:
        raise ValueError(f"j={j} must be a non-negative speaker number")
    rng = _rng(spec.seed, "voxceleb", 0, j)
    gender = "female" if rng.random() < 0.5 else "male"
    n_test = max(1, round(0.2 * spec.n_vox_speakers)) if spec.n_vox_speakers >= 2 else 0
    split = "test" if j >= spec.n_vox_speakers - n_test else "dev"
    name = synthetic_name(100000 + j, rng)  # 3-syllable surnames never collide with CACD's below 100000
    return VoxSpeaker(VOX_FIRST_SPEAKER + j, name, gender, str(rng.choice(_NATIONALITIES)), split,
                      int(rng.integers(18, 81)), speaker_voice(rng, gender), sample_identity(rng, gender))


def vox_samples(spec: WorldSpec, j: int) -> list[VoiceSample]:
    """Every utterance of VoxCeleb speaker number ``j`` (free speech, random emotions)."""
    sp = vox_speaker(spec, j)
    out = []
    for v in range(spec.vox_videos_per_speaker):
        vr = _rng(spec.seed, "voxceleb", 1, j, v)
        video = "".join(_VIDEO_ALPHABET[int(c)] for c in vr.integers(0, len(_VIDEO_ALPHABET), size=11))
        for u in range(1, spec.vox_utterances_per_video + 1):
            ur = _rng(spec.seed, "voxceleb", 2, j, v * 100000 + u)
            emotion, intensity = _face_emotion(ur)
            out.append(VoiceSample(format_voxceleb(VoxCelebName(sp.speaker, video, u)), f"id{sp.speaker:05d}",
                                   sp.voice, sp.age, emotion, intensity, 0, _int_seed(ur)))
    return out


# ------------------------------------------------------------------------------------------- writing
def _row(path: str, identity: str, gender: str, age: float, emotion: str, intensity: float,
         caption: str) -> list[str]:
    v, a = valence_arousal(emotion, intensity)
    return [path, identity, gender, f"{age:g}", emotion, f"{intensity:g}", f"{v:.4f}", f"{a:.4f}", caption]


def _csv_text(header, rows, delimiter: str = ",") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _write_face(folder: Path, s: FaceSample, spec: WorldSpec, fmt: str) -> list[str]:
    img = render_face(s.attrs, spec.image_size, variation_seed=s.variation_seed)
    with atomic_path(folder / s.path) as tmp:
        if fmt == "PNG":
            img.save(tmp, format="PNG")
        else:
            img.save(tmp, format="JPEG", quality=spec.jpeg_quality)
    a = s.attrs
    return _row(s.path, s.identity_name, a.identity.gender, a.age, a.emotion, a.intensity,
                caption_from_attributes(a.age, a.emotion, a.identity.gender))


def _write_voice(folder: Path, s: VoiceSample, spec: WorldSpec) -> list[str]:
    x = synthesize_voice(s.speaker, s.age, s.emotion, s.intensity, s.statement, s.seed,
                         sample_rate=spec.sample_rate, seconds=spec.voice_seconds)
    write_wav(folder / s.path, x, spec.sample_rate)
    g = s.speaker.gender
    return _row(s.path, s.identity_name, g, s.age, s.emotion, s.intensity,
                caption_from_attributes(s.age, s.emotion, g))


def _write_dataset(root: Path, name: str, spec: WorldSpec, progress: bool) -> Path:
    final, partial = root / name, root / f"{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    rows: list[list[str]] = []
    if name == "ffhq":
        for i in tqdm(range(spec.n_ffhq), desc="synthetic ffhq", disable=not progress):
            rows.append(_write_face(partial, ffhq_sample(spec, i), spec, "PNG"))
    elif name == "cacd":
        with tqdm(total=spec.n_cacd_identities * spec.cacd_images_per_identity, desc="synthetic cacd",
                  disable=not progress) as bar:
            for j in range(spec.n_cacd_identities):
                for s in cacd_samples(spec, j):
                    rows.append(_write_face(partial, s, spec, "JPEG"))
                    bar.update()
    elif name == "ravdess":
        for item in tqdm(spec.ravdess_items(), desc="synthetic ravdess", disable=not progress):
            rows.append(_write_voice(partial, ravdess_sample(spec, item), spec))
    else:
        meta = []
        with tqdm(total=spec.n_vox_speakers * spec.vox_videos_per_speaker * spec.vox_utterances_per_video,
                  desc="synthetic voxceleb", disable=not progress) as bar:
            for j in range(spec.n_vox_speakers):
                sp = vox_speaker(spec, j)
                meta.append([f"id{sp.speaker:05d}", sp.name, sp.gender[0], sp.nationality, sp.split])
                for s in vox_samples(spec, j):
                    rows.append(_write_voice(partial, s, spec))
                    bar.update()
        atomic_write_text(partial / VOX_META_NAME, _csv_text(VOX_META_COLUMNS, meta, delimiter="\t"))
    atomic_write_text(partial / SIDECAR_NAME, _csv_text(SIDECAR_COLUMNS, rows))
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return final


def write_world(root: str | Path, spec: WorldSpec, progress: bool = True, overwrite: bool = False
                ) -> dict[str, Path]:
    """Write the four synthetic datasets under ``root``; returns {dataset name: its folder}.

    Raises FileExistsError before writing anything if a dataset folder exists and ``overwrite`` is False.
    """
    if not isinstance(spec, WorldSpec):
        raise ValueError(f"spec={spec!r} must be a WorldSpec")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"root={root} exists and is not a folder")
    existing = [str(root / n) for n in DATASETS if (root / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"synthetic dataset folder(s) already exist: {', '.join(existing)}; "
                              "pass overwrite=True to replace them")
    root.mkdir(parents=True, exist_ok=True)
    return {name: _write_dataset(root, name, spec, progress) for name in DATASETS}


def read_sidecar(folder: str | Path) -> list[dict[str, str]]:
    """Rows of ``folder/synthetic_attributes.csv`` as dicts (all values strings)."""
    path = Path(folder) / SIDECAR_NAME
    if not path.is_file():
        raise ValueError(f"no {SIDECAR_NAME} in {folder}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != SIDECAR_COLUMNS:
            raise ValueError(f"{path} has columns {reader.fieldnames}, want {list(SIDECAR_COLUMNS)}")
        return list(reader)
