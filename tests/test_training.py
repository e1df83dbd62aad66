"""cff_lib.training: bit-exact resume, checkpoint round trip, same seed -> same losses, NaN stop, bad files.

A tiny composite set (random faces, noise clips) in a temporary folder, random backends and a tiny UNet: no
test depends on trained weights or on the generated worlds.
"""
from __future__ import annotations

import copy
import dataclasses
import random

import numpy as np
import pytest
import torch
from conftest import small_profile as conftest_small_profile
from tiny_world import write_tiny_world

from cff_lib import dataset, training
from cff_lib.conditional_unet import tiny_unet_config
from cff_lib.model import build_model

OPTIONS = training.TrainOptions(checkpoint_every=2, sample_grids=False)
STEPS = 4


def small_profile():
    p = conftest_small_profile()
    return dataclasses.replace(p, eval=dataclasses.replace(p.eval, n_samples=2))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(profile, composite, data root, pristine model)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("world")
    composite = write_tiny_world(root)
    profile = small_profile()
    model = build_model(profile, root / "no_weights", allow_untrained=True, unet_config=tiny_unet_config(32))
    return profile, composite, root, model


def _train(world, out_dir, **kw):
    profile, composite, root, pristine = world
    model = kw.pop("model", None) or copy.deepcopy(pristine)
    result = training.train(profile, out_dir, max_steps=STEPS, progress=False, options=kw.pop("options", OPTIONS),
                            model=model, composite=composite, data_root=root, **kw)
    return result, model


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    """An uninterrupted run, and the same run interrupted after 2 steps then resumed in a fresh model."""
    straight, m_straight = _train(world, tmp_path_factory.mktemp("straight"))
    out = tmp_path_factory.mktemp("interrupted")
    first, _ = _train(world, out, stop_after=2)
    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # a new process would have other RNG states
    resumed, m_resumed = _train(world, out)  # fresh model from the pristine copy: like a new process
    return {"straight": (straight, m_straight), "first": first, "resumed": (resumed, m_resumed)}


def test_interrupt_and_resume_gives_bitwise_the_same_weights(runs):
    (straight, a), (resumed, b) = runs["straight"], runs["resumed"]
    assert runs["first"].steps == 2 and resumed.resumed_from == 2 and straight.steps == resumed.steps == STEPS
    sa, sb = a.trainable_state_dict(), b.trainable_state_dict()
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"weights differ after resume: {differ[:5]}"
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_a_resumed_run_counts_the_wall_time_of_every_call(runs):
    first, (resumed, _) = runs["first"], runs["resumed"]
    assert first.train_wall_s == pytest.approx(first.wall_s, abs=0.5)  # a fresh run: its own call only
    # the resumed call carries the first call's time (up to its last checkpoint) on top of its own
    assert resumed.wall_s < resumed.train_wall_s <= resumed.wall_s + first.wall_s + 1e-6
    assert resumed.train_wall_s - resumed.wall_s > 0.5 * first.wall_s


def test_same_seed_reproduces_the_same_losses(runs):
    straight, first = runs["straight"][0], runs["first"]
    assert [h["loss"] for h in first.history] == [h["loss"] for h in straight.history[:2]]
    terms = [k for k in straight.history[0] if "/" in k]
    assert {"clip/loss", "id/loss", "age/loss", "emo/loss", "av/loss", "cross_modal/loss"} <= set(terms)


def test_training_moves_the_trainable_parts_only(world, runs):
    pristine, trained = world[3], runs["straight"][1]
    before, after = pristine.state_dict(), trained.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(trained.trainable_parts()) for k in moved)
    assert any(k.startswith("unet.cond_proj") for k in moved)


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(world, runs, tmp_path):
    profile, _, _, pristine = world
    ckpt = runs["straight"][0].checkpoint
    model = copy.deepcopy(pristine)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    from diffusers.optimization import get_scheduler

    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=STEPS)
    state = training.load_checkpoint(ckpt, model, opt, sched, fingerprint=profile.training_fingerprint())
    assert state["step"] == STEPS and len(state["history"]) == STEPS
    again = training.save_checkpoint(tmp_path / "again.safetensors", model, opt, sched, step=STEPS,
                                     total_steps=STEPS, fingerprint=profile.training_fingerprint(),
                                     history=state["history"])
    a, a_np, a_py = torch.rand(3), np.random.rand(3), random.random()
    model2 = copy.deepcopy(pristine)
    opt2 = torch.optim.AdamW(model2.trainable_parameters(), lr=1e-3)
    training.load_checkpoint(again, model2, opt2, fingerprint=profile.training_fingerprint())
    assert torch.equal(torch.rand(3), a) and (np.random.rand(3) == a_np).all() and random.random() == a_py
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(v, model2.trainable_state_dict()[k])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid, st in s1["state"].items():
        assert all(torch.equal(st[n], s2["state"][pid][n]) for n in st)
    with pytest.raises(ValueError, match="another profile"):
        training.load_checkpoint(again, model2, fingerprint="0" * 12)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(world, tmp_path):
    def poison(step, terms):
        if step == 2:
            terms["loss"] = terms["loss"] * float("nan")

    with pytest.raises(training.TrainingDiverged, match=r"L_Total is nan at step 3.*step-000002") as err:
        _train(world, tmp_path, step_hook=poison)
    assert err.value.step == 3 and err.value.checkpoint.endswith("step-000002.safetensors")
    assert training.latest_checkpoint(tmp_path).name == "step-000002.safetensors"
    model = copy.deepcopy(world[3])
    assert training.load_checkpoint(err.value.checkpoint, model, restore_rng=False)["step"] == 2


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(world, runs, tmp_path):
    pristine = world[3]
    bad = tmp_path / "step-000002.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="corrupt or not a safetensors"):
        training.load_checkpoint(bad, copy.deepcopy(pristine))
    trained_only = pristine.save_trained(tmp_path / "weights_only.safetensors")
    with pytest.raises(ValueError, match="no training state"):
        training.load_checkpoint(trained_only, copy.deepcopy(pristine))
    other = pristine.encoders.arcface.save(tmp_path / "arcface.safetensors")
    with pytest.raises(ValueError, match="'IResNet' checkpoint, expected 'ClipFaceFusion'"):
        training.load_checkpoint(other, copy.deepcopy(pristine))


def test_dataset_items_and_collate(world):
    profile, composite, root, _ = world
    ds = dataset.dataset_for(profile, composite.split("train"), root)
    batch = dataset.collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (5, 3, 32, 32) and batch["image"].abs().max() <= 1
    assert [a is None for a in batch["audio"]] == [False, True, True, False, False]
    assert batch["audio"][0].dtype == torch.float32 and abs(float(batch["audio"][0].mean())) < 1e-4
    assert batch["source_caption"][0] == "a face of a woman"


def test_a_checkpoint_of_another_schedule_is_moved_aside_not_resumed(world, tmp_path):
    _train(world, tmp_path, stop_after=1)
    profile, composite, root, pristine = world
    result = training.train(profile, tmp_path, max_steps=2, stop_after=1, progress=False, options=OPTIONS,
                            model=copy.deepcopy(pristine), composite=composite, data_root=root)
    assert result.resumed_from == 0 and result.steps == 1
    assert len(list(tmp_path.glob("checkpoints.stale-*/step-000001.safetensors"))) == 1


def test_export_ships_a_verified_file_with_its_provenance_record(world, runs, tmp_path):
    from cff_lib.weights import verify_weights

    profile, model = world[0], runs["straight"][1]
    training.export_model(runs["straight"][0], tmp_path, profile)
    assert verify_weights(tmp_path) == []  # what `cff weights verify` checks
    info = training.verify_model_file(profile, tmp_path)
    assert info["step"] == STEPS and [h["step"] for h in info["history"]] == list(range(1, STEPS + 1))
    assert training.reusable_model(profile, model, tmp_path)[0]
    path = tmp_path / "clipfacefusion.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b" ")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        training.verify_model_file(profile, tmp_path)
    assert not training.reusable_model(profile, model, tmp_path)[0]
