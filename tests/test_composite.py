"""Tests of cff_lib.composite: the composite set (sizes, splits, determinism, CSV) and the batch sampler."""
from __future__ import annotations

from collections import Counter

import pytest

from cff_lib import composite as cp
from cff_lib.manifests import DATASETS, Manifest, ManifestEntry
from cff_lib.naming import (
    CacdName,
    RavdessName,
    VoxCelebName,
    format_cacd,
    format_ffhq,
    format_ravdess,
    format_voxceleb,
)

EMOS = ("neutral", "happy", "sad", "angry")


def _split(k: int) -> str:
    return "train" if k % 10 < 6 else ("val" if k % 10 < 8 else "test")


def _entry(path: str, split: str, **labels) -> ManifestEntry:
    return ManifestEntry(path=path, split=split, bytes=10, sha256="ab" * 32, labels=labels)


def fake_manifests(synthetic: bool = False) -> dict[str, Manifest]:
    """In-memory manifests whose splits are grouped by identity, like build_manifest's."""
    ffhq = []
    for i in range(80):
        side = dict(identity=f"f{i // 2}", gender="female" if i % 4 < 2 else "male", age=20.0 + i % 50,
                    emotion="calm", intensity=0.5) if synthetic else dict(identity=None)
        ffhq.append(_entry(format_ffhq(i), _split(i // 2), index=i, **side))
    cacd = []
    for k in range(20):
        name = f"Name_N{k:02d}"
        for j, age in enumerate((20 + k, 20 + k, 35 + k, 50 + k)):
            cacd.append(_entry(format_cacd(CacdName(age, name, j + 1)), _split(k), name=name, age=float(age),
                               photo_idx=j + 1, identity=name,
                               **(dict(gender="male", emotion="sad", intensity=0.7) if synthetic else {})))
    rav = []
    for a in range(1, 21):
        for e in EMOS:
            for code in ((1,) if e == "neutral" else (1, 2)):
                r = RavdessName(3, 1, e, code, 1, 1, a)
                rav.append(_entry(format_ravdess(r), _split(a), actor=a, gender=r.gender, emotion=e,
                                  intensity_code=code, identity=f"Actor_{a:02d}"))
    vox = []
    for s in range(10):
        for u in (1, 2, 3):
            v = VoxCelebName(10001 + s, "abcdefghijk", u)
            vox.append(_entry(format_voxceleb(v), _split(s), speaker=v.speaker_id, video=v.video, utterance=u,
                              identity=v.speaker_id,
                              **(dict(age=30.0 + s, emotion="happy") if synthetic else {})))
    out = {}
    for name, entries in zip(DATASETS, (ffhq, cacd, rav, vox), strict=True):
        out[name] = Manifest(dataset=name, world="synthetic" if synthetic else "real", seed=0,
                             val_fraction=0.2, test_fraction=0.2, entries=tuple(entries))
    return out


def test_sizes_and_source_counts_exact():
    cs = cp.build_composite(fake_manifests(), n_train=200, n_val=50, seed=7, progress=False)
    assert len(cs.split("train")) == 200 and len(cs.split("val")) == 50 and len(cs) == 250
    want = {"ffhq": 100, "cacd": 60, "ravdess": 20, "voxceleb": 20}
    assert Counter(s.source for s in cs.split("train")) == want
    assert Counter(s.source for s in cs.split("val")) == {"ffhq": 25, "cacd": 15, "ravdess": 5, "voxceleb": 5}
    assert cp.split_counts(55_000) == {"ffhq": 27_500, "cacd": 16_500, "ravdess": 5_500, "voxceleb": 5_500}
    assert sum(cp.split_counts(7, {"ffhq": 1 / 3, "cacd": 1 / 3, "ravdess": 1 / 3}).values()) == 7


def test_splits_never_mix():
    ms = fake_manifests()
    split_of = {f"{d}/{e.path}": e.split for d, m in ms.items() for e in m.entries}
    cs = cp.build_composite(ms, n_train=300, n_val=80, seed=1, progress=False)
    idents = {}
    for split in cp.COMPOSITE_SPLITS:
        rows = cs.split(split)
        for s in rows:
            for p in (s.image, s.audio, s.target_image):
                if p is not None:
                    assert split_of[p] == split, (p, split)
        idents[split] = {s.identity for s in rows} | {s.speaker for s in rows if s.speaker}
    assert not idents["train"] & idents["val"]


def test_deterministic_and_seeded():
    ms = fake_manifests()
    a = cp.build_composite(ms, n_train=120, n_val=30, seed=5, progress=False)
    b = cp.build_composite(ms, n_train=120, n_val=30, seed=5, progress=False)
    c = cp.build_composite(ms, n_train=120, n_val=30, seed=6, progress=False)
    assert a == b
    assert a.samples != c.samples


def test_row_contents():
    from cff_lib.captions import caption_from_attributes
    ms = fake_manifests()
    cs = cp.build_composite(ms, n_train=200, n_val=50, seed=3, progress=False)
    cacd = {e.path: e for e in ms["cacd"].entries}
    rav = {e.path: e for e in ms["ravdess"].entries}
    train_ages = {e.label("age") for e in ms["cacd"].split("train")}
    for s in cs.split("train"):
        assert s.caption
        if s.source == "cacd":
            src, tgt = cacd[s.image.removeprefix("cacd/")], cacd[s.target_image.removeprefix("cacd/")]
            assert src.path != tgt.path and src.label("name") == tgt.label("name")
            assert s.target_age == tgt.label("age") != s.source_age == src.label("age")
            assert s.audio is None and s.target_emotion is None
            assert s.caption == caption_from_attributes(int(s.target_age), None, None)
        else:
            assert s.image.startswith("ffhq/") and s.audio is not None
        if s.source in ("ffhq", "ravdess"):
            clip = rav[s.audio.removeprefix("ravdess/")]
            assert s.target_emotion == clip.label("emotion")
            assert s.target_intensity == cp.INTENSITY_FROM_CODE[clip.label("intensity_code")]
        if s.source == "ffhq":
            assert s.target_age in train_ages
            assert s.caption == caption_from_attributes(int(s.target_age), s.target_emotion, None)
        if s.source == "voxceleb":
            assert s.audio.startswith("voxceleb/") and s.target_age is None and s.target_emotion is None


def test_synthetic_labels_flow_through():
    cs = cp.build_composite(fake_manifests(synthetic=True), n_train=100, n_val=20, seed=2, progress=False)
    for s in cs.samples:
        assert s.gender in ("female", "male") and s.source_age is not None
        if s.source == "cacd":
            assert s.target_emotion == "sad" and s.target_intensity == 0.7
        if s.source == "voxceleb":
            assert s.target_emotion == "happy" and 30 <= s.target_age < 40


def test_write_read_roundtrip(tmp_path):
    cs = cp.build_composite(fake_manifests(synthetic=True), n_train=90, n_val=20, seed=4, progress=False)
    path = cp.write_composite(cs, tmp_path / "out" / "composite.csv")
    assert path.read_text().startswith("#cff-composite ")
    assert cp.read_composite(path) == cs
    lines = path.read_text().splitlines()
    assert lines[6].startswith("train,")
    lines[6] = "holdout" + lines[6].removeprefix("train")
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="bad.csv line 7"):
        cp.read_composite(tmp_path / "bad.csv")


def test_composite_argument_errors():
    ms = fake_manifests()
    with pytest.raises(ValueError, match="lacks cacd"):
        cp.build_composite({k: v for k, v in ms.items() if k != "cacd"}, n_train=10, n_val=2, seed=0,
                           progress=False)
    only_vox = cp.build_composite({k: ms[k] for k in ("ffhq", "voxceleb")}, n_train=10, n_val=2, seed=0,
                                  ratios={"voxceleb": 1.0}, progress=False)
    assert {s.source for s in only_vox.samples} == {"voxceleb"}
    with pytest.raises(ValueError, match="sum to 1"):
        cp.build_composite(ms, n_train=10, n_val=2, seed=0, ratios={"ffhq": 0.5}, progress=False)
    with pytest.raises(ValueError, match="n_train"):
        cp.build_composite(ms, n_train=-1, n_val=2, seed=0, progress=False)


# ------------------------------------------------------------------------------------------- sampler
def _indices(sizes=(50, 30, 7, 11)):
    out, start = {}, 0
    for d, n in zip(DATASETS, sizes, strict=True):
        out[d] = list(range(start, start + n))
        start += n
    return out


def test_sampler_counts_follow_paper_example():
    s = cp.MixedBatchSampler(_indices(), batch_size=16, seed=0, n_batches=4)
    assert s.counts_for_batch(0) == {"ffhq": 8, "cacd": 5, "ravdess": 2, "voxceleb": 1}
    assert s.counts_for_batch(1) == {"ffhq": 8, "cacd": 5, "ravdess": 1, "voxceleb": 2}


def test_sampler_long_run_ratios_exact():
    idx = _indices()
    where = {i: d for d, ids in idx.items() for i in ids}
    s = cp.MixedBatchSampler(idx, batch_size=16, seed=3, n_batches=1000)
    batches = list(s)
    assert len(batches) == len(s) == 1000
    assert all(len(b) == 16 for b in batches)
    tally = Counter(where[i] for b in batches for i in b)
    for d, r in cp.DEFAULT_RATIOS.items():
        assert abs(tally[d] / 16000 - r) < 1e-3
    for i, b in enumerate(batches[:50]):
        assert Counter(where[j] for j in b) == Counter({k: v for k, v in s.counts_for_batch(i).items() if v})


def test_sampler_epochs_deterministic_and_seeded():
    idx = _indices()
    a = list(cp.MixedBatchSampler(idx, batch_size=16, seed=9, n_batches=40))
    assert a == list(cp.MixedBatchSampler(idx, batch_size=16, seed=9, n_batches=40))
    assert a != list(cp.MixedBatchSampler(idx, batch_size=16, seed=10, n_batches=40))
    # each source is read in whole permutations: after any number of batches, no item of a source has been
    # drawn twice more often than another (ravdess: 7 items, about 1.6 per batch)
    for d in ("ravdess", "voxceleb", "cacd"):
        seen = Counter({i: 0 for i in idx[d]})
        for b in a:
            seen.update(i for i in b if i in seen)
            assert max(seen.values()) - min(seen.values()) <= 1
        assert min(seen.values()) >= 2


def test_sampler_tiny_ratio_never_negative():
    ratios = {"ffhq": 0.97, "cacd": 0.01, "ravdess": 0.01, "voxceleb": 0.01}
    s = cp.MixedBatchSampler(_indices(), batch_size=4, ratios=ratios, seed=0, n_batches=500)
    totals = Counter()
    for i in range(500):
        c = s.counts_for_batch(i)
        assert min(c.values()) >= 0 and sum(c.values()) == 4
        totals.update(c)
    for d, r in ratios.items():
        assert abs(totals[d] - r * 2000) <= 1


def test_sampler_errors():
    with pytest.raises(ValueError, match="sum to 1"):
        cp.MixedBatchSampler(_indices(), 16, ratios={"ffhq": 0.5, "cacd": 0.3}, n_batches=1)
    with pytest.raises(ValueError, match="unknown source"):
        cp.MixedBatchSampler(_indices(), 16, ratios={"ffhq": 0.5, "celeba": 0.5}, n_batches=1)
    with pytest.raises(ValueError, match="source_indices\\['voxceleb'\\]"):
        cp.MixedBatchSampler({**_indices(), "voxceleb": []}, 16, n_batches=1)
    with pytest.raises(ValueError, match="batch_size"):
        cp.MixedBatchSampler(_indices(), 0, n_batches=1)


def test_sampler_from_composite():
    cs = cp.build_composite(fake_manifests(), n_train=160, n_val=40, seed=0, progress=False)
    rows = cs.split("train")
    s = cp.MixedBatchSampler(cs.source_indices("train"), batch_size=16, seed=0, n_batches=10)
    for i, b in enumerate(s):
        got = Counter(rows[j].source for j in b)
        assert got == Counter({k: v for k, v in s.counts_for_batch(i).items() if v})
