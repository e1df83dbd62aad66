"""The composite training set and the mixed-batch sampler (paper "Datasets" and "Training procedure").

"Datasets": ClipFaceFusion "generated a composite dataset of 55,000 training samples and 12,000 validation
samples by correlating FFHQ photos with RAVDESS emotions and CACD ages". "Training procedure": "Each training
step utilizes a batch comprising a regulated amalgamation of datasets (50% FFHQ, 30% CACD, 10% RAVDESS,
10% VoxCeleb)". Both sizes and ratios are arguments here, so a small synthetic world uses the same code.

Rows (one :class:`CompositeSample` each; paths carry the dataset folder, e.g. ``ffhq/00000/00042.png``):

- ``ffhq``: an FFHQ face; target emotion, intensity and audio from a RAVDESS clip; target age drawn from
  CACD's age distribution (the age of a random CACD photo of the same split).
- ``cacd``: a CACD face of a celebrity with at least two photos; the target is another photo of the same
  person (``target_image``), preferably at a different age, so age editing has ground truth. The target
  keeps the source's emotion when the sidecar knows it.
- ``ravdess``: a RAVDESS clip (emotion and intensity as target) paired with an FFHQ face.
- ``voxceleb``: a VoxCeleb utterance paired with an FFHQ face; target age/emotion only when the synthetic
  sidecar knows the speaker's.

Train rows draw only from each manifest's ``train`` split, val rows only from ``val``; the ``test`` splits
stay untouched for evaluation, so no identity crosses splits. Items are drawn as successive random
permutations (every item once before any repeats). RAVDESS intensity codes map to ``INTENSITY_FROM_CODE``
unless the sidecar gives an intensity in [0, 1]. The ``caption`` is
``cff_lib.captions.caption_from_attributes(target_age, target_emotion, gender)`` with ``gender`` the face's,
when known.

The per-split row counts per source follow the mixing ratios (largest remainder), so the composite's make-up
matches the batches the :class:`MixedBatchSampler` draws from it.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from tqdm.auto import tqdm

from cff_lib.emotions import EMOTIONS
from cff_lib.manifests import DATASETS, Manifest, ManifestEntry, read_record_csv, write_record_csv

DEFAULT_RATIOS: dict[str, float] = {"ffhq": 0.5, "cacd": 0.3, "ravdess": 0.1, "voxceleb": 0.1}
"""Per-batch dataset mix of the paper's "Training procedure"."""

PAPER_N_TRAIN = 55_000
"""Composite training rows at paper scale ("Datasets")."""

PAPER_N_VAL = 12_000
"""Composite validation rows at paper scale ("Datasets")."""

INTENSITY_FROM_CODE: dict[int, float] = {1: 0.5, 2: 1.0}
"""RAVDESS intensity code (01 normal, 02 strong) -> target intensity in [0, 1] when the sidecar has none."""

COMPOSITE_SPLITS: tuple[str, ...] = ("train", "val")
"""Splits the composite holds (the manifests' test splits are kept for evaluation)."""

COMPOSITE_VERSION = 1
"""Bumped whenever the row recipe or the CSV layout changes; stored in the CSV header record."""

_HEADER_TAG = "#cff-composite "
# which manifests each row source needs
_NEEDS = {"ffhq": ("ffhq", "ravdess", "cacd"), "cacd": ("cacd",), "ravdess": ("ravdess", "ffhq"),
          "voxceleb": ("voxceleb", "ffhq")}


@dataclass(frozen=True)
class CompositeSample:
    split: str  # "train" or "val"
    source: str  # row kind / dataset it stands for in the batch mix, one of DATASETS
    image: str | None  # face to generate from or edit ("ffhq/00000/00042.png"); None for audio-only rows
    audio: str | None  # conditioning clip ("ravdess/Actor_01/03-01-03-01-01-01-01.wav"), or None
    target_image: str | None  # ground truth of the edit (CACD: same person at target_age), or None
    target_age: float | None  # age to render, years; None = leave unconstrained
    target_emotion: str | None  # emotion to render (one of EMOTIONS); None = leave unconstrained
    target_intensity: float | None  # emotion intensity in [0, 1]; None when target_emotion is None
    caption: str  # target text prompt built from target_age, target_emotion and gender
    source_age: float | None  # age of the face in `image` when known (CACD label or synthetic truth)
    source_emotion: str | None  # emotion of the face in `image` when known (synthetic truth)
    gender: str | None  # "female"/"male" of the face in `image` when known
    identity: str  # identity of the face, prefixed by dataset ("ffhq:00000/00042.png", "cacd:Robin_Williams")
    speaker: str | None  # identity of the audio's speaker ("ravdess:Actor_01", "voxceleb:id10001"), or None


_FIELDS = tuple(f.name for f in fields(CompositeSample))
_NUM = {"target_age", "target_intensity", "source_age"}


@dataclass(frozen=True)
class CompositeSet:
    seed: int  # seed the rows were drawn with
    ratios: dict[str, float]  # source -> fraction of rows (and of each batch)
    samples: tuple[CompositeSample, ...]  # train rows, then val rows; each split grouped by source
    manifest_digests: dict[str, str]  # dataset -> SHA-256 over its manifest's (path, sha256) pairs

    def __len__(self) -> int:
        return len(self.samples)

    def split(self, name: str) -> tuple[CompositeSample, ...]:
        """Rows of split ``name`` ("train" or "val") in stored order."""
        if name not in COMPOSITE_SPLITS:
            raise ValueError(f"split={name!r} must be one of {', '.join(COMPOSITE_SPLITS)}")
        return tuple(s for s in self.samples if s.split == name)

    def source_indices(self, split: str) -> dict[str, list[int]]:
        """Source -> positions within ``self.split(split)``; the input of :class:`MixedBatchSampler`."""
        out: dict[str, list[int]] = {d: [] for d in DATASETS}
        for i, s in enumerate(self.split(split)):
            out[s.source].append(i)
        return out


# ------------------------------------------------------------------------------------------- ratios
def _ratio_fractions(ratios: Mapping[str, float], argument: str = "ratios") -> dict[str, Fraction]:
    """Validated ratios as exact fractions in DATASETS order (missing sources get 0)."""
    bad = [k for k in ratios if k not in DATASETS]
    if bad:
        raise ValueError(f"{argument} names unknown source(s) {bad}; valid: {', '.join(DATASETS)}")
    vals = {}
    for k in DATASETS:
        v = float(ratios.get(k, 0.0))
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"{argument}[{k!r}]={v} must be a finite non-negative number")
        vals[k] = v
    total = sum(vals.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{argument} must sum to 1, got {total:.6g} ({dict(vals)})")
    fr = {k: Fraction(v).limit_denominator(1_000_000) for k, v in vals.items()}
    s = sum(fr.values())
    return {k: v / s for k, v in fr.items()}


def _apportion(desired: list[int], denom: int, total: int) -> list[int]:
    """Largest-remainder integer counts summing to ``total`` for ``desired`` given in units of 1/``denom``.

    Ties go to the earlier source; a count that would be negative is lifted to 0 at the expense of the most
    over-allocated source.
    """
    counts = [d // denom for d in desired]
    left = total - sum(counts)
    order = sorted(range(len(desired)), key=lambda i: (-(desired[i] % denom), i))
    for i in order[:left]:
        counts[i] += 1
    while min(counts) < 0:
        i = counts.index(min(counts))
        over = [j for j in range(len(counts)) if counts[j] > 0]
        j = max(over, key=lambda j: (counts[j] * denom - desired[j], -j))
        counts[i] += 1
        counts[j] -= 1
    return counts


def split_counts(n: int, ratios: Mapping[str, float] = DEFAULT_RATIOS) -> dict[str, int]:
    """``n`` rows divided among the sources by ``ratios`` (largest remainder; sums to ``n`` exactly)."""
    if n < 0:
        raise ValueError(f"n={n} must be non-negative")
    fr = _ratio_fractions(ratios)
    denom = math.lcm(*(f.denominator for f in fr.values()))
    desired = [n * f.numerator * (denom // f.denominator) for f in fr.values()]
    return dict(zip(DATASETS, _apportion(desired, denom, n), strict=True))


# ---------------------------------------------------------------------------------------- composite
def _draw(rng: np.random.Generator, n_items: int, k: int) -> np.ndarray:
    """``k`` indices into ``n_items`` as successive random permutations (no repeat before all are used)."""
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    reps = -(-k // n_items)
    return np.concatenate([rng.permutation(n_items) for _ in range(reps)])[:k]


def _caption(age: float | None, emotion: str | None, gender: str | None) -> str:
    from cff_lib.captions import caption_from_attributes  # lazy: keeps this module import-light
    years = None if age is None else int(round(age))
    return caption_from_attributes(age=years, emotion=emotion, gender=gender)


def _intensity(e: ManifestEntry) -> float:
    if e.label("intensity") is not None:
        return float(e.label("intensity"))
    return INTENSITY_FROM_CODE[int(e.label("intensity_code"))]


def _face_identity(dataset: str, e: ManifestEntry) -> str:
    ident = e.label("identity")
    return f"{dataset}:{ident if ident is not None else e.path}"


def manifest_digest(m: Manifest) -> str:
    """SHA-256 over a manifest's sorted (path, split, sha256) triples: the exact files a composite used."""
    h = hashlib.sha256()
    for e in sorted(m.entries, key=lambda e: e.path):
        h.update(f"{e.path}\t{e.split}\t{e.sha256}\n".encode())
    return h.hexdigest()


def build_composite(manifests: Mapping[str, Manifest], *, n_train: int = PAPER_N_TRAIN,
                    n_val: int = PAPER_N_VAL, seed: int = 42, ratios: Mapping[str, float] = DEFAULT_RATIOS,
                    progress: bool = True) -> CompositeSet:
    """Draw ``n_train`` train and ``n_val`` val rows from ``manifests`` (dataset -> Manifest); see above."""
    for name, n in (("n_train", n_train), ("n_val", n_val)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{name}={n!r} must be a non-negative integer")
    for key, m in manifests.items():
        if key not in DATASETS or m.dataset != key:
            raise ValueError(f"manifests[{key!r}] must be the {key!r} manifest (got {m.dataset!r})")
    fr = _ratio_fractions(ratios)
    needed = sorted({d for s, f in fr.items() if f > 0 for d in _NEEDS[s]}, key=DATASETS.index)
    missing = [d for d in needed if d not in manifests]
    if missing:
        raise ValueError(f"manifests lacks {', '.join(missing)}, needed by the ratios {dict(ratios)}")

    samples: list[CompositeSample] = []
    for si, split in enumerate(COMPOSITE_SPLITS):
        n_split = n_train if split == "train" else n_val
        counts = split_counts(n_split, {k: float(v) for k, v in fr.items()})
        pools = {d: manifests[d].split(split) for d in needed}
        for d in needed:
            if not pools[d] and n_split > 0:
                raise ValueError(f"{d} manifest has no {split} entries; cannot build the {split} split")
        ages = [float(e.label("age")) for e in pools.get("cacd", ()) if e.label("age") is not None]
        if "ffhq" in needed and counts["ffhq"] and not ages:
            raise ValueError(f"cacd {split} entries carry no ages; ffhq rows need CACD's age distribution")
        bar = tqdm(total=n_split, desc=f"composite {split}", unit="row", disable=not progress)
        for di, source in enumerate(DATASETS):
            k = counts[source]
            if k == 0:
                continue
            rng = np.random.default_rng(np.random.SeedSequence([seed, si, di]))
            rows = _rows(source, split, k, pools, ages, rng)
            samples.extend(rows)
            bar.update(len(rows))
        bar.close()
    digests = {d: manifest_digest(manifests[d]) for d in DATASETS if d in manifests}
    return CompositeSet(seed=seed, ratios={k: float(v) for k, v in fr.items()}, samples=tuple(samples),
                        manifest_digests=digests)


def _rows(source: str, split: str, k: int, pools: dict[str, tuple[ManifestEntry, ...]], ages: list[float],
          rng: np.random.Generator) -> list[CompositeSample]:
    out = []
    if source == "cacd":
        by_name: dict[str, list[ManifestEntry]] = {}
        for e in pools["cacd"]:
            by_name.setdefault(e.label("name"), []).append(e)
        eligible = [e for e in pools["cacd"] if len(by_name[e.label("name")]) >= 2]
        if not eligible:
            raise ValueError(f"cacd {split} split has no celebrity with two photos; cacd rows need one")
        for i in _draw(rng, len(eligible), k):
            src = eligible[i]
            others = [o for o in by_name[src.label("name")] if o.path != src.path]
            older_or_younger = [o for o in others if o.label("age") != src.label("age")]
            choice = older_or_younger or others
            tgt = choice[int(rng.integers(len(choice)))]
            emotion = src.label("emotion")
            intensity = src.label("intensity") if emotion is not None else None
            gender = src.label("gender")
            out.append(CompositeSample(
                split=split, source="cacd", image=f"cacd/{src.path}", audio=None,
                target_image=f"cacd/{tgt.path}",
                target_age=tgt.label("age"), target_emotion=emotion, target_intensity=intensity,
                caption=_caption(tgt.label("age"), emotion, gender), source_age=src.label("age"),
                source_emotion=emotion, gender=gender, identity=_face_identity("cacd", src), speaker=None))
        return out

    faces = pools["ffhq"]
    face_idx = _draw(rng, len(faces), k)
    audio_set = "ravdess" if source in ("ffhq", "ravdess") else "voxceleb"
    clips = pools[audio_set]
    clip_idx = _draw(rng, len(clips), k)
    age_idx = _draw(rng, len(ages), k) if source == "ffhq" else None
    for j in range(k):
        face, clip = faces[face_idx[j]], clips[clip_idx[j]]
        if audio_set == "ravdess":
            emotion, intensity = clip.label("emotion"), _intensity(clip)
        else:
            emotion = clip.label("emotion")
            intensity = None if emotion is None else (clip.label("intensity") if clip.label("intensity")
                                                       is not None else 1.0)
        if source == "ffhq":
            age = ages[age_idx[j]]
        elif source == "voxceleb":
            age = clip.label("age")
        else:
            age = None
        gender = face.label("gender")
        out.append(CompositeSample(
            split=split, source=source, image=f"ffhq/{face.path}", audio=f"{audio_set}/{clip.path}",
            target_image=None, target_age=age, target_emotion=emotion, target_intensity=intensity,
            caption=_caption(age, emotion, gender), source_age=face.label("age"),
            source_emotion=face.label("emotion"), gender=gender, identity=_face_identity("ffhq", face),
            speaker=f"{audio_set}:{clip.label('identity')}"))
    return out


# ------------------------------------------------------------------------------------------ CSV i/o
def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def write_composite(cs: CompositeSet, path: str | os.PathLike) -> Path:
    """Write ``cs`` as a CSV with a ``#cff-composite {json}`` first line, atomically; returns the path."""
    header = {"seed": cs.seed, "ratios": cs.ratios, "version": COMPOSITE_VERSION, "rows": len(cs.samples),
              "manifest_digests": cs.manifest_digests,
              "counts": {s: len(cs.split(s)) for s in COMPOSITE_SPLITS}}
    rows = ([_fmt(getattr(s, f)) for f in _FIELDS] for s in cs.samples)
    return write_record_csv(path, _HEADER_TAG, header, _FIELDS, rows)


def read_composite(path: str | os.PathLike) -> CompositeSet:
    """Read a CSV written by :func:`write_composite`; malformed is a ValueError naming file and line."""
    path, header, cols, reader = read_record_csv(path, _HEADER_TAG, "composite")
    try:
        seed, ratios, rows = int(header["seed"]), dict(header["ratios"]), int(header["rows"])
        digests = dict(header["manifest_digests"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} line 1: malformed composite header record ({exc})") from None
    if cols != list(_FIELDS):
        raise ValueError(f"{path} line 2: columns {cols} differ from {list(_FIELDS)}")
    samples = []
    for line, row in enumerate(reader, start=3):
        where = f"{path} line {line}"
        if len(row) != len(_FIELDS):
            raise ValueError(f"{where}: {len(row)} cells, want {len(_FIELDS)}")
        rec: dict[str, Any] = {}
        for f, raw in zip(_FIELDS, row, strict=True):
            if f == "caption":
                rec[f] = raw
            elif raw == "":
                rec[f] = None
            elif f in _NUM:
                try:
                    rec[f] = float(raw)
                except ValueError:
                    raise ValueError(f"{where}: {f} = {raw!r} is not a number") from None
            else:
                rec[f] = raw
        if rec["split"] not in COMPOSITE_SPLITS or rec["source"] not in DATASETS or rec["identity"] is None:
            raise ValueError(f"{where}: bad split {rec['split']!r}, source {rec['source']!r} or no identity")
        for f in ("target_emotion", "source_emotion"):
            if rec[f] is not None and rec[f] not in EMOTIONS:
                raise ValueError(f"{where}: {f} {rec[f]!r} is not one of {', '.join(EMOTIONS)}")
        samples.append(CompositeSample(**rec))
    if len(samples) != rows:
        raise ValueError(f"{path}: header says rows={rows} but the file lists {len(samples)}")
    return CompositeSet(seed=seed, ratios=ratios, samples=tuple(samples), manifest_digests=digests)


# ------------------------------------------------------------------------------------------ sampler
class MixedBatchSampler:
    """Deterministic batches of indices mixing the sources in fixed ratios (paper: 50/30/10/10).

    Batch ``i`` takes ``counts_for_batch(i)[s]`` indices from source ``s``: the largest-remainder rounding of
    ``batch_size * ratio + carry``, where the carry is what earlier batches received too much or too little,
    so every batch holds exactly ``batch_size`` indices and the running totals never drift more than one
    index from ``ratio * batch_size * batches`` (batch 16 at 50/30/10/10: 8/5/2/1, 8/5/1/2, ...; ties go to
    the earlier source in DATASETS order). Each source is read through successive random permutations of its
    indices (one per epoch of that source) seeded from ``seed``; each batch is shuffled. Iterating again
    replays the same batches. Usable as a torch DataLoader ``batch_sampler``.
    """

    def __init__(self, source_indices: Mapping[str, list[int]], batch_size: int,
                 ratios: Mapping[str, float] | None = None, seed: int = 0, n_batches: int = 1):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if not isinstance(n_batches, (int, np.integer)) or n_batches < 0:
            raise ValueError(f"n_batches={n_batches!r} must be a non-negative integer")
        bad = [k for k in source_indices if k not in DATASETS]
        if bad:
            raise ValueError(f"source_indices names unknown source(s) {bad}; valid: {', '.join(DATASETS)}")
        fr = _ratio_fractions(DEFAULT_RATIOS if ratios is None else ratios)
        for s, f in fr.items():
            if f > 0 and not list(source_indices.get(s, ())):
                raise ValueError(f"ratios give {s!r} {float(f):g} of each batch but "
                                 f"source_indices[{s!r}] is empty")
        self.sources = tuple(s for s in DATASETS if fr[s] > 0)
        self.ratios = {s: float(fr[s]) for s in self.sources}
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.n_batches = int(n_batches)
        self._indices = {s: np.asarray(list(source_indices[s]), dtype=np.int64) for s in self.sources}
        self._denom = math.lcm(*(fr[s].denominator for s in self.sources))
        self._weights = [fr[s].numerator * (self._denom // fr[s].denominator) for s in self.sources]
        self._counts: list[tuple[int, ...]] = []
        self._carry = [0] * len(self.sources)

    def __len__(self) -> int:
        return self.n_batches

    def counts_for_batch(self, i: int) -> dict[str, int]:
        """Source -> number of indices batch ``i`` (0-based) takes."""
        if not 0 <= i:
            raise ValueError(f"batch index i={i} must be non-negative")
        while len(self._counts) <= i:
            desired = [self.batch_size * w + c for w, c in zip(self._weights, self._carry, strict=True)]
            counts = _apportion(desired, self._denom, self.batch_size)
            self._carry = [d - n * self._denom for d, n in zip(desired, counts, strict=True)]
            self._counts.append(tuple(counts))
        return dict(zip(self.sources, self._counts[i], strict=True))

    def __iter__(self) -> Iterator[list[int]]:
        streams = {}
        for s in self.sources:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, DATASETS.index(s)]))
            streams[s] = [rng, np.zeros(0, dtype=np.int64), 0]
        mixer = np.random.default_rng(np.random.SeedSequence([self.seed, len(DATASETS)]))
        for i in range(self.n_batches):
            batch: list[int] = []
            for s, k in self.counts_for_batch(i).items():
                stream = streams[s]
                while k > 0:
                    rng, perm, pos = stream
                    if pos >= len(perm):
                        perm, pos = rng.permutation(self._indices[s]), 0
                    take = perm[pos: pos + k]
                    batch.extend(int(x) for x in take)
                    k -= len(take)
                    stream[1], stream[2] = perm, pos + len(take)
            mixer.shuffle(batch)
            yield batch
