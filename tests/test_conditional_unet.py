"""ConditionalUNet: zero-initialised conditioning, presets, schedule, I/O (tiny random UNets, CPU)."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

from cff_lib.conditional_unet import (
    ConditionalUNet,
    alphas_cumprod,
    load_unet,
    paper_scheduler_config,
    paper_unet_config,
    save_unet,
    synthetic_unet_config,
    tiny_unet_config,
)

diffusers = pytest.importorskip("diffusers")
UNet2DModel = diffusers.UNet2DModel

COND_DIM = 7


def _unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet2DModel(**tiny_unet_config()).eval()


def _inputs(batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 16, 16, generator=g)
    c = torch.randn(batch, COND_DIM, generator=g)
    t = torch.tensor([10, 700][:batch])
    return x, t, c


def _n_params(cfg: dict) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in UNet2DModel(**cfg).parameters())


def test_zero_projection_reproduces_unconditional_exactly():
    plain = _unet()
    model = ConditionalUNet(copy.deepcopy(plain), COND_DIM)
    assert torch.count_nonzero(model.cond_proj.weight) == 0 and torch.count_nonzero(model.cond_proj.bias) == 0
    assert model.cond_proj.out_features == 4 * 8  # time_embed_dim = 4 × block_out_channels[0]
    x, t, c = _inputs()
    with torch.no_grad():
        ref = plain(x, t).sample
        assert torch.equal(model(x, t, None), ref)
        assert torch.equal(model(x, t, c), ref)
        assert torch.equal(model(x, t, 1e3 * c), ref)


def test_one_optimizer_step_makes_c_matter_and_none_stays_unconditional():
    plain = _unet()
    model = ConditionalUNet(copy.deepcopy(plain), COND_DIM)
    x, t, c = _inputs()
    opt = torch.optim.SGD(model.cond_proj.parameters(), lr=1.0)
    model(x, t, c).pow(2).mean().backward()
    assert model.cond_proj.weight.grad.abs().sum() > 0 and model.cond_proj.bias.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() > 0 for p in model.unet.parameters())  # grads reach the UNet
    opt.step()
    with torch.no_grad():
        assert not torch.allclose(model(x, t, c), plain(x, t).sample, atol=1e-6)
        assert not torch.allclose(model(x, t, c), model(x, t, -c), atol=1e-6)
        assert torch.equal(model(x, t, None), plain(x, t).sample)  # c=None is the unconditional model, always


def test_c_broadcasts_from_batch_one():
    model = ConditionalUNet(_unet(), COND_DIM)
    torch.nn.init.normal_(model.cond_proj.weight)
    x, t, c = _inputs()
    with torch.no_grad():
        assert torch.allclose(model(x, t, c[:1]), model(x, t, c[:1].expand(2, -1)), atol=1e-5)


def test_bad_arguments_raise_value_error_naming_them():
    model = ConditionalUNet(_unet(), COND_DIM)
    x, t, c = _inputs()
    with pytest.raises(ValueError, match="c must"):
        model(x, t, c[:, :3])
    with pytest.raises(ValueError, match="c must"):
        model(x, t, c[0])
    with pytest.raises(ValueError, match="cond_dim"):
        ConditionalUNet(_unet(), 0)
    with pytest.raises(ValueError, match="unet"):
        ConditionalUNet(torch.nn.Linear(2, 2), COND_DIM)
    cfg = tiny_unet_config()
    cfg.update(num_class_embeds=4)
    with pytest.raises(ValueError, match="unet already has a class embedding"):
        ConditionalUNet(UNet2DModel(**cfg), COND_DIM)


def test_save_and_load_round_trip(tmp_path):
    model = ConditionalUNet(_unet(), COND_DIM)
    torch.nn.init.normal_(model.cond_proj.weight)
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "cond_proj.safetensors").is_file()
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "m" / "unet" / "config.json").read_text())["class_embed_type"] is None
    loaded = ConditionalUNet.from_pretrained(tmp_path / "m")
    x, t, c = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, c), model(x, t, c))
        plain = load_unet(tmp_path / "m" / "unet")  # the UNet folder is an ordinary unconditional UNet
        assert torch.equal(plain(x, t).sample, model(x, t, None))
    with pytest.raises(ValueError, match="cond_dim"):
        ConditionalUNet.from_pretrained(tmp_path / "m", cond_dim=COND_DIM + 1)


def test_plain_unet_folder_gets_fresh_projection(tmp_path):
    save_unet(_unet(), tmp_path / "plain")
    save_unet(_unet(seed=3), tmp_path / "plain")  # overwriting an existing folder works
    with pytest.raises(ValueError, match="cond_dim"):
        ConditionalUNet.from_pretrained(tmp_path / "plain")
    model = ConditionalUNet.from_pretrained(tmp_path / "plain", cond_dim=COND_DIM)
    x, t, c = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, c), _unet(seed=3)(x, t).sample)
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_pretrained_weights_fail_fast_with_instructions(tmp_path, network_attempts):
    for path in (tmp_path / "absent", "google/ddpm-ema-celebahq-256"):
        with pytest.raises(FileNotFoundError) as info:
            load_unet(path)
        assert network_attempts == []  # never a download, not even of the hub id
        msg = str(info.value)
        assert "google/ddpm-ema-celebahq-256" in msg and "unet_path" in msg and "local_files_only=True" in msg


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t, c = _inputs()
    grads = []
    for ckpt in (False, True):
        model = ConditionalUNet(_unet(), COND_DIM, gradient_checkpointing=ckpt).train()
        model(x, t, c).pow(2).mean().backward()
        grads.append(model.cond_proj.weight.grad)
    assert model.unet.is_gradient_checkpointing
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_paper_unet_config_is_ddpm_ema_celebahq_256():
    n = _n_params(paper_unet_config())
    assert n == 113_673_219  # "113.7 M"
    cfg = paper_unet_config()
    assert cfg["sample_size"] == 256 and cfg["block_out_channels"] == (128, 128, 256, 256, 512, 512)
    assert cfg["down_block_types"][4] == "AttnDownBlock2D"  # the 16 × 16 level (256 / 2**4)


def test_synthetic_configs_are_about_one_million_parameters():
    assert 1.0e6 < _n_params(synthetic_unet_config(32)) < 1.2e6
    assert 1.0e6 < _n_params(synthetic_unet_config(64)) < 1.3e6
    assert synthetic_unet_config(64)["sample_size"] == 64
    with pytest.raises(ValueError, match="resolution"):
        synthetic_unet_config(48)


def test_synthetic_v2_config_fits_a_committable_training_state():
    from cff_lib.conditional_unet import synthetic_v2_unet_config

    n = _n_params(synthetic_v2_unet_config(32))
    assert n == 3_692_867  # model + EMA + two AdamW moments in float32: 59 MB, under the ~80 MB commit budget
    assert 16 * n < 80e6 and 16 * _n_params(synthetic_v2_unet_config(64)) < 80e6
    assert synthetic_v2_unet_config(32)["layers_per_block"] == 2


def test_alphas_cumprod_sources_agree():
    from diffusers import DDIMScheduler, DDPMScheduler

    ref = DDPMScheduler(**paper_scheduler_config()).alphas_cumprod
    assert torch.equal(alphas_cumprod(), ref) and alphas_cumprod().shape == (1000,)
    assert torch.equal(alphas_cumprod(paper_scheduler_config()), ref)
    assert torch.equal(alphas_cumprod(DDIMScheduler.from_config(paper_scheduler_config())), ref)
    assert torch.equal(alphas_cumprod(ref.double()), ref)
    assert abs(float(ref[-1]) - 4.036e-5) < 1e-7  # linear β 1e-4 … 0.02 over 1000 steps
    for bad in (torch.ones(3, 3), torch.tensor([0.5, 0.9]), torch.tensor([0.5, -0.1]), "linear"):
        with pytest.raises(ValueError, match="schedule"):
            alphas_cumprod(bad)


@pytest.mark.slow
def test_paper_unet_full_size_zero_projection_is_exact():
    """113.7 M parameters on CPU: instantiation, count, and the zero-projection identity at 256²."""
    torch.manual_seed(0)
    plain = UNet2DModel(**paper_unet_config()).eval()
    assert sum(p.numel() for p in plain.parameters()) == 113_673_219
    model = ConditionalUNet(copy.deepcopy(plain), 512)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([500]), torch.randn(1, 512)), plain(x, 500).sample)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CFF_UNET_PATH"), reason="set CFF_UNET_PATH to a local ddpm-ema-celebahq-256")
def test_pretrained_paper_unet_loads_from_a_local_folder():
    model = ConditionalUNet.from_pretrained(os.environ["CFF_UNET_PATH"], cond_dim=512)
    assert sum(p.numel() for p in model.unet.parameters()) == 113_673_219
    assert tuple(model.unet.config.block_out_channels) == (128, 128, 256, 256, 512, 512)


# ----------------------------------------------------------------------------------------------- carried schedule
def test_diffusion_scheduler_configs_and_the_carried_schedule(tmp_path):
    from cff_lib.conditional_unet import (
        attach_scheduler,
        diffusion_scheduler_config,
        prediction_type_of,
        scheduler_config_of,
    )

    assert diffusion_scheduler_config() == paper_scheduler_config()  # linear + ε is the paper's, key for key
    zsnr = diffusion_scheduler_config("cosine_zero_snr", "v_prediction")
    a = alphas_cumprod(zsnr)
    assert a[-1] == 0 and a[-2] > 0 and zsnr["prediction_type"] == "v_prediction"
    assert 0 < alphas_cumprod(diffusion_scheduler_config("cosine", "epsilon"))[-1] < 1e-6
    with pytest.raises(ValueError, match="schedule"):
        diffusion_scheduler_config("sigmoid")
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion_scheduler_config("linear", "sample")
    with pytest.raises(ValueError, match="alphas_cumprod"):  # only the last ᾱ may be 0
        alphas_cumprod(torch.tensor([1.0, 0.5, 0.0, 0.0]))

    plain = _unet()
    assert scheduler_config_of(plain) is None and prediction_type_of(plain) == "epsilon"
    with pytest.raises(ValueError, match="prediction_type"):
        attach_scheduler(_unet(), {**zsnr, "prediction_type": "sample"})
    unet = attach_scheduler(_unet(), zsnr)
    model = ConditionalUNet(unet, COND_DIM)
    assert model.noise_scheduler_config == zsnr and model.prediction_type == "v_prediction"
    # the schedule travels through save_unet / load_unet and ConditionalUNet.save_pretrained / from_pretrained
    save_unet(unet, tmp_path / "plain")
    assert scheduler_config_of(load_unet(tmp_path / "plain")) == zsnr
    model.save_pretrained(tmp_path / "wrapped")
    assert ConditionalUNet.from_pretrained(tmp_path / "wrapped").prediction_type == "v_prediction"
    save_unet(_unet(), tmp_path / "paper")  # no carried schedule: nothing extra written, none read back
    assert scheduler_config_of(load_unet(tmp_path / "paper")) is None
    assert sorted(os.listdir(tmp_path / "paper")) == ["config.json", "diffusion_pytorch_model.safetensors"]
