"""Tests of cff_lib.losses against hand-computed values, with tiny fake frozen networks.

The fakes read an image only through its per-channel means m = (m0, m1, m2), so constant images give
features whose cosines are known exactly: an image with channels (0.5, 0, 0) maps to e1, (0, 0.5, 0) to e2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cff_lib.coefficients import UnitCoefficient
from cff_lib.emotions import EMOTIONS, emotion_index
from cff_lib.fusion import AudioVisualAlignment, ConditioningVector, ModalityFusion
from cff_lib.losses import (
    AgeConsistencyLoss,
    AudioVisualLoss,
    CrossModalLoss,
    DirectionalClipLoss,
    EmotionConsistencyLoss,
    IdentityLoss,
    LossWeights,
    TotalLoss,
)

D = 512


def e(i: int) -> torch.Tensor:
    v = torch.zeros(D)
    v[i] = 1.0
    return v


def image(c0: float, c1: float, c2: float, batch: int = 1, size: int = 8) -> torch.Tensor:
    pixel = torch.tensor([c0, c1, c2], dtype=torch.float32).view(1, 3, 1, 1)
    return pixel.expand(batch, 3, size, size).clone()


class ChannelMeans(nn.Module):
    """(B, 3, H, W) -> (B, 512): channel means in the first three coordinates (a linear map)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, D, bias=False)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.weight[:3, :3] = torch.eye(3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images.mean(dim=(2, 3)))  # (B, 512)


class FakeClip(nn.Module):
    TEXTS = {"e1": e(0), "e2": e(1), "e3": e(2), "e1+e2": (e(0) + e(1)) / math.sqrt(2)}

    def __init__(self) -> None:
        super().__init__()
        self.means = ChannelMeans()

    def encode_image(self, images):
        return F.normalize(self.means(images), dim=-1)

    def encode_text(self, texts):
        return torch.stack([self.TEXTS[t] for t in texts])


class FakeArcface(ChannelMeans):
    def forward(self, images):
        return F.normalize(super().forward(images), dim=-1)


class FakeVgg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, images):
        x = self.conv(images)
        return {"conv3_3": x, "conv4_3": F.avg_pool2d(x, 2)}


@dataclass
class AgeReading:
    age: torch.Tensor
    feature: torch.Tensor


class FakeAgeEst(nn.Module):
    """age = 40 + 40 m0 years; feature = channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.means = ChannelMeans()
        self.slope = nn.Parameter(torch.tensor(40.0))

    def forward(self, images):
        f = self.means(images)
        return AgeReading(age=40.0 + self.slope * f[:, 0], feature=f)


@dataclass
class EmoReading:
    logits: torch.Tensor
    valence_arousal: torch.Tensor
    feature: torch.Tensor


class FakeEmoEst(nn.Module):
    """logits: channel 0 -> happy, 1 -> sad, 2 -> angry; (v, a) = (m0, m1); feature = channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.means = ChannelMeans()
        self.head = nn.Linear(3, len(EMOTIONS), bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            for ch, name in enumerate(("happy", "sad", "angry")):
                self.head.weight[emotion_index(name), ch] = 4.0

    def forward(self, images):
        f = self.means(images)
        return EmoReading(logits=self.head(f[:, :3]), valence_arousal=f[:, :2], feature=f)


GEN = image(0.5, 0, 0)  # CLIP / ArcFace / estimator feature e1 (scaled)
REF = image(0, 0.5, 0)  # e2


# ----------------------------------------------------------------------------- directional CLIP
def test_directional_clip_by_hand():
    loss = DirectionalClipLoss(FakeClip())
    # Delta_I = e1 - e2, Delta_T = e1 - e3: cos = 1/2 -> 0.5; ref: 1 - cos(e1, e2) = 1
    t = loss(GEN, ["e1"], REF, ["e3"])
    assert t["direction"].item() == pytest.approx(0.5)
    assert t["ref"].item() == pytest.approx(1.0)
    assert t["loss"].item() == pytest.approx(0.5 + 0.1 * 1.0)
    assert "global" in t.absent and "global" not in t
    # precomputed text features give the same answer; a single str too
    t2 = loss(GEN, e(0)[None], REF, e(2)[None])
    assert t2["loss"].item() == pytest.approx(0.6)
    assert loss(GEN, "e1", REF, "e3")["loss"].item() == pytest.approx(0.6)


def test_directional_clip_without_reference_is_global():
    loss = DirectionalClipLoss(FakeClip(), ref_weight=0.1)
    t = loss(GEN, ["e1+e2"])
    assert t["global"].item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert t["loss"].item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert set(t.absent) == {"direction", "ref"}


def test_directional_clip_bad_inputs():
    loss = DirectionalClipLoss(FakeClip())
    with pytest.raises(ValueError, match="source_text"):
        loss(GEN, ["e1"], None, ["e3"])
    with pytest.raises(ValueError, match="target_text"):
        loss(GEN, 3)
    with pytest.raises(ValueError, match="generated"):
        loss(torch.rand(1, 8, 8), ["e1"])
    with pytest.raises(ValueError, match="reference"):
        loss(GEN, ["e1"], image(0, 1, 0, batch=2), ["e3"])
    with pytest.raises(ValueError, match="clip"):
        DirectionalClipLoss(FakeArcface())
    with pytest.raises(ValueError, match="ref_weight"):
        DirectionalClipLoss(FakeClip(), ref_weight=-1)


def test_frozen_networks_stay_frozen_and_in_eval():
    clip = FakeClip()
    loss = DirectionalClipLoss(clip)
    loss.train()
    assert not clip.training
    assert all(not p.requires_grad for p in clip.parameters())
    gen = GEN.clone().requires_grad_(True)
    loss(gen, ["e1"], REF, ["e3"])["loss"].backward()
    assert gen.grad is not None and gen.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())


# ---------------------------------------------------------------------------------- audio-visual
def test_audio_visual_by_hand():
    loss = AudioVisualLoss(FakeClip())
    av_final = (e(0) + e(1))[None]  # cos(e1, e1 + e2) = 1/sqrt(2)
    t = loss(GEN, av_final)
    assert t["av"].item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert t["loss"].item() == pytest.approx(t["av"].item())
    assert set(t.absent) == {"ref", "av_ref"}
    t = loss(GEN, av_final, REF)
    assert t["ref"].item() == pytest.approx(1.0)
    assert t["av_ref"].item() == pytest.approx(1 - 1 / math.sqrt(2) + 0.05)
    assert t["loss"] is t["av_ref"]
    with pytest.raises(ValueError, match="av_final"):
        loss(GEN, torch.randn(2, D))


# ------------------------------------------------------------------------------------------- age
def test_age_by_hand():
    loss = AgeConsistencyLoss(FakeAgeEst(), lambda_age=0.1, lambda_age_reg=0.1, sigma=10.0)
    f_age = e(0)[None]  # (1, 0, 0, ...)
    # reading 40 + 40 * 0.5 = 60 years, target 70 -> ((60 - 70) / 10)^2 = 1
    # reg: (1.5)(0.5, 0, 0) - ((1, 0, 0) + 0.5 (0, 0.5, 0)) = (-0.25, -0.25, 0) -> 0.125; x lambda_Age 0.1
    t = loss(GEN, torch.tensor([70.0]), f_age, REF, alpha=torch.tensor(0.5))
    assert t["age"].item() == pytest.approx(1.0)
    assert t["reg"].item() == pytest.approx(0.0125)
    assert t["loss"].item() == pytest.approx(1.0 + 0.1 * 0.0125)
    assert "feature" in t.absent
    # without reference the alpha terms drop: ||(0.5, 0, 0) - (1, 0, 0)||^2 = 0.25
    t = loss(GEN, 70.0, f_age)
    assert t["reg"].item() == pytest.approx(0.025)
    # only the scalar target: reg absent, explicitly
    t = loss(GEN, 70.0)
    assert set(t.absent) == {"feature", "reg"} and t["loss"].item() == pytest.approx(1.0)
    # alpha as a UnitCoefficient at 0.5 gives the same value
    t = loss(GEN, 70.0, f_age, REF, alpha=UnitCoefficient(0.5))
    assert t["reg"].item() == pytest.approx(0.0125)


def test_age_optional_feature_term():
    loss = AgeConsistencyLoss(FakeAgeEst(), feature_weight=2.0)
    t = loss(GEN, 60.0, (e(0) + e(1))[None])  # reading exactly 60: age term 0
    assert t["feature"].item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert t["loss"].item() == pytest.approx(2 * (1 - 1 / math.sqrt(2)) + 0.1 * 0.1 * (0.25 + 1))


def test_age_bad_inputs():
    loss = AgeConsistencyLoss(FakeAgeEst())
    with pytest.raises(ValueError, match="age_target and age_feature"):
        loss(GEN)
    with pytest.raises(ValueError, match="alpha"):
        loss(GEN, 30.0, e(0)[None], REF)
    with pytest.raises(ValueError, match="alpha"):
        loss(GEN, 30.0, e(0)[None], REF, alpha=1.5)
    with pytest.raises(ValueError, match="age_target"):
        loss(GEN, torch.tensor([30.0, 40.0]))
    with pytest.raises(ValueError, match="age_feature"):
        loss(GEN, 30.0, torch.randn(1, 7))
    with pytest.raises(ValueError, match="sigma"):
        AgeConsistencyLoss(FakeAgeEst(), sigma=0)


def test_age_anti_collapse_pixels_move_the_reading_to_the_target():
    """Optimising the image alone (the estimator frozen) moves the estimator's age reading to the target,
    even while a trainable f_Age head and alpha take part in the same loss."""
    torch.manual_seed(0)
    est = FakeAgeEst()
    loss = AgeConsistencyLoss(est)
    pixels = torch.zeros(2, 3, 8, 8, requires_grad=True)  # reading 40 years
    head = nn.Parameter(torch.randn(2, D) * 0.1)  # a trainable f_Age that could chase the image feature
    alpha = UnitCoefficient(0.5)
    target = torch.tensor([65.0, 25.0])
    opt = torch.optim.Adam([pixels, head, *alpha.parameters()], lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        loss(pixels, target, head, REF.expand(2, -1, -1, -1), alpha=alpha)["loss"].backward()
        opt.step()
    reading = est(pixels).age.detach()
    assert torch.allclose(reading, target, atol=1.0), reading
    assert all(p.grad is None for p in est.parameters())


# --------------------------------------------------------------------------------------- emotion
def test_emotion_by_hand():
    loss = EmotionConsistencyLoss(FakeEmoEst(), lambda_emo=0.05, lambda_emo_reg=0.05, va_weight=1.0)
    zero = image(0, 0, 0)  # logits all 0 -> CE = log 8; (v, a) = (0, 0)
    happy = torch.tensor([emotion_index("happy")])
    va_t = torch.tensor([[0.8, 0.5]])
    t = loss(zero, happy, va_t, e(0)[None])
    assert t["ce"].item() == pytest.approx(math.log(8))
    assert t["va"].item() == pytest.approx(0.64 + 0.25)
    assert t["reg"].item() == pytest.approx(0.05 * 1.0)  # ||0 - e1||^2 = 1, x lambda_Emo
    assert t["loss"].item() == pytest.approx(math.log(8) + 0.89 + 0.05 * 0.05)
    # reference-aware: (1 + nu) g - (f + nu r) with g = e1/2, f = e1, r = e2/2, nu = 1/2 -> (-0.25, -0.25)
    t = loss(GEN, happy, None, e(0)[None], REF, nu=0.5)
    assert t["reg"].item() == pytest.approx(0.05 * 0.125)
    assert t.absent == ("va",)
    # probability targets equal index targets for one-hot
    onehot = F.one_hot(happy, len(EMOTIONS)).float()
    assert loss(zero, onehot)["ce"].item() == pytest.approx(math.log(8))


def test_emotion_bad_inputs():
    loss = EmotionConsistencyLoss(FakeEmoEst())
    with pytest.raises(ValueError, match="emotion_target"):
        loss(GEN, torch.tensor([8]))
    with pytest.raises(ValueError, match="emotion_target"):
        loss(GEN, torch.full((1, len(EMOTIONS)), 0.5))
    with pytest.raises(ValueError, match="nu"):
        loss(GEN, None, None, e(0)[None], REF)
    with pytest.raises(ValueError, match="valence_arousal"):
        loss(GEN, None, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="emotion_target, valence_arousal and emotion_feature"):
        loss(GEN)


def test_emotion_anti_collapse_pixels_move_the_prediction_to_the_target():
    torch.manual_seed(1)
    est = FakeEmoEst()
    loss = EmotionConsistencyLoss(est)
    pixels = image(0, 0.6, 0, batch=2).requires_grad_(True)  # predicted "sad"
    assert est(pixels).logits.argmax(1).tolist() == [emotion_index("sad")] * 2
    head = nn.Parameter(torch.randn(2, D) * 0.1)  # trainable f_Emo
    nu = UnitCoefficient(0.5)
    target = torch.tensor([emotion_index("happy"), emotion_index("angry")])
    opt = torch.optim.Adam([pixels, head, *nu.parameters()], lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        loss(pixels, target, None, head, REF.expand(2, -1, -1, -1), nu=nu)["loss"].backward()
        opt.step()
    assert est(pixels).logits.argmax(1).tolist() == target.tolist()


# -------------------------------------------------------------------------------------- identity
@pytest.mark.parametrize("size", [8, 16])
def test_identity_by_hand_and_resolution_independent(size):
    loss = IdentityLoss(FakeArcface(), FakeVgg())
    t = loss(image(0.5, 0, 0, size=size), image(0, 0.5, 0, size=size))
    # ArcFace: 1 - cos(e1, e2) = 1; each VGG map: mean of (0.25, 0.25, 0) over channels = 1/6
    assert t["arcface"].item() == pytest.approx(1.0)
    assert t["vgg_conv3_3"].item() == pytest.approx(1 / 6)
    assert t["perceptual"].item() == pytest.approx(0.1 / 6 + 0.2 / 6)
    assert t["loss"].item() == pytest.approx(0.6 + 0.4 * 0.05)


def test_identity_bad_inputs():
    with pytest.raises(ValueError, match="layer_weights"):
        IdentityLoss(FakeArcface(), FakeVgg(), layer_weights={"conv5_3": 1.0})(GEN, REF)
    with pytest.raises(ValueError, match="reference"):
        IdentityLoss(FakeArcface(), FakeVgg())(GEN, REF.expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="vgg"):
        IdentityLoss(FakeArcface(), lambda x: x)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- cross-modal
def test_cross_modal_by_hand():
    loss = CrossModalLoss(weight=0.1)
    feats = {"T": torch.stack([e(0), e(0)]), "AV": torch.stack([e(1), e(0)]), "I": torch.stack([e(0), e(0)])}
    # sample 0: pairs (T,AV) 1, (T,I) 0, (AV,I) 1 -> 2; sample 1: all equal -> 0; mean 1
    t = loss(feats)
    assert t["cross_modal"].item() == pytest.approx(1.0)
    assert t["loss"].item() == pytest.approx(0.1)
    # sample 0 lacks AV: only (T, I) -> 0
    t = loss(feats, {"AV": torch.tensor([False, True])})
    assert t["cross_modal"].item() == pytest.approx(0.0)
    # samples with a single modality leave the mean
    t = loss(feats, {"AV": torch.tensor([True, False]), "I": torch.tensor([True, False])})
    assert t["cross_modal"].item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="normalized"):
        loss({"T": feats["T"]})
    with pytest.raises(ValueError, match="present"):
        loss(feats, {"T": torch.ones(2)})


# ----------------------------------------------------------------------------------------- total
def _total() -> TotalLoss:
    return TotalLoss(FakeClip(), FakeArcface(), FakeVgg(), FakeAgeEst(), FakeEmoEst(), LossWeights())


def test_total_is_the_weighted_sum_and_reports_absent():
    total = _total()
    w = total.weights
    kw = dict(
        reference=REF, target_text=["e1"], source_text=["e3"], av_final=(e(0) + e(1))[None],
        age_target=70.0, age_feature=e(0)[None], alpha=0.5,
        emotion_target=torch.tensor([emotion_index("happy")]), emotion_feature=e(0)[None], nu=0.5,
        modality_features={"T": e(0)[None], "AV": e(1)[None]},
    )
    t = total(GEN, **kw)
    expected = (w.lambda_clip * t["clip/loss"] + w.lambda_av * t["av/loss"] + w.lambda_age * t["age/loss"]
                + w.lambda_emo * t["emo/loss"] + w.lambda_id * t["id/loss"]
                + w.lambda_cross_modal * t["cross_modal/cross_modal"])
    assert t["loss"].item() == pytest.approx(expected.item())
    assert t["clip/loss"].item() == pytest.approx(0.6)
    assert t["cross_modal/cross_modal"].item() == pytest.approx(1.0)
    assert "emo/va" in t.absent and "av" not in t.absent
    # no audio, no reference: av and id are skipped and listed, never zeros
    t = total(GEN, target_text=["e1"], age_target=70.0)
    assert {"av", "id", "emo", "cross_modal"} <= set(t.absent)
    assert not any(k.startswith(("av/", "id/")) for k in t)
    assert t["loss"].item() == pytest.approx(w.lambda_clip * t["clip/loss"].item() + w.lambda_age * 1.0)
    with pytest.raises(ValueError, match="no loss"):
        total(GEN)


def test_source_l1_term_is_off_by_default_and_weighted_when_on():
    from dataclasses import replace

    kw = dict(reference=REF, target_text=["e1"], age_target=70.0)
    off = _total()(GEN, **kw)
    assert not any(k.startswith("l1_source") for k in off) and "l1_source" not in off.absent
    on = TotalLoss(FakeClip(), FakeArcface(), FakeVgg(), FakeAgeEst(), FakeEmoEst(),
                   replace(LossWeights(), lambda_l1_source=2.0))(GEN, **kw)
    l1 = (GEN - REF).abs().mean().item()
    assert l1 > 0 and on["l1_source/loss"].item() == pytest.approx(l1)
    assert on["loss"].item() == pytest.approx(off["loss"].item() + 2.0 * l1)
    # without a reference there is nothing to stay close to: skipped and listed
    assert "l1_source" in TotalLoss(FakeClip(), FakeArcface(), FakeVgg(), FakeAgeEst(), FakeEmoEst(),
                                    replace(LossWeights(), lambda_l1_source=2.0))(GEN, target_text=["e1"]).absent
    with pytest.raises(ValueError, match="lambda_l1_source"):
        replace(LossWeights(), lambda_l1_source=-1.0)


def test_a_profile_setting_added_later_keeps_old_fingerprints_at_its_default():
    import dataclasses

    from cff_lib.config import load_profile

    toy = load_profile("toy")
    assert toy.loss.lambda_l1_source == 0.0
    assert LossWeights.from_config(toy.loss).lambda_l1_source == 0.0
    moved = dataclasses.replace(toy, loss=dataclasses.replace(toy.loss, lambda_l1_source=1.0))
    assert moved.fingerprint() != toy.fingerprint()
    # the shipped toy model was trained before the setting existed and still matches its profile
    from cff_lib.provenance import REPO_ROOT
    from cff_lib.weights import read_record

    assert read_record(REPO_ROOT / "weights/synthetic/clipfacefusion").fingerprint == toy.training_fingerprint()


def test_loss_weights_from_profiles_and_validation():
    from cff_lib.config import load_profile

    table3 = LossWeights.from_config(load_profile("paper").loss)
    assert (table3.lambda_clip, table3.lambda_av, table3.lambda_id) == (0.7, 0.5, 1.0)
    assert dict(table3.vgg_layer_weights) == {"conv3_3": 0.1, "conv4_3": 0.2}
    hparam = LossWeights.from_config(load_profile("paper_hparam").loss)
    assert (hparam.lambda_clip, hparam.lambda_age_reg, hparam.lambda_emo_reg) == (0.28, 0.09, 0.06)
    assert LossWeights.from_config(load_profile("paper_method").loss).lambda_id == 0.3
    with pytest.raises(ValueError, match="lambda_av"):
        LossWeights(lambda_av=-0.1)
    with pytest.raises(AttributeError):
        LossWeights().lambda_clip = 1.0  # type: ignore[misc]


def test_gradients_reach_every_trainable_parameter_end_to_end():
    """Fusion -> c -> a toy generator -> image -> TotalLoss: every trainable parameter gets a gradient."""
    torch.manual_seed(3)
    bsz, size = 2, 8
    av_mod, fusion, cond = AudioVisualAlignment(), ModalityFusion(), ConditioningVector()
    alpha, nu = UnitCoefficient(0.4), UnitCoefficient(0.6)
    generator = nn.Linear(cond.cond_dim, 3 * size * size)
    base = torch.zeros(bsz, 3, size, size, requires_grad=True)
    reference = torch.rand(bsz, 3, size, size) * 2 - 1
    f_i = FakeClip().encode_image(reference)
    av = av_mod(torch.randn(bsz, 768), torch.randn(bsz, D), f_i)
    feats = {"T": torch.randn(bsz, D), "AV": av.final, "Age": torch.randn(bsz, D),
             "Emo": torch.randn(bsz, D), "I": f_i}
    out = fusion(feats)
    c = cond(out.final, torch.randn(bsz, 512), torch.randn(bsz, 512),
             reference_present=torch.tensor([True, False]))
    generated = torch.tanh(base + generator(c).view(bsz, 3, size, size))
    total = _total()
    t = total(generated, reference=reference, target_text=["e1", "e2"], source_text=["e3"],
              av_final=av.final, age_target=torch.tensor([30.0, 60.0]), age_feature=torch.randn(bsz, D),
              alpha=alpha, emotion_target=torch.tensor([2, 3]), valence_arousal=torch.zeros(bsz, 2),
              emotion_feature=torch.randn(bsz, D), nu=nu,
              modality_features=out.normalized, modality_present=out.present)
    assert not t.absent or set(t.absent) <= {"clip/global", "age/feature"}
    t["loss"].backward()
    trainable = {"alpha": alpha, "nu": nu, "av": av_mod, "fusion": fusion, "cond": cond}
    for owner, module in trainable.items():
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{owner}.{name}"
    assert base.grad is not None and base.grad.abs().sum() > 0
    assert all(p.grad is None for p in total.parameters())  # every network inside the losses is frozen


def test_cross_modal_loss_cannot_be_lowered_by_collapsing_the_fusion_module():
    """Eq. 10 has no learned affine: f'_m carries no fusion parameter, so the cross-modal loss can only be
    lowered by the encoders agreeing, not by the fusion module mapping every modality to one vector."""
    fusion = ModalityFusion()
    feats = {"T": torch.randn(2, D), "Emo": torch.randn(2, D), "I": torch.randn(2, D)}
    t = CrossModalLoss()(fusion(feats).normalized)
    assert not t["loss"].requires_grad
    assert t["cross_modal"].item() > 1.0  # three unrelated random vectors: each pair ~ 1
