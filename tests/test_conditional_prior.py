"""The conditional prior (not in the paper; docs/errata.md "A conditional prior"): classifier-free guidance
on ConditionalUNet, the masked denoising loss, ClipFaceFusion.prior_step and its profile settings.

Tiny random models only; nothing depends on trained weights.
"""
from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import small_profile
from diffusers import UNet2DModel

from cff_lib.conditional_unet import ConditionalUNet, tiny_unet_config
from cff_lib.config import ProfileError, load_profile, with_changes
from cff_lib.losses import ConditionalDenoisingLoss
from cff_lib.model import build_model


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    torch.set_num_threads(1)
    return build_model(small_profile(objective="conditional_prior", p_uncond=0.0, changed_weight=2.0),
                       tmp_path_factory.mktemp("no_weights"), allow_untrained=True, unet_config=tiny_unet_config(32))


def _batch(b: int = 4):
    g = torch.Generator().manual_seed(0)
    return {"caption": ["a 70-year-old sad woman", "a happy man", "a 30-year-old face", "a face"][:b],
            "target_age": [70.0, None, 30.0, None][:b], "target_emotion": ["sad", "happy", None, None][:b],
            "intensity": [1.0, 0.5, None, None][:b], "audio": [None] * b,
            "image": torch.rand(b, 3, 32, 32, generator=g) * 2 - 1,
            "target": torch.rand(b, 3, 32, 32, generator=g) * 2 - 1}


def test_guidance_scale_mixes_the_two_branches_and_predict_is_one_unguided_pass():
    torch.manual_seed(0)
    net = ConditionalUNet(UNet2DModel(**tiny_unet_config(16)), cond_dim=6).eval()
    with torch.no_grad():
        net.cond_proj.weight.normal_(0, 0.5)
    x, t, c = torch.randn(2, 3, 16, 16), torch.tensor([5, 700]), torch.randn(2, 6)
    with torch.no_grad():
        u, f = net.predict(x, t, None), net.predict(x, t, c)
        assert not torch.allclose(u, f)  # c matters, or the checks below prove nothing
        assert torch.equal(net(x, t, c), f)  # w = 1 (the default): one conditional pass
        net.guidance_scale = 3.0
        torch.testing.assert_close(net(x, t, c), u + 3.0 * (f - u))
        assert torch.equal(net.predict(x, t, c), f)  # predict ignores the guidance scale
        assert torch.equal(net(x, t, None), u)  # no c: the unconditional branch alone
        net.guidance_scale = 0.0
        torch.testing.assert_close(net(x, t, c), u)


def test_the_loss_weighs_each_mask_by_hand():
    pred, target = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    pred[0, :, 0, 0], pred[0, :, 1, 1] = 1.0, 2.0  # err 1 at pixel (0, 0), 4 at (1, 1), 0 elsewhere
    x0 = torch.zeros(1, 3, 2, 2)
    reference = x0.clone()
    reference[0, 0, 0, 0] = 1.0  # the target changed pixel (0, 0) only (one channel is enough)
    same = x0.clone()
    same[0, 2, 1, 1] = -1.0  # the expression changed pixel (1, 1) only
    terms = ConditionalDenoisingLoss(changed_weight=10.0, expression_weight=100.0)(pred, target, x0, reference, same)
    assert float(terms["denoise/mse"]) == pytest.approx((3 * 1 + 3 * 4) / 12)
    assert float(terms["denoise/changed_mse"]) == pytest.approx(1.0)
    assert float(terms["denoise/expression_mse"]) == pytest.approx(4.0)
    assert float(terms["loss"]) == pytest.approx(15 / 12 + 10 * 1.0 + 100 * 4.0)
    plain = ConditionalDenoisingLoss()(pred, target, x0, reference)
    assert set(plain) == {"denoise/mse", "loss"} and torch.equal(plain["loss"], plain["denoise/mse"])


def test_the_loss_refuses_bad_weights_and_a_missing_expression_mask():
    with pytest.raises(ValueError, match="changed_weight"):
        ConditionalDenoisingLoss(changed_weight=-1.0)
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="same_expression"):
        ConditionalDenoisingLoss(expression_weight=1.0)(x, x, x, x)


def test_build_model_reads_the_settings_from_the_profile(tmp_path):
    p = small_profile(objective="conditional_prior", p_uncond=0.25, changed_weight=3.0, expression_weight=7.0)
    p = dataclasses.replace(p, ddim=dataclasses.replace(p.ddim, guidance_scale=2.5))
    m = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    assert (m.objective, m.p_uncond, m.unet.guidance_scale) == ("conditional_prior", 0.25, 2.5)
    assert (m.prior_loss.changed_weight, m.prior_loss.expression_weight) == (3.0, 7.0)
    default = build_model(small_profile(), tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    assert (default.objective, default.unet.guidance_scale) == ("edit_chain", 1.0)  # the paper's, unguided


def test_prior_step_trains_the_projection_on_the_targets(prior):
    model = copy.deepcopy(prior)
    batch = _batch()
    terms, x0 = model(batch, t0=20, n_inv_steps=2, n_gen_steps=2)  # forward dispatches on the objective
    assert set(terms) == {"denoise/mse", "denoise/changed_mse", "loss"} and torch.equal(x0, batch["target"])
    terms["loss"].backward()
    assert model.unet.cond_proj.weight.grad is not None and model.unet.cond_proj.weight.grad.abs().sum() > 0
    # the same draws (t, noise, the c coin) give the same loss: nothing else in the step is random
    torch.manual_seed(5)
    a = model.prior_step(batch)[0]["loss"]
    torch.manual_seed(5)
    assert torch.equal(a, model.prior_step(batch)[0]["loss"])


def test_prior_step_runs_under_bf16_autocast(prior):
    """The toy preset can train in bf16 on CPU. The frozen encoders' features first met inside an autocast step
    are memoised in float32 (before, in bf16: read back outside autocast -- the epoch grids, an edit -- they
    clashed with float32 layers). Under autocast the loss stays finite and trains the projection."""
    model = copy.deepcopy(prior)
    model._feature_cache.clear()  # so this test's features are first computed under autocast
    torch.manual_seed(3)
    batch = _batch()
    batch["audio"] = [torch.randn(8000, generator=torch.Generator().manual_seed(1)) * 0.1, None, None, None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, _ = model.prior_step(batch)
    memo = [v for kind in model._feature_cache.values() for v in kind.values()]
    assert memo and all(v.dtype == torch.float32 for v in memo)
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert model.unet.cond_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        c = model.condition(batch).c  # outside autocast, from the bf16 memo
    assert c.dtype == torch.float32 and torch.isfinite(c).all()


def test_prior_step_without_c_leaves_the_projection_untouched(prior):
    model = copy.deepcopy(prior)
    model.p_uncond = 0.999999  # every batch unconditional
    model.prior_step(_batch())[0]["loss"].backward()
    grad = model.unet.cond_proj.weight.grad
    assert grad is None or not grad.abs().any()


def test_prior_step_needs_targets(prior):
    batch = _batch()
    del batch["target"]
    with pytest.raises(ValueError, match=r"batch\['target'\]"):
        prior.prior_step(batch)


def test_the_edit_chain_objective_is_unchanged(prior, tmp_path):
    chain = build_model(small_profile(), tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    terms, _ = chain(_batch(), t0=20, n_inv_steps=2, n_gen_steps=2)
    assert "denoise/mse" not in terms


@pytest.mark.parametrize("changes, match", [
    ({"train": {"objective": "bogus"}}, "train.objective"),
    ({"train": {"p_uncond": 1.0}}, "train.p_uncond"),
    ({"train": {"expression_weight": -1.0}}, "expression_weight"),
    ({"ddim": {"guidance_scale": -0.5}}, "ddim.guidance_scale"),
])
def test_profile_settings_are_validated(changes, match):
    with pytest.raises(ProfileError, match=match):
        with_changes(load_profile("ci"), changes)


def test_the_paper_world_refuses_the_conditional_prior():
    with pytest.raises(ProfileError, match="only the synthetic world"):
        with_changes(load_profile("paper"), {"train": {"objective": "conditional_prior"}})


def test_later_settings_at_their_defaults_keep_the_fingerprints():
    p = load_profile("paper")  # every later setting at its default (toy sets them: the conditional prior)
    same = with_changes(p, {"train": {"objective": "edit_chain", "p_uncond": 0.1}, "ddim": {"guidance_scale": 1.0}})
    assert same.fingerprint() == p.fingerprint()
    toy = load_profile("toy")
    assert with_changes(toy, {"ddim": {"guidance_scale": 3.0}}).fingerprint() != toy.fingerprint()


def test_same_expression_targets_keep_the_source_expression():
    from cff_lib import oracle
    from cff_lib.synthetic_world import ffhq_sample
    from cff_lib.world import world_spec

    p = load_profile("ci")
    face = ffhq_sample(world_spec(p), 0)
    other = "surprised" if face.attrs.emotion != "surprised" else "sad"
    row = SimpleNamespace(image=f"ffhq/{face.path}", target_age=60.0, target_emotion=other, target_intensity=1.0)
    full, same = oracle.oracle_targets(p, [row]), oracle.same_expression_targets(p, [row])
    kept = SimpleNamespace(image=row.image, target_age=60.0, target_emotion=None, target_intensity=None)
    assert torch.equal(same, oracle.oracle_targets(p, [kept]))  # the target age, the source's expression
    assert not torch.equal(full, same)  # the asked expression changes pixels
    with pytest.raises(ValueError, match="rows is empty"):
        oracle.same_expression_targets(p, [])


def test_oracle_renders_are_memoised_as_fresh_copies_equal_to_a_direct_render():
    from cff_lib import oracle
    from cff_lib.synthetic_faces import FaceAttributes, render_face
    from cff_lib.synthetic_world import ffhq_sample
    from cff_lib.world import world_spec

    p = load_profile("ci")
    face = ffhq_sample(world_spec(p), 1)
    first = oracle.oracle_image(p, f"ffhq/{face.path}", 70.0, "happy", 0.5)
    direct = render_face(FaceAttributes(face.attrs.identity, 70.0, "happy", 0.5), p.data.image_size,
                         variation_seed=face.variation_seed)
    expected = torch.from_numpy(np.asarray(direct, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
    assert torch.equal(first, expected)
    first.fill_(0.0)  # a caller writing into its copy does not change what the cache hands out next
    again = oracle.oracle_image(p, f"ffhq/{face.path}", 70.0, "happy", 0.5)
    assert again.abs().sum() > 0 and not torch.equal(again, first)
    with pytest.raises(ValueError, match="not a face file"):
        oracle.oracle_image(p, "ffhq/99999/99999.png", 70.0, "happy")


def test_oracle_targets_enter_training_only_for_train_rows():
    """A val row's oracle target is the control faces' ground truth (evidence): with_oracle_targets refuses it."""
    from cff_lib.synthetic_world import ffhq_sample
    from cff_lib.training import with_oracle_targets
    from cff_lib.world import world_spec

    p = load_profile("ci")
    face = ffhq_sample(world_spec(p), 0)

    def row(split):
        return SimpleNamespace(image=f"ffhq/{face.path}", target_age=60.0, target_emotion="sad",
                               target_intensity=1.0, split=split)

    samples = [row("train"), row("val")]
    with pytest.raises(ValueError, match="'val'"):
        with_oracle_targets(p, {"index": torch.tensor([0, 1])}, samples, expression_mask=False)
    out = with_oracle_targets(p, {"index": torch.tensor([0])}, samples, expression_mask=True)
    size = p.data.image_size
    assert out["target"].shape == out["same_expression"].shape == (1, 3, size, size)
