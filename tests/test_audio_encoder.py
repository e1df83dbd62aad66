"""Wav2Vec 2.0 audio encoder (Eq. 2) and the audio emotion head (Eq. 6)."""

import pytest
import torch

import cff_lib  # noqa: F401
from cff_lib.audio_encoder import (
    SYNTHETIC_CONFIG,
    AudioEmotionHead,
    AudioEncoder,
    create_audio_emotion_head,
    create_audio_encoder,
)
from cff_lib.emotions import EMOTIONS


@pytest.fixture(scope="module")
def enc():
    torch.manual_seed(0)
    return create_audio_encoder("synthetic", None)


def _wave(b=2, n=16000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(b, n, generator=g)


def test_synthetic_is_wav2vec2_with_768_features(enc):
    from transformers import Wav2Vec2Model

    assert isinstance(enc.model, Wav2Vec2Model)
    assert enc.model.config.hidden_size == 768 and enc.model.config.num_hidden_layers == 2
    assert enc.receptive_field == 400
    assert sum(p.numel() for p in enc.parameters()) < 15e6


def test_forward_shape_and_mean_pooling(enc):
    w = _wave()
    f = enc(w, sample_rate=16000)
    assert f.shape == (2, 768) and torch.isfinite(f).all()
    with torch.no_grad():  # mean over time of the last hidden state of the normalised clip
        x = (w - w.mean(1, keepdim=True)) / torch.sqrt(w.var(1, keepdim=True, unbiased=False) + 1e-7)
        torch.testing.assert_close(f, enc.model(input_values=x).last_hidden_state.mean(1))


def test_gain_invariance_from_per_clip_normalisation(enc):
    w = _wave(1)
    torch.testing.assert_close(enc(w, 16000), enc(3.0 * w, 16000), atol=1e-4, rtol=1e-4)


def test_mono_with_channel_axis_is_accepted(enc):
    w = _wave(2, 4000)
    torch.testing.assert_close(enc(w[:, None], 16000), enc(w, 16000))


@pytest.mark.parametrize("bad, arg", [
    (torch.randn(2, 2, 16000), "waveform"),  # stereo batch
    (torch.randn(1, 2, 16000), "waveform"),  # one stereo clip with a batch axis
    (torch.randn(16000), "waveform"),  # no batch axis
    (torch.zeros(2, 0), "waveform"),  # empty
    (torch.zeros(0, 16000), "waveform"),  # empty batch
    (torch.zeros(2, 16000), "waveform"),  # silent
    (torch.randn(2, 300), "waveform"),  # shorter than one frame
    (torch.full((1, 16000), float("nan")), "waveform"),
    (torch.full((1, 16000), float("inf")), "waveform"),
    (torch.ones(1, 16000, dtype=torch.int16), "waveform"),
])
def test_bad_waveforms_name_the_argument(enc, bad, arg):
    with pytest.raises(ValueError, match=arg):
        enc(bad, sample_rate=16000)


def test_one_silent_clip_in_a_batch_is_named(enc):
    w = _wave(3)
    w[1] = 0
    with pytest.raises(ValueError, match=r"waveform clip\(s\) \[1\] are silent"):
        enc(w, 16000)


@pytest.mark.parametrize("sr", [8000, 44100, 16000.0, "16000"])
def test_wrong_sample_rate(enc, sr):
    with pytest.raises(ValueError, match="sample_rate"):
        enc(_wave(), sample_rate=sr)


def test_synthetic_save_pretrained_round_trip(enc, tmp_path):
    path = enc.save(tmp_path / "w2v")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    again = create_audio_encoder("synthetic", path)
    w = _wave()
    torch.testing.assert_close(again(w, 16000), enc(w, 16000), rtol=0, atol=0)
    enc.save(tmp_path / "w2v")  # overwriting an existing folder works


def test_missing_weights_fail_fast(tmp_path, network_attempts):
    with pytest.raises(FileNotFoundError, match="facebook/wav2vec2-base"):
        create_audio_encoder("pretrained", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="Wav2Vec 2.0"):
        create_audio_encoder("pretrained", None)
    with pytest.raises(FileNotFoundError):
        create_audio_encoder("synthetic", tmp_path / "absent")
    assert network_attempts == []


def test_emotion_head_shapes_and_norm(enc):
    head = AudioEmotionHead().eval()
    r = head(enc(_wave(), 16000))
    assert r.feature.shape == (2, 512) and r.logits.shape == (2, len(EMOTIONS))
    torch.testing.assert_close(r.feature.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("bad", [torch.zeros(2, 512), torch.zeros(768), torch.zeros(0, 768),
                                 torch.full((1, 768), float("nan"))])
def test_emotion_head_bad_input(bad):
    with pytest.raises(ValueError, match="audio_features"):
        AudioEmotionHead()(bad)


def test_emotion_head_round_trip(tmp_path):
    head = AudioEmotionHead().eval()
    again = create_audio_emotion_head(head.save(tmp_path / "head.safetensors"))
    f = torch.randn(3, 768)
    torch.testing.assert_close(again(f).feature, head(f).feature, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="audio emotion head"):
        create_audio_emotion_head(tmp_path / "absent.safetensors")


def test_pretrained_wav2vec2_base_round_trip(tmp_path):
    """Random weights of the true facebook/wav2vec2-base architecture via save_pretrained/from_pretrained."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    ref = Wav2Vec2Model(Wav2Vec2Config()).eval()  # defaults = wav2vec2-base
    assert 90e6 < sum(p.numel() for p in ref.parameters()) < 100e6
    ref.save_pretrained(tmp_path / "wav2vec2-base")
    enc = create_audio_encoder("pretrained", tmp_path / "wav2vec2-base")
    w = _wave(1, 8000)
    with torch.no_grad():
        torch.testing.assert_close(enc(w, 16000), AudioEncoder(ref)(w, 16000), rtol=0, atol=0)


def test_synthetic_config_keeps_768():
    assert SYNTHETIC_CONFIG["hidden_size"] == 768
