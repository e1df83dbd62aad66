"""Synthetic-world pre-training of the audio branch: Wav2Vec 2.0 (Eq. 2) and the emotion recogniser (Eq. 6).

Paper, "Input taxonomy and encoding": ``f_A = Wav2Vec2(A) ∈ R^768`` comes from a published Wav2Vec 2.0 and
``f_Emo,Audio = EmoRec(A) ∈ R^512`` from an emotion recogniser trained on RAVDESS. The synthetic world has no
published checkpoint, so this module trains the small ``Wav2Vec2Model`` of
:func:`cff_lib.audio_encoder.create_audio_encoder` ("synthetic") from scratch, multi-task on f_A:

- emotion: :class:`~cff_lib.audio_encoder.AudioEmotionHead` (8 RAVDESS classes, cross-entropy);
- age: :class:`AudioAgeHead`, the speaker's age min-max scaled to [0, 1] (16-99 years), L1 loss;
- speaker: a linear classifier over the training speakers (cross-entropy); it only shapes f_A and is not
  shipped (held-out speakers are compared by the cosine similarity of their f_A).

Training clips are synthesised on the fly by :func:`cff_lib.synthetic_voices.synthesize_voice` (exact labels)
from a pool of ``n_train_speakers`` voices, each with its own fixed age, drawn from the profile's
``audio_seed``; every clip of every step is new and a pure function of (seed, step, index), so a run is
deterministic. Held-out evaluation never sees a training speaker: (1) fresh synthetic speakers from a separate
seed stream and (2) the test split of the profile's synthetic RAVDESS and VoxCeleb (actors / speakers kept
apart by the manifests), when the world and its manifests exist.

Shipped (``out_dir``): ``audio.safetensors`` (Wav2Vec2Model state dict + its config), ``audio_emotion`` and
``audio_age`` (heads), each with a ``.provenance.json`` from :func:`cff_lib.weights.save_weights`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.audio_encoder import (
    SAMPLE_RATE,
    SYNTHETIC_CONFIG,
    AudioEmotionHead,
    AudioEncoder,
)
from cff_lib.emotions import EMOTIONS
from cff_lib.encoder_base import Freezable
from cff_lib.pretraining import (
    check_steps,
    load_train_state,
    run_loop,
    save_train_state,
    state_path,
    warmup_then_cosine,
)
from cff_lib.weights import PretrainReport, load_verified, save_weights, verified_path

ENCODER_NAME = "audio"  # weights/<...>/audio.safetensors: the Wav2Vec2Model
EMOTION_NAME = "audio_emotion"  # the AudioEmotionHead (Eq. 6)
AGE_NAME = "audio_age"  # the AudioAgeHead
ENCODER_KIND = "Wav2Vec2Model"
AGE_KIND = "AudioAgeHead"
STATE_NAME = "audio_state.safetensors"  # resumable training state, under build/pretrain_state/<profile>/
_TRAIN_STREAM, _HELDOUT_STREAM, _CLIP_STREAM = 0xA0D10, 0xA0D11, 0xA0D12


@dataclass(frozen=True)
class AudioPretrainConfig:
    steps: int  # optimiser steps
    batch_size: int  # clips per step
    clip_seconds: float  # length of every synthesised clip, s (the profile's voice_seconds)
    learning_rate: float  # AdamW peak learning rate
    weight_decay: float  # AdamW weight decay
    warmup_steps: int  # linear warm-up, then cosine decay to 10 % of the peak
    n_train_speakers: int  # size of the training speaker pool (speaker-classifier classes)
    age_weight: float  # weight of the age L1 loss (scaled ages) against the emotion cross-entropy
    speaker_weight: float  # weight of the speaker cross-entropy
    grad_clip: float  # max global gradient norm
    n_heldout_speakers: int  # fresh synthetic speakers never trained on, for evaluation
    heldout_clips_per_speaker: int  # clips per held-out speaker
    max_world_clips: int  # cap on test-split clips read from each world dataset (0: skip the world)
    eval_batch_size: int  # clips per forward pass during evaluation
    checkpoint_every: int = 50  # save the resumable state every n steps (0: only when a run is stopped early)
    fixed_batches: int = 0  # 0: fresh clips every step; n > 0: cycle through n fixed batches (tests)
    seed_offset: int = 0  # added to the profile's audio_seed (independent reruns)


PRESETS: dict[str, AudioPretrainConfig] = {
    # ci: a smoke run (~20 s on 2 cores); its numbers only prove the code path.
    "ci": AudioPretrainConfig(steps=12, batch_size=4, clip_seconds=2.0, learning_rate=5e-4, weight_decay=0.01,
                              warmup_steps=2, n_train_speakers=16, age_weight=1.0, speaker_weight=0.3,
                              grad_clip=1.0, n_heldout_speakers=4, heldout_clips_per_speaker=2,
                              max_world_clips=8, eval_batch_size=8),
    # toy: ~15 min on one (shared) CPU thread (3 s clips, 2-4.5 s per step at batch 8).
    "toy": AudioPretrainConfig(steps=200, batch_size=8, clip_seconds=3.0, learning_rate=5e-4,
                               weight_decay=0.01, warmup_steps=20, n_train_speakers=200, age_weight=1.0,
                               speaker_weight=0.3, grad_clip=1.0, n_heldout_speakers=24,
                               heldout_clips_per_speaker=8, max_world_clips=240, eval_batch_size=16),
}


def audio_config(profile) -> AudioPretrainConfig:
    """The frozen pre-training config of a profile: "ci" for the ci profile, "toy" for every other synthetic
    profile (its clip length follows the profile's ``voice_seconds``)."""
    if profile.data.world != "synthetic":
        raise ValueError(f"profile={profile.name!r} uses the real world; its audio encoder is the published "
                         "facebook/wav2vec2-base (cff_lib.audio_encoder), not trained here")
    cfg = PRESETS["ci" if profile.name == "ci" else "toy"]
    return dataclasses.replace(cfg, clip_seconds=float(profile.data.voice_seconds))


# ------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class AudioAgeConfig:
    in_dim: int = 768  # input: f_A
    hidden: int = 256  # MLP hidden width


class AudioAgeHead(Freezable):
    """Speaker age from f_A: (B, 768) -> (B,) scaled age in [0, 1] (16-99 years, cff_lib.preprocessing)."""

    def __init__(self, config: AudioAgeConfig = AudioAgeConfig()):
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(nn.LayerNorm(config.in_dim), nn.Linear(config.in_dim, config.hidden), nn.GELU(),
                                 nn.Linear(config.hidden, 1))

    def forward(self, audio_features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(audio_features)[:, 0])

    def years(self, audio_features: torch.Tensor) -> torch.Tensor:
        """Predicted age in years, (B,)."""
        return AGE_MIN + self.forward(audio_features) * (AGE_MAX - AGE_MIN)


class AudioBackends(NamedTuple):
    encoder: AudioEncoder  # Wav2Vec2 f_A (B, 768), Eq. 2
    emotion_head: AudioEmotionHead  # f_Emo,Audio (B, 512) + logits (B, 8), Eq. 6
    age_head: AudioAgeHead  # speaker age (B,) scaled to [0, 1]


def _new_encoder(seed: int) -> AudioEncoder:
    from cff_lib.backends import create_backend

    torch.manual_seed(seed)
    return create_backend("audio", "synthetic")  # a random SYNTHETIC_CONFIG Wav2Vec2Model


# ------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class _Speaker:
    voice: object  # cff_lib.synthetic_voices.SpeakerVoice
    age: int  # years, fixed for the speaker


def _speakers(seed: int, stream: int, n: int) -> list[_Speaker]:
    from cff_lib.synthetic_voices import speaker_voice

    out = []
    for k in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream, k]))
        gender = "female" if k % 2 else "male"
        out.append(_Speaker(speaker_voice(rng, gender), int(rng.integers(int(AGE_MIN), int(AGE_MAX) + 1))))
    return out


def _clip(speaker: _Speaker, rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, int]:
    """One utterance of ``speaker`` with a random emotion, intensity and statement; (wave, emotion index)."""
    from cff_lib.synthetic_voices import synthesize_voice

    e = int(rng.integers(len(EMOTIONS)))
    intensity = 1.0 if e == 0 else float(rng.uniform(0.4, 1.0))
    statement = int(rng.integers(0, 3))
    wave = synthesize_voice(speaker.voice, speaker.age, EMOTIONS[e], intensity, statement,
                            int(rng.integers(0, 2**31 - 1)), sample_rate=SAMPLE_RATE, seconds=seconds)
    return wave, e


def _train_batch(speakers: list[_Speaker], seed: int, step: int, cfg: AudioPretrainConfig):
    """(waves (B, N), emotion (B,), scaled age (B,), speaker (B,)) of ``step``; a pure function of its args."""
    waves, emo, age, spk = [], [], [], []
    for i in range(cfg.batch_size):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _CLIP_STREAM, step, i]))
        k = int(rng.integers(len(speakers)))
        w, e = _clip(speakers[k], rng, cfg.clip_seconds)
        waves.append(w)
        emo.append(e)
        age.append((speakers[k].age - AGE_MIN) / (AGE_MAX - AGE_MIN))
        spk.append(k)
    return (torch.from_numpy(np.stack(waves)).float(), torch.tensor(emo), torch.tensor(age, dtype=torch.float32),
            torch.tensor(spk))


# ------------------------------------------------------------------------------------------ training
def fit_audio(profile, cfg: AudioPretrainConfig, *, steps: int | None = None, progress: bool = True,
              resume: bool = False, max_wall_s: float | None = None, state_file: Path | None = None
              ) -> tuple[AudioBackends, list[float], int]:
    """Train encoder + heads on synthesised clips; returns (backends in eval mode, loss per step, steps done).

    ``resume``: continue from ``state_file`` (default ``build/pretrain_state/<profile>/audio_state.safetensors``)
    when it was written under the same config; ``max_wall_s``: stop after this many seconds and save that state.
    """
    from cff_lib.backends import create_backend

    steps = check_steps(cfg.steps if steps is None else steps)
    if max_wall_s is not None and not max_wall_s > 0:
        raise ValueError(f"max_wall_s={max_wall_s!r} must be positive or None")
    t_start = time.time()
    state_file = state_file or state_path(profile, STATE_NAME)
    seed = int(profile.train.audio_seed) + cfg.seed_offset
    speakers = _speakers(seed, _TRAIN_STREAM, cfg.n_train_speakers)
    encoder = _new_encoder(seed)
    emotion_head, age_head = create_backend("audio_emotion", "synthetic"), AudioAgeHead()
    speaker_head = nn.Sequential(nn.LayerNorm(768), nn.Linear(768, cfg.n_train_speakers))
    modules = nn.ModuleList([encoder, emotion_head, age_head, speaker_head]).train()
    opt = torch.optim.AdamW(modules.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    parts = {"encoder": encoder, "emotion": emotion_head, "age": age_head, "speaker": speaker_head}
    start, losses = 0, []
    if resume:
        restored = load_train_state(state_file, parts, opt, cfg)
        if restored is not None:
            start, losses = restored

    def step_loss(step: int) -> torch.Tensor:
        data_step = step % cfg.fixed_batches if cfg.fixed_batches else step
        waves, emo, age, spk = _train_batch(speakers, seed, data_step, cfg)
        f_a = encoder(waves, SAMPLE_RATE)  # (B, 768)
        return (F.cross_entropy(emotion_head(f_a).logits, emo)
                + cfg.age_weight * F.l1_loss(age_head(f_a), age)
                + cfg.speaker_weight * F.cross_entropy(speaker_head(f_a), spk))

    losses, done = run_loop(
        opt, step_loss, steps=steps, lr=cfg.learning_rate,
        lr_factor=lambda s: warmup_then_cosine(s, steps, cfg.warmup_steps), clip=modules.parameters(),
        grad_clip=cfg.grad_clip, start=start, losses=losses,
        checkpoint=lambda done, losses: save_train_state(state_file, parts, opt, done, losses, cfg),
        checkpoint_every=cfg.checkpoint_every, max_wall_s=max_wall_s, started=t_start, desc="audio encoder",
        progress=progress)
    return AudioBackends(encoder.eval(), emotion_head.eval(), age_head.eval()), losses, done


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def _embed(backends: AudioBackends, waves: list[np.ndarray], batch: int):
    """(f_A (N, 768), emotion logits (N, 8), age years (N,)) of clips of any lengths (batched by length)."""
    feats, logits, ages = [None] * len(waves), [None] * len(waves), [None] * len(waves)
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_len.setdefault(len(w), []).append(i)
    for idx in by_len.values():
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            f = backends.encoder(torch.from_numpy(np.stack([waves[i] for i in part])).float(), SAMPLE_RATE)
            lg, yr = backends.emotion_head(f).logits, backends.age_head.years(f)
            for j, i in enumerate(part):
                feats[i], logits[i], ages[i] = f[j], lg[j], yr[j]
    return torch.stack(feats), torch.stack(logits), torch.stack(ages)


def _speaker_id_accuracy(feats: torch.Tensor, speaker: list) -> float:
    """Leave-one-out nearest-centroid speaker identification by cosine similarity of mean-centred f_A."""
    x = F.normalize(feats - feats.mean(0, keepdim=True), dim=1)
    names = sorted(set(speaker))
    lab = torch.tensor([names.index(s) for s in speaker])
    sums = torch.zeros(len(names), x.shape[1]).index_add_(0, lab, x)
    counts = torch.bincount(lab, minlength=len(names)).float()
    correct = 0
    for i in range(len(x)):
        c = sums.clone()
        c[lab[i]] -= x[i]
        n = counts.clone()
        n[lab[i]] -= 1
        valid = n > 0
        sim = F.normalize(c / n.clamp(min=1)[:, None], dim=1) @ x[i]
        sim[~valid] = -2.0
        correct += int(sim.argmax() == lab[i])
    return correct / len(x)


def _score(prefix: str, backends, waves, emotions, ages, speakers, batch) -> dict[str, float]:
    feats, logits, pred_age = _embed(backends, waves, batch)
    out = {f"{prefix}_clips": float(len(waves)), f"{prefix}_speakers": float(len(set(speakers))),
           f"{prefix}_emotion_accuracy": float((logits.argmax(1) == torch.tensor(emotions)).float().mean()),
           f"{prefix}_age_mae_years": float((pred_age - torch.tensor(ages, dtype=torch.float32)).abs().mean())}
    if len(set(speakers)) >= 2:
        out[f"{prefix}_speaker_id_accuracy"] = _speaker_id_accuracy(feats, speakers)
        out[f"{prefix}_speaker_id_chance"] = 1.0 / len(set(speakers))
    return out


def _world_test_clips(profile, dataset: str, limit: int):
    """(waves, emotion indices, ages, speaker ids) of up to ``limit`` test-split clips of ``dataset``, spread
    evenly over the split; None when the world or its manifest is missing."""
    from cff_lib.manifests import manifest_filename, read_manifest
    from cff_lib.preprocessing import load_audio
    from cff_lib.world import data_root, manifest_dir

    path = manifest_dir(profile) / manifest_filename(dataset)
    root = data_root(profile) / dataset
    if limit <= 0 or not path.is_file() or not root.is_dir():
        return None
    test = read_manifest(path).split("test")
    if not test:
        return None
    pick = [test[int(i)] for i in np.unique(np.linspace(0, len(test) - 1, min(limit, len(test))).round())]
    waves = [load_audio(root / e.path, SAMPLE_RATE, profile.data.max_audio_seconds) for e in pick]
    return (waves, [EMOTIONS.index(e.label("emotion")) for e in pick], [float(e.label("age")) for e in pick],
            [e.label("identity") for e in pick])


def evaluate_backends(profile, backends: AudioBackends, cfg: AudioPretrainConfig | None = None,
                      progress: bool = False) -> dict[str, float]:
    """Held-out metrics on speakers never trained on: fresh synthetic speakers ("heldout_*") and, when the
    profile's world exists, the test split of its RAVDESS ("ravdess_test_*") and VoxCeleb ("vox_test_*")."""
    cfg = cfg or audio_config(profile)
    seed = int(profile.train.audio_seed) + cfg.seed_offset
    metrics: dict[str, float] = {}
    waves, emo, ages, spk = [], [], [], []
    for k, sp in enumerate(tqdm(_speakers(seed, _HELDOUT_STREAM, cfg.n_heldout_speakers), desc="held-out voices",
                                disable=not progress)):
        for c in range(cfg.heldout_clips_per_speaker):
            w, e = _clip(sp, np.random.default_rng(np.random.SeedSequence([seed, _HELDOUT_STREAM, k, c, 1])),
                         cfg.clip_seconds)
            waves.append(w)
            emo.append(e)
            ages.append(float(sp.age))
            spk.append(k)
    metrics.update(_score("heldout", backends, waves, emo, ages, spk, cfg.eval_batch_size))
    for dataset, prefix in (("ravdess", "ravdess_test"), ("voxceleb", "vox_test")):
        clips = _world_test_clips(profile, dataset, cfg.max_world_clips)
        if clips is not None:
            metrics.update(_score(prefix, backends, *clips, cfg.eval_batch_size))
    metrics["emotion_chance"] = 1.0 / len(EMOTIONS)
    return metrics


# ------------------------------------------------------------------------------------------ public API
def _command(profile, out_dir) -> str:
    return f"python -m cff_lib.pretrain_audio --profile {profile.name} --out {out_dir}"


def save_audio_backends(backends: AudioBackends, out_dir, *, profile, metrics: dict, train_config: dict
                        ) -> tuple[str, ...]:
    """Write audio / audio_emotion / audio_age (.safetensors + .provenance.json) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = _command(profile, out_dir)
    paths = []
    enc_cfg = {"architecture": dict(SYNTHETIC_CONFIG), "train": train_config}
    save_weights(backends.encoder.model, out_dir / ENCODER_NAME, profile=profile, command=command, metrics=metrics,
                 config=enc_cfg, kind=ENCODER_KIND)
    save_weights(backends.emotion_head, out_dir / EMOTION_NAME, profile=profile, command=command, metrics=metrics,
                 config={"train": train_config})
    save_weights(backends.age_head, out_dir / AGE_NAME, profile=profile, command=command, metrics=metrics,
                 config={"architecture": dataclasses.asdict(backends.age_head.config), "train": train_config},
                 kind=AGE_KIND)
    for name in (ENCODER_NAME, EMOTION_NAME, AGE_NAME):
        paths.append(str(out_dir / f"{name}.safetensors"))
    return tuple(paths)


def load_audio_backends(weights_dir) -> AudioBackends:
    """The hash-checked audio encoder, emotion head and age head of ``weights_dir`` (eval mode, not frozen);
    the encoder and the emotion head through the backend factory (:func:`cff_lib.backends.create_backend`)."""
    from cff_lib.backends import create_backend

    weights_dir = Path(weights_dir)
    if not isinstance(weights_dir, Path) or not weights_dir.is_dir():
        raise FileNotFoundError(f"weights_dir={str(weights_dir)!r} is not a folder; train with "
                                "cff_lib.pretrain_audio.train_audio_encoder(profile, weights_dir)")
    encoder = create_backend("audio", "synthetic", weights_dir / f"{ENCODER_NAME}.safetensors")  # hash-checked
    emotion = create_backend("audio_emotion", "synthetic", verified_path(weights_dir / EMOTION_NAME))
    age = load_verified(weights_dir / AGE_NAME, kind=AGE_KIND)
    age_head = AudioAgeHead(AudioAgeConfig(**age.config["architecture"]))
    age_head.load_state_dict(age.tensors, strict=True)
    return AudioBackends(encoder.eval(), emotion.eval(), age_head.eval())


def train_audio_encoder(profile, out_dir, *, steps: int | None = None, progress: bool = True,
                        config: AudioPretrainConfig | None = None, resume: bool = False,
                        max_wall_s: float | None = None) -> PretrainReport:
    """Train the synthetic Wav2Vec2 + emotion/age heads, evaluate on held-out speakers, write the weights.

    ``steps``: override the config's step count (the LR schedule follows it). ``config``: override the profile's
    preset (tests). ``resume``: continue from the saved training state when it matches the config.
    ``max_wall_s``: stop after this many seconds, save the resumable state, and ship what was reached.
    """
    t0 = time.time()
    cfg = config or audio_config(profile)
    if not isinstance(cfg, AudioPretrainConfig):
        raise ValueError(f"config must be an AudioPretrainConfig, got {type(cfg).__name__}")
    target = cfg.steps if steps is None else steps
    backends, losses, n = fit_audio(profile, cfg, steps=steps, progress=progress, resume=resume,
                                    max_wall_s=max_wall_s)
    metrics = evaluate_backends(profile, backends, cfg, progress=progress)
    metrics["final_train_loss"] = float(np.mean(losses[-max(1, len(losses) // 10):]))
    wall = time.time() - t0
    metrics["train_wall_s"] = wall
    train_config = {**dataclasses.asdict(cfg), "steps": n, "target_steps": target,
                    "audio_seed": int(profile.train.audio_seed)}
    paths = save_audio_backends(backends, out_dir, profile=profile, metrics=metrics, train_config=train_config)
    if n >= target and config is None and state_path(profile, STATE_NAME).is_file():
        state_path(profile, STATE_NAME).unlink()  # finished: the resumable state is no longer needed
    return PretrainReport(name=ENCODER_NAME, metrics=metrics, wall_s=time.time() - t0, steps=n, weights=paths,
                          losses=tuple(losses))


def evaluate_audio_encoder(profile, weights_dir, *, progress: bool = False) -> dict[str, float]:
    """Held-out metrics (see :func:`evaluate_backends`) of the weights saved in ``weights_dir``."""
    return evaluate_backends(profile, load_audio_backends(weights_dir), audio_config(profile), progress=progress)


def train_command(args) -> int:
    """``cff train audio`` (``python -m cff_lib.pretrain_audio``): train, write the weights, print the report."""
    import json

    from cff_lib.config import load_profile

    profile = load_profile(args.profile)
    out = args.out or profile.model.weights_dir
    report = train_audio_encoder(profile, out, steps=args.steps, resume=args.resume, max_wall_s=args.max_wall_s)
    print(json.dumps({"metrics": report.metrics, "wall_s": report.wall_s, "steps": report.steps,
                      "weights": report.weights}, indent=2))
    return 0


if __name__ == "__main__":  # the entry point its provenance records quote: the same as `cff train audio`
    from cff_lib.train_commands import run

    raise SystemExit(run("audio", train_command, prog="python -m cff_lib.pretrain_audio"))
