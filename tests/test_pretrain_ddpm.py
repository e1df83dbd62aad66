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
