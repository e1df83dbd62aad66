"""cff_lib.sample_realism: a DDPM's samples against fresh renders, beside the floor of other fresh renders."""
import numpy as np
import pytest
import torch

from cff_lib import sample_realism
from cff_lib.conditional_unet import tiny_unet_config
from cff_lib.config import load_profile
from cff_lib.referees import realism_reference

CI = load_profile("ci")


class ColourStats:
    """Stand-in referee features: per-channel means and stds over four quadrants (24 values per image)."""

    def features(self, images):
        q = [images[..., :16, :16], images[..., :16, 16:], images[..., 16:, :16], images[..., 16:, 16:]]
        return torch.cat([torch.cat([x.mean((2, 3)), x.std((2, 3))], 1) for x in q], 1).double().numpy()


def test_floor_is_a_fresh_set_of_the_reference_distribution():
    a = sample_realism.floor_renders(CI, 6)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, sample_realism.floor_renders(CI, 6))
    assert not torch.equal(a, realism_reference(CI, 6))  # other faces, same way of drawing them


def test_noise_scores_far_above_the_floor_and_renders_near_it(monkeypatch):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**tiny_unet_config(32)).eval()
    noise = sample_realism.ddpm_realism(unet, CI, ColourStats(), n=24, n_steps=2, kid_subset=8)
    assert noise["floor_fd"] > 0 and noise["fd_ratio"] > 5, noise
    assert noise["sample_saturated_fraction"] > noise["floor_saturated_fraction"]
    # a "perfect" generator (more renders drawn the same way) lands near the floor: the score can pass
    from cff_lib.face_banks import render_bank

    perfect = render_bank(CI.train.seed, 0xABC, 24, 1, 32, clean=False).floats(slice(None))
    monkeypatch.setattr(sample_realism, "ddpm_samples", lambda *a, **k: perfect)
    good = sample_realism.ddpm_realism(unet, CI, ColourStats(), n=24, n_steps=2, kid_subset=8)
    assert good["fd_ratio"] < 2.0, good
    assert np.isfinite(good["sample_kid_x1000"]) and good["n"] == 24 and good["kid_subset"] == 8


def test_bad_n_is_named():
    with pytest.raises(ValueError, match="n="):
        sample_realism.ddpm_realism(None, CI, ColourStats(), n=2)
