"""Procedural speech with known speaker, age and emotion (synthetic stand-in for RAVDESS and VoxCeleb).

The paper's audio branch encodes a waveform into emotion/identity features (Sect. 3, "Input taxonomy and
encoding", audio-visual consistency loss) and is trained on RAVDESS speech and VoxCeleb. This module makes
speech-like clips with a source-filter model, whose ground truth is exact:

- the speaker (:class:`SpeakerVoice`): base pitch (by gender and person), vocal-tract length (formant
  scaling), formant weights, source brightness, breathiness and speaking rate;
- age: pitch drifts (down for women, down then up for men), jitter, shimmer and breathiness grow, a slow
  tremor appears late, speech slows;
- emotion with intensity (prosody of the eight RAVDESS categories): pitch level and range, contour shape
  (falling, hat-shaped, rising, tremulous), tempo, loudness, source tension and creak;
- the statement (RAVDESS "Kids are talking by the door" = 1, "Dogs are sitting by the door" = 2): its own
  syllable pattern of consonant bursts, vowels (formants), stresses and durations. Statement 0 is free speech,
  a syllable sequence drawn from the seed (used for VoxCeleb-like clips).

:func:`synthesize_voice` is a pure function of its arguments; :func:`write_wav` writes 16-bit PCM atomically.
"""
from __future__ import annotations

import math
import wave
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.atomic import atomic_path
from cff_lib.captions import check_gender
from cff_lib.emotions import EMOTIONS, emotion_index


@dataclass(frozen=True)
class SpeakerVoice:
    gender: str  # gender of the voice, "female" or "male"
    pitch_hz: float  # median F0 at age 25 in neutral speech (men 85-155 Hz, women 165-255 Hz)
    formant_scale: float  # vocal-tract scaling of every formant frequency (men ~1.0, women ~1.17)
    formant_weights: tuple[float, float, float]  # relative gains of the F1, F2 and F3 resonances
    brightness: float  # source spectral brightness (0.7 dark .. 1.3 bright)
    breathiness: float  # share of aspiration noise in the source (0.02-0.15)
    rate: float  # syllables per second in neutral speech (3.6-5.2)

    def __post_init__(self) -> None:
        check_gender(self.gender, argument="gender")
        if not 50.0 <= self.pitch_hz <= 400.0:
            raise ValueError(f"pitch_hz={self.pitch_hz} must lie in [50, 400]")
        if not 1.0 <= self.rate <= 10.0:
            raise ValueError(f"rate={self.rate} must lie in [1, 10] syllables/s")


def speaker_voice(rng: np.random.Generator, gender: str) -> SpeakerVoice:
    """A random speaker of ``gender`` ("female" or "male")."""
    check_gender(gender)
    female = gender == "female"
    return SpeakerVoice(
        gender=gender,
        pitch_hz=float(rng.uniform(170.0, 250.0) if female else rng.uniform(88.0, 150.0)),
        formant_scale=float(rng.uniform(1.1, 1.24) if female else rng.uniform(0.92, 1.05)),
        formant_weights=tuple(float(w) for w in rng.uniform([0.8, 0.35, 0.15], [1.0, 0.7, 0.4])),
        brightness=float(rng.uniform(0.75, 1.25)),
        breathiness=float(rng.uniform(0.02, 0.15) if female else rng.uniform(0.02, 0.1)),
        rate=float(rng.uniform(3.6, 5.2)),
    )


# -------------------------------------------------------------------------------------------- prosody
@dataclass(frozen=True)
class _Prosody:
    pitch_st: float = 0.0  # pitch level shift, semitones
    range_st: float = 2.5  # pitch excursion of accents and declination, semitones
    rise: float = 0.0  # final rise (+) or extra fall (-) of the contour, semitones
    rate: float = 1.0  # tempo multiplier
    gain_db: float = 0.0  # loudness change, dB
    tension: float = 0.0  # source brightening (+ tense/pressed, - lax)
    breath: float = 0.0  # added aspiration noise
    tremor_st: float = 0.0  # 6 Hz pitch tremor depth, semitones
    creak: float = 0.0  # vocal fry (irregular, period-doubled pulses)
    jitter: float = 0.0  # extra cycle-to-cycle pitch irregularity


_PROSODY: dict[str, _Prosody] = {
    "neutral": _Prosody(),
    "calm": _Prosody(pitch_st=-1.0, range_st=1.5, rate=0.8, gain_db=-5.0, tension=-0.3, breath=0.08),
    "happy": _Prosody(pitch_st=3.0, range_st=7.0, rate=1.1, gain_db=3.0, tension=0.2),
    "sad": _Prosody(pitch_st=-2.0, range_st=1.0, rise=-2.0, rate=0.72, gain_db=-7.0, tension=-0.4,
                    breath=0.12),
    "angry": _Prosody(pitch_st=2.0, range_st=4.5, rise=-2.0, rate=1.25, gain_db=8.0, tension=0.7),
    "fearful": _Prosody(pitch_st=5.0, range_st=3.5, rate=1.2, gain_db=1.5, tension=0.2, tremor_st=0.9,
                        breath=0.06, jitter=0.01),
    "disgust": _Prosody(pitch_st=-3.0, range_st=2.5, rise=-1.5, rate=0.88, gain_db=-1.0, creak=0.8,
                        jitter=0.012),
    "surprised": _Prosody(pitch_st=4.0, range_st=6.0, rise=6.0, rate=1.0, gain_db=4.0, tension=0.3),
}
assert set(_PROSODY) == set(EMOTIONS)


def _prosody(emotion: str, intensity: float) -> _Prosody:
    full, rest = _PROSODY[emotion], _PROSODY["neutral"]
    return _Prosody(**{f.name: getattr(rest, f.name)
                       + intensity * (getattr(full, f.name) - getattr(rest, f.name))
                       for f in fields(_Prosody)})


# ------------------------------------------------------------------------------------------ statements
# vowel -> (F1, F2, F3) of an adult male vocal tract, Hz
_VOWELS: dict[str, tuple[float, float, float]] = {
    "I": (400, 1900, 2550), "A": (710, 1100, 2540), "O": (570, 840, 2410), "@": (500, 1500, 2500),
    "aI": (660, 1500, 2500), "E": (550, 1770, 2490), "u": (300, 870, 2240), "i": (280, 2250, 2900),
    "ae": (660, 1720, 2410), "V": (640, 1190, 2390),
}
# consonant -> (noise duration s, high-pass cutoff Hz or 0, level); "" is no onset
_CONSONANTS: dict[str, tuple[float, float, float]] = {
    "": (0.0, 0.0, 0.0), "k": (0.05, 1500.0, 0.5), "t": (0.04, 3000.0, 0.55), "d": (0.025, 1500.0, 0.3),
    "b": (0.02, 0.0, 0.25), "D": (0.03, 2000.0, 0.15), "s": (0.1, 4000.0, 0.45), "g": (0.03, 1200.0, 0.3),
    "z": (0.07, 3500.0, 0.3), "m": (0.04, 0.0, 0.1), "l": (0.03, 0.0, 0.08), "n": (0.04, 0.0, 0.1),
}
# statement -> syllables (onset consonant, vowel, stress 0..1, coda consonant, relative duration)
_STATEMENTS: dict[int, tuple[tuple[str, str, float, str, float], ...]] = {
    1: (("k", "I", 1.0, "d", 1.0), ("", "A", 0.2, "", 0.6), ("t", "O", 0.9, "k", 1.0),
        ("", "I", 0.2, "", 0.7), ("b", "aI", 0.5, "", 0.9), ("D", "@", 0.1, "", 0.5),
        ("d", "O", 0.8, "", 1.5)),
    2: (("d", "O", 1.0, "z", 1.4), ("", "A", 0.15, "", 0.55), ("s", "I", 0.9, "", 0.8),
        ("t", "I", 0.15, "", 0.7), ("b", "aI", 0.6, "", 1.0), ("D", "@", 0.1, "", 0.5),
        ("d", "O", 0.9, "", 1.6)),
}


def _syllables(statement: int, rng: np.random.Generator):
    if statement in _STATEMENTS:
        return _STATEMENTS[statement]
    onsets, vowels, codas = list(_CONSONANTS), list(_VOWELS), ["", "", "", "s", "t", "n", "d", "z"]
    n = int(rng.integers(8, 15))
    return tuple((str(rng.choice(onsets)), str(rng.choice(vowels)), float(rng.uniform(0.0, 1.0)),
                  str(rng.choice(codas)), float(rng.uniform(0.6, 1.4))) for _ in range(n))


# ------------------------------------------------------------------------------------------- synthesis
def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = math.exp(-math.pi * bw / sr)
    th = 2.0 * math.pi * min(freq, 0.45 * sr) / sr
    return lfilter([1.0 - r], [1.0, -2.0 * r * math.cos(th), r * r], x)


def _highpass(x: np.ndarray, cutoff: float, sr: int) -> np.ndarray:
    if cutoff <= 0:
        return x
    a = math.exp(-2.0 * math.pi * cutoff / sr)
    y = lfilter([1.0, -1.0], [1.0, -a], x)
    return lfilter([1.0, -1.0], [1.0, -a], y)


def _smooth_noise(rng: np.random.Generator, n: int, sr: int, hz: float) -> np.ndarray:
    """Unit-variance noise band-limited to about ``hz``, length ``n``."""
    k = max(2, int(n * hz / sr) + 2)
    return np.interp(np.arange(n), np.linspace(0, n - 1, k), rng.standard_normal(k))


def synthesize_voice(speaker: SpeakerVoice, age: float, emotion: str, intensity: float, statement: int,
                     seed: int, sample_rate: int = 16000, seconds: float = 3.0) -> np.ndarray:
    """A ``seconds``-long mono float32 clip in [-1, 1] of ``speaker`` at ``age`` saying ``statement``.

    ``emotion`` is one of EMOTIONS at ``intensity`` in [0, 1] (0 = neutral prosody); ``statement`` is 1 or 2
    (the RAVDESS sentences) or 0 (free speech drawn from ``seed``). Everything random comes from ``seed``.
    """
    if not isinstance(speaker, SpeakerVoice):
        raise ValueError(f"speaker={speaker!r} must be a SpeakerVoice")
    if not AGE_MIN <= float(age) <= AGE_MAX:
        raise ValueError(f"age={age} must lie in [{AGE_MIN:g}, {AGE_MAX:g}] years")
    emotion_index(emotion, argument="emotion")
    if not 0.0 <= float(intensity) <= 1.0:
        raise ValueError(f"intensity={intensity} must lie in [0, 1]")
    if statement not in (0, 1, 2):
        raise ValueError(f"statement={statement} must be 1 or 2 (RAVDESS) or 0 (free speech)")
    if not 4000 <= int(sample_rate) <= 96000:
        raise ValueError(f"sample_rate={sample_rate} must lie in [4000, 96000] Hz")
    if not 0.5 <= float(seconds) <= 60.0:
        raise ValueError(f"seconds={seconds} must lie in [0.5, 60]")
    sr, n = int(sample_rate), int(round(float(seconds) * sample_rate))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x701CE]))
    pr = _prosody(emotion, float(intensity))
    t_age = (float(age) - AGE_MIN) / (AGE_MAX - AGE_MIN)

    # age: pitch drift, irregularity, breath, tremor, tempo
    if speaker.gender == "female":
        age_st = -3.0 * t_age
    else:
        age_st = -1.5 * min(1.0, (age - 16.0) / 44.0) + 2.5 * max(0.0, (age - 60.0) / 39.0)
    jitter = 0.004 + 0.025 * t_age ** 2 + pr.jitter
    shimmer = 0.04 + 0.25 * t_age ** 2
    breath = speaker.breathiness + 0.2 * t_age ** 1.5 + pr.breath
    tremor_st = pr.tremor_st + 0.6 * max(0.0, (age - 65.0) / 34.0)
    rate = speaker.rate * pr.rate * (1.0 - 0.2 * t_age)

    # syllable timing
    syl = _syllables(statement, rng)
    rel = np.array([s[4] for s in syl]) * rng.uniform(0.9, 1.1, size=len(syl))
    dur = rel / rel.mean() / rate
    lead = float(rng.uniform(0.12, 0.35))
    room = n / sr - lead - 0.15
    if dur.sum() > room:
        dur *= room / dur.sum()
    starts = lead + np.concatenate([[0.0], np.cumsum(dur)[:-1]])
    total = float(dur.sum())

    # pitch contour (semitones around the speaker's base), then F0 per sample
    centres = starts + dur / 2
    pos = (centres - lead) / max(total, 1e-6)
    targets = (pr.range_st * (0.5 - pos) * 0.6  # declination
               + pr.range_st * 0.8 * np.array([s[2] for s in syl])  # accents on stressed syllables
               + pr.rise * np.clip((pos - 0.6) / 0.4, 0.0, 1.0) ** 1.5)  # final rise or fall
    tt = np.arange(n) / sr
    st = np.interp(tt, centres, targets)
    st += pr.pitch_st + age_st + jitter * 17.3 * _smooth_noise(rng, n, sr, 60.0)
    st += tremor_st * np.sin(2.0 * math.pi * float(rng.uniform(5.0, 7.0)) * tt)
    f0 = speaker.pitch_hz * 2.0 ** (st / 12.0)
    phase = 2.0 * math.pi * np.cumsum(f0) / sr

    # glottal source: harmonics with a tilt set by brightness and tension, plus creak and breath
    tilt = max(0.6, 1.9 - 0.6 * speaker.brightness - 0.9 * pr.tension)
    k_max = int(0.45 * sr / float(f0.max()))
    src = np.zeros(n)
    for k in range(1, max(2, k_max) + 1):
        src += np.sin(k * phase) * k ** -tilt * (f0 * k < 0.45 * sr)
    if pr.creak > 0:
        src *= 1.0 - pr.creak * 0.85 * (0.5 + 0.5 * np.cos(phase / 2.0)) ** 4
    src *= 1.0 + shimmer * _smooth_noise(rng, n, sr, 150.0)
    src /= np.sqrt(np.mean(src ** 2)) + 1e-9
    noise = rng.standard_normal(n)
    src = src + 2.5 * breath * noise

    # per syllable: formant-filter the source for its vowel, envelope it, add consonant noise
    out = np.zeros(n)
    fs = speaker.formant_scale * (1.0 + 0.03 * pr.tension)
    w1, w2, w3 = speaker.formant_weights
    for (onset, vowel, stress, coda, _), s0, dd in zip(syl, starts, dur, strict=True):
        c_dur, c_hp, c_lvl = _CONSONANTS[onset]
        c_dur = min(c_dur, 0.4 * dd)
        v0, v1 = int((s0 + c_dur) * sr), int(min(n, (s0 + dd) * sr))
        if v1 - v0 < 16:
            continue
        pad = int(0.02 * sr)
        a, b = max(0, v0 - pad), min(n, v1 + pad)
        seg = src[a:b]
        f1, f2, f3 = (f * fs for f in _VOWELS[vowel])
        voiced = (w1 * _resonator(seg, f1, 90, sr) + w2 * _resonator(seg, f2, 120, sr)
                  + w3 * _resonator(seg, f3, 170, sr))[v0 - a: v1 - a]
        voiced /= np.sqrt(np.mean(voiced ** 2)) + 1e-9
        m = v1 - v0
        env = np.ones(m)
        att, rel_ = min(m // 3, int(0.025 * sr)), min(m // 2, int(0.06 * sr))
        env[:att] = np.sin(np.linspace(0, math.pi / 2, att)) ** 2
        env[m - rel_:] = np.cos(np.linspace(0, math.pi / 2, rel_)) ** 2
        out[v0:v1] += voiced * env * (0.55 + 0.45 * stress)
        for cons, at in ((onset, int(s0 * sr)), (coda, v1 - int(_CONSONANTS[coda][0] * 0.6 * sr))):
            cd, hp, lvl = _CONSONANTS[cons]
            m = int(min(cd, 0.4 * dd) * sr)
            if m < 8 or at < 0 or at + m > n:
                continue
            burst = _highpass(rng.standard_normal(m), hp, sr) * np.hanning(m)
            out[at:at + m] += burst * lvl * 2.0

    out *= 0.06 * 10.0 ** (pr.gain_db / 20.0)
    out += 0.0008 * rng.standard_normal(n)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = 16000) -> None:
    """Write ``samples`` (mono float in [-1, 1]) as 16-bit PCM WAV at ``path``, atomically."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), got shape {x.shape} for {path}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"samples for {path} contain NaN or infinity")
    if not 1000 <= int(sample_rate) <= 192000:
        raise ValueError(f"sample_rate={sample_rate} must lie in [1000, 192000] Hz")
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(pcm.tobytes())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(float32 samples in [-1, 1], sample rate) of a 16-bit PCM mono WAV such as :func:`write_wav` writes."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path} is not 16-bit mono PCM")
        data = w.readframes(w.getnframes())
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0, w.getframerate()
