"""Synthetic-world pre-training of the unconditional face DDPM (paper "Implementation"; cff_lib.pretrain_ddpm)."""
import dataclasses
import json

import matplotlib
import pytest
import torch

from cff_lib.config import load_profile
from cff_lib.pretrain_ddpm import (
    DdpmPretrainConfig,
    ddpm_config,
    ddpm_sample_grid,
    ddpm_samples,
    fit_ddpm,
    image_grid,
    load_ddpm,
    render_faces,
    train_ddpm,
)

matplotlib.use("Agg")

TINY = DdpmPretrainConfig(steps=6, batch_size=4, learning_rate=3e-3, weight_decay=0.0, warmup_steps=1,
                          grad_clip=1.0, ema_decay=0.0, n_train_faces=8, n_heldout_faces=4, max_world_faces=0,
                          eval_timesteps=(100, 900), sample_steps=3, checkpoint_every=0, unet="tiny",
                          fixed_batches=1)


@pytest.fixture(scope="module")
def profile():
    return load_profile("ci")


@pytest.fixture(scope="module")
def trained(profile, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ddpm_weights")
    return train_ddpm(profile, out, progress=False, config=TINY), out


def test_loss_falls_and_weights_are_written(trained):
    report, out = trained
    assert report.steps == 6 and len(report.losses) == 6
    assert report.losses[-1] < report.losses[0]
    record = json.loads((out / "ddpm.provenance.json").read_text())
    assert record["kind"] == "UNet2DModel" and record["config"]["scheduler"]["beta_schedule"] == "linear"
    assert {"heldout_eps_mse", "train_eps_mse", "heldout_eps_mse_t100"} <= set(report.metrics)


def test_sample_grid_shape(trained, profile):
    _, out = trained
    unet = load_ddpm(out)
    assert unet.config.sample_size == profile.data.image_size == 32
    x = ddpm_samples(unet, n=3, seed=1, n_steps=2)
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x, ddpm_samples(unet, n=3, seed=1, n_steps=2))
    y = ddpm_samples(unet, n=2, seed=1, n_steps=3, sampler="ddpm")
    assert y.shape == (2, 3, 32, 32) and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ValueError, match="sampler"):
        ddpm_samples(unet, n=2, sampler="euler")
    fig = ddpm_sample_grid(profile, out, n=4, seed=3, n_steps=2)
    assert fig.axes[0].images[0].get_array().shape == (2 * 34 + 2, 2 * 34 + 2, 3)
    assert image_grid(x, nrow=3).shape == (36, 3 * 34 + 2, 3)
    matplotlib.pyplot.close(fig)


def test_same_seed_same_first_losses_and_exact_resume(profile, tmp_path):
    cfg = dataclasses.replace(TINY, fixed_batches=0, checkpoint_every=2)
    state = tmp_path / "state.safetensors"
    _, full, done, _ = fit_ddpm(profile, cfg, steps=4, progress=False, state_file=state)
    assert done == 4 and state.is_file()  # saved at step 2
    _, again, _, _ = fit_ddpm(profile, cfg, steps=2, progress=False, state_file=tmp_path / "other.safetensors")
    assert again == full[:2]
    _, resumed, done, _ = fit_ddpm(profile, cfg, steps=4, progress=False, resume=True, state_file=state)
    assert done == 4 and resumed == full


def test_renders_are_deterministic_and_errors_are_clear(profile, tmp_path):
    a = render_faces(0, 1, 2, 32)
    assert a.dtype == torch.uint8 and a.shape == (2, 3, 32, 32)
    assert torch.equal(a, render_faces(0, 1, 2, 32)) and not torch.equal(a, render_faces(0, 2, 2, 32))
    assert ddpm_config(load_profile("toy")).steps > ddpm_config(profile).steps
    with pytest.raises(ValueError, match="real world"):
        ddpm_config(load_profile("paper"))
    with pytest.raises(ValueError, match="steps"):
        fit_ddpm(profile, TINY, steps=-1, progress=False)
    with pytest.raises(ValueError, match="images"):
        image_grid(torch.zeros(2, 1, 8, 8))
    with pytest.raises(FileNotFoundError, match="weights_dir"):
        load_ddpm(tmp_path / "absent")


# ----------------------------------------------------------------------------------------------- schedule & target
TINY_V = dataclasses.replace(TINY, schedule="cosine_zero_snr", prediction_type="v_prediction",
                             lr_schedule="constant")


def test_v_prediction_run_records_and_carries_its_schedule(profile, tmp_path):
    from cff_lib import ddim
    from cff_lib.conditional_unet import alphas_cumprod, diffusion_scheduler_config, prediction_type_of

    report = train_ddpm(profile, tmp_path, progress=False, config=TINY_V, name="ddpm_v2")
    record = json.loads((tmp_path / "ddpm_v2.provenance.json").read_text())
    assert record["config"]["scheduler"] == diffusion_scheduler_config("cosine_zero_snr", "v_prediction")
    assert {"heldout_x0_mse", "heldout_loss", "heldout_eps_mse"} <= set(report.metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in report.metrics.values())
    unet = load_ddpm(tmp_path, "ddpm_v2")
    assert prediction_type_of(unet) == "v_prediction" and alphas_cumprod(unet.noise_scheduler_config)[-1] == 0
    for sampler in ("ddim", "ddpm"):  # from pure noise at ᾱ = 0: finite, in range
        x = ddpm_samples(unet, n=2, seed=0, n_steps=3, sampler=sampler)
        assert torch.isfinite(x).all() and x.shape == (2, 3, 32, 32)
    raw = ddim.generate(unet, None, 3, (2, 3, 32, 32), torch.Generator().manual_seed(0))
    assert torch.isfinite(raw).all()
    with pytest.raises(FileNotFoundError):
        load_ddpm(tmp_path)  # no ddpm.safetensors was written


def test_training_target_is_diffusers_velocity():
    from diffusers import DDPMScheduler

    from cff_lib.conditional_unet import diffusion_scheduler_config, training_target

    sched = DDPMScheduler(**diffusion_scheduler_config("linear_zero_snr", "v_prediction"))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 300, 998, 999])
    torch.testing.assert_close(training_target(sched, x0, noise, t, "v_prediction"),
                               sched.get_velocity(x0, noise, t), atol=1e-6, rtol=0)
    assert torch.equal(training_target(sched, x0, noise, t, "epsilon"), noise)
    torch.testing.assert_close(training_target(sched, x0, noise, t, "v_prediction")[3], -x0[3])  # ᾱ = 0: v = −x0


def test_old_metadata_loads_as_linear_epsilon_and_samples_bit_identically(profile, trained):
    from diffusers import UNet2DModel

    from cff_lib.backends import unet_from_weights
    from cff_lib.conditional_unet import paper_scheduler_config, prediction_type_of
    from cff_lib.pretrain_ddpm import DDPM_NAME
    from cff_lib.weights import load_verified

    _, out = trained
    for folder in [out]:  # the shipped ddpm is toy_v2 (v-prediction, cosine): test_model checks it carries that
        loaded = load_verified(folder / DDPM_NAME, kind="UNet2DModel")
        assert loaded.config["scheduler"] == paper_scheduler_config()  # what files before toy_v2 record
        unet = unet_from_weights(loaded)
        assert prediction_type_of(unet) == "epsilon"
        bare = UNet2DModel(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in loaded.config["architecture"].items()})
        bare.load_state_dict(loaded.tensors)  # how files were read before: no carried schedule
        assert torch.equal(ddpm_samples(unet, n=2, seed=5, n_steps=3), ddpm_samples(bare.eval(), n=2, seed=5,
                                                                                    n_steps=3))


def test_v_prediction_resume_is_exact_and_snapshots_do_not_perturb(profile, tmp_path):
    cfg = dataclasses.replace(TINY_V, fixed_batches=0, checkpoint_every=2)
    state = tmp_path / "state.safetensors"
    seen = []
    ema_full, full, done, _ = fit_ddpm(profile, cfg, steps=4, progress=False, state_file=state,
                                       on_checkpoint=lambda ema, step, losses: seen.append(
                                           (step, torch.randn(1).item())))
    assert done == 4 and [s for s, _ in seen] == [2]
    ema_plain, plain, _, _ = fit_ddpm(profile, cfg, steps=4, progress=False, state_file=tmp_path / "o.safetensors")
    assert plain == full  # the snapshot callback does not change the run
    _, resumed_losses, done, _ = fit_ddpm(profile, cfg, steps=4, progress=False, resume=True, state_file=state)
    assert done == 4 and resumed_losses == full
    ema_resumed, _, _, _ = fit_ddpm(profile, cfg, steps=4, progress=False, resume=True, state_file=state)
    for a, b in zip(ema_full.state_dict().values(), ema_resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = dataclasses.replace(cfg, prediction_type="epsilon")  # another recipe never resumes this state
    _, eps_losses, _, _ = fit_ddpm(profile, other, steps=3, progress=False, resume=True, state_file=state)
    assert len(eps_losses) == 3


def test_presets_and_guards(profile, tmp_path, monkeypatch, capsys):
    from cff_lib import pretrain_ddpm
    from cff_lib.pretrain_ddpm import PRESETS, train_command
    from cff_lib.provenance import REPO_ROOT
    from cff_lib.train_commands import run

    toy, v2 = ddpm_config(load_profile("toy")), ddpm_config(load_profile("toy"), "toy_v2")
    old = ddpm_config(load_profile("toy"), "toy")
    assert (old.schedule, old.prediction_type, old.unet) == ("linear", "epsilon", "synthetic")  # the first recipe
    assert (toy.schedule, toy.prediction_type, toy.unet) == ("cosine", "v_prediction", "synthetic_v2")  # shipped
    assert toy.steps == pretrain_ddpm.SHIPPED_STEPS["toy_v2"] < v2.steps  # the shipped weights' steps
    assert dataclasses.replace(toy, steps=v2.steps) == v2
    assert ddpm_config(profile).schedule == "linear" and ddpm_config(profile) is PRESETS["ci"]
    assert v2.prediction_type == "v_prediction" and v2.checkpoint_every > 0 and v2.batch_size == 64
    with pytest.raises(ValueError, match="preset"):
        ddpm_config(profile, "toy_v9")
    for bad in (dict(schedule="sigmoid"), dict(prediction_type="sample"), dict(lr_schedule="step"),
                dict(unet="huge")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            dataclasses.replace(TINY, **bad)
    monkeypatch.setattr(pretrain_ddpm, "train_ddpm", lambda *a, **k: pytest.fail("the guard let it train"))
    shipped = str(REPO_ROOT / "weights" / "synthetic")  # a new recipe never lands on the shipped ddpm file
    for other in ("toy", "ci"):  # any preset but the shipped toy_v2
        assert run("ddpm", train_command, ["--profile", "toy", "--preset", other, "--out", shipped]) == 2
        assert "would overwrite" in capsys.readouterr().err


def test_snapshots_write_ema_weights_and_progress_then_resume(profile, tmp_path):
    cfg = dataclasses.replace(TINY_V, fixed_batches=0, checkpoint_every=2)
    state = tmp_path / "pretraining" / "ddpm_v2_state.safetensors"
    out = tmp_path / "pretraining"
    train_ddpm(profile, out, steps=3, progress=False, config=cfg, name="ddpm_v2", state_file=state, snapshot=True)
    progress_log = json.loads((out / "ddpm_v2_progress.json").read_text())
    assert [h["step"] for h in progress_log["history"]] == [2] and state.is_file()  # kept: the run goes on
    assert "--state" in progress_log["command"] and "--resume" in progress_log["command"]
    assert {"heldout_loss", "heldout_x0_mse", "train_loss_last100"} <= set(progress_log["history"][0])
    report = train_ddpm(profile, out, steps=5, progress=False, config=cfg, name="ddpm_v2", state_file=state,
                        snapshot=True, resume=True)
    _, straight, _, _ = fit_ddpm(profile, cfg, steps=5, progress=False, state_file=tmp_path / "x.safetensors")
    assert report.steps == 5 and list(report.losses) == straight  # resumed from step 2, exactly
    assert [h["step"] for h in json.loads((out / "ddpm_v2_progress.json").read_text())["history"]] == [2, 4]
    assert load_ddpm(out, "ddpm_v2").noise_scheduler_config["prediction_type"] == "v_prediction"
