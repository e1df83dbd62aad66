"""File-name conventions of the four datasets the paper uses ("Datasets"), as parse <-> format pairs.

The synthetic world writes its files under exactly these names, so one assembly code path reads a real
copy or a synthetic one. Every ``parse_*`` raises ``ValueError`` naming the offending path; every
``format_*`` is its exact inverse (tests check the round trip).

- FFHQ: ``<thousands:05d>/<index:05d>.png`` (``00000/00042.png``, ``01000/01234.png``).
- CACD2000: ``<age>_<Name_With_Underscores>_<idx:04d>.jpg`` (``53_Robin_Williams_0001.jpg``).
- RAVDESS: ``Actor_<AA>/<MM>-<VV>-<EE>-<II>-<SS>-<RR>-<AA>.wav`` with modality, vocal channel, emotion,
  intensity, statement, repetition and actor codes (``Actor_12/03-01-06-01-02-01-12.wav``).
- VoxCeleb: ``id<NNNNN>/<11-char video id>/<NNNNN>.wav`` (``id10001/1zcIwhmdeo4/00001.wav``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from cff_lib.emotions import EMOTIONS

# ---------------------------------------------------------------------------------------------- FFHQ
_FFHQ = re.compile(r"^(\d{5})/(\d{5})\.png$")


def format_ffhq(index: int) -> str:
    """Relative path of FFHQ image ``index`` (0..69999 in the real set)."""
    if not 0 <= index <= 99999:
        raise ValueError(f"FFHQ index={index} must lie in [0, 99999]")
    return f"{index // 1000 * 1000:05d}/{index:05d}.png"


def parse_ffhq(path: str) -> int:
    """Index of an FFHQ relative path; the folder must be the index's thousand."""
    m = _FFHQ.match(str(PurePosixPath(path)))
    if not m or int(m.group(1)) != int(m.group(2)) // 1000 * 1000:
        raise ValueError(f"not an FFHQ file name (want 00000/00042.png): {path!r}")
    return int(m.group(2))


# ---------------------------------------------------------------------------------------------- CACD
_CACD = re.compile(r"^(\d{1,3})_([A-Za-z][A-Za-z0-9.'-]*(?:_[A-Za-z0-9.'-]+)*)_(\d{4})\.jpg$")


@dataclass(frozen=True)
class CacdName:
    age: int  # age in years at the photo, as CACD labels it
    name: str  # celebrity name with underscores for spaces ("Robin_Williams")
    idx: int  # photo number of that celebrity at that age, from 1


def format_cacd(item: CacdName) -> str:
    if not 0 <= item.age <= 120:
        raise ValueError(f"CACD age={item.age} must lie in [0, 120]")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9.'-]*(?:_[A-Za-z0-9.'-]+)*", item.name):
        raise ValueError(f"CACD name={item.name!r} must be words joined by underscores")
    if not 0 <= item.idx <= 9999:
        raise ValueError(f"CACD idx={item.idx} must lie in [0, 9999]")
    return f"{item.age}_{item.name}_{item.idx:04d}.jpg"


def parse_cacd(path: str) -> CacdName:
    m = _CACD.match(PurePosixPath(path).name)
    if not m:
        raise ValueError(f"not a CACD file name (want <age>_<Name>_<idx:04d>.jpg): {path!r}")
    return CacdName(age=int(m.group(1)), name=m.group(2), idx=int(m.group(3)))


# ------------------------------------------------------------------------------------------- RAVDESS
MODALITIES = {1: "full-AV", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
_RAVDESS = re.compile(r"^Actor_(\d\d)/(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.(wav|mp4)$")


@dataclass(frozen=True)
class RavdessName:
    modality: int  # 1 full-AV, 2 video-only, 3 audio-only
    vocal_channel: int  # 1 speech, 2 song
    emotion: str  # one of EMOTIONS (code 01..08 in the name)
    intensity: int  # 1 normal, 2 strong (neutral has no strong intensity)
    statement: int  # 1 or 2, see STATEMENTS
    repetition: int  # 1 or 2
    actor: int  # 1..24; odd actors are male, even are female

    @property
    def gender(self) -> str:
        return "male" if self.actor % 2 else "female"


def _check_ravdess(r: RavdessName, path: str) -> None:
    problems = []
    if r.modality not in MODALITIES:
        problems.append(f"modality {r.modality:02d}")
    if r.vocal_channel not in VOCAL_CHANNELS:
        problems.append(f"vocal channel {r.vocal_channel:02d}")
    if r.emotion not in EMOTIONS:
        problems.append(f"emotion {r.emotion!r}")
    if r.intensity not in (1, 2) or (r.emotion == "neutral" and r.intensity == 2):
        problems.append(f"intensity {r.intensity:02d} for {r.emotion}")
    if r.statement not in STATEMENTS:
        problems.append(f"statement {r.statement:02d}")
    if r.repetition not in (1, 2):
        problems.append(f"repetition {r.repetition:02d}")
    if not 1 <= r.actor <= 24:
        problems.append(f"actor {r.actor:02d}")
    if problems:
        raise ValueError(f"invalid RAVDESS code in {path!r}: {', '.join(problems)}")


def format_ravdess(item: RavdessName, ext: str = "wav") -> str:
    _check_ravdess(item, repr(item))
    e = EMOTIONS.index(item.emotion) + 1
    stem = (f"{item.modality:02d}-{item.vocal_channel:02d}-{e:02d}-{item.intensity:02d}-"
            f"{item.statement:02d}-{item.repetition:02d}-{item.actor:02d}")
    return f"Actor_{item.actor:02d}/{stem}.{ext}"


def parse_ravdess(path: str) -> RavdessName:
    p = PurePosixPath(path)
    m = _RAVDESS.match("/".join(p.parts[-2:]))
    if not m:
        raise ValueError(f"not a RAVDESS file name (want Actor_AA/MM-VV-EE-II-SS-RR-AA.wav): {path!r}")
    folder, mod, voc, emo, inten, stmt, rep, actor, _ = m.groups()
    if folder != actor:
        raise ValueError(f"RAVDESS actor folder Actor_{folder} does not match code {actor}: {path!r}")
    code = int(emo)
    if not 1 <= code <= len(EMOTIONS):
        raise ValueError(f"invalid RAVDESS code in {path!r}: emotion {emo}")
    item = RavdessName(int(mod), int(voc), EMOTIONS[code - 1], int(inten), int(stmt), int(rep), int(actor))
    _check_ravdess(item, path)
    return item


# ------------------------------------------------------------------------------------------ VoxCeleb
_VOX = re.compile(r"^id(\d{5})/([A-Za-z0-9_-]{11})/(\d{5})\.wav$")


@dataclass(frozen=True)
class VoxCelebName:
    speaker: int  # numeric part of the VoxCeleb speaker id ("id10001" -> 10001)
    video: str  # 11-character YouTube video id
    utterance: int  # utterance number within the video, from 1

    @property
    def speaker_id(self) -> str:
        return f"id{self.speaker:05d}"


def format_voxceleb(item: VoxCelebName) -> str:
    if not 0 <= item.speaker <= 99999:
        raise ValueError(f"VoxCeleb speaker={item.speaker} must lie in [0, 99999]")
    if not re.fullmatch(r"[A-Za-z0-9_-]{11}", item.video):
        raise ValueError(f"VoxCeleb video={item.video!r} must be an 11-character YouTube id")
    if not 0 <= item.utterance <= 99999:
        raise ValueError(f"VoxCeleb utterance={item.utterance} must lie in [0, 99999]")
    return f"id{item.speaker:05d}/{item.video}/{item.utterance:05d}.wav"


def parse_voxceleb(path: str) -> VoxCelebName:
    parts = PurePosixPath(path).parts
    m = _VOX.match("/".join(parts[-3:]))
    if not m:
        raise ValueError(f"not a VoxCeleb file name (want idNNNNN/<video>/NNNNN.wav): {path!r}")
    return VoxCelebName(speaker=int(m.group(1)), video=m.group(2), utterance=int(m.group(3)))
