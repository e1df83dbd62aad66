import pytest

from cff_lib.captions import caption_from_attributes, source_caption
from cff_lib.emotions import EMOTIONS


@pytest.mark.parametrize("args, want", [
    ((25, "happy", "female"), "a 25-year-old happy woman"),
    ((70, None, "male"), "a 70-year-old man"),
    ((None, "sad", None), "a sad face"),
    ((None, None, "female"), "a woman"),
    ((None, None, None), "a face"),
    ((80, "angry", "male"), "an 80-year-old angry man"),
    ((18, None, None), "an 18-year-old person"),
    ((None, "angry", None), "an angry face"),
    ((None, "disgust", "female"), "a disgusted woman"),
    ((24.6, "calm", "male"), "a 25-year-old calm man"),
    ((8, None, "male"), "an 8-year-old man"),
])
def test_caption_examples(args, want):
    assert caption_from_attributes(*args) == want


def test_every_emotion_has_a_caption():
    captions = {caption_from_attributes(30, e, "female") for e in EMOTIONS}
    assert len(captions) == len(EMOTIONS)


@pytest.mark.parametrize("kwargs, argument", [
    ({"age": -1}, "age"), ({"age": 130}, "age"), ({"age": "old"}, "age"),
    ({"emotion": "joy"}, "emotion"), ({"gender": "other"}, "gender"),
])
def test_caption_validation_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}="):
        caption_from_attributes(**kwargs)


def test_source_caption():
    assert source_caption("female") == "a face of a woman"
    assert source_caption("male") == "a face of a man"
    assert source_caption() == "a face"
    with pytest.raises(ValueError, match="gender"):
        source_caption("robot")


def test_caption_variant_draws_every_form_with_its_cutoffs():
    import numpy as np

    from cff_lib.captions import caption_variant

    rng = np.random.default_rng(0)
    got = {caption_variant(rng, 30, "happy", "female", "a photo of a {} face") for _ in range(400)}
    assert got == {"a 30-year-old happy woman", "a photo of a happy face", "a 30-year-old woman",
                   "a happy woman", "a 30-year-old happy face"}
    only_full = {caption_variant(rng, 30, "sad", "male", "{}", (1.0, 1.0, 1.0, 1.0)) for _ in range(50)}
    assert only_full == {"a 30-year-old sad man"}
