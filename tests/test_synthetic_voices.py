import wave

import numpy as np
import pytest

from cff_lib.emotions import EMOTIONS
from cff_lib.synthetic_voices import SpeakerVoice, read_wav, speaker_voice, synthesize_voice, write_wav

SR = 16000


def _speakers(gender, n=3, start=0):
    return [speaker_voice(np.random.default_rng(start + s), gender) for s in range(n)]


def _rms(x):
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def _pitch(x, sr=SR):
    """Median autocorrelation F0 (60-400 Hz) over loud 40 ms frames."""
    fr, est = int(0.04 * sr), []
    for i in range(0, len(x) - fr, fr // 2):
        f = x[i:i + fr].astype(np.float64)
        if _rms(f) < 0.02:
            continue
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[fr - 1:]
        lo, hi = sr // 400, sr // 60
        est.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(est))


def _active_span(x, sr=SR):
    """Seconds between the first and last loud 10 ms frame."""
    fr = sr // 100
    e = np.array([_rms(x[i:i + fr]) for i in range(0, len(x) - fr, fr)])
    on = np.flatnonzero(e > 0.25 * e.max())
    return (on[-1] - on[0]) / 100.0


def test_shape_range_and_determinism():
    sp = _speakers("female", 1)[0]
    x = synthesize_voice(sp, 30, "happy", 0.8, 1, seed=7)
    assert x.dtype == np.float32 and x.shape == (3 * SR,)
    assert np.abs(x).max() <= 1.0 and _rms(x) > 0.01
    assert np.array_equal(x, synthesize_voice(sp, 30, "happy", 0.8, 1, seed=7))
    assert not np.array_equal(x, synthesize_voice(sp, 30, "happy", 0.8, 1, seed=8))
    y = synthesize_voice(sp, 30, "happy", 0.8, 1, seed=7, sample_rate=8000, seconds=1.0)
    assert y.shape == (8000,)


def test_speaker_voice_by_gender():
    assert all(v.pitch_hz > 160 for v in _speakers("female", 10))
    assert all(v.pitch_hz < 160 for v in _speakers("male", 10))
    assert speaker_voice(np.random.default_rng(1), "male") == speaker_voice(np.random.default_rng(1), "male")
    with pytest.raises(ValueError, match="gender"):
        speaker_voice(np.random.default_rng(1), "robot")


@pytest.mark.parametrize("kwargs, argument", [
    ({"age": 10}, "age"), ({"age": 130}, "age"), ({"emotion": "joy"}, "emotion"),
    ({"intensity": 2.0}, "intensity"), ({"statement": 3}, "statement"), ({"sample_rate": 100}, "sample_rate"),
])
def test_validation_names_the_argument(kwargs, argument):
    base = {"speaker": _speakers("male", 1)[0], "age": 30, "emotion": "sad", "intensity": 1.0,
            "statement": 1, "seed": 0}
    with pytest.raises(ValueError, match=f"^{argument}="):
        synthesize_voice(**{**base, **kwargs})


def test_female_pitch_above_male():
    f = [_pitch(synthesize_voice(sp, 30, "neutral", 1.0, 1, seed=1)) for sp in _speakers("female")]
    m = [_pitch(synthesize_voice(sp, 30, "neutral", 1.0, 1, seed=1)) for sp in _speakers("male")]
    assert min(f) > max(m), (f, m)
    # the estimate lands near the speaker's base pitch
    for sp, est in zip(_speakers("female"), f, strict=True):
        assert 0.75 * sp.pitch_hz < est < 1.35 * sp.pitch_hz


def test_emotion_energy_pitch_and_tempo():
    for sp in _speakers("female", 2) + _speakers("male", 2):
        angry, sad = (synthesize_voice(sp, 35, e, 1.0, 2, seed=3) for e in ("angry", "sad"))
        happy, calm = (synthesize_voice(sp, 35, e, 1.0, 2, seed=3) for e in ("happy", "calm"))
        assert _rms(angry) > 2.0 * _rms(sad)
        assert _rms(happy) > _rms(calm)
        assert _pitch(happy) > _pitch(sad)
        assert _active_span(sad) > 1.2 * _active_span(angry)  # sad speech is slower


def test_intensity_scales_energy():
    sp = _speakers("male", 1)[0]
    levels = [_rms(synthesize_voice(sp, 30, "angry", k, 1, seed=2)) for k in (0.0, 0.5, 1.0)]
    assert levels[0] < levels[1] < levels[2]


def test_statements_differ_in_rhythm():
    sp = _speakers("female", 1)[0]
    envs = []
    for st in (1, 2):
        x = synthesize_voice(sp, 30, "neutral", 1.0, st, seed=4).astype(np.float64)
        envs.append(np.sqrt(np.convolve(x ** 2, np.ones(320) / 320, "same"))[::160])
    assert np.corrcoef(*envs)[0, 1] < 0.9


def test_every_emotion_synthesizes():
    sp = _speakers("male", 1)[0]
    for e in EMOTIONS:
        x = synthesize_voice(sp, 70, e, 1.0, 0, seed=5, seconds=1.0)
        assert np.isfinite(x).all() and _rms(x) > 0.005


def test_write_and_read_wav(tmp_path):
    x = synthesize_voice(_speakers("female", 1)[0], 30, "happy", 1.0, 1, seed=0, seconds=1.0)
    path = tmp_path / "sub" / "clip.wav"
    write_wav(path, x, SR)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, SR, SR)
    y, sr = read_wav(path)
    assert sr == SR and np.abs(y - x).max() < 1e-4
    assert [p.name for p in path.parent.iterdir()] == ["clip.wav"]  # no temp file left behind
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "bad.wav", np.zeros((2, 10)), SR)
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "bad.wav", np.array([0.0, np.nan]), SR)


def test_speaker_voice_validation():
    with pytest.raises(ValueError, match="pitch_hz"):
        SpeakerVoice("male", 20.0, 1.0, (1.0, 0.5, 0.2), 1.0, 0.05, 4.0)
