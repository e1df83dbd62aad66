"""DDIM inversion (Eq. 9) and reverse sampling (Eq. 30): grid, diffusers parity, reconstruction, gradients."""

from __future__ import annotations

import copy
import dataclasses
import weakref

import numpy as np
import pytest
import torch

from cff_lib import ddim
from cff_lib.conditional_unet import ConditionalUNet, paper_scheduler_config, tiny_unet_config

diffusers = pytest.importorskip("diffusers")
UNet2DModel, DDIMPipeline, DDIMScheduler = (
    diffusers.UNet2DModel,
    diffusers.DDIMPipeline,
    diffusers.DDIMScheduler,
)

COND_DIM = 5


def _unet(seed: int = 0):
    torch.manual_seed(seed)
    return UNet2DModel(**tiny_unet_config()).eval()


def _blob(batch: int = 2) -> torch.Tensor:
    """A smooth image in [-1, 1]: a gaussian blob (and its negative), (B, 3, 16, 16)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    img = (1.6 * torch.exp(-(xx**2 + yy**2) / 0.3) - 0.8).expand(batch, 3, 16, 16).clone()
    img[1::2] *= -1
    return img


def _cond(batch: int = 2, seed: int = 4) -> torch.Tensor:
    return torch.randn(batch, COND_DIM, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- grid
def test_diffusionclip_grid_is_diffusionclips_formula():
    for t0, n in [(500, 40), (300, 7), (999, 50), (600, 600), (2, 2)]:
        seq = ddim.ddim_timesteps(t0, n)
        assert seq.dtype == torch.int64 and seq.shape == (n,)
        assert seq.tolist() == (np.linspace(0, 1, n) * t0).astype(int)[::-1].tolist()
        assert seq[0] == t0 and seq[-1] == 0 and (seq[:-1] > seq[1:]).all()
    assert ddim.ddim_timesteps(500, 1).tolist() == [500]


def test_leading_grid_matches_diffusers_ddim_scheduler():
    sched = DDIMScheduler.from_config(paper_scheduler_config())
    for n in (1, 10, 50, 333, 999):
        sched.set_timesteps(n)
        assert torch.equal(ddim.ddim_timesteps(999, n, "leading"), sched.timesteps)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(t0=0, n_steps=1), "t0"),
        (dict(t0=1000, n_steps=5), "t0"),
        (dict(t0=500.0, n_steps=5), "t0"),
        (dict(t0=500, n_steps=0), "n_steps"),
        (dict(t0=500, n_steps=501), "n_steps"),
        (dict(t0=500, n_steps=True), "n_steps"),
        (dict(t0=500, n_steps=5, spacing="trailing"), "spacing"),
    ],
)
def test_bad_grid_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ddim.ddim_timesteps(**kwargs)


def test_edit_config_validates():
    cfg = ddim.EditConfig()
    assert (cfg.t0, cfg.n_inv_steps, cfg.n_gen_steps, cfg.spacing) == (500, 40, 40, "diffusionclip")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.t0 = 3
    with pytest.raises(ValueError, match="t0"):
        ddim.EditConfig(t0=1000)


# ----------------------------------------------------------------------------------------------- parity
def _pipeline_reference(unet, n_steps: int, seed: int, batch: int):
    """diffusers' DDIMPipeline (η = 0, no clipping) and the same loop unclamped, with the pipeline's noise."""
    sched = DDIMScheduler.from_config(paper_scheduler_config(), clip_sample=False)  # Eq. (30) does not clip
    pipe = DDIMPipeline(unet=copy.deepcopy(unet), scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        batch_size=batch,
        generator=torch.Generator().manual_seed(seed),
        eta=0.0,
        num_inference_steps=n_steps,
        output_type="pt",
    ).images  # (x0 / 2 + 0.5).clamp(0, 1)
    x = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    for t in pipe.scheduler.timesteps:
        x = pipe.scheduler.step(pipe.unet(x, t).sample, t, x, eta=0.0).prev_sample
    return images, x


@pytest.mark.parametrize("n_steps", [10, 25])
def test_generate_matches_diffusers_ddim_pipeline(n_steps):
    unet = _unet()
    with torch.no_grad():
        images, x0_ref = _pipeline_reference(unet, n_steps, seed=3, batch=2)
        plain = ddim.generate(unet, None, n_steps, (2, 3, 16, 16), torch.Generator().manual_seed(3), spacing="leading")
        model = ConditionalUNet(copy.deepcopy(unet), COND_DIM)  # untrained (zero) projection
        uncond = ddim.generate(
            model, None, n_steps, (2, 3, 16, 16), torch.Generator().manual_seed(3), spacing="leading"
        )
        cond = ddim.generate(model, _cond(), n_steps, None, torch.Generator().manual_seed(3), spacing="leading")
    for ours in (plain, uncond, cond):
        assert torch.allclose(ours, x0_ref, atol=1e-5, rtol=0)
        assert torch.allclose((ours / 2 + 0.5).clamp(0, 1), images, atol=1e-5, rtol=0)


def test_generate_default_grid_starts_at_pure_noise_level():
    model = ConditionalUNet(_unet(), COND_DIM)
    with torch.no_grad():
        out = ddim.generate(model, _cond(3), 4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 16, 16) and torch.isfinite(out).all()
    assert ddim.ddim_timesteps(999, 4)[0] == 999


# ----------------------------------------------------------------------------------------------- inversion
class _ConstantEps(torch.nn.Module):
    """ε independent of (x, t): DDIM inversion is then exact, which pins the level bookkeeping."""

    in_channels, sample_size = 3, 16

    def __init__(self):
        super().__init__()
        self.eps = torch.nn.Parameter(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x, t, c=None):
        return self.eps.expand_as(x)


def test_inversion_is_exact_for_an_x_and_t_independent_eps():
    model, x0 = _ConstantEps(), _blob()
    with torch.no_grad():
        for spacing in ddim.SPACINGS:
            x_t = ddim.invert(model, x0, None, 400, 8, spacing=spacing)
            assert (x_t - x0).abs().max() > 0.5  # it did move
            assert torch.allclose(ddim.sample(model, x_t, None, 400, 8, spacing=spacing), x0, atol=1e-5)


def test_inversion_reconstruction_error_falls_with_steps():
    model, x0 = ConditionalUNet(_unet(), COND_DIM), _blob()
    errors = []
    with torch.no_grad():
        for n in (5, 20, 50):
            x_t = ddim.invert(model, x0, None, 300, n)
            errors.append(float((ddim.sample(model, x_t, None, 300, n) - x0).pow(2).mean().sqrt()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05 and errors[2] < errors[0] / 5  # ~first order in the step size


def test_edit_is_invert_then_sample_and_uses_c():
    model, x0, c = ConditionalUNet(_unet(), COND_DIM), _blob(), _cond()
    with torch.no_grad():
        zero_proj = ddim.edit(model, x0, c, 300, 6, 6)
        assert torch.equal(zero_proj, ddim.sample(model, ddim.invert(model, x0, None, 300, 6), None, 300, 6))
        torch.nn.init.normal_(model.cond_proj.weight)
        edited = ddim.edit(model, x0, c, 300, 6, 4)
        x_t = ddim.invert(model, x0, None, 300, 6)  # inversion is unconditional
        assert torch.equal(edited, ddim.sample(model, x_t, c, 300, 4))
        assert not torch.allclose(edited, zero_proj, atol=1e-3)
    with pytest.raises(ValueError, match="n_gen_steps"):
        ddim.edit(model, x0, c, 300, 6, 4, spacing="leading")  # grids would not meet at the same level


def test_edit_variants_share_one_inversion_and_equal_edit_per_condition(monkeypatch):
    model, x0, c = ConditionalUNet(_unet(), COND_DIM), _blob(), _cond()
    torch.nn.init.normal_(model.cond_proj.weight)
    cfg = ddim.EditConfig(t0=300, n_inv_steps=6, n_gen_steps=4)
    calls = []
    real = ddim.invert
    monkeypatch.setattr(ddim, "invert", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = ddim.edit_variants(model, x0, {"recon": None, "edit": c}, cfg)
    assert calls == [1]  # one inversion for both chains
    with torch.no_grad():
        assert torch.equal(out["recon"], ddim.edit(model, x0, None, 300, 6, 4))
        assert torch.equal(out["edit"], ddim.edit(model, x0, c, 300, 6, 4))
    # the reverse chains keep their graph (training), the inversion has none
    out["edit"].sum().backward()
    assert model.cond_proj.weight.grad is not None and model.cond_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="conditions is empty"):
        ddim.edit_variants(model, x0, {}, cfg)
    with pytest.raises(ValueError, match="n_gen_steps"):
        ddim.edit_variants(model, x0, {"e": c}, ddim.EditConfig(300, 6, 4, spacing="leading"))


def test_edit_config_from_a_profile():
    from cff_lib.config import load_profile

    toy = load_profile("toy")
    cfg = ddim.EditConfig.from_profile(toy)  # a trained model's edit: edit_t0 and the preserving edit
    assert (cfg.t0, cfg.n_inv_steps, cfg.n_gen_steps, cfg.spacing, cfg.preserve_threshold) == (
        toy.ddim.edit_t0, toy.ddim.n_inv_steps, toy.ddim.n_gen_steps, toy.ddim.spacing, toy.ddim.preserve_threshold)
    assert toy.ddim.edit_t0 != toy.ddim.t0 and toy.ddim.preserve_threshold is not None
    short = ddim.EditConfig.from_profile(toy, train_steps=toy.ddim.n_train_steps, t0=300)
    assert (short.t0, short.n_inv_steps, short.n_gen_steps, short.preserve_threshold) == (300, 8, 8, None)
    training = ddim.EditConfig.from_profile(toy, train_steps=toy.ddim.n_train_steps)
    assert training.t0 == toy.ddim.t0  # a training chain starts at the training level, never edit_t0
    ci = load_profile("ci")  # edit_t0 null: the edit starts at t0, still preserving (toy's threshold)
    assert (ddim.EditConfig.from_profile(ci).t0, ddim.EditConfig.from_profile(ci).preserve_threshold) == (
        ci.ddim.t0, toy.ddim.preserve_threshold)
    with pytest.raises(ValueError, match="preserve_threshold"):
        ddim.EditConfig(300, 6, 6, preserve_threshold=0.0)


def test_the_preserving_edit_lies_between_the_reconstruction_and_the_plain_edit():
    model, x0, c = ConditionalUNet(_unet(), COND_DIM), _blob(), _cond()
    torch.nn.init.normal_(model.cond_proj.weight, std=3.0)
    plain_cfg = ddim.EditConfig(t0=300, n_inv_steps=6, n_gen_steps=6)
    with torch.no_grad():
        plain = ddim.edit_variants(model, x0, {"recon": None, "edit": c}, plain_cfg)
        diff = (plain["edit"].clamp(-1, 1) - plain["recon"].clamp(-1, 1)).abs().mean(1)  # (B, H, W)
        assert diff.max() > 0.05  # the condition changes the result
        # a threshold above every difference: m = 0, the reconstruction; a tiny one: m = 1, the plain edit
        never = ddim.edit_variants(model, x0, {"recon": None, "edit": c},
                                   dataclasses.replace(plain_cfg, preserve_threshold=10.0))
        assert torch.equal(never["edit"], plain["recon"]) and torch.equal(never["recon"], plain["recon"])
        always = ddim.edit_variants(model, x0, {"edit": c}, dataclasses.replace(plain_cfg, preserve_threshold=1e-9))
        assert torch.allclose(always["edit"], plain["edit"], atol=1e-6)
        # in between: pixels the plain edit hardly changed are the reconstruction's, the most changed are edited
        thr = float(diff.max()) / 4
        mid = ddim.edit_variants(model, x0, {"edit": c}, dataclasses.replace(plain_cfg, preserve_threshold=thr))
        m = ddim.edit_mask(plain["edit"], plain["recon"], thr)  # (B, 1, H, W)
        assert m.shape == (2, 1, 16, 16) and 0 < float(m.mean()) < 1
        outside = (m[:, 0] == 0)
        assert torch.allclose(mid["edit"].permute(0, 2, 3, 1)[outside],
                              plain["recon"].permute(0, 2, 3, 1)[outside], atol=1e-6)
        assert (mid["edit"] - plain["recon"]).abs().amax() > 0.05
    # the profile asks for it through EditConfig.from_profile; model.edit takes it as an argument
    with pytest.raises(ValueError, match="threshold"):
        ddim.edit_mask(plain["edit"], plain["recon"], 0.0)
    with pytest.raises(ValueError, match="keep and mask"):
        ddim.sample(model, ddim.invert(model, x0, None, 300, 6), c, 300, 6, mask=m)


def test_edit_settings_leave_the_training_fingerprint_and_are_validated():
    from cff_lib.config import ProfileError, load_profile, with_changes

    ci = with_changes(load_profile("ci"), {"ddim": {"edit_t0": None, "preserve_threshold": None}})
    assert ci.training_fingerprint() == ci.fingerprint()  # edit settings at their defaults: one identity
    moved = with_changes(ci, {"ddim": {"edit_t0": 500, "preserve_threshold": 0.2}})
    assert moved.fingerprint() != ci.fingerprint()  # a different experiment ...
    assert moved.training_fingerprint() == ci.training_fingerprint() == load_profile("ci").training_fingerprint()
    assert with_changes(ci, {"ddim": {"t0": 400}}).training_fingerprint() != ci.training_fingerprint()
    for bad in ({"edit_t0": 1}, {"edit_t0": 1000}, {"preserve_threshold": -0.1}):
        with pytest.raises(ProfileError):
            with_changes(ci, {"ddim": bad})


# ----------------------------------------------------------------------------------------------- gradients
def test_full_mode_gradients_reach_the_projection_through_every_step():
    model = ConditionalUNet(_unet(), COND_DIM)
    x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = ddim.sample(model, x_t, _cond(), 300, 4)
    assert out.grad_fn is not None
    out.pow(2).mean().backward()
    for p in model.cond_proj.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


class _LiveSavedTensors:
    """Counts tensors autograd keeps for backward (peak over the run), via saved-tensor hooks."""

    def __init__(self):
        self.live = self.peak = 0

    def _drop(self):
        self.live -= 1

    def pack(self, t):
        self.live += 1
        self.peak = max(self.peak, self.live)
        return _Box(t, self)  # released (and uncounted) when autograd frees the graph holding it

    @staticmethod
    def unpack(box):
        return box.t


class _Box:
    def __init__(self, t, counter):
        self.t = t
        weakref.finalize(self, counter._drop)


def _peak_saved(fn) -> int:
    counter = _LiveSavedTensors()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        fn()
    return counter.peak


def test_stepwise_mode_keeps_no_graph_and_memory_does_not_grow_with_steps():
    model = ConditionalUNet(_unet(), COND_DIM)
    torch.nn.init.normal_(model.cond_proj.weight, std=0.1)
    x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    c = _cond()

    def stepwise(n):
        return lambda: ddim.sample_with_stepwise_grad(model, x_t, c, 300, n, lambda x0, k: x0.pow(2).mean())

    def full(n):
        return lambda: ddim.sample(model, x_t, c, 300, n).pow(2).mean().backward()

    assert _peak_saved(stepwise(2)) == _peak_saved(stepwise(8))  # one step's graph at a time
    assert _peak_saved(full(8)) > 3 * _peak_saved(full(2))  # full backprop keeps every step

    model.zero_grad()
    x0, losses = ddim.sample_with_stepwise_grad(model, x_t, c, 300, 5, lambda x0, k: (k + 1) * x0.abs().mean())
    assert x0.grad_fn is None and not x0.requires_grad and x0.shape == x_t.shape
    assert len(losses) == 5 and all(isinstance(v, float) and np.isfinite(v) for v in losses)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.cond_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.allclose(x0, ddim.sample(model, x_t, c, 300, 5), atol=1e-5)  # same chain as `sample`


def test_stepwise_equals_full_for_one_step_and_reaches_upstream_of_c():
    model = ConditionalUNet(_unet(), COND_DIM)
    torch.nn.init.normal_(model.cond_proj.weight, std=0.1)  # a zero projection passes no gradient to c
    fusion = torch.nn.Linear(3, COND_DIM)
    feats = torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    loss_fn = lambda x0, k: x0.pow(2).mean()  # noqa: E731

    def grads():
        return [p.grad.clone() for p in (*model.cond_proj.parameters(), *fusion.parameters())]

    ddim.sample_with_stepwise_grad(model, x_t, fusion(feats), 300, 1, loss_fn)
    stepwise = grads()
    model.zero_grad(), fusion.zero_grad()
    loss_fn(ddim.sample(model, x_t, fusion(feats), 300, 1), 0).backward()
    for a, b in zip(stepwise, grads(), strict=True):
        assert torch.allclose(a, b, atol=1e-6) and b.abs().sum() > 0
    model.zero_grad(), fusion.zero_grad()
    ddim.sample_with_stepwise_grad(model, x_t, fusion(feats), 300, 4, loss_fn)  # c's graph is used once
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads())


# ----------------------------------------------------------------------------------------------- validation
def test_bad_inputs_raise_value_error_naming_the_argument():
    model, plain, x0, c = ConditionalUNet(_unet(), COND_DIM), _unet(), _blob(), _cond()
    cases = [
        (lambda: ddim.invert(model, x0 * 1.5, None, 300, 4), "x0"),  # outside [-1, 1]
        (lambda: ddim.invert(model, x0[0], None, 300, 4), "x0"),  # not (B, C, H, W)
        (lambda: ddim.invert(model, x0[:, :1], None, 300, 4), "x0"),  # channels
        (lambda: ddim.invert(model, x0[..., :8, :8], None, 300, 4), "x0"),  # size
        (lambda: ddim.invert(model, x0.to(torch.int64), None, 300, 4), "x0"),  # dtype
        (lambda: ddim.invert(model, x0.numpy(), None, 300, 4), "x0"),  # not a tensor
        (lambda: ddim.invert(model, x0 * float("nan"), None, 300, 4), "x0"),
        (lambda: ddim.edit(model, x0 + 2, c, 300, 4, 4), "x_ref"),
        (lambda: ddim.edit(model, x0[:, :, :8], c, 300, 4, 4), "x_ref"),
        (lambda: ddim.sample(model, x0[0], c, 300, 4), "x_t"),
        (lambda: ddim.sample(model, x0, c[:, :2], 300, 4), "c"),
        (lambda: ddim.sample(model, x0, _cond(3), 300, 4), "c"),
        (lambda: ddim.sample(plain, x0, c, 300, 4), "c"),  # an unconditional UNet2DModel takes no c
        (lambda: ddim.sample(model, x0, c, 1000, 4), "t0"),
        (lambda: ddim.sample(model, x0, c, 300, 301), "n_steps"),
        (lambda: ddim.sample(model, x0, c, 300, 4, spacing="linspace"), "spacing"),
        (lambda: ddim.sample(model, x0, c, 300, 4, schedule=torch.ones(2, 2)), "schedule"),
        (lambda: ddim.sample(model, x0, c, 300, 4, schedule=torch.linspace(0.99, 0.1, 200)), "t0"),
        (lambda: ddim.generate(model, None, 4, (2, 3, 16)), "shape"),
        (lambda: ddim.generate(model, None, 4, (2, 3, 8, 8)), "x_t"),
        (lambda: ddim.generate(model, None, 4, generator=0), "generator"),
        (lambda: ddim.sample_with_stepwise_grad(model, x0, c, 300, 2, "l2"), "loss_fn"),
        (lambda: ddim.sample_with_stepwise_grad(model, x0, c, 300, 2, lambda x, k: x), "loss_fn"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


def test_any_scheduler_alphas_work():
    model = ConditionalUNet(_unet(), COND_DIM)
    sched = DDIMScheduler(beta_schedule="squaredcos_cap_v2")
    x_t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ddim.sample(model, x_t, None, 500, 5, schedule=sched)
        b = ddim.sample(model, x_t, None, 500, 5, schedule=sched.alphas_cumprod)
        d = ddim.sample(model, x_t, None, 500, 5, schedule=dict(sched.config))
        assert torch.equal(a, b) and torch.equal(a, d)
        assert not torch.allclose(a, ddim.sample(model, x_t, None, 500, 5), atol=1e-3)


def test_bfloat16_runs():
    model = ConditionalUNet(_unet(), COND_DIM).to(torch.bfloat16)
    with torch.no_grad():
        out = ddim.edit(model, _blob().to(torch.bfloat16), _cond().to(torch.bfloat16), 300, 3, 3)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------- schedule & target
from cff_lib.conditional_unet import (  # noqa: E402
    alphas_cumprod,
    attach_scheduler,
    diffusion_scheduler_config,
    prediction_type_of,
)


class _Oracle(torch.nn.Module):
    """The exact denoiser of a one-image data set x*: outputs the ε or v that makes f_θ = x* at every level.

    ε = (x_t − √ᾱ x*) / √(1−ᾱ); v = √ᾱ ε − √(1−ᾱ) x*. Sampling from any noise must land on x*.
    """

    in_channels, sample_size = 3, 16

    def __init__(self, target: torch.Tensor, config: dict):
        super().__init__()
        self.target = target
        self.a = alphas_cumprod(config).to(torch.float64)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        attach_scheduler(self, config)

    def forward(self, x, t, c=None):
        a = self.a[t].view(-1, 1, 1, 1)
        sa, s1 = a.sqrt(), (1 - a).sqrt()
        x64, x_star = x.to(torch.float64), self.target.to(torch.float64)
        # at ᾱ = 1 (t = 0 of a clean image) ε is undetermined: any value; use 0
        eps = torch.where(s1 > 0, (x64 - sa * x_star) / s1.clamp_min(1e-30), torch.zeros_like(x64))
        out = eps if prediction_type_of(self) == "epsilon" else sa * eps - s1 * x_star
        return out.to(x.dtype)


def test_v_prediction_round_trip_recovers_x0_and_eps():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.randn(2, 3, 16, 16, generator=g)
    a = alphas_cumprod(diffusion_scheduler_config("cosine_zero_snr", "v_prediction"))
    assert a[-1] == 0 and (a[:-1] > 0).all()  # zero terminal SNR, exactly
    for t in (0, 10, 500, 990, 999):
        level = ddim._Level(t, float(a[t] ** 0.5), float((1 - a[t]) ** 0.5))
        x_t = level.sqrt_a * x0 + level.sqrt_1ma * eps
        v = level.sqrt_a * eps - level.sqrt_1ma * x0
        eps_hat, x0_hat = ddim._eps_and_x0(x_t, v, level, "v_prediction", clip_x0=False)
        torch.testing.assert_close(x0_hat, x0, atol=2e-6, rtol=0)
        torch.testing.assert_close(eps_hat, eps, atol=2e-6, rtol=0)
        if t < 999:  # ε-prediction recovers x0 wherever ᾱ > 0
            eps_hat, x0_hat = ddim._eps_and_x0(x_t, eps, level, "epsilon", clip_x0=False)
            assert torch.equal(eps_hat, eps)
            torch.testing.assert_close(x0_hat, x0, atol=5e-3 if t > 900 else 1e-5, rtol=0)


@pytest.mark.parametrize(
    "schedule, prediction",
    [("linear", "epsilon"), ("cosine", "v_prediction"), ("cosine_zero_snr", "v_prediction"),
     ("linear_zero_snr", "v_prediction"), ("linear", "v_prediction")],
)
def test_sampling_with_the_exact_denoiser_lands_on_the_image(schedule, prediction):
    x_star = 0.8 * _blob()
    model = _Oracle(x_star, diffusion_scheduler_config(schedule, prediction))
    with torch.no_grad():
        out = ddim.generate(model, None, 10, (2, 3, 16, 16), torch.Generator().manual_seed(1))
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, x_star, atol=1e-4, rtol=0)
        # inversion then sampling is the identity too (the inversion passes through ᾱ = 0 when t0 = 999)
        x_t = ddim.invert(model, x_star, None, 999, 8)
        assert torch.isfinite(x_t).all()
        torch.testing.assert_close(ddim.sample(model, x_t, None, 999, 8), x_star, atol=1e-4, rtol=0)
        # x0 clipping changes nothing, bit for bit, when every f_θ lies inside [-1, 1]
        g = torch.Generator().manual_seed(1)
        assert torch.equal(out, ddim.generate(model, None, 10, (2, 3, 16, 16), g, clip_x0=True))


def test_zero_terminal_snr_with_a_real_unet_is_finite_and_eps_is_refused():
    unet = attach_scheduler(_unet(), diffusion_scheduler_config("linear_zero_snr", "v_prediction"))
    model = ConditionalUNet(unet, COND_DIM)
    assert model.prediction_type == "v_prediction" and model.noise_scheduler_config["rescale_betas_zero_snr"]
    with torch.no_grad():
        out = ddim.generate(model, _cond(2), 5, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all() and out.shape == (2, 3, 16, 16)
        assert torch.isfinite(ddim.edit(model, _blob(), _cond(2), 999, 4, 4)).all()
    eps_model = attach_scheduler(_unet(), {**diffusion_scheduler_config("linear_zero_snr", "v_prediction"),
                                           "prediction_type": "epsilon"})
    with pytest.raises(ValueError, match="t0=999"):
        ddim.generate(eps_model, None, 5, (1, 3, 16, 16))
    with torch.no_grad():  # below the zero-SNR level an ε model is fine
        assert torch.isfinite(ddim.sample(eps_model, torch.randn(1, 3, 16, 16), None, 998, 4)).all()


def test_a_model_without_a_carried_schedule_and_one_carrying_the_papers_are_bit_identical():
    bare, carrying = _unet(), attach_scheduler(_unet(), paper_scheduler_config())
    assert prediction_type_of(bare) == prediction_type_of(carrying) == "epsilon"
    x_t, x0, c = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)), _blob(), _cond()
    with torch.no_grad():
        assert torch.equal(ddim.generate(bare, None, 6, (2, 3, 16, 16), torch.Generator().manual_seed(0)),
                           ddim.generate(carrying, None, 6, (2, 3, 16, 16), torch.Generator().manual_seed(0)))
        assert torch.equal(ddim.invert(bare, x0, None, 400, 5), ddim.invert(carrying, x0, None, 400, 5))
        a, b = ConditionalUNet(bare, COND_DIM), ConditionalUNet(carrying, COND_DIM)
        torch.nn.init.normal_(a.cond_proj.weight, std=0.1)
        b.cond_proj.load_state_dict(a.cond_proj.state_dict())
        assert torch.equal(ddim.edit(a, x0, c, 300, 4, 4), ddim.edit(b, x0, c, 300, 4, 4))
    xa, la = ddim.sample_with_stepwise_grad(a, x_t, c, 300, 3, lambda x, k: x.pow(2).mean())
    xb, lb = ddim.sample_with_stepwise_grad(b, x_t, c, 300, 3, lambda x, k: x.pow(2).mean())
    assert torch.equal(xa, xb) and la == lb


def test_the_carried_schedule_is_used_and_an_explicit_one_wins():
    cosine = diffusion_scheduler_config("cosine", "epsilon")
    carrying = attach_scheduler(_unet(), cosine)
    x_t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = ddim.sample(carrying, x_t, None, 500, 5)
        assert torch.equal(own, ddim.sample(_unet(), x_t, None, 500, 5, schedule=cosine))
        assert torch.equal(ddim.sample(carrying, x_t, None, 500, 5, schedule=paper_scheduler_config()),
                           ddim.sample(_unet(), x_t, None, 500, 5))
        assert not torch.allclose(own, ddim.sample(_unet(), x_t, None, 500, 5), atol=1e-3)
        # deepcopy (ClipFaceFusion.pretrained_unet) keeps it; removing it restores the paper's
        assert torch.equal(ddim.sample(copy.deepcopy(carrying), x_t, None, 500, 5), own)
        assert torch.equal(ddim.sample(attach_scheduler(carrying, None), x_t, None, 500, 5),
                           ddim.sample(_unet(), x_t, None, 500, 5))


def test_x0_clipping_bounds_every_prediction_and_is_off_by_default():
    model = ConditionalUNet(_unet(), COND_DIM)  # untrained: f_θ = (x − √(1−ᾱ) ε) / √ᾱ explodes at high t
    x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    seen = {False: [], True: []}
    for clip in (False, True):
        out, _ = ddim.sample_with_stepwise_grad(
            model, x_t, None, 999, 6, lambda x0, k, clip=clip: seen[clip].append(x0.detach()) or x0.sum() * 0,
            clip_x0=clip)
        assert torch.isfinite(out).all()
        if clip:
            assert out.abs().max() <= 1.0
    assert max(float(x.abs().max()) for x in seen[False]) > 1.5  # unclipped predictions leave [-1, 1]
    assert all(float(x.abs().max()) <= 1.0 for x in seen[True])
    with torch.no_grad():
        default = ddim.generate(model, None, 6, (2, 3, 16, 16), torch.Generator().manual_seed(0))
        off = ddim.generate(model, None, 6, (2, 3, 16, 16), torch.Generator().manual_seed(0), clip_x0=False)
        on = ddim.generate(model, None, 6, (2, 3, 16, 16), torch.Generator().manual_seed(0), clip_x0=True)
    assert torch.equal(default, off) and default.abs().max() > 1.0 and on.abs().max() <= 1.0
