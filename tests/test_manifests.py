"""Tests of cff_lib.manifests: building, writing, reading and verifying manifests of tiny fake datasets."""
from __future__ import annotations

import csv
import hashlib
import os
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cff_lib import manifests as mf
from cff_lib.naming import (
    CacdName,
    RavdessName,
    VoxCelebName,
    format_cacd,
    format_ffhq,
    format_ravdess,
    format_voxceleb,
)

SIDECAR_COLUMNS = ["path", "identity", "gender", "age", "emotion", "intensity", "valence", "arousal",
                   "caption"]


# ------------------------------------------------------------------------------------------ fake data
def _png(path: Path, seed: int, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, format=fmt)


def _wav(path: Path, seed: int, rate: int = 8000, n: int = 400) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.random.default_rng(seed).normal(0, 3000, n)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def make_ffhq(root: Path, n: int = 12) -> list[str]:
    rels = [format_ffhq(i) for i in range(0, n * 150, 150)]  # crosses thousand folders
    for i, rel in enumerate(rels):
        _png(root / rel, i)
    return rels


def make_cacd(root: Path, names=("Ann_Lee", "Bob_Stone", "Cy_Young", "Dee_Ray"),
              ages=(20, 30, 41)) -> list[str]:
    rels = []
    for k, name in enumerate(names):
        for j, age in enumerate(ages):
            rel = format_cacd(CacdName(age=age + k, name=name, idx=j + 1))
            _png(root / rel, 100 * k + j, fmt="JPEG")
            rels.append(rel)
    return rels


def make_ravdess(root: Path, actors=range(1, 7), emotions=("neutral", "happy", "sad")) -> list[str]:
    rels = []
    for a in actors:
        for e in emotions:
            rel = format_ravdess(RavdessName(3, 1, e, 1, 1, 1, a))
            _wav(root / rel, 1000 * a + len(rels))
            rels.append(rel)
    return rels


def make_voxceleb(root: Path, speakers=(10001, 10002, 10003, 10004, 10005), meta: bool = True) -> list[str]:
    rels = []
    for s in speakers:
        for u in (1, 2):
            rel = format_voxceleb(VoxCelebName(s, "abcdefghijk", u))
            _wav(root / rel, s + u)
            rels.append(rel)
    if meta:
        lines = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
        for s in speakers:
            gender, vox_set = ("m" if s % 2 else "f"), ("test" if s == 10005 else "dev")
            lines.append(f"id{s}\tPerson_{s}\t{gender}\tUSA\t{vox_set}")
        (root / "vox1_meta.csv").write_text("\n".join(lines) + "\n")
    return rels


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[p.relative_to(root).as_posix()] = (st.st_mtime_ns, st.st_size, digest)
    return out


# --------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("dataset,maker", [("ffhq", make_ffhq), ("cacd", make_cacd),
                                           ("ravdess", make_ravdess), ("voxceleb", make_voxceleb)])
def test_build_write_read_verify_roundtrip(tmp_path, dataset, maker):
    root = tmp_path / dataset
    rels = maker(root)
    (root / "README.md").write_text("not data")
    m = mf.build_manifest(dataset, root, seed=3, progress=False)
    assert [e.path for e in m.entries] == sorted(rels)
    assert m.world == "real" and m.dataset == dataset
    for e in m.entries:
        data = (root / e.path).read_bytes()
        assert e.bytes == len(data) and e.sha256 == hashlib.sha256(data).hexdigest()
    assert {e.split for e in m.entries} == {"train", "val", "test"}
    out = mf.write_manifest(m, tmp_path / "man" / mf.manifest_filename(dataset))
    first = out.read_text().splitlines()[0]
    assert first.startswith("#cff-manifest ") and f'"file_count": {len(rels)}' in first
    header = out.read_text().splitlines()[1].split(",")
    assert header == ["path", "split", "bytes", "sha256", *mf.label_columns(dataset)]
    back = mf.read_manifest(out)
    assert back == m
    report = mf.verify_manifest(back, root)
    assert report.ok and report.checked == len(rels), report.summary()
    assert report.summary().startswith("OK")


def test_labels_from_names(tmp_path):
    make_cacd(tmp_path / "c")
    cacd = mf.build_manifest("cacd", tmp_path / "c", progress=False)
    e = cacd.by_path()["31_Bob_Stone_0002.jpg"]
    assert e.label("age") == 31 and e.label("name") == "Bob_Stone" and e.label("photo_idx") == 2
    assert e.label("identity") == "Bob_Stone"
    make_ravdess(tmp_path / "r")
    rav = mf.build_manifest("ravdess", tmp_path / "r", progress=False)
    e = rav.by_path()["Actor_02/03-01-03-01-01-01-02.wav"]
    assert (e.label("emotion"), e.label("gender"), e.label("actor"), e.label("intensity_code")) == \
        ("happy", "female", 2, 1)
    make_voxceleb(tmp_path / "v")
    vox = mf.build_manifest("voxceleb", tmp_path / "v", progress=False)
    e = vox.by_path()["id10001/abcdefghijk/00002.wav"]
    assert (e.label("speaker"), e.label("utterance"), e.label("gender"), e.label("vox_set")) == \
        ("id10001", 2, "male", "dev")


def test_vox_meta_test_set_is_honoured(tmp_path):
    make_voxceleb(tmp_path / "v", speakers=(10001, 10002, 10003, 10004, 10005, 10006, 10007))
    for seed in (0, 1, 2):
        m = mf.build_manifest("voxceleb", tmp_path / "v", seed=seed, progress=False)
        test_speakers = {e.label("speaker") for e in m.split("test")}
        assert test_speakers == {"id10005"}
        assert m.split("val") and m.split("train")


def test_splits_grouped_deterministic_and_seeded(tmp_path):
    make_cacd(tmp_path / "c", names=tuple(f"Name_{chr(65 + i)}x" for i in range(12)))
    a = mf.build_manifest("cacd", tmp_path / "c", seed=1, progress=False)
    b = mf.build_manifest("cacd", tmp_path / "c", seed=1, progress=False)
    c = mf.build_manifest("cacd", tmp_path / "c", seed=2, progress=False)
    assert a == b
    assert [e.split for e in a.entries] != [e.split for e in c.entries]
    split_of_name: dict[str, set[str]] = {}
    for e in a.entries:
        split_of_name.setdefault(e.label("name"), set()).add(e.split)
    assert all(len(s) == 1 for s in split_of_name.values())
    counts = {s: len(a.split(s)) for s in mf.SPLITS}
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0


def test_ffhq_grouped_by_sidecar_identity(tmp_path):
    root = tmp_path / "f"
    rels = make_ffhq(root, n=20)
    with open(root / mf.SIDECAR_NAME, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SIDECAR_COLUMNS)
        for i, rel in enumerate(rels):
            w.writerow([rel, f"p{i // 4}", "m" if i % 2 else "female", 20 + i, "happy", 0.5, 0.4, 0.25,
                        f"a {20 + i}-year-old happy person, smiling"])
    m = mf.build_manifest("ffhq", root, progress=False)
    assert m.world == "synthetic"
    by_id: dict[str, set[str]] = {}
    for e in m.entries:
        by_id.setdefault(e.label("identity"), set()).add(e.split)
    assert len(by_id) == 5 and all(len(s) == 1 for s in by_id.values())
    e = m.by_path()[rels[3]]
    assert (e.label("gender"), e.label("age"), e.label("valence")) == ("male", 23.0, 0.4)
    assert "," in e.label("caption")
    assert mf.read_manifest(mf.write_manifest(m, tmp_path / "f.csv")) == m


def test_verify_reports_missing_extra_corrupt_and_modifies_nothing(tmp_path):
    root = tmp_path / "ffhq"
    rels = make_ffhq(root)
    m = mf.build_manifest("ffhq", root, progress=False)
    damaged, deleted = rels[2], rels[5]
    data = bytearray((root / damaged).read_bytes())
    data[-3] ^= 0xFF  # same size, different hash
    (root / damaged).write_bytes(bytes(data))
    (root / deleted).unlink()
    _png(root / format_ffhq(5000), 77)
    (root / "notes.txt").write_text("ignored")
    before = _snapshot(root)
    report = mf.verify_manifest(m, root)
    assert _snapshot(root) == before
    assert report.missing == (deleted,)
    assert report.extra == (format_ffhq(5000),)
    assert report.corrupt == (damaged,)
    assert not report.ok
    text = report.summary()
    assert text.startswith("BAD") and damaged in text and deleted in text and format_ffhq(5000) in text


def test_size_change_is_corrupt(tmp_path):
    root = tmp_path / "r"
    rels = make_ravdess(root)
    m = mf.build_manifest("ravdess", root, progress=False)
    with open(root / rels[0], "ab") as f:
        f.write(b"\0")
    assert mf.verify_manifest(m, root).corrupt == (rels[0],)


def test_wrong_hash_in_manifest_file_is_corrupt(tmp_path):
    root = tmp_path / "c"
    make_cacd(root)
    m = mf.build_manifest("cacd", root, progress=False)
    path = mf.write_manifest(m, tmp_path / "cacd.csv")
    victim = m.entries[4]
    text = path.read_text()
    assert victim.sha256 in text
    path.write_text(text.replace(victim.sha256, "0" * 64))
    report = mf.verify_manifest(mf.read_manifest(path), root)
    assert report.corrupt == (victim.path,) and not report.missing and not report.extra


def test_bad_cacd_name_is_named(tmp_path):
    root = tmp_path / "c"
    make_cacd(root)
    _png(root / "xx_Name.jpg", 1, fmt="JPEG")
    with pytest.raises(ValueError, match="xx_Name.jpg"):
        mf.build_manifest("cacd", root, progress=False)


def test_bad_ravdess_emotion_code_is_named(tmp_path):
    root = tmp_path / "r"
    make_ravdess(root)
    _wav(root / "Actor_01/03-01-09-01-01-01-01.wav", 5)
    with pytest.raises(ValueError, match="03-01-09-01-01-01-01.wav"):
        mf.build_manifest("ravdess", root, progress=False)


def test_missing_root_and_empty_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        mf.build_manifest("ffhq", tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("x")
    with pytest.raises(ValueError, match="no .png data files"):
        mf.build_manifest("ffhq", tmp_path / "empty", progress=False)
    with pytest.raises(ValueError, match="dataset='celeba'"):
        mf.build_manifest("celeba", tmp_path, progress=False)


def test_sidecar_disagreement_is_named(tmp_path):
    root = tmp_path / "c"
    rels = make_cacd(root)
    with open(root / mf.SIDECAR_NAME, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SIDECAR_COLUMNS)
        w.writerow([rels[0], "x", "f", 20.4, "", "", "", "", ""])  # within a year: agrees
        w.writerow([rels[1], "x", "f", 55, "", "", "", "", ""])
    with pytest.raises(ValueError, match=rels[1]):
        mf.build_manifest("cacd", root, progress=False)

    root = tmp_path / "r"
    rels = make_ravdess(root)
    with open(root / mf.SIDECAR_NAME, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SIDECAR_COLUMNS)
        w.writerow([rels[1], "a", "", 30, "angry", 1.0, "", "", ""])  # the name says happy
    with pytest.raises(ValueError, match=rels[1].split("/")[1]):
        mf.build_manifest("ravdess", root, progress=False)


def test_too_few_identities_to_split(tmp_path):
    root = tmp_path / "c"
    make_cacd(root, names=("Ann_Lee", "Bob_Stone"))
    with pytest.raises(ValueError, match="identity group"):
        mf.build_manifest("cacd", root, progress=False)
    m = mf.build_manifest("cacd", root, val_fraction=0.3, test_fraction=0.0, progress=False)
    assert not m.split("test") and m.split("val") and m.split("train")


def test_read_manifest_malformed(tmp_path):
    root = tmp_path / "f"
    make_ffhq(root)
    path = mf.write_manifest(mf.build_manifest("ffhq", root, progress=False), tmp_path / "ffhq.csv")
    lines = path.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    cells = lines[4].split(",")
    cells[1] = "holdout"  # the split column
    bad.write_text("\n".join(lines[:4] + [",".join(cells)] + lines[5:]) + "\n")
    with pytest.raises(ValueError, match=r"bad.csv line 5"):
        mf.read_manifest(bad)
    bad.write_text("path,split\n")
    with pytest.raises(ValueError, match=r"bad.csv line 1"):
        mf.read_manifest(bad)
    bad.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="file_count"):
        mf.read_manifest(bad)
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        mf.read_manifest(tmp_path / "absent.csv")


def test_verify_all(tmp_path):
    data, man = tmp_path / "data", tmp_path / "manifests"
    make_ffhq(data / "ffhq")
    make_ravdess(data / "ravdess")
    for d in ("ffhq", "ravdess"):
        mf.write_manifest(mf.build_manifest(d, data / d, progress=False), man / mf.manifest_filename(d))
    os.remove(data / "ravdess" / "Actor_03/03-01-01-01-01-01-03.wav")
    reports = mf.verify_all(man, data)
    assert set(reports) == {"ffhq", "ravdess"}
    assert reports["ffhq"].ok
    assert reports["ravdess"].missing == ("Actor_03/03-01-01-01-01-01-03.wav",)
    with pytest.raises(FileNotFoundError, match="manifest_dir"):
        mf.verify_all(tmp_path / "none", data)
