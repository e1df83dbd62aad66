"""Vision pre-training: each trainer runs a few steps on a tiny rendered world and learns something."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from cff_lib import face_banks, vision_heldout, vision_models
from cff_lib import pretrain_vision as pv
from cff_lib.weights import read_record, verify_weights

TINY = pv.VisionScale(n_identities=6, images_per_identity=4, use_dataset=False, batch_size=12, clip_steps=30,
                      estimator_steps=30, arcface_steps=30, vgg_steps=30, learning_rate=2e-3,
                      n_heldout_identities=4, heldout_per_identity=3)


@pytest.fixture()
def tiny(monkeypatch):
    monkeypatch.setitem(pv.SCALES, "ci", TINY)
    pv._BANK_CACHE.clear()
    yield "ci"
    pv._BANK_CACHE.clear()


def _falls(losses, k=5):
    return np.mean(losses[-k:]) < np.mean(losses[:k])


def test_render_bank_is_deterministic_and_labelled():
    a = face_banks.render_bank(1, 1, 3, 2, 32, clean=True)
    b = face_banks.render_bank(1, 1, 3, 2, 32, clean=True)
    assert torch.equal(a.images, b.images) and a.images.shape == (6, 3, 32, 32)
    assert a.identity.tolist() == [0, 0, 1, 1, 2, 2] and len(a.captions()) == 6
    c = face_banks.render_bank(1, 2, 3, 2, 32, clean=True)
    assert not torch.equal(a.images, c.images)  # another stream: other identities
    with pytest.raises(ValueError, match="n_identities"):
        face_banks.render_bank(1, 1, 0, 2, 32, clean=True)


def test_verification_metrics():
    ident = torch.tensor([0, 0, 1, 1, 2, 2])
    perfect = torch.nn.functional.one_hot(ident, 3).float() + 0.01 * torch.randn(6, 3)
    ev = vision_heldout.verification(perfect, ident, far=0.1)
    assert ev.metrics["tar_at_far"] == 1.0 and ev.metrics["auc"] > 0.99
    with pytest.raises(ValueError, match="far"):
        vision_heldout.verification(perfect, ident, far=1.5)


def test_paper_profile_is_refused():
    with pytest.raises(ValueError, match="synthetic world only"):
        pv.scale_for("paper")
    with pytest.raises(ValueError, match="steps=0 must be a positive int"):
        pv.train_clip("ci", "unused", steps=0)


def test_train_clip(tiny, tmp_path):
    r = pv.train_clip(tiny, tmp_path, progress=False)
    assert r.steps == 30 and _falls(r.losses) and (tmp_path / "clip.safetensors").is_file()
    assert 0.0 <= r.metrics["clip_t2i_top1_clean"] <= 1.0
    assert read_record(tmp_path / "clip").config["loss_curve"]


def test_train_estimators(tiny, tmp_path):
    r = pv.train_estimators(tiny, tmp_path, steps=40, progress=False)
    assert _falls(r.losses) and len(r.weights) == 2
    assert r.metrics["emotion_accuracy_clean"] > 1 / 8 or r.metrics["age_mae_clean"] < 25


def test_adversarial_fine_tune_starts_from_the_given_guides_and_records_its_budget(tiny, tmp_path, monkeypatch):
    base, robust = tmp_path / "base", tmp_path / "robust"
    pv.train_estimators(tiny, base, steps=3, progress=False)
    calls = []
    import cff_lib.robustness as rb

    attack = rb.l2_pgd

    def counting(objective, images, radius, steps, **kw):
        calls.append((radius, steps))
        return attack(objective, images, radius, steps, **kw)

    monkeypatch.setattr(rb, "l2_pgd", counting)
    pv.train_estimators(tiny, robust, steps=2, progress=False, adversarial_l2=0.5, pgd_steps=2,
                        init_from=base)
    assert calls == [(0.5, 2), (0.5, 2)]  # every batch attacked with the given budget
    rec = read_record(robust / "age_estimator")
    assert rec.config["adversarial_l2"] == 0.5 and rec.config["init_from"] == str(base)
    assert "adversarial_l2=0.5" in rec.command
    # an init from a folder without the estimators names what is missing; a negative budget is refused
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pv.train_estimators(tiny, robust, steps=1, progress=False, init_from=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="adversarial_l2"):
        pv.train_estimators(tiny, robust, steps=1, progress=False, adversarial_l2=-1.0)


def test_train_arcface_and_vgg_then_load(tiny, tmp_path):
    ra = pv.train_arcface(tiny, tmp_path, progress=False)
    rv = pv.train_perceptual_vgg(tiny, tmp_path, progress=False)
    assert _falls(ra.losses) and _falls(rv.losses)
    assert ra.metrics["arcface_auc_clean"] > 0.5
    assert sorted(vision_models.missing_vision_weights(tmp_path)) == ["age", "clip", "emotion"]
    pv.train_clip(tiny, tmp_path, steps=2, progress=False)
    pv.train_estimators(tiny, tmp_path, steps=2, progress=False)
    assert vision_models.missing_vision_weights(tmp_path) == [] and verify_weights(tmp_path) == []
    models = vision_models.load_vision_models(tmp_path)
    assert models.arcface.frozen and models.vgg.channels["conv4_3"] == 128
    assert set(vision_models.recorded_loss_curves(tmp_path)) == set(pv.TRAINERS)


def test_with_steps_sets_the_step_count_every_trainer_runs(monkeypatch, tmp_path):
    """with_steps must reach each trainer's own step field: train_all with the scale's defaults then runs two
    optimiser steps per model, no more, no fewer (a field left out, or a trainer reading another, fails)."""
    monkeypatch.setitem(pv.SCALES, "ci", pv.with_steps(replace(TINY, n_heldout_identities=2), 2))
    pv._BANK_CACHE.clear()
    try:
        reports = pv.train_all("ci", tmp_path, progress=False)
    finally:
        pv._BANK_CACHE.clear()
    assert {k: (r.steps, len(r.losses)) for k, r in reports.items()} == {k: (2, 2) for k in pv.TRAINERS}
