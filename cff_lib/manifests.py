"""Dataset manifests: every file of FFHQ, CACD, RAVDESS and VoxCeleb with its size, SHA-256, labels and split.

Serves the paper's "Datasets" paragraph (FFHQ, RAVDESS, CACD, VoxCeleb; "an approximate distribution of 70%
for training, 15% for validation, and 15% for testing"). A manifest pins down exactly which files a run saw,
so a result can be tied to its data and a damaged copy is caught before it silently changes a number.

Layout
------
A dataset root is one folder whose relative paths follow :mod:`cff_lib.naming` exactly:

- ``ffhq``: ``00000/00042.png``
- ``cacd``: ``<age>_<Name>_<idx:04d>.jpg`` (flat)
- ``ravdess``: ``Actor_AA/MM-VV-EE-II-SS-RR-AA.wav`` (audio files only; ``.mp4`` files are ignored)
- ``voxceleb``: ``idNNNNN/<video>/NNNNN.wav``, optionally with VoxCeleb1's tab-separated ``vox1_meta.csv``
  (columns ``VoxCeleb1 ID``, ``VGGFace1 ID``, ``Gender`` m/f, ``Nationality``, ``Set`` dev/test) at the root.

A root may also hold ``synthetic_attributes.csv`` (the synthetic world writes it; real copies do not have
it) with columns ``path, identity, gender, age, emotion, intensity, valence, arousal, caption``: ground
truth merged into the labels. Where a label exists both in a file name and in the sidecar (CACD age, RAVDESS
emotion, RAVDESS actor gender, VoxCeleb meta gender) they must agree, or building fails naming the file.
Ages agree when they differ by less than one year (CACD labels whole years). Sidecar rows naming files that
are not on disk are ignored.

Only files with the dataset's data extension are scanned (``.png``, ``.jpg``, ``.wav``); README files, CSV
sidecars and names starting with ``.`` are skipped. A data file whose name does not parse is an error naming
it.

Splits
------
Deterministic from ``seed`` and grouped so that one identity never straddles two splits: FFHQ per sidecar
identity when known (otherwise per image), CACD per celebrity name, RAVDESS per actor, VoxCeleb per speaker.
When ``vox1_meta.csv`` marks speakers ``Set == test``, exactly those speakers form the test split
(VoxCeleb1's official identification split) and the rest is divided into train and val. Groups are shuffled
and dealt to the split furthest below its target file count, after giving val and test one group each, so
the fractions hold closely on real sizes and every split is non-empty on small worlds (at least three groups
are required).

Manifest file
-------------
A CSV (UTF-8) whose first line is a header record ``#cff-manifest {json}`` holding ``dataset``, ``world``
("synthetic" when a sidecar was present, else "real"), ``seed``, ``val_fraction``, ``test_fraction``,
``builder_version`` and ``file_count``; then a normal CSV with columns ``path, split, bytes, sha256``
followed by the dataset's label columns (:func:`label_columns`) in this fixed order:

- ffhq: ``index``, then the sidecar columns
- cacd: ``name, age, photo_idx``, then the remaining sidecar columns
- ravdess: ``actor, gender, emotion, intensity_code, statement, repetition, modality, vocal_channel``, then
  the remaining sidecar columns (``intensity_code`` is RAVDESS's 1 normal / 2 strong; ``intensity`` is the
  sidecar's)
- voxceleb: ``speaker, video, utterance, gender, nationality, vox_set``, then the remaining sidecar columns

where "the sidecar columns" are ``identity, gender, age, emotion, intensity, valence, arousal, caption``. An
empty cell means unknown. ``identity`` is always filled except for FFHQ without a sidecar (CACD name,
``Actor_AA``, ``idNNNNN``). Pandas reads it with ``pd.read_csv(path, skiprows=1)``.

Building manifests of the real datasets
---------------------------------------
1. Obtain each dataset from its owners under their licence and unpack it so the layout above holds; for
   example ``data/ffhq/00000/00000.png`` (the 1024 px ``images1024x1024`` or the 256 px thumbnails both
   fit), ``data/cacd/14_Aaron_Johnson_0001.jpg`` (CACD2000's flat folder),
   ``data/ravdess/Actor_01/03-01-01-01-01-01-01.wav`` (the "Audio_Speech_Actors_01-24" archive) and
   ``data/voxceleb/id10001/1zcIwhmdeo4/00001.wav`` (VoxCeleb1's ``wav`` folder) with ``vox1_meta.csv``
   copied into ``data/voxceleb/``.
2. Build and write one manifest per dataset (hashing 70k FFHQ images takes a while; a progress bar shows
   it)::

       from cff_lib import manifests
       for name in manifests.DATASETS:
           m = manifests.build_manifest(name, f"data/{name}", seed=42)
           manifests.write_manifest(m, f"manifests/{manifests.manifest_filename(name)}")

3. Before any later run, check the copy is unchanged: ``manifests.verify_all("manifests", "data")`` returns
   one :class:`VerifyReport` per manifest found; ``report.ok`` is False and ``report.summary()`` lists
   missing, extra and corrupt files otherwise. Verification only reads.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from cff_lib import naming
from cff_lib.atomic import atomic_path
from cff_lib.emotions import EMOTIONS

DATASETS: tuple[str, ...] = ("ffhq", "cacd", "ravdess", "voxceleb")
"""The four datasets of the paper, in the order used everywhere (mixing ratios, seeds, tie-breaking)."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names, in file order."""

BUILDER_VERSION = 1
"""Bumped whenever the manifest layout or the split rule changes; stored in every manifest header."""

SIDECAR_NAME = "synthetic_attributes.csv"
"""Ground-truth sidecar the synthetic world writes at a dataset root."""

VOX_META_NAME = "vox1_meta.csv"
"""VoxCeleb1's speaker metadata file, expected at the VoxCeleb root when present."""

EXTENSIONS: dict[str, str] = {"ffhq": ".png", "cacd": ".jpg", "ravdess": ".wav", "voxceleb": ".wav"}
"""Data-file extension scanned per dataset (compared case-insensitively; the name must then parse)."""

_HEADER_TAG = "#cff-manifest "
_BASE_COLUMNS = ("path", "split", "bytes", "sha256")
_CHUNK = 1 << 20

# label column -> type ("int", "num" for float, "str"); unknown values are None
_SIDECAR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("identity", "str"), ("gender", "str"), ("age", "num"), ("emotion", "str"),
    ("intensity", "num"), ("valence", "num"), ("arousal", "num"), ("caption", "str"),
)
_NAME_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "ffhq": (("index", "int"),),
    "cacd": (("name", "str"), ("age", "num"), ("photo_idx", "int")),
    "ravdess": (("actor", "int"), ("gender", "str"), ("emotion", "str"), ("intensity_code", "int"),
                ("statement", "int"), ("repetition", "int"), ("modality", "int"), ("vocal_channel", "int")),
    "voxceleb": (("speaker", "str"), ("video", "str"), ("utterance", "int"), ("gender", "str"),
                 ("nationality", "str"), ("vox_set", "str")),
}


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} must be one of {', '.join(DATASETS)}")
    return dataset


def _schema(dataset: str) -> tuple[tuple[str, str], ...]:
    cols = list(_NAME_COLUMNS[_check_dataset(dataset)])
    seen = {c for c, _ in cols}
    cols += [(c, t) for c, t in _SIDECAR_COLUMNS if c not in seen]
    return tuple(cols)


def label_columns(dataset: str) -> tuple[str, ...]:
    """The dataset's label columns in manifest order (after ``path, split, bytes, sha256``)."""
    return tuple(c for c, _ in _schema(dataset))


def manifest_filename(dataset: str) -> str:
    """File name of a dataset's manifest inside a manifest folder (``ffhq.csv``)."""
    return f"{_check_dataset(dataset)}.csv"


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative POSIX path inside the dataset root, as cff_lib.naming formats it
    split: str  # "train", "val" or "test"
    bytes: int  # file size in bytes
    sha256: str  # lower-case hex SHA-256 of the file's bytes
    labels: dict[str, Any] = field(default_factory=dict)  # label column -> int/float/str, None when unknown

    def label(self, name: str) -> Any:
        """Value of label ``name`` (None when unknown or not a column of this dataset)."""
        return self.labels.get(name)


@dataclass(frozen=True)
class Manifest:
    dataset: str  # one of DATASETS
    world: str  # "synthetic" (built from a synthetic_attributes.csv world) or "real"
    seed: int  # seed the splits were drawn with
    val_fraction: float  # target fraction of files in val
    test_fraction: float  # target fraction of files in test
    entries: tuple[ManifestEntry, ...]  # one per data file, sorted by path
    builder_version: int = BUILDER_VERSION  # manifest layout / split rule version that built it

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def columns(self) -> tuple[str, ...]:
        """All CSV columns in file order."""
        return _BASE_COLUMNS + label_columns(self.dataset)

    def split(self, name: str) -> tuple[ManifestEntry, ...]:
        """Entries of split ``name`` ("train", "val" or "test"), in path order."""
        if name not in SPLITS:
            raise ValueError(f"split={name!r} must be one of {', '.join(SPLITS)}")
        return tuple(e for e in self.entries if e.split == name)

    def by_path(self) -> dict[str, ManifestEntry]:
        """Entries keyed by relative path."""
        return {e.path: e for e in self.entries}


# ------------------------------------------------------------------------------------------- scanning
def _is_data_file(dataset: str, name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(EXTENSIONS[dataset])


def _scan(dataset: str, root: Path) -> list[str]:
    """Relative POSIX paths of the data files under ``root``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if _is_data_file(dataset, name):
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_root(root: str | os.PathLike, argument: str = "root") -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{argument}={str(root)!r}: dataset root folder does not exist")
    return root


# ------------------------------------------------------------------------------------------ sidecars
def _gender(value: str | None, where: str) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("m", "male"):
        return "male"
    if v in ("f", "female"):
        return "female"
    raise ValueError(f"{where}: gender {value!r} must be m/f or male/female")


def _blank(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _read_sidecar(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of ``synthetic_attributes.csv`` keyed by relative path, values typed, blanks as None."""
    need = ("path",) + tuple(c for c, _ in _SIDECAR_COLUMNS)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows: dict[str, dict[str, Any]] = {}
        for line, row in enumerate(reader, start=2):
            where = f"{path} line {line}"
            rel = _blank(row["path"])
            if rel is None:
                raise ValueError(f"{where}: empty path")
            rel = PurePosixPath(rel).as_posix()
            if rel in rows:
                raise ValueError(f"{where}: path {rel!r} appears twice")
            out: dict[str, Any] = {}
            for col, typ in _SIDECAR_COLUMNS:
                raw = row[col] if col == "caption" else _blank(row[col])
                out[col] = _convert(raw if raw != "" else None, typ, where, col)
            out["gender"] = _gender(out["gender"], where)
            if out["emotion"] is not None and out["emotion"] not in EMOTIONS:
                raise ValueError(f"{where}: emotion {out['emotion']!r} is not one of {', '.join(EMOTIONS)}")
            rows[rel] = out
    return rows


def _read_vox_meta(path: Path) -> dict[str, dict[str, str | None]]:
    """VoxCeleb1 meta rows keyed by speaker id ("id10001"): gender, nationality, vox_set."""
    with open(path, newline="", encoding="utf-8") as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty VoxCeleb meta file")
    header = [h.strip() for h in lines[0].split("\t")]
    need = ("VoxCeleb1 ID", "Gender", "Nationality", "Set")
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"{path}: missing tab-separated column(s) {', '.join(missing)}")
    col = {h: i for i, h in enumerate(header)}
    out: dict[str, dict[str, str | None]] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) < len(header):
            raise ValueError(f"{path} line {line_no}: {len(cells)} cells, want {len(header)}")
        where = f"{path} line {line_no}"
        speaker = cells[col["VoxCeleb1 ID"]]
        vox_set = cells[col["Set"]].lower() or None
        if vox_set not in (None, "dev", "test"):
            raise ValueError(f"{where}: Set {vox_set!r} must be dev or test")
        out[speaker] = {"gender": _gender(_blank(cells[col["Gender"]]), where),
                        "nationality": _blank(cells[col["Nationality"]]), "vox_set": vox_set}
    return out


# ---------------------------------------------------------------------------------------- labelling
def _name_labels(dataset: str, rel: str, vox_meta: dict | None) -> dict[str, Any]:
    if dataset == "ffhq":
        return {"index": naming.parse_ffhq(rel), "identity": None}
    if dataset == "cacd":
        c = naming.parse_cacd(rel)
        return {"name": c.name, "age": float(c.age), "photo_idx": c.idx, "identity": c.name}
    if dataset == "ravdess":
        r = naming.parse_ravdess(rel)
        return {"actor": r.actor, "gender": r.gender, "emotion": r.emotion, "intensity_code": r.intensity,
                "statement": r.statement, "repetition": r.repetition, "modality": r.modality,
                "vocal_channel": r.vocal_channel, "identity": f"Actor_{r.actor:02d}"}
    v = naming.parse_voxceleb(rel)
    meta = (vox_meta or {}).get(v.speaker_id, {})
    return {"speaker": v.speaker_id, "video": v.video, "utterance": v.utterance,
            "gender": meta.get("gender"), "nationality": meta.get("nationality"),
            "vox_set": meta.get("vox_set"), "identity": v.speaker_id}


def _merge(dataset: str, rel: str, labels: dict[str, Any], side: dict[str, Any] | None) -> dict[str, Any]:
    out = {c: labels.get(c) for c in label_columns(dataset)}
    if side is None:
        return out
    for col, value in side.items():
        if value is None:
            continue
        known = out.get(col)
        if col == "identity":
            out[col] = value  # the sidecar's identity wins; splits still group by the name's key
        elif known is None:
            out[col] = value
        elif col == "age":
            if abs(float(value) - float(known)) >= 1.0:
                raise ValueError(f"{rel}: file-name age {known:g} disagrees with "
                                 f"{SIDECAR_NAME} age {value:g}")
        elif known != value:
            raise ValueError(f"{rel}: file-name {col} {known!r} disagrees with {SIDECAR_NAME} {col} "
                             f"{value!r}")
    return out


def _group_key(dataset: str, rel: str, labels: dict[str, Any]) -> str:
    if dataset == "ffhq":
        return f"identity:{labels['identity']}" if labels.get("identity") is not None else f"image:{rel}"
    if dataset == "cacd":
        return labels["name"]
    if dataset == "ravdess":
        return f"Actor_{labels['actor']:02d}"
    return labels["speaker"]


# ------------------------------------------------------------------------------------------- splits
def _assign_splits(dataset: str, groups: dict[str, int], forced_test: set[str], seed: int,
                   val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Map group key -> split; ``groups`` maps key -> file count."""
    keys = sorted(groups)
    rng = np.random.default_rng(np.random.SeedSequence([seed, DATASETS.index(dataset)]))
    order = [keys[i] for i in rng.permutation(len(keys))]
    total = sum(groups.values())
    target = {"train": total * (1.0 - val_fraction - test_fraction), "val": total * val_fraction,
              "test": total * test_fraction}
    have = dict.fromkeys(SPLITS, 0)
    out: dict[str, str] = {}
    if forced_test:
        for k in order:
            if k in forced_test:
                out[k] = "test"
                have["test"] += groups[k]
        target["test"] = 0.0
        rest = [k for k in order if k not in forced_test]
        free = [s for s in ("val",) if val_fraction > 0]
    else:
        rest = order
        free = [s for s in ("test", "val") if target[s] > 0]
    wanted = len(free) + 1
    if len(rest) < wanted:
        raise ValueError(f"{dataset}: {len(rest)} identity group(s) cannot fill {wanted} splits; "
                         f"add data or set val_fraction/test_fraction to 0")
    for k, s in zip(rest[:len(free)], free, strict=True):
        out[k] = s
        have[s] += groups[k]
    candidates = [s for s in SPLITS if s == "train" or target[s] > 0]
    for k in rest[len(free):]:
        s = max(candidates, key=lambda s: (target[s] - have[s], -SPLITS.index(s)))
        out[k] = s
        have[s] += groups[k]
    return out


def build_manifest(dataset: str, root: str | os.PathLike, *, seed: int = 42, val_fraction: float = 0.15,
                   test_fraction: float = 0.15, progress: bool = True) -> Manifest:
    """Scan, label, hash and split every data file of ``dataset`` under ``root`` (see module docstring)."""
    _check_dataset(dataset)
    root = _check_root(root)
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name}={frac} must lie in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction} must be below 1")
    rels = _scan(dataset, root)
    if not rels:
        raise ValueError(f"{dataset}: no {EXTENSIONS[dataset]} data files under {str(root)!r}")
    sidecar = _read_sidecar(root / SIDECAR_NAME) if (root / SIDECAR_NAME).is_file() else None
    vox_meta = None
    if dataset == "voxceleb" and (root / VOX_META_NAME).is_file():
        vox_meta = _read_vox_meta(root / VOX_META_NAME)

    rows = []
    for rel in tqdm(rels, desc=f"manifest {dataset}", unit="file", disable=not progress):
        labels = _merge(dataset, rel, _name_labels(dataset, rel, vox_meta), (sidecar or {}).get(rel))
        full = root / rel
        rows.append((rel, full.stat().st_size, _sha256(full), labels))

    groups: dict[str, int] = {}
    forced_test: set[str] = set()
    for rel, _, _, labels in rows:
        key = _group_key(dataset, rel, labels)
        groups[key] = groups.get(key, 0) + 1
        if labels.get("vox_set") == "test":
            forced_test.add(key)
    split_of = _assign_splits(dataset, groups, forced_test, seed, val_fraction, test_fraction)
    entries = tuple(ManifestEntry(rel, split_of[_group_key(dataset, rel, labels)], size, digest, labels)
                    for rel, size, digest, labels in rows)
    return Manifest(dataset=dataset, world="synthetic" if sidecar is not None else "real", seed=seed,
                    val_fraction=val_fraction, test_fraction=test_fraction, entries=entries)


# ------------------------------------------------------------------------------------------- CSV i/o
def _format(value: Any, typ: str) -> str:
    if value is None:
        return ""
    if typ == "num":
        v = float(value)
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(value)


def _convert(raw: str | None, typ: str, where: str, col: str) -> Any:
    if raw is None or raw == "":
        return None
    try:
        if typ == "int":
            return int(raw)
        if typ == "num":
            v = float(raw)
            if not np.isfinite(v):
                raise ValueError
            return v
    except ValueError:
        kind = "an integer" if typ == "int" else "a number"
        raise ValueError(f"{where}: column {col} = {raw!r} is not {kind}") from None
    return raw


def write_manifest(manifest: Manifest, path: str | os.PathLike) -> Path:
    """Write ``manifest`` as a header-record CSV (see the module docstring), atomically; returns the path."""
    schema = _schema(manifest.dataset)
    header = {"dataset": manifest.dataset, "world": manifest.world, "seed": manifest.seed,
              "val_fraction": manifest.val_fraction, "test_fraction": manifest.test_fraction,
              "builder_version": manifest.builder_version, "file_count": len(manifest.entries)}
    rows = ([e.path, e.split, e.bytes, e.sha256] + [_format(e.labels.get(c), t) for c, t in schema]
            for e in manifest.entries)
    return write_record_csv(path, _HEADER_TAG, header, manifest.columns, rows)


def write_record_csv(path: str | os.PathLike, tag: str, header: dict, columns, rows) -> Path:
    """A CSV whose first line is ``<tag>{json header}``, then ``columns`` and ``rows``; written atomically.
    The format of manifests and of the composite set (cff_lib.composite)."""
    buf = io.StringIO()
    buf.write(tag + json.dumps(header, sort_keys=True) + "\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return path


def read_record_csv(path: str | os.PathLike, tag: str, what: str) -> tuple[Path, dict, list[str] | None, Iterator]:
    """(path, header, column names, reader) of a :func:`write_record_csv` file; a missing file is a
    FileNotFoundError and a wrong tag or unparsable header a ValueError, each naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    first, _, body = path.read_text(encoding="utf-8").partition("\n")
    if not first.startswith(tag):
        raise ValueError(f"{path} line 1: not a cff {what} (must start with {tag.strip()!r})")
    try:
        header = json.loads(first[len(tag):])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line 1: malformed {what} header record ({exc})") from None
    reader = csv.reader(io.StringIO(body))
    return path, header, next(reader, None), reader


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest written by :func:`write_manifest`; malformed is a ValueError naming file and line."""
    path, header, columns, reader = read_record_csv(path, _HEADER_TAG, "manifest")
    try:
        dataset, world, seed = header["dataset"], header["world"], int(header["seed"])
        val_fraction, test_fraction = float(header["val_fraction"]), float(header["test_fraction"])
        version, count = int(header["builder_version"]), int(header["file_count"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} line 1: malformed manifest header record ({exc})") from None
    if dataset not in DATASETS:
        raise ValueError(f"{path} line 1: dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    if world not in ("synthetic", "real"):
        raise ValueError(f"{path} line 1: world {world!r} must be synthetic or real")
    schema = _schema(dataset)
    want = list(_BASE_COLUMNS + label_columns(dataset))
    if columns != want:
        raise ValueError(f"{path} line 2: columns {columns} differ from the {dataset} layout {want}")
    entries, seen = [], set()
    for line, row in enumerate(reader, start=3):
        where = f"{path} line {line}"
        if len(row) != len(want):
            raise ValueError(f"{where}: {len(row)} cells, want {len(want)}")
        rel, split, size, digest = row[:4]
        if not rel or rel in seen:
            raise ValueError(f"{where}: path {rel!r} is empty or repeated")
        if split not in SPLITS:
            raise ValueError(f"{where}: split {split!r} must be one of {', '.join(SPLITS)}")
        if not size.isdigit():
            raise ValueError(f"{where}: bytes {size!r} is not a non-negative integer")
        if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
            raise ValueError(f"{where}: sha256 {digest!r} is not 64 lower-case hex digits")
        labels = {c: _convert(raw, t, where, c) for (c, t), raw in zip(schema, row[4:], strict=True)}
        seen.add(rel)
        entries.append(ManifestEntry(rel, split, int(size), digest, labels))
    if len(entries) != count:
        raise ValueError(f"{path}: header says file_count={count} but the file lists {len(entries)} rows")
    return Manifest(dataset=dataset, world=world, seed=seed, val_fraction=val_fraction,
                    test_fraction=test_fraction, entries=tuple(entries), builder_version=version)


# ---------------------------------------------------------------------------------------- verifying
@dataclass(frozen=True)
class VerifyReport:
    dataset: str  # dataset the manifest describes
    root: str  # dataset root that was checked
    checked: int  # number of manifest entries compared against the disk
    missing: tuple[str, ...]  # in the manifest, absent on disk
    extra: tuple[str, ...]  # data files on disk that the manifest does not list
    corrupt: tuple[str, ...]  # present but with a different size or SHA-256

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.corrupt)

    def summary(self) -> str:
        """Readable multi-line account: one status line, then each problem file."""
        head = (f"{self.dataset} at {self.root}: {self.checked} file(s) checked, "
                f"{len(self.missing)} missing, {len(self.extra)} extra, {len(self.corrupt)} corrupt")
        lines = [("OK  " if self.ok else "BAD ") + head]
        for kind in ("missing", "extra", "corrupt"):
            lines += [f"  {kind}: {p}" for p in getattr(self, kind)]
        return "\n".join(lines)


def verify_manifest(manifest: Manifest, root: str | os.PathLike, *, progress: bool = False) -> VerifyReport:
    """Compare ``manifest`` with the files under ``root``; only reads, never modifies anything."""
    root = _check_root(root)
    on_disk = set(_scan(manifest.dataset, root))
    listed = manifest.by_path()
    missing, corrupt = [], []
    for rel, e in tqdm(sorted(listed.items()), desc=f"verify {manifest.dataset}", unit="file",
                       disable=not progress):
        full = root / rel
        if rel not in on_disk or not full.is_file():
            missing.append(rel)
        elif full.stat().st_size != e.bytes or _sha256(full) != e.sha256:
            corrupt.append(rel)
    extra = sorted(on_disk - set(listed))
    return VerifyReport(manifest.dataset, str(root), len(listed), tuple(missing), tuple(extra),
                        tuple(corrupt))


def verify_all(manifest_dir: str | os.PathLike, data_root: str | os.PathLike, *,
               progress: bool = False) -> dict[str, VerifyReport]:
    """Verify each ``<manifest_dir>/<dataset>.csv`` against ``<data_root>/<dataset>``; keyed by dataset."""
    manifest_dir = Path(manifest_dir)
    if not manifest_dir.is_dir():
        raise FileNotFoundError(f"manifest_dir={str(manifest_dir)!r} does not exist")
    data_root = _check_root(data_root, "data_root")
    reports = {}
    for name in DATASETS:
        mpath = manifest_dir / manifest_filename(name)
        if mpath.is_file():
            m = read_manifest(mpath)
            droot = data_root / name
            if not droot.is_dir():
                everything = tuple(e.path for e in m.entries)
                reports[name] = VerifyReport(name, str(droot), len(m), everything, (), ())
            else:
                reports[name] = verify_manifest(m, droot, progress=progress)
    if not reports:
        raise FileNotFoundError(f"manifest_dir={str(manifest_dir)!r} holds none of "
                                f"{', '.join(manifest_filename(d) for d in DATASETS)}")
    return reports
