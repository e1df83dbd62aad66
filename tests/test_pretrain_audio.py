"""Synthetic-world pre-training of the audio encoder and heads (paper Eqs. 2 and 6; cff_lib.pretrain_audio)."""
import dataclasses
import json

import pytest
import torch

from cff_lib.config import load_profile
from cff_lib.pretrain_audio import (
    AudioPretrainConfig,
    audio_config,
    evaluate_backends,
    fit_audio,
    load_audio_backends,
    train_audio_encoder,
)

TINY = AudioPretrainConfig(steps=4, batch_size=2, clip_seconds=1.0, learning_rate=1e-3, weight_decay=0.0,
                           warmup_steps=1, n_train_speakers=4, age_weight=1.0, speaker_weight=0.3, grad_clip=1.0,
                           n_heldout_speakers=2, heldout_clips_per_speaker=2, max_world_clips=0, eval_batch_size=4,
                           fixed_batches=1)


@pytest.fixture(scope="module")
def profile():
    return load_profile("ci")


@pytest.fixture(scope="module")
def trained(profile, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("audio_weights")
    return train_audio_encoder(profile, out, progress=False, config=TINY), out


def test_loss_falls_and_weights_are_written(trained):
    report, out = trained
    assert report.steps == 4 and len(report.losses) == 4
    assert report.losses[-1] < report.losses[0]
    for name in ("audio", "audio_emotion", "audio_age"):
        assert (out / f"{name}.safetensors").is_file()
        record = json.loads((out / f"{name}.provenance.json").read_text())
        assert record["profile"] == "ci" and "heldout_emotion_accuracy" in record["metrics"]
        assert record["command"].startswith("python -m cff_lib.pretrain_audio")
    for key in ("heldout_emotion_accuracy", "heldout_age_mae_years", "heldout_speaker_id_accuracy"):
        assert key in report.metrics


def test_loaded_backends_reproduce_the_metrics(trained, profile):
    report, out = trained
    backends = load_audio_backends(out)
    wave = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = backends.encoder(wave, 16000)
        reading = backends.emotion_head(f)
        age = backends.age_head.years(f)
    assert f.shape == (1, 768) and reading.feature.shape == (1, 512) and reading.logits.shape == (1, 8)
    assert 16.0 <= float(age) <= 99.0
    again = evaluate_backends(profile, backends, TINY)
    assert again["heldout_emotion_accuracy"] == pytest.approx(report.metrics["heldout_emotion_accuracy"])
    assert again["heldout_age_mae_years"] == pytest.approx(report.metrics["heldout_age_mae_years"], abs=1e-3)


def test_same_seed_same_first_losses_and_exact_resume(profile, tmp_path):
    cfg = dataclasses.replace(TINY, fixed_batches=0, checkpoint_every=1)
    state = tmp_path / "state.safetensors"
    _, a, _ = fit_audio(profile, cfg, steps=2, progress=False, state_file=state)
    _, b, _ = fit_audio(profile, cfg, steps=2, progress=False, state_file=tmp_path / "other.safetensors")
    assert a == b and state.is_file()  # saved after step 1
    _, resumed, done = fit_audio(profile, cfg, steps=2, progress=False, resume=True, state_file=state)
    assert done == 2 and resumed == a
    _, c, _ = fit_audio(profile, dataclasses.replace(cfg, seed_offset=1), steps=1, progress=False)
    assert c[0] != a[0]


def test_presets_and_argument_errors(profile, tmp_path):
    assert audio_config(profile).clip_seconds == profile.data.voice_seconds
    assert audio_config(load_profile("toy")).steps > audio_config(profile).steps
    with pytest.raises(ValueError, match="real world"):
        audio_config(load_profile("paper"))
    with pytest.raises(ValueError, match="steps"):
        fit_audio(profile, TINY, steps=0, progress=False)
    with pytest.raises(ValueError, match="config"):
        train_audio_encoder(profile, tmp_path, config={"steps": 1}, progress=False)
    with pytest.raises(FileNotFoundError, match="weights_dir"):
        load_audio_backends(tmp_path / "absent")
