"""CLIP encoder (Eqs. 1, 8): one class and factory for the pretrained ViT-B-32 and a small synthetic CLIP."""

import pytest
import torch

import cff_lib  # noqa: F401  (torchvision CPU fix before open_clip)
from cff_lib.clip_encoder import ClipConfig, build_synthetic_clip, create_clip, load_synthetic_clip


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip("synthetic", None, image_size_synthetic=64)


def test_synthetic_is_the_open_clip_class(clip):
    from open_clip.model import CLIP

    assert isinstance(clip.model, CLIP)
    assert clip.image_size == 64 and clip.tokenizer.context_length == 32


def test_image_and_text_shapes_and_norms(clip):
    f = clip.encode_image(torch.rand(3, 3, 64, 64) * 2 - 1)
    t = clip.encode_text(["a happy face", "an old man", "a 30-year-old woman"])
    assert f.shape == t.shape == (3, 512)
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    assert float(clip.logit_scale.detach()) > 1.0


def test_other_image_sizes_are_resized(clip):
    assert clip.encode_image(torch.zeros(1, 3, 256, 256)).shape == (1, 512)
    assert clip.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 512)


def test_gradient_reaches_pixels(clip):
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    clip.encode_image(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_tokenizer_works_offline_with_both_context_lengths():
    import open_clip

    assert open_clip.get_tokenizer("ViT-B-32")(["a photo"]).shape == (1, 77)
    assert open_clip.get_tokenizer("ViT-B-32", context_length=32)(["a photo"]).shape == (1, 32)


@pytest.mark.parametrize("bad, what", [
    (torch.zeros(1, 1, 64, 64), "channels"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "dtype"),
    (torch.full((1, 3, 64, 64), 2.0), "[-1, 1]"),
    (torch.zeros(1, 3, 64, 32), "square"),
    (torch.zeros(3, 64, 64), "(B, 3, H, W)"),
    (torch.full((1, 3, 64, 64), float("nan")), "NaN"),
])
def test_bad_images_name_the_argument(clip, bad, what):
    with pytest.raises(ValueError, match="images") as e:
        clip.encode_image(bad)
    assert what in str(e.value)


@pytest.mark.parametrize("bad", ["a string", [], ["ok", 3]])
def test_bad_prompts_name_the_argument(clip, bad):
    with pytest.raises(ValueError, match="prompts"):
        clip.encode_text(bad)


def test_synthetic_save_load_round_trip(clip, tmp_path):
    path = clip.save(tmp_path / "clip.safetensors")
    again = create_clip("synthetic", path)
    assert again.config == clip.config
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(again.encode_image(x), clip.encode_image(x), rtol=0, atol=0)
    torch.testing.assert_close(again.encode_text(["a b"]), clip.encode_text(["a b"]), rtol=0, atol=0)


def test_synthetic_config_survives_in_metadata(tmp_path):
    cfg = ClipConfig(image_size=32, patch_size=4, vision_width=64, vision_layers=1, text_width=64,
                     text_heads=2, text_layers=1, context_length=16)
    enc = build_synthetic_clip(cfg)
    assert load_synthetic_clip(enc.save(tmp_path / "c.safetensors")).config == cfg


def test_missing_checkpoint_fails_fast_and_says_how(tmp_path, network_attempts):
    with pytest.raises(FileNotFoundError, match="ViT-B/32") as e:
        create_clip("pretrained", tmp_path / "nope.safetensors")
    assert "laion2b_s34b_b79k" in str(e.value)
    with pytest.raises(FileNotFoundError, match="CLIP"):
        create_clip("pretrained", None)
    assert network_attempts == []


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        create_clip("huge")


def test_wrong_architecture_file_is_a_clear_error(clip, tmp_path):
    path = clip.save(tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match="ViT-B-32"):
        create_clip("pretrained", path)


@pytest.mark.parametrize("suffix", [".safetensors", pytest.param(".pt", marks=pytest.mark.slow)])
def test_pretrained_vit_b32_state_dict_round_trip(tmp_path, suffix):
    """A state dict of the true ViT-B-32 architecture, saved locally, loads through the factory unchanged."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = open_clip.create_model("ViT-B-32").eval()
    path = tmp_path / f"vitb32{suffix}"
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    enc = create_clip("pretrained", path)
    assert enc.image_size == 224 and enc.tokenizer.context_length == 77
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_image(x), ref.encode_image(enc.preprocess(x), normalize=True),
                                   rtol=0, atol=0)
        tok = open_clip.get_tokenizer("ViT-B-32")(["a happy face"])
        torch.testing.assert_close(enc.encode_text(["a happy face"]), ref.encode_text(tok, normalize=True),
                                   rtol=0, atol=0)
