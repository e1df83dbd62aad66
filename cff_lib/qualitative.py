"""The qualitative inputs and series (paper "Qualitative results", Figs. 4 and 5; notebooks 04 and 05).

- The Fig. 4 scenarios (:data:`SCENARIOS`: young–sad, middle-aged–happy, elderly–neutral, angry with an
  intense voice), each resolved to a held-out FFHQ face of its gender and a RAVDESS clip of its emotion and
  intensity (:func:`resolve_scenarios`, :func:`scenario_inputs`, :func:`scenario_table`). The methods run on
  them with ``evaluation.run_methods``.
- One face edited along a series (:func:`edit_series`): the age strip (:data:`AGE_STRIP`), the emotion
  transitions (:data:`EMOTION_SERIES`), edits guided by a voice only (:func:`audio_clips`, :func:`audio_guided`),
  and the historical reconstruction (held-out CACD rows with a real photo at the target age).

Every edit here is ClipFaceFusion's (``ClipFaceFusion.edit``) with the profile's ``ddim`` settings.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cff_lib import ddim
from cff_lib.captions import caption_from_attributes, source_caption
from cff_lib.emotions import emotion_index


# ------------------------------------------------------------------------------------------ Fig. 4 scenarios
@dataclass(frozen=True)
class Scenario:
    """One Fig. 4 row: the target a held-out face is edited to, and the RAVDESS clip that voices it."""

    name: str  # short label, e.g. "young–sad"
    age: float  # target age, years
    gender: str  # "female" | "male" (of the face and of the RAVDESS actor)
    emotion: str  # target emotion (one of EMOTIONS)
    intensity_code: int  # RAVDESS emotional intensity of the clip: 1 normal, 2 strong ("intense")


SCENARIOS = (
    Scenario("young–sad", 25, "female", "sad", 1),
    Scenario("middle-aged–happy", 45, "male", "happy", 1),
    Scenario("elderly–neutral", 70, "female", "neutral", 1),
    Scenario("angry, intense audio", 30, "male", "angry", 2),
)


@dataclass(frozen=True)
class ResolvedScenario:
    scenario: Scenario
    image: str  # face path relative to the data root (held-out split)
    image_split: str  # "val" or "test"
    audio: str  # RAVDESS clip relative to the data root
    audio_split: str  # split of the clip ("train" only when no held-out clip matches)
    caption: str  # target caption, e.g. "a 25-year-old sad woman"
    gender: str | None = None  # the face's gender label; None where the manifest has none (real FFHQ)


def _manifest(profile, dataset: str):
    from cff_lib.manifests import manifest_filename, read_manifest
    from cff_lib.world import manifest_dir

    path = manifest_dir(profile) / manifest_filename(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"no {dataset} manifest at {path}; run notebooks/01_data_assembly first")
    return read_manifest(path)


def resolve_scenarios(profile, scenarios: Sequence[Scenario] = SCENARIOS) -> list[ResolvedScenario]:
    """Each scenario's face (a held-out FFHQ face of its gender, a different one per scenario) and clip (a
    RAVDESS clip of its emotion, intensity and gender, held-out splits first).

    Real FFHQ has no gender label (no sidecar; its manifest's ``gender`` column is empty): a scenario then
    takes the next unused held-out face of unknown gender, and its caption and source caption leave the gender
    out ("a 25-year-old sad face"; ``ResolvedScenario.gender`` is None)."""
    if not scenarios:
        raise ValueError("scenarios is empty")
    faces = [e for e in _manifest(profile, "ffhq").entries if e.split in ("val", "test")]
    clips = _manifest(profile, "ravdess").entries
    used: set[str] = set()
    out = []
    for sc in scenarios:
        emotion_index(sc.emotion, argument="scenario.emotion")
        face = next((e for e in faces if e.labels.get("gender") == sc.gender and e.path not in used), None)
        if face is None:
            face = next((e for e in faces if not e.labels.get("gender") and e.path not in used), None)
        if face is None:
            raise ValueError(f"scenario {sc.name!r}: no unused held-out FFHQ face of gender {sc.gender!r} (nor "
                             f"of unknown gender) in the manifest of profile {profile.name!r}")
        used.add(face.path)
        gender = face.labels.get("gender") or None
        match = [e for e in clips if e.labels.get("emotion") == sc.emotion
                 and int(e.labels.get("intensity_code") or 0) == sc.intensity_code]
        match.sort(key=lambda e: (e.split == "train", e.labels.get("gender") != sc.gender, e.path))
        if not match:
            raise ValueError(f"scenario {sc.name!r}: no RAVDESS clip with emotion {sc.emotion!r} and intensity "
                             f"code {sc.intensity_code}")
        out.append(ResolvedScenario(sc, f"ffhq/{face.path}", face.split, f"ravdess/{match[0].path}",
                                    match[0].split, caption_from_attributes(sc.age, sc.emotion, gender), gender))
    return out


def scenario_inputs(profile, resolved: Sequence[ResolvedScenario]) -> tuple[torch.Tensor, dict[str, Any]]:
    """(faces (B, 3, H, W) in [-1, 1], conditions dict) of the resolved scenarios."""
    from cff_lib.preprocessing import load_audio, load_image
    from cff_lib.world import data_root

    root, d = data_root(profile), profile.data
    images = torch.stack([torch.from_numpy(load_image(root / r.image, d.image_size)) for r in resolved])
    audio = [torch.from_numpy(load_audio(root / r.audio, d.sample_rate, max_seconds=d.max_audio_seconds))
             for r in resolved]
    intensity = [1.0 if r.scenario.intensity_code == 2 else 0.5 for r in resolved]
    conditions = {"caption": [r.caption for r in resolved],
                  "source_caption": [source_caption(r.gender) for r in resolved],
                  "target_age": [float(r.scenario.age) for r in resolved],
                  "target_emotion": [r.scenario.emotion for r in resolved],
                  "intensity": intensity, "audio": audio}
    return images, conditions


def scenario_table(resolved: Sequence[ResolvedScenario]):
    """pandas DataFrame naming each Fig. 4 scenario's target, face and clip."""
    import pandas as pd

    return pd.DataFrame([{"scenario": r.scenario.name, "caption": r.caption, "target_age": r.scenario.age,
                          "target_emotion": r.scenario.emotion, "face": r.image, "face_split": r.image_split,
                          "face_gender": r.gender or "unknown",
                          "audio": r.audio, "audio_intensity_code": r.scenario.intensity_code,
                          "audio_split": r.audio_split} for r in resolved])


# ------------------------------------------------------------------------------------------ qualitative series
AGE_STRIP = (20, 30, 40, 50, 60, 70)
EMOTION_SERIES = ("neutral", "happy", "sad", "angry", "surprised")


@torch.no_grad()
def edit_series(model, profile, image: torch.Tensor, conditions: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """One face (3, H, W) edited toward each single-sample condition dict -> (N, 3, H, W)."""
    if len(conditions) == 0:
        raise ValueError("conditions is empty")
    batch = {k: [c.get(k) for c in conditions] for k in ("caption", "source_caption", "target_age",
                                                         "target_emotion", "intensity", "audio")}
    images = image[None].expand(len(conditions), -1, -1, -1).contiguous()
    return model.edit_with(images, batch, ddim.EditConfig.from_profile(profile))


def age_progression(model, profile, image, gender: str | None, ages: Sequence[float] = AGE_STRIP) -> torch.Tensor:
    """Age-progression strip: the face at each target age (caption "a NN-year-old woman", age only)."""
    return edit_series(model, profile, image, [{"caption": caption_from_attributes(a, None, gender),
                                                "source_caption": source_caption(gender), "target_age": float(a)}
                                               for a in ages])


def emotion_transitions(model, profile, image, gender: str | None, emotions: Sequence[str] = EMOTION_SERIES):
    """The face with each target emotion (caption and emotion label only)."""
    return edit_series(model, profile, image, [{"caption": caption_from_attributes(None, e, gender),
                                                "source_caption": source_caption(gender), "target_emotion": e}
                                               for e in emotions])


def audio_clips(profile, emotions: Sequence[str] = EMOTION_SERIES, intensity_code: int = 2) -> list[tuple[str, Any]]:
    """(emotion, waveform) of one RAVDESS clip per emotion (held-out first; neutral has intensity 1 only)."""
    from cff_lib.preprocessing import load_audio
    from cff_lib.world import data_root

    clips, out = _manifest(profile, "ravdess").entries, []
    for e in emotions:
        code = 1 if e == "neutral" else intensity_code
        m = sorted((c for c in clips if c.labels.get("emotion") == e and int(c.labels.get("intensity_code") or 0)
                    == code), key=lambda c: (c.split == "train", c.path))
        if not m:
            raise ValueError(f"no RAVDESS clip for emotion {e!r} at intensity {code}")
        wave = load_audio(data_root(profile) / "ravdess" / m[0].path, profile.data.sample_rate,
                          max_seconds=profile.data.max_audio_seconds)
        out.append((e, torch.from_numpy(wave)))
    return out


def audio_guided(model, profile, image, gender: str | None, clips) -> torch.Tensor:
    """The face conditioned on each clip's voice only (caption "a face of a woman", no emotion label)."""
    return edit_series(model, profile, image, [{"caption": source_caption(gender), "audio": w} for _, w in clips])


def historical_rows(profile, n: int = 3) -> list:
    """Held-out CACD rows with a ground-truth photo of the same person at the target age: one per source
    photo, ageing (target older than source) first, largest age gap first."""
    from cff_lib.dataset import load_composite

    rows = [s for s in load_composite(profile).split("val") if s.source == "cacd" and s.target_image
            and s.target_age is not None and s.source_age is not None]
    if not rows:
        raise ValueError("no held-out CACD row with a target image")
    rows.sort(key=lambda s: (s.target_age <= s.source_age, -abs(s.target_age - s.source_age)))
    seen, out = set(), []
    for r in rows:
        if r.image not in seen:
            seen.add(r.image)
            out.append(r)
    return out[:n]


@torch.no_grad()
def historical_reconstruction(model, profile, rows) -> dict[str, torch.Tensor]:
    """Ageing a reference: source, ClipFaceFusion edit toward the target age, and the real photo at that age."""
    from cff_lib.dataset import load_rows
    from cff_lib.preprocessing import load_image
    from cff_lib.world import data_root

    images, conds = load_rows(profile, rows)
    edited = model.edit_with(images, conds, ddim.EditConfig.from_profile(profile))
    truth = torch.stack([torch.from_numpy(load_image(data_root(profile) / r.target_image, profile.data.image_size))
                         for r in rows])
    return {"source": images, "edited": edited, "ground truth": truth}


__all__ = ["AGE_STRIP", "EMOTION_SERIES", "SCENARIOS", "ResolvedScenario", "Scenario", "age_progression",
           "audio_clips", "audio_guided", "edit_series", "emotion_transitions", "historical_reconstruction",
           "historical_rows", "resolve_scenarios", "scenario_inputs", "scenario_table"]
