import csv
import dataclasses
import hashlib
import io
import wave

import numpy as np
import pytest
from PIL import Image

from cff_lib.emotions import EMOTIONS
from cff_lib.naming import parse_cacd, parse_ffhq, parse_ravdess, parse_voxceleb
from cff_lib.synthetic_faces import render_face
from cff_lib.synthetic_world import (
    DATASETS,
    SIDECAR_COLUMNS,
    SIDECAR_NAME,
    VOX_META_NAME,
    WorldSpec,
    cacd_samples,
    ffhq_sample,
    ravdess_sample,
    read_sidecar,
    synthetic_name,
    write_world,
)

SPEC = WorldSpec.tiny(0)


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    base = tmp_path_factory.mktemp("worlds")
    a = write_world(base / "a", SPEC, progress=False)
    b = write_world(base / "b", SPEC, progress=False)
    c = write_world(base / "c", WorldSpec.tiny(1), progress=False)
    return base, a, b, c


def test_returns_the_four_folders(worlds):
    base, a, _, _ = worlds
    assert list(a) == list(DATASETS) and all(a[n] == base / "a" / n for n in DATASETS)
    assert not list((base / "a").glob("*.partial"))
    assert not [p for p in (base / "a").rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_same_seed_byte_identical_other_seed_differs(worlds):
    base, _, _, _ = worlds
    ha, hb, hc = (_hashes(base / k) for k in "abc")
    assert ha == hb and len(ha) > 40
    media = [k for k in ha if not k.endswith(".csv")]
    shared = [k for k in media if k in hc]
    assert sum(ha[k] != hc[k] for k in shared) == len(shared)  # every same-named file differs
    assert ha.keys() != hc.keys() or shared


def test_every_file_follows_the_naming_and_is_in_the_sidecar(worlds):
    _, a, _, _ = worlds
    parsers = {"ffhq": parse_ffhq, "cacd": parse_cacd, "ravdess": parse_ravdess, "voxceleb": parse_voxceleb}
    for name, folder in a.items():
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        files -= {SIDECAR_NAME, VOX_META_NAME}
        assert files, name
        for f in files:
            parsers[name](f)
        rows = read_sidecar(folder)
        assert {r["path"] for r in rows} == files and len(rows) == len(files)
        with open(folder / SIDECAR_NAME, newline="") as fh:
            assert next(csv.reader(fh)) == list(SIDECAR_COLUMNS)
        for r in rows:
            assert r["gender"] in ("female", "male") and r["emotion"] in EMOTIONS
            assert 16 <= float(r["age"]) <= 99 and 0 <= float(r["intensity"]) <= 1
            assert -1 <= float(r["valence"]) <= 1 and -1 <= float(r["arousal"]) <= 1
            assert r["caption"].endswith(("woman", "man"))


def test_images_have_the_spec_size(worlds):
    _, a, _, _ = worlds
    for p in list(a["ffhq"].rglob("*.png")) + list(a["cacd"].glob("*.jpg")):
        with Image.open(p) as im:
            assert im.size == (SPEC.image_size, SPEC.image_size) and im.mode == "RGB"
    assert len(list(a["ffhq"].rglob("*.png"))) == SPEC.n_ffhq


def test_cacd_labels_and_age_span(worlds):
    _, a, _, _ = worlds
    rows = read_sidecar(a["cacd"])
    assert len(rows) == SPEC.n_cacd_identities * SPEC.cacd_images_per_identity
    by_name = {}
    for r in rows:
        item = parse_cacd(r["path"])
        assert int(r["age"]) == item.age and r["identity"] == item.name
        by_name.setdefault(item.name, []).append(item.age)
    assert len(by_name) == SPEC.n_cacd_identities
    for ages in by_name.values():
        assert min(ages) < 40 and max(ages) > 75


def test_ravdess_labels_gender_and_audio(worlds):
    _, a, _, _ = worlds
    rows = read_sidecar(a["ravdess"])
    assert len(rows) == len(SPEC.ravdess_items())
    for r in rows:
        item = parse_ravdess(r["path"])
        assert item.modality == 3 and item.vocal_channel == 1
        assert r["emotion"] == item.emotion and r["gender"] == item.gender
        assert r["identity"] == f"Actor_{item.actor:02d}"
        assert float(r["intensity"]) == {1: 0.5, 2: 1.0}[item.intensity]
        assert 21 <= int(r["age"]) <= 33
    assert not any(parse_ravdess(r["path"]).intensity == 2 for r in rows if r["emotion"] == "neutral")
    with wave.open(str(a["ravdess"] / rows[0]["path"]), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == int(SPEC.voice_seconds * 16000)


def test_voxceleb_meta_and_labels(worlds):
    _, a, _, _ = worlds
    text = (a["voxceleb"] / VOX_META_NAME).read_text()
    meta = list(csv.reader(io.StringIO(text), delimiter="\t"))
    assert meta[0] == ["VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set"]
    assert [m[0] for m in meta[1:]] == [f"id{10001 + j}" for j in range(SPEC.n_vox_speakers)]
    assert {m[4] for m in meta[1:]} <= {"dev", "test"} and "test" in {m[4] for m in meta[1:]}
    assert len({m[1] for m in meta[1:]}) == SPEC.n_vox_speakers
    gender = {m[0]: m[2] for m in meta[1:]}
    rows = read_sidecar(a["voxceleb"])
    assert len(rows) == SPEC.n_vox_speakers * SPEC.vox_videos_per_speaker * SPEC.vox_utterances_per_video
    for r in rows:
        item = parse_voxceleb(r["path"])
        assert r["identity"] == item.speaker_id and gender[item.speaker_id] == r["gender"][0]


def test_single_files_regenerate_alone(worlds):
    _, a, _, _ = worlds
    s = ffhq_sample(SPEC, 3)
    buf = io.BytesIO()
    render_face(s.attrs, SPEC.image_size, variation_seed=s.variation_seed).save(buf, format="PNG")
    assert buf.getvalue() == (a["ffhq"] / s.path).read_bytes()
    item = SPEC.ravdess_items()[-1]
    assert ravdess_sample(SPEC, item).path in {r["path"] for r in read_sidecar(a["ravdess"])}
    # CACD identities do not depend on how many there are
    bigger = dataclasses.replace(SPEC, n_cacd_identities=5)
    assert cacd_samples(bigger, 1) == cacd_samples(SPEC, 1)


def test_names_are_unique():
    rng = np.random.default_rng(0)
    names = [synthetic_name(i, rng) for i in range(6000)]
    assert len({n.split("_")[1] for n in names}) == 6000


def test_existing_target_needs_overwrite(tmp_path):
    spec = dataclasses.replace(SPEC, n_ffhq=2, n_cacd_identities=1, cacd_images_per_identity=2,
                               n_ravdess_actors=1, ravdess_emotions=("happy",), ravdess_intensities=(2,),
                               ravdess_statements=(1,), n_vox_speakers=1, vox_utterances_per_video=1,
                               voice_seconds=0.5)
    write_world(tmp_path, spec, progress=False)
    before = _hashes(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_world(tmp_path, spec, progress=False)
    (tmp_path / "ffhq.partial").mkdir()  # a stale partial from an interrupted run is cleaned up
    write_world(tmp_path, spec, progress=False, overwrite=True)
    assert _hashes(tmp_path) == before
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("kwargs, argument", [
    ({"n_ravdess_actors": 25}, "n_ravdess_actors"), ({"seed": -1}, "seed"), ({"image_size": 8}, "image_size"),
    ({"ravdess_emotions": ("joy",)}, "ravdess_emotions"), ({"n_ffhq": -2}, "n_ffhq"),
    ({"ravdess_statements": (3,)}, "ravdess_statements"),
])
def test_spec_validation_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        dataclasses.replace(SPEC, **kwargs)
