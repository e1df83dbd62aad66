"""Eqs. 1-8 as one module (MultiModalEncoder) and the per-world factory (backends.create_encoders)."""

import pytest
import torch

import cff_lib  # noqa: F401
from cff_lib.backends import create_encoders
from cff_lib.encoder_base import check_images
from cff_lib.encoders import (
    EMOTION_PROMPT,
    AgeEmbeddingConfig,
    NumericAgeEmbedding,
    load_multimodal_heads,
    save_multimodal_heads,
)


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    return create_encoders("synthetic", {})


@pytest.fixture(scope="module")
def mm(world):
    return world.multimodal


def _images(b=2, size=64, grad=False):
    x = torch.rand(b, 3, size, size) * 2 - 1
    return x.requires_grad_() if grad else x


def _wave(b=2):
    return 0.1 * torch.randn(b, 16000, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------- factory
def test_world_contents(world):
    assert world.backend == "synthetic"
    assert world.untrained == ("audio_emotion", "age", "emotion", "multimodal")
    for m in (world.multimodal.clip, world.multimodal.audio, world.multimodal.audio_emotion, world.arcface,
              world.vgg, world.age, world.emotion):
        assert m.frozen and not any(p.requires_grad for p in m.parameters())
    assert world.multimodal.alpha.raw.requires_grad and world.multimodal.beta.raw.requires_grad
    world.train()
    assert not world.arcface.training and world.multimodal.age_embedding.training
    world.eval()


def test_unknown_weight_key_and_backend():
    with pytest.raises(ValueError, match="weights"):
        create_encoders("synthetic", {"clipp": None})
    with pytest.raises(ValueError, match="backend"):
        create_encoders("real", {})


def test_pretrained_without_weights_fails_fast(network_attempts):
    with pytest.raises(FileNotFoundError, match="CLIP ViT-B/32"):
        create_encoders("pretrained", {})
    with pytest.raises(FileNotFoundError, match="Wav2Vec"):
        create_encoders("pretrained", {"clip": __file__, "arcface": __file__, "vgg": __file__})
    assert network_attempts == []


# --------------------------------------------------------------------------------- Eqs. 1, 2, 8
def test_text_audio_image_shapes(mm):
    f_t = mm.encode_text(["a young happy woman", "an elderly sad man"])
    f_a = mm.encode_audio(_wave(), sample_rate=16000)
    f_i = mm.encode_image(_images())
    assert f_t.shape == f_i.shape == (2, 512) and f_a.shape == (2, 768)
    torch.testing.assert_close(f_t.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(f_i.norm(dim=-1), torch.ones(2))


def test_image_gradient(mm):
    x = _images(grad=True)
    mm.encode_image(x).sum().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("bad, what", [
    (torch.zeros(1, 3, 32, 32), "64x64"),
    (torch.zeros(1, 3, 64, 48), "square"),
    (torch.zeros(1, 1, 64, 64), "channels"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "float"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.int64), "float"),
    (torch.full((1, 3, 64, 64), 1.002), "[-1, 1]"),
    (torch.full((1, 3, 64, 64), -1.5), "[-1, 1]"),
    (torch.zeros(0, 3, 64, 64), "empty"),
    ("not a tensor", "torch.Tensor"),
])
def test_bad_images(mm, bad, what):
    with pytest.raises(ValueError, match="images") as e:
        mm.encode_image(bad)
    assert what in str(e.value)


def test_range_tolerance():
    check_images(torch.full((1, 3, 8, 8), 1.0009))
    with pytest.raises(ValueError):
        check_images(torch.full((1, 3, 8, 8), 1.0011))


def test_audio_validation_through_the_module(mm):
    with pytest.raises(ValueError, match="sample_rate"):
        mm.encode_audio(_wave(), sample_rate=22050)
    with pytest.raises(ValueError, match="waveform"):
        mm.encode_audio(torch.randn(1, 2, 16000), sample_rate=16000)


@pytest.mark.parametrize("bad", ["one string", [], [None]])
def test_bad_prompts(mm, bad):
    with pytest.raises(ValueError, match="prompts"):
        mm.encode_text(bad)


# --------------------------------------------------------------------------------- Eqs. 4-5
def test_age_only_number_only_text_and_both(mm):
    age = torch.tensor([25.3, 70.0])
    texts = ["a 25-year-old face", "a 70-year-old face"]
    f_num = mm.encode_age(age=age)
    f_txt = mm.encode_age(age_text=texts)
    torch.testing.assert_close(f_num, mm.age_embedding(age))
    torch.testing.assert_close(f_txt, mm.clip.encode_text(texts))
    a = mm.alpha()
    torch.testing.assert_close(mm.encode_age(age, texts), a * f_txt + (1 - a) * f_num)
    assert f_num.shape == (2, 512)
    torch.testing.assert_close(f_num.norm(dim=-1), torch.ones(2))


def test_numeric_age_embedding_separates_ages():
    emb = NumericAgeEmbedding(AgeEmbeddingConfig())
    f = emb(torch.tensor([20.0, 21.0, 80.0]))
    assert not torch.allclose(f[0], f[1]) and not torch.allclose(f[0], f[2])


@pytest.mark.parametrize("bad", [torch.tensor([-1.0]), torch.tensor([121.0]),
                                 torch.tensor([30.0, float("nan")]), torch.tensor(30.0), 30, torch.zeros(0)])
def test_bad_age(mm, bad):
    with pytest.raises(ValueError, match="age"):
        mm.encode_age(age=bad)


def test_age_edges_are_fine(mm):
    assert mm.encode_age(age=torch.tensor([0.0, 120.0])).shape == (2, 512)


def test_age_needs_something_and_matching_batches(mm):
    with pytest.raises(ValueError, match="age"):
        mm.encode_age()
    with pytest.raises(ValueError, match="age_text"):
        mm.encode_age(age=torch.tensor([30.0]), age_text=["a", "b"])
    with pytest.raises(ValueError, match="age_text"):
        mm.encode_age(age_text="a 30-year-old face")


# --------------------------------------------------------------------------------- Eqs. 6-7
def test_emotion_text_audio_and_both(mm):
    f_a = mm.encode_audio(_wave(), 16000)
    f_txt = mm.encode_emotion(emotion=["happy", "sad"])
    torch.testing.assert_close(f_txt, mm.clip.encode_text([EMOTION_PROMPT.format("happy"),
                                                           EMOTION_PROMPT.format("sad")]))
    f_aud = mm.encode_emotion(audio_features=f_a)
    torch.testing.assert_close(f_aud, mm.audio_emotion(f_a).feature)
    b = mm.beta()
    torch.testing.assert_close(mm.encode_emotion(["a happy face", "a sad face"], f_a),
                               b * mm.clip.encode_text(["a happy face", "a sad face"]) + (1 - b) * f_aud)
    assert f_aud.shape == (2, 512)


def test_unknown_emotion_is_named(mm):
    with pytest.raises(ValueError, match="'joyful'") as e:
        mm.encode_emotion(emotion=["happy", "joyful"])
    assert "emotion[1]" in str(e.value)


def test_emotion_input_errors(mm):
    with pytest.raises(ValueError, match="emotion"):
        mm.encode_emotion()
    with pytest.raises(ValueError, match="not both"):
        mm.encode_emotion(["a happy face"], emotion=["happy"])
    with pytest.raises(ValueError, match="audio_features"):
        mm.encode_emotion(audio_features=torch.zeros(1, 512))
    with pytest.raises(ValueError, match="audio_features"):
        mm.encode_emotion(["a", "b", "c"], audio_features=torch.randn(2, 768))


# --------------------------------------------------------------------------------- α, β
def test_alpha_beta_in_unit_interval_and_trainable(mm):
    mm.zero_grad()
    f_a = mm.encode_audio(_wave(), 16000)
    loss = (mm.encode_age(torch.tensor([30.0, 60.0]), ["a", "b"]).sum()
            + mm.encode_emotion(emotion=["happy", "angry"], audio_features=f_a).sum())
    loss.backward()
    for coef in (mm.alpha, mm.beta):
        assert 0.0 <= float(coef().detach()) <= 1.0
        assert coef.raw.grad is not None and coef.raw.grad.abs() > 0
    opt = torch.optim.SGD([mm.alpha.raw, mm.beta.raw], lr=1e4)
    opt.step()  # however large the step, the coefficients stay inside [0, 1]
    assert 0.0 <= float(mm.alpha().detach()) <= 1.0 and 0.0 <= float(mm.beta().detach()) <= 1.0
    mm.zero_grad()


def test_multimodal_heads_round_trip(tmp_path):
    w = create_encoders("synthetic", {})
    path = save_multimodal_heads(w.multimodal, tmp_path / "mm.safetensors")
    with torch.no_grad():
        w.multimodal.alpha.raw.fill_(2.0)
    w2 = create_encoders("synthetic", {"multimodal": str(path)})
    assert "multimodal" not in w2.untrained
    assert float(w2.multimodal.alpha().detach()) == pytest.approx(0.5)
    load_multimodal_heads(w.multimodal, path)
    age = torch.tensor([40.0])
    torch.testing.assert_close(w.multimodal.encode_age(age), w2.multimodal.encode_age(age), rtol=0, atol=0)


def test_synthetic_world_from_saved_weights(world, tmp_path):
    p = {
        "clip": world.multimodal.clip.save(tmp_path / "clip.safetensors"),
        "audio": world.multimodal.audio.save(tmp_path / "wav2vec2"),
        "audio_emotion": world.multimodal.audio_emotion.save(tmp_path / "audio_emotion.safetensors"),
        "arcface": world.arcface.save(tmp_path / "arcface.safetensors"),
        "vgg": world.vgg.save(tmp_path / "vgg.safetensors"),
        "age": world.age.save(tmp_path / "age_estimator.safetensors"),
        "emotion": world.emotion.save(tmp_path / "emotion_estimator.safetensors"),
        "multimodal": save_multimodal_heads(world.multimodal, tmp_path / "multimodal.safetensors"),
    }
    again = create_encoders("synthetic", {k: str(v) for k, v in p.items()})
    assert again.untrained == ()
    x, w = _images(), _wave()
    with torch.no_grad():
        a, b = again.multimodal, world.multimodal
        torch.testing.assert_close(a.encode_image(x), b.encode_image(x), rtol=0, atol=0)
        torch.testing.assert_close(a.encode_audio(w, 16000), b.encode_audio(w, 16000), rtol=0, atol=0)
        torch.testing.assert_close(again.arcface(x), world.arcface(x), rtol=0, atol=0)
        torch.testing.assert_close(again.vgg(x)["conv4_3"], world.vgg(x)["conv4_3"], rtol=0, atol=0)
        torch.testing.assert_close(again.age(x).age, world.age(x).age, rtol=0, atol=0)
        torch.testing.assert_close(again.emotion(x).logits, world.emotion(x).logits, rtol=0, atol=0)


@pytest.mark.slow
def test_pretrained_world_from_local_random_weights(tmp_path):
    """Every published slot filled with random weights of the true architecture, in the published format."""
    import open_clip
    from safetensors.torch import save_file
    from torchvision.models import vgg16
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from cff_lib.arcface import IRESNET50, IResNet

    save_file({k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()},
              str(tmp_path / "open_clip_model.safetensors"))
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(tmp_path / "wav2vec2-base")
    torch.save(IResNet(IRESNET50).state_dict(), tmp_path / "backbone.pth")
    torch.save(vgg16(weights=None).state_dict(), tmp_path / "vgg16-397923af.pth")
    world = create_encoders("pretrained", {
        "clip": str(tmp_path / "open_clip_model.safetensors"), "audio": str(tmp_path / "wav2vec2-base"),
        "arcface": str(tmp_path / "backbone.pth"), "vgg": str(tmp_path / "vgg16-397923af.pth")})
    assert world.untrained == ("audio_emotion", "age", "emotion", "multimodal")
    x = _images(1, 256)
    assert world.multimodal.encode_image(x).shape == (1, 512)
    assert world.multimodal.encode_audio(_wave(1), 16000).shape == (1, 768)
    assert world.arcface(x).shape == (1, 512)
    assert world.vgg(x)["conv4_3"].shape == (1, 512, 32, 32)
    assert world.age(x).feature.shape == world.emotion(x).feature.shape == (1, 512)
    assert world.age.config.input_size == 112
