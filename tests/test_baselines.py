"""cff_lib.baselines: the text-only DiffusionCLIP-style baseline on ClipFaceFusion's own DDPM.

Random backends and a tiny UNet (no trained weights needed): shapes, the zero-initialised projection
reproduces the unconditioned reconstruction exactly, a few optimizer steps lower the loss on a batch, and
the saved projection loads back only onto the backends it was trained with.
"""
import dataclasses

import pytest
import torch
from conftest import small_profile

from cff_lib import baselines, ddim
from cff_lib.conditional_unet import tiny_unet_config
from cff_lib.model import build_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    return build_model(small_profile(), tmp_path_factory.mktemp("no_weights"), allow_untrained=True,
                       unet_config=tiny_unet_config(32)).eval()


def _batch(b: int = 4):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(b, 3, 32, 32, generator=g) * 2 - 1,
            "caption": ["a 70-year-old sad woman", "a happy man", "a 30-year-old angry man", "a calm face"][:b],
            "source_caption": ["a face of a woman", "a face of a man", "a face of a man", "a face"][:b]}


def test_condition_and_edit_shapes(model):
    bl = baselines.baseline_from_model(model)
    batch = _batch()
    c = bl.condition(batch["caption"])
    assert c.shape == (4, 512)
    assert torch.allclose(c.norm(dim=-1), torch.ones(4), atol=1e-5)
    out = bl.edit(batch["image"], batch["caption"], small_profile())
    assert out.shape == batch["image"].shape and out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("mode", ["fusion", "fusion+unet"])
def test_what_trains_follows_the_profile_and_the_unet_is_a_copy(mode, tmp_path):
    p = small_profile()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, trainable=mode))
    model = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    bl = baselines.baseline_from_model(model)
    trainable = {n for n, q in bl.named_parameters() if q.requires_grad}
    projection = {"unet.cond_proj.weight", "unet.cond_proj.bias"}
    unet = {f"unet.unet.{n}" for n, _ in model.unet.unet.named_parameters()}
    assert trainable == (projection | unet if mode == "fusion+unet" else projection)
    assert bl.unet.unet is not model.unet.unet
    for a, b in zip(bl.unet.unet.parameters(), model.unet.unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_zero_init_baseline_reproduces_reconstruction_exactly(model):
    bl = baselines.baseline_from_model(model)
    p, batch = small_profile(), _batch()
    recon = ddim.edit(model.unet, batch["image"], None, p.ddim.t0, p.ddim.n_inv_steps, p.ddim.n_gen_steps)
    edited = bl.edit(batch["image"], batch["caption"], p)
    assert torch.equal(edited, recon.clamp(-1, 1))


@pytest.mark.parametrize("mode, lr", [("fusion", 5e-2), ("fusion+unet", 1e-3)])
def test_a_few_steps_lower_the_loss(mode, lr, tmp_path):
    p = small_profile(learning_rate=lr, weight_decay=0.0)
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, trainable=mode))
    model = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32)).eval()
    bl = baselines.baseline_from_model(model)
    batch = _batch()
    opts = baselines.BaselineOptions(train_ddim_steps=2)
    history = baselines.train_baseline(bl, model, p, opts, batches=[batch] * 6)
    assert len(history) == 6
    losses = [h["loss"] for h in history]
    assert min(losses[1:]) < losses[0]
    assert set(history[0]) >= {"clip", "l1", "id", "loss"}


def test_fine_tuned_unet_model_gives_the_baseline_the_pretrained_unet(tmp_path):
    p = small_profile()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, trainable="fusion+unet"))
    m = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    before = {k: v.clone() for k, v in m.unet.unet.state_dict().items()}
    with torch.no_grad():  # what fine-tuning does to the model's own backbone
        for v in m.unet.unet.parameters():
            v.add_(0.5)
    bl = baselines.baseline_from_model(m)
    got = bl.unet.unet.state_dict()
    assert set(got) == set(before) and all(torch.equal(got[k], before[k]) for k in before)
    assert not torch.equal(m.unet.unet.conv_in.weight, bl.unet.unet.conv_in.weight)
    assert all(q.requires_grad for q in bl.unet.unet.parameters())  # its own copy fine-tunes, as the model's


def test_save_and_load_round_trip_and_backend_check(model, tmp_path):
    p = small_profile()
    bl = baselines.baseline_from_model(model)
    with torch.no_grad():
        bl.unet.cond_proj.weight.normal_()
        bl.unet.unet.conv_in.weight.add_(0.25)  # ci fine-tunes the UNet too: it must round-trip
    baselines.save_baseline(bl, model, p, [{"loss": 1.0}], 0.1, tmp_path)
    loaded, info = baselines.load_baseline(model, p, tmp_path)
    assert torch.equal(loaded.unet.cond_proj.weight, bl.unet.cond_proj.weight)
    assert torch.equal(loaded.unet.unet.conv_in.weight, bl.unet.unet.conv_in.weight)
    assert info["trained"] is False
    saved = dict(model.backend_digests)
    try:
        model.backend_digests = {**saved, "unet": "something-else"}
        with pytest.raises(ValueError, match="other backend"):
            baselines.load_baseline(model, p, tmp_path)
    finally:
        model.backend_digests = saved


def test_missing_file_is_a_clear_error(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained baseline"):
        baselines.load_baseline(model, small_profile(), tmp_path)


def test_the_baseline_trains_clipfacefusions_steps_capped_at_max_steps():
    from cff_lib.config import load_profile
    from cff_lib.model import weights_root
    from cff_lib.weights import read_record

    toy = load_profile("toy")
    assert read_record(weights_root(toy) / "clipfacefusion").config["steps"] > baselines.MAX_STEPS  # 8,944
    assert baselines.baseline_steps(toy) == baselines.MAX_STEPS == 300
    assert baselines.baseline_steps(toy, baselines.BaselineOptions(steps=7)) == 7
