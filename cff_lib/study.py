"""The blind user study of the paper's Fig. 8 ("User study"): its protocol and its ratings store.

The paper: raters "evaluated outputs using a 5-point Likert scale (1 = poor, 5 = great) following the
examination of pairs of created faces and their reference image counterparts", on photorealism, emotional
expression, age accuracy, identity preservation and CMC, "double-blind", "10 distinct samples per model",
about 80 % specialists. This module holds that protocol; ``cff_lib.study_app`` serves it in a browser and
``cff_lib.study_analysis`` reads the ratings (notebook 10).

A study is one SQLite file (:func:`create_study`) holding the images (PNG), which method made each item, the
raters, each rater's running order and the ratings:

- **Items.** ``samples`` maps method -> [(reference, generated), ...]; position i is the same source face under
  every method (an evaluation edits the same held-out rows with each method), so per-face means pair up across
  methods. Every item and every image gets a random opaque id (``secrets.token_urlsafe``); which method made an
  item stays in the database, server-side.
- **Double blind.** What a rater's browser receives (:class:`Slot`) holds only opaque tokens: a slot id (one
  per shown pair, so a repeated pair has a new id) and two image tokens (new ones per slot); no method name,
  no method-derived id, no item id. Methods are revealed only by :meth:`Study.ratings` / :func:`export_csv`,
  which refuse while the study is open unless told otherwise.
- **Running order.** A rater (:meth:`Study.register_rater`, who says whether they are a specialist) gets
  ``samples_per_method`` faces (the least-assigned ones, random ties, so coverage stays balanced) under every
  method: n_methods x samples_per_method pairs in rounds that hold one pair of each method, each method with its
  own random order of the faces, the methods shuffled within a round and never the same method twice in a row
  at a round boundary (randomised and interleaved).
- **Attention checks.** ``attention_checks`` pairs of the first half are shown again later (at least
  :data:`MIN_REPEAT_GAP` positions after), under new slot and image tokens. Both ratings are stored; the repeat
  is marked (``repeat_of``) and :meth:`Study.attention` compares them.
- **Storage.** SQLite in WAL mode (``journal_mode=WAL``, ``synchronous=FULL``): one connection per call (so
  per thread and per request), every write one ``BEGIN IMMEDIATE`` transaction; a rating is committed
  before the next pair is served, so concurrent raters lose nothing and a crash loses at most the rating
  being submitted. Bad input (a score outside 1-5, an unknown rater or slot, a slot already rated, a closed
  study) raises :class:`StudyError` naming it, and nothing is stored. CHECK constraints back the scores up.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import math
import os
import random
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cff_lib.atomic import atomic_path

CRITERIA = ("photorealism", "emotional_expression", "age_accuracy", "identity_preservation",
            "cross_modal_consistency")
"""The five criteria (database and CSV column names), in the paper's order."""

CRITERION_LABELS = {"photorealism": "Photorealism", "emotional_expression": "Emotional expression",
                    "age_accuracy": "Age accuracy", "identity_preservation": "Identity preservation",
                    "cross_modal_consistency": "Cross-modal consistency"}
"""How the rating page names each criterion."""

SCORE_MIN, SCORE_MAX = 1, 5
SAMPLES_PER_METHOD = 10
"""The paper's "10 distinct samples per model" per rater."""

ATTENTION_CHECKS = 2
MIN_REPEAT_GAP = 3
ATTENTION_TOLERANCE = 1
"""A repeated pair passes when every criterion's two scores differ by at most this."""

SCHEMA_VERSION = 1
OPEN, CLOSED = "open", "closed"


class StudyError(ValueError):
    """A request the study refuses (bad score, unknown rater or slot, closed study); nothing was stored."""


@dataclass(frozen=True)
class StudyInfo:
    """What a study holds (server-side: it names the methods)."""

    path: Path
    title: str
    status: str  # "open" | "closed"
    methods: tuple[str, ...]
    n_faces: int
    samples_per_method: int
    attention_checks: int
    n_raters: int
    n_ratings: int
    journal_mode: str
    created: str
    source: str  # where the samples came from (free text)

    @property
    def slots_per_rater(self) -> int:
        return len(self.methods) * self.samples_per_method + self.attention_checks


@dataclass(frozen=True)
class Rater:
    """A registered rater: an opaque id and the length of their running order."""

    rater_id: str
    specialist: bool
    n_slots: int


@dataclass(frozen=True)
class Slot:
    """One pair as the rater's browser sees it: opaque tokens only (no method, no item id)."""

    slot_id: str
    position: int  # 0-based place in the rater's running order
    total: int  # pairs in the running order
    reference_token: str  # fetch the reference image by this token (Study.image)
    generated_token: str  # fetch the generated image by this token


@dataclass(frozen=True)
class Progress:
    """How far a rater is: ratings stored, pairs in the order, and the next pair (None when done)."""

    rated: int
    total: int
    next_slot: Slot | None

    @property
    def done(self) -> bool:
        return self.next_slot is None


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE methods (method_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE images (image_id TEXT PRIMARY KEY, png BLOB NOT NULL);
CREATE TABLE items (
    item_id TEXT PRIMARY KEY,
    method_id INTEGER NOT NULL REFERENCES methods(method_id),
    face INTEGER NOT NULL,
    reference_image TEXT NOT NULL REFERENCES images(image_id),
    generated_image TEXT NOT NULL REFERENCES images(image_id),
    UNIQUE (method_id, face));
CREATE TABLE raters (
    rater_id TEXT PRIMARY KEY,
    specialist INTEGER NOT NULL CHECK (specialist IN (0, 1)),
    registered TEXT NOT NULL);
CREATE TABLE slots (
    slot_id TEXT PRIMARY KEY,
    rater_id TEXT NOT NULL REFERENCES raters(rater_id),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(item_id),
    repeat_of INTEGER,
    reference_token TEXT NOT NULL UNIQUE,
    generated_token TEXT NOT NULL UNIQUE,
    UNIQUE (rater_id, position));
CREATE TABLE ratings (
    slot_id TEXT PRIMARY KEY REFERENCES slots(slot_id),
    rater_id TEXT NOT NULL REFERENCES raters(rater_id),
    {scores},
    submitted TEXT NOT NULL);
CREATE INDEX slots_by_item ON slots(item_id);
CREATE INDEX ratings_by_rater ON ratings(rater_id);
""".format(scores=",\n    ".join(f"{c} INTEGER NOT NULL CHECK ({c} BETWEEN {SCORE_MIN} AND {SCORE_MAX})"
                                 for c in CRITERIA))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _token() -> str:
    return secrets.token_urlsafe(12)


# ------------------------------------------------------------------------------------------ images
def png_bytes(image: Any, argument: str = "image") -> bytes:
    """PNG bytes of ``image``: a PIL image, a path Pillow reads, PNG bytes, a uint8 array (H, W[, 3]) or a
    float array / tensor in the library's range [-1, 1], channels last (H, W, 3) or first (3, H, W)."""
    import numpy as np
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise StudyError(f"{argument}: cannot read {str(image)!r} as an image ({err})") from None
    elif isinstance(image, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(image)) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise StudyError(f"{argument}: the bytes are not an image ({err})") from None
    if not isinstance(image, Image.Image):
        if hasattr(image, "detach"):
            image = image.detach().float().cpu().numpy()
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = np.moveaxis(arr, 0, -1)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3) or min(arr.shape[:2]) < 1:
            raise StudyError(f"{argument}: expected an image (H, W, 3), (3, H, W) or (H, W), got shape {arr.shape}")
        if arr.dtype == np.uint8:
            pass
        elif np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise StudyError(f"{argument}: contains NaN or inf")
            if arr.min() < -1 - 1e-6 or arr.max() > 1 + 1e-6:
                raise StudyError(f"{argument}: float images must lie in [-1, 1] (the library's range), got "
                                 f"[{arr.min():.3g}, {arr.max():.3g}]")
            arr = np.round((arr.clip(-1, 1) + 1) * 127.5).astype(np.uint8)
        else:
            raise StudyError(f"{argument}: unsupported dtype {arr.dtype} (uint8, or float in [-1, 1])")
        image = Image.fromarray(arr)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ connections
def _open(path: Path, durable: bool = True) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=True)
    con.execute("PRAGMA busy_timeout = 60000")
    con.execute("PRAGMA foreign_keys = ON")
    con.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    return con


@contextlib.contextmanager
def _transaction(con: sqlite3.Connection, write: bool):
    con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _check_samples(samples: Any, samples_per_method: int) -> tuple[list[str], int]:
    if not isinstance(samples, Mapping) or len(samples) < 2:
        raise StudyError("samples must map at least two method names to lists of (reference, generated) pairs")
    methods = []
    for name, pairs in samples.items():
        if not isinstance(name, str) or not name.strip():
            raise StudyError(f"samples: method names must be non-empty strings, got {name!r}")
        if not isinstance(pairs, Sequence) or isinstance(pairs, (str, bytes)):
            raise StudyError(f"samples[{name!r}] must be a list of (reference, generated) pairs")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise StudyError(f"samples[{name!r}][{i}] must be a pair (reference, generated)")
        methods.append(name)
    counts = {m: len(samples[m]) for m in methods}
    if len(set(counts.values())) != 1:
        raise StudyError(f"samples: every method needs the same faces (position i = face i), got counts {counts}")
    n = next(iter(counts.values()))
    if n < samples_per_method:
        raise StudyError(f"samples: each method has {n} faces; a rater sees samples_per_method="
                         f"{samples_per_method} of them, so at least that many are needed")
    return methods, n


def create_study(path: str | os.PathLike, samples: Mapping[str, Sequence[tuple[Any, Any]]], *,
                 samples_per_method: int = SAMPLES_PER_METHOD, attention_checks: int = ATTENTION_CHECKS,
                 title: str = "Face editing study", source: str = "", overwrite: bool = False) -> StudyInfo:
    """Build a study at ``path`` (one SQLite file) from ``samples`` (method -> [(reference, generated)]; see the
    module docstring for the images accepted and for the protocol). The file is written beside its place and
    renamed into it (``cff_lib.atomic``), then switched to WAL. Returns its :class:`StudyInfo`."""
    import numpy as np

    path = Path(path)
    if not isinstance(samples_per_method, int) or isinstance(samples_per_method, bool) or samples_per_method < 1:
        raise StudyError(f"samples_per_method={samples_per_method!r} must be a positive integer")
    if not isinstance(attention_checks, int) or isinstance(attention_checks, bool) or attention_checks < 0:
        raise StudyError(f"attention_checks={attention_checks!r} must be a non-negative integer")
    methods, n_faces = _check_samples(samples, samples_per_method)
    first_half = len(methods) * samples_per_method - MIN_REPEAT_GAP
    if attention_checks > max(0, first_half // 2):
        raise StudyError(f"attention_checks={attention_checks} is too many for a running order of "
                         f"{len(methods) * samples_per_method} pairs")
    if path.exists() and not overwrite:
        raise FileExistsError(f"a study already exists at {path} (pass overwrite=True / --overwrite to replace it)")
    for suffix in ("-wal", "-shm"):
        if Path(str(path) + suffix).exists() and not overwrite:
            raise FileExistsError(f"{path}{suffix} exists: is a study at {path} still being served?")
    references = []
    for i in range(n_faces):
        ref = png_bytes(samples[methods[0]][i][0], f"samples[{methods[0]!r}][{i}] reference")
        for m in methods[1:]:
            other = png_bytes(samples[m][i][0], f"samples[{m!r}][{i}] reference")
            if other != ref:
                from PIL import Image

                a, b = (np.asarray(Image.open(io.BytesIO(x))) for x in (ref, other))
                if a.shape != b.shape or not np.array_equal(a, b):
                    raise StudyError(f"samples[{m!r}][{i}]: its reference differs from samples[{methods[0]!r}]"
                                     f"[{i}]'s; position i must be the same source face under every method")
        references.append(ref)
    with atomic_path(path) as tmp:
        con = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            con.executescript(_SCHEMA)
            con.execute("BEGIN")
            meta = {"schema": SCHEMA_VERSION, "title": title, "status": OPEN, "samples_per_method": samples_per_method,
                    "attention_checks": attention_checks, "n_faces": n_faces, "created": _now(), "source": source,
                    "criteria": list(CRITERIA)}
            con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            ref_ids = []
            for png in references:
                ref_ids.append(_token())
                con.execute("INSERT INTO images VALUES (?, ?)", (ref_ids[-1], png))
            for method_id, m in enumerate(methods):
                con.execute("INSERT INTO methods VALUES (?, ?)", (method_id, m))
                for face, (_, gen) in enumerate(samples[m]):
                    gen_id = _token()
                    con.execute("INSERT INTO images VALUES (?, ?)",
                                (gen_id, png_bytes(gen, f"samples[{m!r}][{face}] generated")))
                    con.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                                (_token(), method_id, face, ref_ids[face], gen_id))
            con.execute("COMMIT")
        finally:
            con.close()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    finally:
        con.close()
    if mode.lower() != "wal":
        raise RuntimeError(f"{path}: SQLite refused WAL mode (got {mode!r}); is the folder on a network share?")
    return Study(path).info()


# ------------------------------------------------------------------------------------------ the study
def _score(value: Any, criterion: str) -> int:
    if isinstance(value, bool):
        raise StudyError(f"{criterion}={value!r} must be an integer from {SCORE_MIN} to {SCORE_MAX}")
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value.strip())
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if not isinstance(value, int) or not SCORE_MIN <= value <= SCORE_MAX:
        raise StudyError(f"{criterion}={value!r} must be an integer from {SCORE_MIN} to {SCORE_MAX}")
    return value


def _running_order(faces: Sequence[int], n_methods: int, attention_checks: int,
                   rng: random.Random) -> list[tuple[int, int, int | None]]:
    """[(method index, face, repeat_of position or None)] in the order shown (module docstring)."""
    per_method = [rng.sample(list(faces), len(faces)) for _ in range(n_methods)]
    order: list[tuple[int, int, int | None]] = []
    for r in range(len(faces)):
        methods = rng.sample(range(n_methods), n_methods)
        if order and n_methods > 1 and methods[0] == order[-1][0]:
            methods[0], methods[-1] = methods[-1], methods[0]
        order.extend((m, per_method[m][r], None) for m in methods)
    originals = rng.sample(range(len(order) // 2), attention_checks) if attention_checks else []
    for m, face, _ in [order[p] for p in originals]:  # each repeat goes at least MIN_REPEAT_GAP after its original
        first = order.index((m, face, None))
        places = list(range(first + MIN_REPEAT_GAP, len(order) + 1))
        apart = [a for a in places if order[a - 1][0] != m and (a == len(order) or order[a][0] != m)]
        order.insert(rng.choice(apart or places), (m, face, -1))  # not next to a pair of the same method
    # later insertions only push pairs back, so every gap stays >= MIN_REPEAT_GAP; name the final positions
    return [(m, face, None if rep is None else order.index((m, face, None))) for m, face, rep in order]


class Study:
    """A study on disk. Every method opens its own SQLite connection, so one ``Study`` may be shared by threads
    (the rating server's request handlers) and by several processes.

    ``durable=True`` (the default, for real raters) commits with ``synchronous=FULL``: a committed rating
    survives even a power cut. ``durable=False`` (``NORMAL``; the simulated panel) is still safe against a
    crashed process but may lose the last commits to a power cut. The object also keeps one idle connection
    open (:meth:`release` closes it) so that the WAL is not checkpointed and deleted at each request's close.
    """

    def __init__(self, path: str | os.PathLike, *, durable: bool = True):
        self.path = Path(path)
        self.durable = bool(durable)
        if not self.path.is_file():
            raise FileNotFoundError(f"no study at {self.path} (cff study create makes one)")
        self._anchor: sqlite3.Connection | None = None
        with self._connect() as con:
            try:
                schema = json.loads(con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])
            except (sqlite3.DatabaseError, TypeError):
                raise StudyError(f"{self.path} is not a study database") from None
        if schema != SCHEMA_VERSION:
            raise StudyError(f"{self.path}: study schema {schema}, this code reads {SCHEMA_VERSION}")
        self._anchor = sqlite3.connect(str(self.path), check_same_thread=False)
        self._anchor.execute("SELECT COUNT(*) FROM meta").fetchone()  # holds the WAL open between requests

    def release(self) -> None:
        """Close the idle connection (the last close checkpoints the WAL into the database file)."""
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()

    @contextlib.contextmanager
    def _connect(self):
        con = _open(self.path, self.durable)
        try:
            yield con
        finally:
            con.close()

    def _meta(self, con, key: str) -> Any:
        return json.loads(con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # ---------------------------------------------------------------- server-side
    def info(self) -> StudyInfo:
        with self._connect() as con:
            meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
            methods = tuple(r[0] for r in con.execute("SELECT name FROM methods ORDER BY method_id"))
            n_raters = con.execute("SELECT COUNT(*) FROM raters").fetchone()[0]
            n_ratings = con.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        return StudyInfo(self.path, meta["title"], meta["status"], methods, meta["n_faces"],
                         meta["samples_per_method"], meta["attention_checks"], n_raters, n_ratings, mode,
                         meta["created"], meta["source"])

    @property
    def is_open(self) -> bool:
        with self._connect() as con:
            return self._meta(con, "status") == OPEN

    def close(self) -> None:
        """Close the study: no more raters or ratings; methods may now be revealed (idempotent)."""
        with self._connect() as con, _transaction(con, write=True):
            con.execute("UPDATE meta SET value = ? WHERE key = 'status'", (json.dumps(CLOSED),))
            con.execute("INSERT OR REPLACE INTO meta VALUES ('closed', ?)", (json.dumps(_now()),))

    def _require_open(self, con) -> None:
        if self._meta(con, "status") != OPEN:
            raise StudyError(f"the study {self.path.name} is closed: it takes no more raters or ratings")

    # ---------------------------------------------------------------- what a rater's browser sees
    def register_rater(self, specialist: bool, *, seed: int | None = None) -> Rater:
        """A new rater and their running order (module docstring). ``specialist``: True for specialists
        (graphic designers, AI researchers, ...), False for regular users. ``seed`` fixes the order (tests and
        simulations); by default it is drawn from the OS."""
        if not isinstance(specialist, bool):
            raise StudyError(f"specialist={specialist!r} must be True (specialist) or False (regular user)")
        rng = random.Random(seed if seed is not None else secrets.randbits(64))
        with self._connect() as con, _transaction(con, write=True):
            self._require_open(con)
            spm, checks = self._meta(con, "samples_per_method"), self._meta(con, "attention_checks")
            n_methods = con.execute("SELECT COUNT(*) FROM methods").fetchone()[0]
            load = dict(con.execute(
                "SELECT i.face, COUNT(s.slot_id) FROM items i LEFT JOIN slots s ON s.item_id = i.item_id "
                "AND s.repeat_of IS NULL GROUP BY i.face"))
            faces = sorted(load, key=lambda f: (load[f], rng.random()))[:spm]
            items = {(m, f): i for i, m, f in con.execute("SELECT item_id, method_id, face FROM items")}
            rater = _token()
            con.execute("INSERT INTO raters VALUES (?, ?, ?)", (rater, int(specialist), _now()))
            order = _running_order(faces, n_methods, checks, rng)
            con.executemany("INSERT INTO slots VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(_token(), rater, pos, items[(m, f)], rep, _token(), _token())
                             for pos, (m, f, rep) in enumerate(order)])
        return Rater(rater, specialist, len(order))

    def _rater(self, con, rater_id: Any) -> int:
        if not isinstance(rater_id, str) or not rater_id:
            raise StudyError(f"rater_id={rater_id!r} must be the id the study gave you at registration")
        if not con.execute("SELECT 1 FROM raters WHERE rater_id = ?", (rater_id,)).fetchone():
            raise StudyError(f"unknown rater_id {rater_id!r}")
        return con.execute("SELECT COUNT(*) FROM slots WHERE rater_id = ?", (rater_id,)).fetchone()[0]

    def _next(self, con, rater_id: str, total: int) -> Slot | None:
        row = con.execute(
            "SELECT s.slot_id, s.position, s.reference_token, s.generated_token FROM slots s LEFT JOIN ratings r "
            "ON r.slot_id = s.slot_id WHERE s.rater_id = ? AND r.slot_id IS NULL ORDER BY s.position LIMIT 1",
            (rater_id,)).fetchone()
        return None if row is None else Slot(row[0], row[1], total, row[2], row[3])

    def progress(self, rater_id: str) -> Progress:
        """Ratings stored for ``rater_id``, the length of their order and the next pair to rate."""
        with self._connect() as con, _transaction(con, write=False):
            total = self._rater(con, rater_id)
            rated = con.execute("SELECT COUNT(*) FROM ratings WHERE rater_id = ?", (rater_id,)).fetchone()[0]
            return Progress(rated, total, self._next(con, rater_id, total))

    def rate(self, rater_id: str, slot_id: str, scores: Mapping[str, Any]) -> Progress:
        """Store the rater's five scores for ``slot_id`` in one transaction; returns the progress after it.
        Raises :class:`StudyError` (nothing stored) on an unknown rater or slot, a slot already rated, a score
        outside 1-5, a missing or unknown criterion, or a closed study."""
        if not isinstance(scores, Mapping):
            raise StudyError(f"scores must map each of {CRITERIA} to an integer 1-5")
        unknown = sorted(set(map(str, scores)) - set(CRITERIA))
        missing = [c for c in CRITERIA if c not in scores]
        if unknown or missing:
            raise StudyError(f"scores: unknown criteria {unknown}, missing {missing}; expected {list(CRITERIA)}")
        values = [_score(scores[c], c) for c in CRITERIA]
        if not isinstance(slot_id, str) or not slot_id:
            raise StudyError(f"slot_id={slot_id!r} must be the id of a pair the study showed you")
        with self._connect() as con, _transaction(con, write=True):
            self._require_open(con)
            total = self._rater(con, rater_id)
            owner = con.execute("SELECT rater_id FROM slots WHERE slot_id = ?", (slot_id,)).fetchone()
            if owner is None or owner[0] != rater_id:
                raise StudyError(f"unknown slot_id {slot_id!r} for this rater")
            if con.execute("SELECT 1 FROM ratings WHERE slot_id = ?", (slot_id,)).fetchone():
                raise StudyError(f"slot_id {slot_id!r} is already rated; ratings cannot be changed")
            con.execute(f"INSERT INTO ratings (slot_id, rater_id, {', '.join(CRITERIA)}, submitted) "
                        f"VALUES (?, ?, {', '.join('?' * len(CRITERIA))}, ?)", (slot_id, rater_id, *values, _now()))
            rated = con.execute("SELECT COUNT(*) FROM ratings WHERE rater_id = ?", (rater_id,)).fetchone()[0]
            return Progress(rated, total, self._next(con, rater_id, total))

    def image(self, token: Any) -> bytes:
        """PNG bytes of the image a slot shows under ``token``; StudyError when no slot has that token."""
        if not isinstance(token, str) or not token:
            raise StudyError(f"image token {token!r} is not valid")
        with self._connect() as con:
            row = con.execute(
                "SELECT img.png FROM slots s JOIN items i ON i.item_id = s.item_id JOIN images img ON img.image_id "
                "= CASE WHEN s.reference_token = ? THEN i.reference_image ELSE i.generated_image END "
                "WHERE s.reference_token = ? OR s.generated_token = ?", (token, token, token)).fetchone()
        if row is None:
            raise StudyError(f"unknown image token {token!r}")
        return bytes(row[0])

    # ---------------------------------------------------------------- revealing (server-side)
    def item_of(self, slot_id: str) -> tuple[str, int]:
        """(method, face) a slot shows. Server-side only (the simulated panel's "eyes"); nothing a rater's
        browser receives calls it."""
        with self._connect() as con:
            row = con.execute("SELECT m.name, i.face FROM slots s JOIN items i ON i.item_id = s.item_id JOIN "
                              "methods m ON m.method_id = i.method_id WHERE s.slot_id = ?", (slot_id,)).fetchone()
        if row is None:
            raise StudyError(f"unknown slot_id {slot_id!r}")
        return row[0], int(row[1])

    def ratings(self, *, allow_open: bool = False) -> list[dict[str, Any]]:
        """Every stored rating with its rater, item, face, method (and its index in the study's order) and
        attention flag, in (rater, position) order. Reveals the methods, so it refuses while the study is open
        unless ``allow_open``."""
        with self._connect() as con, _transaction(con, write=False):
            if self._meta(con, "status") == OPEN and not allow_open:
                raise StudyError(f"the study {self.path.name} is still open; close it first (cff study export "
                                 "--close): the ratings name the methods")
            cur = con.execute(
                "SELECT r.rater_id, ra.specialist, s.position, s.slot_id, s.item_id, i.face, m.name, m.method_id, "
                "s.repeat_of, "
                f"{', '.join('r.' + c for c in CRITERIA)}, r.submitted FROM ratings r "
                "JOIN slots s ON s.slot_id = r.slot_id JOIN raters ra ON ra.rater_id = r.rater_id "
                "JOIN items i ON i.item_id = s.item_id JOIN methods m ON m.method_id = i.method_id "
                "ORDER BY ra.registered, r.rater_id, s.position")
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        for r in rows:
            r["specialist"] = bool(r["specialist"])
            r["method"] = r.pop("name")
        return rows

    def attention(self, tolerance: int = ATTENTION_TOLERANCE, *, allow_open: bool = False) -> list[dict[str, Any]]:
        """One row per rated repeat: rater, positions, the largest score difference over the criteria and
        whether it passed (<= ``tolerance``)."""
        rows = self.ratings(allow_open=allow_open)
        by_pos = {(r["rater_id"], r["position"]): r for r in rows}
        out = []
        for r in rows:
            if r["repeat_of"] is None or (r["rater_id"], r["repeat_of"]) not in by_pos:
                continue
            first = by_pos[(r["rater_id"], r["repeat_of"])]
            diff = max(abs(r[c] - first[c]) for c in CRITERIA)
            out.append({"rater_id": r["rater_id"], "specialist": r["specialist"], "position": r["repeat_of"],
                        "repeat_position": r["position"], "max_abs_difference": diff,
                        "passed": diff <= tolerance})
        return out


EXPORT_COLUMNS = ("rater_id", "specialist", "position", "slot_id", "item_id", "face", "method", "repeat_of",
                  *CRITERIA, "submitted")


def export_csv(study: str | os.PathLike | Study, out: str | os.PathLike, *, close: bool = False,
               allow_open: bool = False) -> Path:
    """Write every rating (:meth:`Study.ratings`, columns :data:`EXPORT_COLUMNS`) to ``out`` atomically.
    ``close``: close the study first; an open study is refused unless ``allow_open`` (the file names the
    methods)."""
    study = study if isinstance(study, Study) else Study(study)
    if close:
        study.close()
    rows = study.ratings(allow_open=allow_open)
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r[k] is None else r[k]) for k in EXPORT_COLUMNS})
    return out


def read_images_folder(folder: str | os.PathLike, reference: str = "reference") -> dict[str, list[tuple[Path, Path]]]:
    """``samples`` for :func:`create_study` from a folder: ``folder/<reference>/<face>.png`` and one subfolder per
    method, ``folder/<method>/<face>.png`` with the same file names (a face missing under a method is an
    error). The method is the subfolder's name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    ref_dir = folder / reference
    if not ref_dir.is_dir():
        raise FileNotFoundError(f"{folder} has no {reference}/ subfolder of reference faces")
    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    names = sorted(p.name for p in ref_dir.iterdir() if p.suffix.lower() in exts)
    if not names:
        raise StudyError(f"{ref_dir} holds no images")
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != reference):
        missing = [n for n in names if not (sub / n).is_file()]
        if missing:
            raise StudyError(f"method folder {sub} lacks {missing[:3]} (it needs one image per reference face)")
        out[sub.name] = [(ref_dir / n, sub / n) for n in names]
    if len(out) < 2:
        raise StudyError(f"{folder} needs at least two method subfolders besides {reference}/")
    return out


def samples_from_evaluation(profile, n_faces: int = 20, seed: int = 0,
                            methods: Sequence[str] | None = None) -> dict[str, list[tuple[Any, Any]]]:
    """``samples`` for :func:`create_study` from the evaluation's methods (``evaluation.run_methods``) on
    ``n_faces`` held-out rows of the profile's evaluation pool (``evaluation.seed_rows``): the trained
    ClipFaceFusion, the text-only baseline (trained now if it is not cached) and the reconstruction."""
    from cff_lib import baselines, evaluation
    from cff_lib.config import load_profile
    from cff_lib.dataset import load_rows
    from cff_lib.model import load_trained_model

    profile = load_profile(profile) if isinstance(profile, (str, os.PathLike)) else profile
    methods = tuple(methods or evaluation.METHODS)
    model = load_trained_model(profile)
    baseline, _ = baselines.load_or_train_baseline(model, profile)
    rows = evaluation.seed_rows(evaluation.eval_pool(profile), seed, n_faces)
    images, conds = load_rows(profile, rows)
    outs = evaluation.run_methods(model, baseline, images, conds, seed, profile, methods=methods)
    return {m: [(images[i].cpu(), outs[m][i].cpu()) for i in range(images.shape[0])] for m in methods}


__all__ = ["ATTENTION_CHECKS", "CRITERIA", "CRITERION_LABELS", "EXPORT_COLUMNS", "SAMPLES_PER_METHOD", "Progress",
           "Rater", "Slot", "Study", "StudyError", "StudyInfo", "create_study", "export_csv", "png_bytes",
           "read_images_folder", "samples_from_evaluation"]
