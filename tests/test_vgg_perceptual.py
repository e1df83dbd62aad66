"""VGG-16 perceptual features (conv3_3, conv4_3 -> their ReLU outputs)."""

import pytest
import torch

import cff_lib  # noqa: F401
from cff_lib.vgg_perceptual import IMAGENET_MEAN, IMAGENET_STD, PerceptualVGG, VGGConfig, create_vgg


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return create_vgg("synthetic")


def test_synthetic_shapes_and_channels(vgg):
    out = vgg(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert set(out) == {"conv3_3", "conv4_3"}
    assert out["conv3_3"].shape == (2, 64, 16, 16) and out["conv4_3"].shape == (2, 128, 8, 8)
    assert vgg.channels == {"conv3_3": 64, "conv4_3": 128}
    assert (out["conv3_3"] >= 0).all()  # ReLU outputs


def test_pretrained_shape_channels():
    with torch.device("meta"):
        big = PerceptualVGG(VGGConfig())
    assert big.channels == {"conv3_3": 256, "conv4_3": 512}
    assert big.indices == {"conv3_3": 15, "conv4_3": 22}  # torchvision vgg16.features indices of relu3_3/4_3


def test_gradient_reaches_pixels_when_frozen(vgg):
    vgg.freeze()
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    out = vgg(x)
    (out["conv3_3"].sum() + out["conv4_3"].sum()).backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in vgg.parameters())
    vgg.unfreeze()


@pytest.mark.parametrize("bad", [torch.zeros(1, 1, 64, 64), torch.zeros(1, 3, 64, 64).long(),
                                 torch.full((1, 3, 64, 64), 1.01)])
def test_bad_images(vgg, bad):
    with pytest.raises(ValueError, match="images"):
        vgg(bad)


def test_synthetic_round_trip(vgg, tmp_path):
    again = create_vgg("synthetic", vgg.save(tmp_path / "vgg.safetensors"))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    for k, v in vgg(x).items():
        torch.testing.assert_close(again(x)[k], v, rtol=0, atol=0)


def test_missing_weights_fail_fast(tmp_path, network_attempts):
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        create_vgg("pretrained", tmp_path / "vgg16-397923af.pth")
    assert network_attempts == []


def test_features_only_file_is_not_the_torchvision_format(vgg, tmp_path):
    torch.save(vgg.state_dict_for_file(), tmp_path / "x.pth")
    with pytest.raises(ValueError, match="classifier"):
        create_vgg("pretrained", tmp_path / "x.pth")


def test_vgg16_state_dict_round_trip(tmp_path):
    """torchvision's vgg16 state dict (the vgg16-397923af.pth format) -> same maps as torchvision's model."""
    from torchvision.models import vgg16

    torch.manual_seed(0)
    ref = vgg16(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "vgg16-397923af.pth")
    vgg = create_vgg("pretrained", tmp_path / "vgg16-397923af.pth")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    xn = ((x + 1) / 2 - mean) / std
    with torch.no_grad():
        out = vgg(x)
        torch.testing.assert_close(out["conv3_3"], ref.features[:16](xn.clone()), rtol=0, atol=0)
        torch.testing.assert_close(out["conv4_3"], ref.features[:23](xn.clone()), rtol=0, atol=0)
    assert out["conv3_3"].shape == (1, 256, 16, 16) and out["conv4_3"].shape == (1, 512, 8, 8)
