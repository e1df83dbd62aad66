"""cff_lib.model: assembly from a profile, conditions -> c, gradients, zero-shot editing, trained-file I/O.

Every test runs on untrained (random) backends and a tiny UNet: nothing depends on trained weights.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import small_profile

from cff_lib.conditional_unet import tiny_unet_config
from cff_lib.config import load_profile
from cff_lib.model import MODEL_FILE, build_model, read_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    torch.set_num_threads(1)
    return build_model(small_profile(), tmp_path_factory.mktemp("no_weights"), allow_untrained=True,
                       unet_config=tiny_unet_config(32))


def _conditions(b: int = 4):
    g = torch.Generator().manual_seed(0)
    return {"caption": ["a 70-year-old sad woman", "a happy man", "a 30-year-old face", "a face"][:b],
            "target_age": [70.0, None, 30.0, None][:b], "target_emotion": ["sad", "happy", None, None][:b],
            "intensity": [1.0, 0.5, None, None][:b],
            "audio": [torch.randn(8000, generator=g), None, None, torch.randn(6400, generator=g)][:b],
            "image": torch.rand(b, 3, 32, 32, generator=g) * 2 - 1}


def test_missing_backend_weights_name_the_files_and_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"clip\.safetensors.*notebooks/02"):
        build_model(small_profile(), tmp_path)


def test_adapter_starts_as_a_no_op_trains_alone_and_never_touches_the_reconstruction(pristine, tmp_path):
    p = small_profile()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, trainable="adapter"))
    model = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    batch = _conditions()
    plain = copy.deepcopy(pristine)
    with torch.no_grad():  # the same c projection in both, so only the adapter differs
        plain.unet.cond_proj.weight.normal_(0, 1e-2, generator=torch.Generator().manual_seed(3))
        model.unet.cond_proj.weight.copy_(plain.unet.cond_proj.weight)
    # zero-initialised: the edit equals the same model without an adapter, bit for bit
    assert torch.equal(model.edit(batch["image"], batch, t0=20, steps=2),
                       plain.edit(batch["image"], batch, t0=20, steps=2))
    recon = model.edit(batch["image"], None, t0=20, steps=2)
    names = {n for n, q in model.named_parameters() if q.requires_grad}
    assert any(n.startswith("unet.adapter.") for n in names) and not any(n.startswith("unet.unet.") for n in names)
    with torch.no_grad():
        model.unet.adapter.up.weight.normal_(0, 0.5)
    assert not torch.equal(model.edit(batch["image"], batch, t0=20, steps=2),
                           plain.edit(batch["image"], batch, t0=20, steps=2))  # the adapter acts on c
    assert torch.equal(model.edit(batch["image"], None, t0=20, steps=2), recon)  # c = None: never applied
    assert not model.fine_tunes_unet  # the baselines keep running on the same backbone
    backbone = model.pretrained_unet()
    assert not backbone.mid_block._forward_hooks and len(model.unet.unet.mid_block._forward_hooks) == 1
    path = model.save_trained(tmp_path / MODEL_FILE)
    fresh = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    fresh.load_trained(path)
    assert torch.equal(fresh.unet.adapter.up.weight, model.unet.adapter.up.weight)
    with pytest.raises(ValueError, match="trainable='adapter'"):
        copy.deepcopy(pristine).load_trained(path, check_backends=False)


def test_condition_masks_absent_modalities_per_sample(pristine):
    model = copy.deepcopy(pristine).eval()
    batch = _conditions()
    with torch.no_grad():
        cond = model.condition({**batch, "reference": batch["image"]})
    assert cond.c.shape == (4, model.fusion_config.cond_dim)
    assert torch.isfinite(cond.c).all()
    assert cond.fusion.present["AV"].tolist() == [True, False, False, True]
    assert cond.fusion.present["Age"].tolist() == [True, False, True, False]
    assert cond.fusion.present["Emo"].tolist() == [True, True, False, True]  # label or audio
    att = dict(zip(cond.fusion.keys, cond.fusion.attention.T, strict=True))
    assert (att["AV"][[1, 2]] == 0).all() and (att["Age"][[1, 3]] == 0).all()


@pytest.mark.parametrize("mode", ["fusion", "fusion+unet", "adapter"])
def test_gradients_reach_trainable_parts_and_not_frozen_ones(pristine, mode):
    model = copy.deepcopy(pristine)
    model.set_trainable(mode)
    model.train()
    with torch.no_grad():  # as after a first optimizer step: the zero-initialised projection has moved
        model.unet.cond_proj.weight.normal_(0, 1e-2)
        if mode == "adapter":
            model.unet.adapter.up.weight.normal_(0, 1e-2)
    terms, _ = model(_conditions(), t0=20, n_inv_steps=2, n_gen_steps=2)
    terms["loss"].backward()
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen_with_grad
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("encoders.multimodal.clip", "encoders.arcface", "encoders.vgg")) for n in trainable)
    assert any(n.startswith("unet.unet.") for n in trainable) == (mode == "fusion+unet")
    assert any(n.startswith("unet.adapter.") for n in trainable) == (mode == "adapter")
    # the "no reference" embeddings only act when a sample has no I_ref; every face here has one
    silent = {"conditioning.null_identity", "conditioning.null_appearance"}
    no_grad = [n for n, p in trainable.items() if n not in silent
               and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not no_grad, no_grad
    for part in ("av.", "fusion.", "unet.cond_proj.", "encoders.multimodal.age_embedding.", "nu."):
        assert any(n.startswith(part) for n in trainable), part


def test_untrained_projection_makes_the_edit_equal_the_reconstruction(pristine):
    model = copy.deepcopy(pristine)
    batch = _conditions()
    edited = model.edit(batch["image"], batch, t0=20, steps=2)
    recon = model.edit(batch["image"], None, t0=20, steps=2)
    assert edited.shape == batch["image"].shape and torch.equal(edited, recon)
    with torch.no_grad():
        model.unet.cond_proj.weight.normal_(0, 1.0)
    assert not torch.equal(model.edit(batch["image"], batch, t0=20, steps=2), recon)


def test_trained_file_round_trip_and_clear_errors(pristine, tmp_path):
    model = copy.deepcopy(pristine)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.01)
    path = model.save_trained(tmp_path / MODEL_FILE)
    fresh = copy.deepcopy(pristine)
    fresh.load_trained(path)
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(v, fresh.trainable_state_dict()[k]), k
    # corrupt (truncated) file
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        fresh.load_trained(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.safetensors")
    # another kind of checkpoint
    other = fresh.encoders.age.save(tmp_path / "age_estimator.safetensors")
    with pytest.raises(ValueError, match="AgeEstimator.*expected 'ClipFaceFusion'"):
        fresh.load_trained(other)


def test_another_architecture_is_refused(pristine, tmp_path):
    cfg = dict(tiny_unet_config(32), block_out_channels=(16, 16))  # other time-embedding width
    other = build_model(small_profile(), tmp_path / "none", allow_untrained=True, unet_config=cfg)
    path = other.save_trained(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="another ClipFaceFusion architecture.*cond_proj"):
        copy.deepcopy(pristine).load_trained(path, check_backends=False)


def test_cff_lib_never_calls_torch_load_without_weights_only():
    offenders = []
    for py in sorted((ROOT / "cff_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    offenders.append(f"{py.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_gradient_checkpointing_gives_the_same_gradients(pristine, tmp_path):
    ckpt = build_model(small_profile(gradient_checkpointing=True), tmp_path, allow_untrained=True,
                       unet_config=tiny_unet_config(32))
    assert ckpt.unet.unet.is_gradient_checkpointing
    plain = copy.deepcopy(pristine)
    ckpt.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, ckpt):
        model.eval()  # no dropout: both see the same computation
        with torch.no_grad():
            model.unet.cond_proj.weight.copy_(torch.linspace(-0.01, 0.01, model.unet.cond_proj.weight.numel())
                                              .view_as(model.unet.cond_proj.weight))
        terms, _ = model(_conditions(), t0=20, n_inv_steps=2, n_gen_steps=2)
        terms["loss"].backward()
        grads.append(model.unet.cond_proj.weight.grad)
    assert grads[0].abs().sum() > 0 and torch.equal(grads[0], grads[1])


def test_fusion_plus_unet_also_trains_the_unet(tmp_path):
    p = small_profile()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, trainable="fusion+unet"))
    model = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32)).train()
    assert model.unet.unet.training and not model.encoders.arcface.training
    terms, _ = model(_conditions(), t0=20, n_inv_steps=2, n_gen_steps=2)
    terms["loss"].backward()
    unet_grads = [p.grad for p in model.unet.unet.parameters()]
    assert all(g is not None for g in unet_grads) and any(g.abs().sum() > 0 for g in unet_grads)
    assert any(k.startswith("unet.unet.") for k in model.signature())


def test_the_synthetic_ddpm_carries_its_recorded_schedule_into_the_model():
    """build_model attaches the DDPM file's scheduler config (schedule + prediction type) to the UNet, so a
    v-prediction / cosine DDPM (pretrain_ddpm preset toy_v2) is never run as linear / ε by cff_lib.ddim."""
    from cff_lib.conditional_unet import scheduler_config_of
    from cff_lib.model import load_trained_model, weights_root
    from cff_lib.weights import read_record

    toy = load_profile("toy")
    model = load_trained_model(toy)
    recorded = read_record(weights_root(toy) / "ddpm.safetensors").config["scheduler"]
    carried = scheduler_config_of(model.unet)
    assert carried is not None and carried["beta_schedule"] == recorded["beta_schedule"]
    assert model.unet.prediction_type == recorded.get("prediction_type", "epsilon")
    assert (recorded["beta_schedule"], recorded["prediction_type"]) == ("squaredcos_cap_v2", "v_prediction")
