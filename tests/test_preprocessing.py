"""Tests of cff_lib.preprocessing: image crop/resize, audio mixdown/resample/truncate/normalise, ages."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from cff_lib import preprocessing as pp


def _wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write int16 PCM with the stdlib; ``samples`` is (n,) or (n, channels) in [-1, 1]."""
    x = np.atleast_2d(samples.T).T
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return 0.3 * np.sin(2 * np.pi * freq * t) + 0.05


# --------------------------------------------------------------------------------------------- images
def test_image_centre_crop_resize_shape_and_range(tmp_path):
    arr = np.zeros((20, 60, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left third red (cropped away)
    arr[:, 20:40] = (0, 255, 0)  # centre green (kept)
    arr[:, 40:] = (0, 0, 255)  # right third blue (cropped away)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = pp.load_image(tmp_path / "wide.png", 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[:, 4, 4], [-1.0, 1.0, -1.0], atol=1e-6)
    assert np.allclose(out[1], 1.0, atol=1e-6)  # only green survives the centre crop

    tall = np.full((50, 10), 128, dtype=np.uint8)  # grayscale, portrait
    tall[:20] = 0
    Image.fromarray(tall).save(tmp_path / "tall.jpg", quality=100)
    out = pp.load_image(tmp_path / "tall.jpg", 16)
    assert out.shape == (3, 16, 16)
    assert abs(float(out.mean()) - (128 / 127.5 - 1)) < 0.02


def test_image_errors_name_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="broken.png"):
        pp.load_image(tmp_path / "broken.png", 8)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.png"):
        pp.load_image(tmp_path / "truncated.png", 8)
    with pytest.raises(FileNotFoundError, match="absent.png"):
        pp.load_image(tmp_path / "absent.png", 8)
    with pytest.raises(ValueError, match="size"):
        pp.load_image(good, 0)


# ---------------------------------------------------------------------------------------------- audio
def test_stereo_44k_is_mixed_to_mono_16k(tmp_path):
    left, right = _tone(1.0, 44100, 440), _tone(1.0, 44100, 1000)
    out = pp.load_audio(_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 44100))
    assert out.dtype == np.float32 and out.ndim == 1 and out.shape == (16000,)
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std()) - 1.0) < 1e-4
    # the mixdown is the channel average: it matches a mono file of the average, not either channel
    ref = pp.load_audio(_wav(tmp_path / "mean.wav", (left + right) / 2, 44100))
    only_left = pp.load_audio(_wav(tmp_path / "left.wav", left, 44100))
    assert float(np.corrcoef(out, ref)[0, 1]) > 0.999
    assert float(np.corrcoef(out, only_left)[0, 1]) < 0.9


def test_long_clip_truncated_to_five_seconds(tmp_path):
    path = _wav(tmp_path / "long.wav", _tone(10.0, 16000), 16000)
    out = pp.load_audio(path)
    assert out.shape == (80000,)
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std()) - 1.0) < 1e-4
    assert pp.load_audio(path, max_seconds=None).shape == (160000,)
    assert pp.load_audio(_wav(tmp_path / "short.wav", _tone(2.0, 8000), 8000)).shape == (32000,)


def test_audio_errors_name_the_file(tmp_path):
    silent = _wav(tmp_path / "silent.wav", np.zeros(8000), 16000)
    with pytest.raises(ValueError, match="silent.wav.*silent"):
        pp.load_audio(silent)
    constant = _wav(tmp_path / "dc.wav", np.full(8000, 0.2), 16000)
    with pytest.raises(ValueError, match="dc.wav"):
        pp.load_audio(constant, sample_rate=16000)
    empty = _wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(ValueError, match="empty.wav"):
        pp.load_audio(empty)
    nan = _tone(1.0, 16000).astype(np.float32)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav.*NaN"):
        pp.load_audio(tmp_path / "nan.wav")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF????WAVEjunk" * 4)
    with pytest.raises(ValueError, match="garbage.wav"):
        pp.load_audio(tmp_path / "garbage.wav")
    with pytest.raises(FileNotFoundError, match="absent.wav"):
        pp.load_audio(tmp_path / "absent.wav")


# ------------------------------------------------------------------------------------------------ age
def test_age_scaling_round_trip_and_range():
    assert pp.scale_age(16) == 0.0 and pp.scale_age(99) == 1.0
    assert pp.scale_age(57.5) == pytest.approx(0.5)
    ages = np.array([16.0, 25.0, 40.5, 99.0])
    np.testing.assert_allclose(pp.unscale_age(pp.scale_age(ages)), ages)
    assert pp.unscale_age(pp.scale_age(33.0)) == pytest.approx(33.0)
    assert pp.scale_age(10, lo=0, hi=20) == 0.5
    for bad in (15.9, 100, float("nan")):
        with pytest.raises(ValueError, match="age"):
            pp.scale_age(bad)
    with pytest.raises(ValueError, match="age="):
        pp.scale_age(np.array([20.0, 120.0]))
    with pytest.raises(ValueError, match="scaled"):
        pp.unscale_age(1.01)
    with pytest.raises(ValueError, match="lo"):
        pp.scale_age(30, lo=50, hi=40)
