import dataclasses
import io
import itertools

import numpy as np
import pytest
from PIL import Image

from cff_lib.emotions import EMOTIONS
from cff_lib.synthetic_faces import FaceAttributes, Identity, render_face, sample_identity


def _ids(n, start=0):
    return [sample_identity(np.random.default_rng(s)) for s in range(start, start + n)]


def _px(attrs, size=64, **kw):
    return np.asarray(render_face(attrs, size, **kw), dtype=np.float64)


def _png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_sample_identity_is_seeded_and_valid():
    a, b = sample_identity(np.random.default_rng(3)), sample_identity(np.random.default_rng(3))
    assert a == b and isinstance(a, Identity)
    assert sample_identity(np.random.default_rng(4)) != a
    genders = {sample_identity(np.random.default_rng(s)).gender for s in range(20)}
    assert genders == {"female", "male"}
    assert sample_identity(np.random.default_rng(0), "female").beard == "none"


@pytest.mark.parametrize("kwargs, argument", [
    ({"age": 10}, "age"), ({"age": 130}, "age"), ({"emotion": "joy"}, "emotion"),
    ({"intensity": 1.5}, "intensity"), ({"intensity": -0.1}, "intensity"),
])
def test_attribute_validation_names_the_argument(kwargs, argument):
    base = {"identity": _ids(1)[0], "age": 30, "emotion": "happy", "intensity": 1.0}
    with pytest.raises(ValueError, match=f"^{argument}="):
        FaceAttributes(**{**base, **kwargs})


def test_identity_validation():
    idn = _ids(1)[0]
    with pytest.raises(ValueError, match="hair_style"):
        dataclasses.replace(idn, hair_style="mohawk")
    with pytest.raises(ValueError, match="beard"):
        dataclasses.replace(idn, gender="female", beard="full")


def test_valence_arousal_properties():
    a = FaceAttributes(_ids(1)[0], 40, "happy", 0.5)
    assert (a.valence, a.arousal) == pytest.approx((0.4, 0.25))
    assert FaceAttributes(_ids(1)[0], 40, "sad", 1.0).valence < 0


def test_render_is_deterministic_rgb_and_sized():
    a = FaceAttributes(_ids(1)[0], 52.5, "fearful", 0.8)
    for size in (32, 64):
        img = render_face(a, size)
        assert img.mode == "RGB" and img.size == (size, size)
        assert _png(img) == _png(render_face(a, size))
    assert _png(render_face(a, 64, variation_seed=5)) == _png(render_face(a, 64, variation_seed=5))
    assert _png(render_face(a, 64, variation_seed=5)) != _png(render_face(a, 64, variation_seed=6))
    with pytest.raises(ValueError, match="size"):
        render_face(a, 4)


def test_intensity_zero_is_neutral():
    idn = _ids(1)[0]
    neutral = _png(render_face(FaceAttributes(idn, 30, "neutral"), 64))
    for e in EMOTIONS:
        assert _png(render_face(FaceAttributes(idn, 30, e, 0.0), 64)) == neutral


def test_hair_brightens_with_age():
    # a dark-haired, short-haired identity: the crown of the head turns grey then white
    for idn in _ids(3):
        idn = dataclasses.replace(idn, gender="female", beard="none", hair=(35, 25, 20), hair_style="short")
        crown = [_px(FaceAttributes(idn, age, "neutral"))[6:11, 26:38].mean() for age in (16, 35, 55, 75, 99)]
        assert all(b > a + 3 for a, b in itertools.pairwise(crown)), crown


def test_wrinkles_grow_with_age():
    # line energy on a bald forehead (between the brows and the crown) rises monotonically with age
    for idn in _ids(4):
        idn = dataclasses.replace(idn, gender="male", hair_style="balding")
        eye_line = 0.46 + idn.eye_level * idn.face_height  # render_face's layout, canvas fractions
        top, bottom = (int(64 * (eye_line - k * idn.face_height)) for k in (0.78, 0.4))
        energy = []
        for age in (16, 30, 45, 60, 75, 90):
            g = _px(FaceAttributes(idn, age, "neutral")).mean(axis=2)[top:bottom, 24:40]
            energy.append(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())
        assert all(b > a for a, b in itertools.pairwise(energy)), energy


def test_open_mouth_darkens_mouth_region():
    for idn in _ids(4):
        ref = _px(FaceAttributes(idn, 40, "neutral"))[40:52, 22:42].mean()
        assert _px(FaceAttributes(idn, 40, "surprised"))[40:52, 22:42].mean() < ref - 3


def test_emotions_pairwise_distinct_at_half_intensity():
    # every pair of emotions differs visibly around the eyes/brows or the mouth, at 32 px
    for idn in _ids(4, start=10):
        ims = {e: _px(FaceAttributes(idn, 45, e, 0.5), 32) for e in EMOTIONS}
        for a, b in itertools.combinations(EMOTIONS, 2):
            diff = np.abs(ims[a] - ims[b])[8:28, 6:26]
            assert diff.max() > 40 and diff.mean() > 1.0, (a, b, diff.max(), diff.mean())


def test_identity_stable_across_age_and_emotion():
    # the same person at two ages/emotions is closer (in a crude pixel sense) than two different people
    ids = _ids(6, start=20)
    same, other = [], []
    for i, idn in enumerate(ids):
        x = _px(FaceAttributes(idn, 30, "happy"), 32)
        same.append(np.abs(x - _px(FaceAttributes(idn, 45, "sad"), 32)).mean())
        other.append(np.abs(x - _px(FaceAttributes(ids[(i + 1) % len(ids)], 30, "happy"), 32)).mean())
    assert np.median(same) < np.median(other)


def test_variation_keeps_face_centred():
    a = FaceAttributes(_ids(1)[0], 30, "neutral")
    clean, varied = _px(a), _px(a, variation_seed=1)
    assert np.abs(clean - varied)[20:44, 20:44].mean() < np.abs(clean - varied).mean() * 3
    assert Image.fromarray(varied.astype(np.uint8)).size == (64, 64)
