"""Tests of cff_lib.fusion: Eqs. 3/15, 10-12, 16 and the conditioning vector."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from cff_lib.fusion import (
    MODALITIES,
    AudioVisualAlignment,
    ConditioningVector,
    FusionConfig,
    ModalityFusion,
    reference_features,
)

B = 3


def _features(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, 512, generator=g) for m in MODALITIES}


@pytest.fixture(scope="module")
def fusion() -> ModalityFusion:
    torch.manual_seed(0)
    return ModalityFusion().eval()


# ------------------------------------------------------------------------------------ config
def test_config_is_frozen_and_validated():
    cfg = FusionConfig()
    with pytest.raises(AttributeError):
        cfg.dim = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="heads"):
        FusionConfig(heads=7)
    with pytest.raises(ValueError, match="eta_init"):
        FusionConfig(eta_init=1.0)
    with pytest.raises(ValueError, match="dropout"):
        FusionConfig(dropout=1.5)
    assert cfg.cond_dim == 512 * 3
    assert FusionConfig(use_vgg_in_condition=False).cond_dim == 1024


# ------------------------------------------------------------------------ audio-visual alignment
def test_av_projection_shape_is_512_by_768():
    av = AudioVisualAlignment()
    assert tuple(av.proj.weight.shape) == (512, 768)  # W_A in R^{512x768} (Eq. 3), not R^512 (Eq. 15 typo)
    assert tuple(av.proj.bias.shape) == (512,)


def test_av_matches_eq16_by_hand():
    torch.manual_seed(1)
    av = AudioVisualAlignment()
    a, e, i = torch.randn(B, 768), torch.randn(B, 512), torch.randn(B, 512)
    out = av(a, e, i)
    ln = lambda x: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)  # noqa: E731
    eta, gamma = av.eta(), av.gamma()
    proj = ln(a @ av.proj.weight.T + av.proj.bias)
    expected = ln(eta * proj + (1 - eta) * ln(e) + gamma * ln(i))
    torch.testing.assert_close(out.projected, proj, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.final, expected, atol=1e-4, rtol=1e-4)
    # gamma term omitted without f_I, (1 - eta) term omitted without f_Emo,Audio
    torch.testing.assert_close(av(a, e).final, ln(eta * proj + (1 - eta) * ln(e)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(av(a, None, i).final, ln(eta * proj + gamma * ln(i)), atol=1e-4, rtol=1e-4)
    assert out.final.shape == (B, 512)


def test_av_absent_audio_is_absent_altogether():
    av = AudioVisualAlignment()
    assert av(None) is None
    assert av(None, None, torch.randn(B, 512)) is None
    with pytest.raises(ValueError, match="emotion_audio"):
        av(None, torch.randn(B, 512))


def test_av_per_sample_image_mask_equals_omission():
    torch.manual_seed(2)
    av = AudioVisualAlignment()
    a, e, i = torch.randn(B, 768), torch.randn(B, 512), torch.randn(B, 512)
    keep = torch.tensor([True, False, True])
    mixed = av(a, e, i, image_present=keep).final
    torch.testing.assert_close(mixed[1], av(a, e).final[1])
    torch.testing.assert_close(mixed[0], av(a, e, i).final[0])


def test_av_bad_inputs_name_the_argument():
    av = AudioVisualAlignment()
    with pytest.raises(ValueError, match="audio"):
        av(torch.randn(B, 512))
    with pytest.raises(ValueError, match="image"):
        av(torch.randn(B, 768), None, torch.randn(B + 1, 512))
    with pytest.raises(ValueError, match="image_present"):
        av(torch.randn(B, 768), None, torch.randn(B, 512), image_present=torch.ones(B))
    with pytest.raises(ValueError, match="config"):
        AudioVisualAlignment(config={"dim": 512})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ modality fusion
SUBSETS = [c for r in range(1, 6) for c in itertools.combinations(MODALITIES, r)]


def test_there_are_31_subsets():
    assert len(SUBSETS) == 31


def test_every_subset_fuses_to_512_with_attention_only_over_present(fusion):
    feats = _features()
    for subset in SUBSETS:
        out = fusion({m: feats[m] for m in subset})
        assert out.final.shape == (B, 512), subset
        assert out.fused.shape == (B, 512)
        assert out.keys == subset  # canonical order, present modalities only
        assert out.attention.shape == (B, len(subset))
        torch.testing.assert_close(out.attention.sum(1), torch.ones(B))
        assert set(out.normalized) == set(subset)
        assert torch.isfinite(out.final).all()


def test_normalized_is_eq10_layernorm(fusion):
    feats = _features(3)
    out = fusion(feats)
    for m in MODALITIES:
        torch.testing.assert_close(out.normalized[m], F.layer_norm(feats[m], (512,)))


def test_absent_differs_from_zero_tensor(fusion):
    feats = _features(4)
    without = fusion({k: v for k, v in feats.items() if k != "AV"}).final
    zeros = fusion({**feats, "AV": torch.zeros(B, 512)}).final
    assert not torch.allclose(without, zeros, atol=1e-4)


def test_none_value_is_absent_and_order_does_not_matter(fusion):
    feats = _features(5)
    a = fusion({"Emo": feats["Emo"], "T": feats["T"]}).final
    b = fusion({"T": feats["T"], "AV": None, "Emo": feats["Emo"]}).final
    torch.testing.assert_close(a, b)


def test_per_sample_mask_removes_token_exactly(fusion):
    feats = _features(6)
    present = {"AV": torch.tensor([True, False, True])}
    out = fusion(feats, present)
    assert out.attention[1, out.keys.index("AV")] == 0
    without = fusion({k: v for k, v in feats.items() if k != "AV"}).final
    torch.testing.assert_close(out.final[1], without[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.final[0], fusion(feats).final[0], atol=1e-5, rtol=1e-5)


def test_fusion_residual_is_eq12(fusion):
    out = fusion(_features(7))
    torch.testing.assert_close(out.final, fusion.ffn(out.fused) + out.fused)
    assert [type(m).__name__ for m in fusion.ffn] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert fusion.ffn[2].p == 0.1


def test_fusion_bad_inputs_name_the_argument(fusion):
    feats = _features()
    with pytest.raises(ValueError, match="features"):
        fusion({})
    with pytest.raises(ValueError, match="features"):
        fusion({"T": None})
    with pytest.raises(ValueError, match="'Audio'"):
        fusion({"Audio": feats["T"]})
    with pytest.raises(ValueError, match=r"features\['Age'\]"):
        fusion({"T": feats["T"], "Age": torch.randn(B, 256)})
    with pytest.raises(ValueError, match=r"features\['Age'\]"):
        fusion({"T": feats["T"], "Age": torch.randn(B + 1, 512)})
    with pytest.raises(ValueError, match="features"):
        fusion([feats["T"]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="present"):
        fusion({"T": feats["T"]}, {"AV": torch.ones(B, dtype=torch.bool)})
    with pytest.raises(ValueError, match="present"):
        fusion({"T": feats["T"]}, {"T": torch.tensor([True, False, True])})  # sample 1 has nothing


def test_fusion_gradients_reach_all_parameters():
    torch.manual_seed(8)
    fusion = ModalityFusion()
    av = AudioVisualAlignment()
    feats = _features(8)
    feats["AV"] = av(torch.randn(B, 768), torch.randn(B, 512), feats["I"]).final
    out = fusion(feats)
    out.final.pow(2).sum().backward()
    for module in (fusion, av):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- conditioning vector
def test_conditioning_without_reference_uses_learned_null_not_zero():
    torch.manual_seed(9)
    cond = ConditioningVector()
    fused = torch.randn(B, 512)
    c = cond(fused)
    assert c.shape == (B, cond.cond_dim) == (B, 1536)
    torch.testing.assert_close(c[:, :512], fused)
    torch.testing.assert_close(c[:, 512:1024], cond.null_identity.expand(B, -1))
    torch.testing.assert_close(c[:, 1024:], cond.null_appearance.expand(B, -1))
    assert c[:, 512:].abs().sum() > 0


def test_conditioning_with_reference_and_mask():
    torch.manual_seed(10)
    cond = ConditioningVector()
    fused, ident, app = torch.randn(B, 512), torch.randn(B, 512), torch.randn(B, 512)
    c = cond(fused, ident, app)
    torch.testing.assert_close(c[:, 512:1024], F.layer_norm(ident, (512,)))
    torch.testing.assert_close(c[:, 1024:], F.layer_norm(app, (512,)))
    mixed = cond(fused, ident, app, reference_present=torch.tensor([True, False, True]))
    torch.testing.assert_close(mixed[1], cond(fused)[1])
    torch.testing.assert_close(mixed[0], c[0])
    assert not c.requires_grad  # every sample has its reference: the null embeddings are unused
    mixed.sum().backward()
    assert cond.null_identity.grad is not None and cond.null_appearance.grad is not None


def test_conditioning_bad_inputs_and_no_vgg():
    cond = ConditioningVector()
    with pytest.raises(ValueError, match="identity and appearance"):
        cond(torch.randn(B, 512), torch.randn(B, 512))
    with pytest.raises(ValueError, match="fused"):
        cond(torch.randn(B, 256))
    with pytest.raises(ValueError, match="reference_present"):
        cond(torch.randn(B, 512), reference_present=torch.ones(B, dtype=torch.bool))
    small = ConditioningVector(FusionConfig(use_vgg_in_condition=False))
    assert small(torch.randn(B, 512), torch.randn(B, 512)).shape == (B, 1024)
    with pytest.raises(ValueError, match="appearance"):
        small(torch.randn(B, 512), torch.randn(B, 512), torch.randn(B, 512))


def test_reference_features_pools_conv4_3():
    class Arc(torch.nn.Module):
        def forward(self, x):
            return F.normalize(x.mean((2, 3)) @ torch.ones(3, 512), dim=-1)

    class Vgg(torch.nn.Module):
        def forward(self, x):
            return {"conv3_3": x, "conv4_3": x.repeat(1, 2, 1, 1)}

    img = torch.rand(B, 3, 8, 8) * 2 - 1
    feats = reference_features(Arc(), Vgg(), img)
    assert feats.identity.shape == (B, 512)
    torch.testing.assert_close(feats.appearance, img.repeat(1, 2, 1, 1).mean((2, 3)))
    with pytest.raises(ValueError, match="reference"):
        reference_features(Arc(), Vgg(), torch.rand(B, 8, 8))
