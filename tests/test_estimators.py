"""Age and emotion estimators (AgeEst, EmoEst) used frozen inside the consistency losses."""

import pytest
import torch

from cff_lib.emotions import EMOTIONS
from cff_lib.estimators import (
    AGE_FILE,
    EMOTION_FILE,
    PRETRAINED_ESTIMATOR,
    AgeEstimator,
    AgeReading,
    EmotionEstimator,
    EmotionReading,
    EstimatorConfig,
    create_age_estimator,
    create_emotion_estimator,
)


@pytest.fixture(scope="module")
def age():
    torch.manual_seed(0)
    return create_age_estimator("synthetic")


@pytest.fixture(scope="module")
def emo():
    torch.manual_seed(1)
    return create_emotion_estimator("synthetic")


def test_age_reading(age):
    r = age(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert isinstance(r, AgeReading) and r.age.shape == (3,) and r.feature.shape == (3, 512)
    assert ((r.age >= 16) & (r.age <= 99)).all()
    torch.testing.assert_close(r.feature.norm(dim=-1), torch.ones(3))


def test_emotion_reading(emo):
    r = emo(torch.rand(3, 3, 128, 128) * 2 - 1)
    assert isinstance(r, EmotionReading)
    assert r.logits.shape == (3, len(EMOTIONS)) and r.valence_arousal.shape == (3, 2)
    assert r.feature.shape == (3, 512)
    assert r.valence_arousal.abs().max() <= 1
    torch.testing.assert_close(r.feature.norm(dim=-1), torch.ones(3))


def test_gradients_reach_pixels_through_frozen_estimators(age, emo):
    for model in (age, emo):
        model.freeze()
        torch.nn.ModuleList([model]).train()
        assert not model.training
        x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
        r = model(x)
        (r[0].sum() + r[-1].sum()).backward()
        assert x.grad.abs().sum() > 0 and all(p.grad is None for p in model.parameters())
        model.unfreeze()
        model.eval()


@pytest.mark.parametrize("bad", [torch.zeros(1, 3, 64, 48), torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
                                 torch.full((1, 3, 64, 64), 3.0), torch.zeros(64, 64, 3)])
def test_bad_images(age, emo, bad):
    for model in (age, emo):
        with pytest.raises(ValueError, match="images"):
            model(bad)


def test_round_trips(age, emo, tmp_path):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    a2 = create_age_estimator("synthetic", age.save(tmp_path / AGE_FILE))
    e2 = create_emotion_estimator("synthetic", emo.save(tmp_path / EMOTION_FILE))
    torch.testing.assert_close(a2(x).age, age(x).age, rtol=0, atol=0)
    torch.testing.assert_close(e2(x).logits, emo(x).logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="EmotionEstimator"):  # a file of the other kind
        create_age_estimator("synthetic", tmp_path / EMOTION_FILE)


def test_pretrained_slot_reads_the_larger_config_from_the_file(tmp_path):
    small = EstimatorConfig(widths=(8, 8, 16, 16), input_size=32)
    path = AgeEstimator(small).save(tmp_path / AGE_FILE)
    assert create_age_estimator("pretrained", path).config == small
    with torch.device("meta"):
        big = AgeEstimator(PRETRAINED_ESTIMATOR)
    assert big.config.widths == (64, 128, 256, 512) and big.config.input_size == 112


def test_pretrained_without_weights_fails_fast_naming_the_file(tmp_path, network_attempts):
    with pytest.raises(FileNotFoundError, match=AGE_FILE):
        create_age_estimator("pretrained", None)
    with pytest.raises(FileNotFoundError, match=EMOTION_FILE):
        create_emotion_estimator("pretrained", tmp_path / "absent.safetensors")
    assert network_attempts == []
    assert isinstance(create_emotion_estimator("pretrained", None, allow_untrained=True), EmotionEstimator)
