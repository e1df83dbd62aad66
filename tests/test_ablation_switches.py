"""Table 7's model switches (model.drop_inputs, fusion, av_alignment, reference_in_condition) in cff_lib.model.

Each switch changes what its row removes and nothing else; at their defaults the model is the full one. Every
test runs on untrained (random) backends and a tiny UNet, as tests/test_model.py does.
"""
from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from cff_lib import model as model_module
from cff_lib.conditional_unet import tiny_unet_config
from cff_lib.config import load_profile
from cff_lib.fusion import FusionConfig, ModalityFusion
from cff_lib.model import ClipFaceFusion, build_model
from cff_lib.overlays import ABLATIONS, apply_overlay

SWITCHES = ("drop_inputs", "fusion_mode", "av_alignment", "reference_in_condition")


def small_profile():
    p = load_profile("ci")
    return dataclasses.replace(p, ddim=dataclasses.replace(p.ddim, t0=20, n_inv_steps=2, n_gen_steps=2),
                               train=dataclasses.replace(p.train, batch_size=4))


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """One model with every parameter nudged off its init (so α, β, η, γ and the heads matter), in eval."""
    torch.set_num_threads(1)
    m = build_model(small_profile(), tmp_path_factory.mktemp("no_weights"), allow_untrained=True,
                    unet_config=tiny_unet_config(32))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return m.eval()


@contextlib.contextmanager
def switched(m: ClipFaceFusion, **switches):
    """``m`` with some of Table 7's switches set, restored afterwards."""
    old = {k: getattr(m, k) for k in SWITCHES}
    try:
        for k, v in switches.items():
            assert k in SWITCHES
            setattr(m, k, v)
        yield m
    finally:
        for k, v in old.items():
            setattr(m, k, v)


def batch(reference: bool = True, **replace):
    """Four mixed samples: (age, emotion, audio), (emotion), (age), (audio); ``replace`` sets a column."""
    g = torch.Generator().manual_seed(0)
    out = {"caption": ["a 70-year-old sad woman", "a happy man", "a 30-year-old face", "a face"],
           "target_age": [70.0, None, 30.0, None], "target_emotion": ["sad", "happy", None, None],
           "intensity": [1.0, 0.5, None, None],
           "audio": [torch.randn(8000, generator=g), None, None, torch.randn(6400, generator=g)]}
    images = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    if reference:
        out["reference"] = images
    out.update(replace)
    return out


def generated_images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1


def module_terms(terms, module: str) -> list[str]:
    return [k for k in terms if k.startswith(module + "/")]


def assert_same_loss(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------ build_model
def test_build_model_passes_the_profiles_switches_and_their_defaults_are_the_full_model(net, tmp_path):
    assert (net.drop_inputs, net.fusion_mode, net.av_alignment, net.reference_in_condition) == (
        (), "attention", True, True)
    p = small_profile()
    p = apply_overlay(p, {"model": {"drop_inputs": ["age", "text"], "fusion": "mean", "av_alignment": False,
                                    "reference_in_condition": False}})
    m = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    assert (m.drop_inputs, m.fusion_mode, m.av_alignment, m.reference_in_condition) == (
        ("age", "text"), "mean", False, False)
    assert m.signature() == net.signature()  # the switches change no trained tensor's shape
    kwargs = dict(fusion_config=FusionConfig(vgg_dim=net.fusion_config.vgg_dim), sample_rate=16000,
                  image_size=32)
    with pytest.raises(ValueError, match="drop_inputs"):
        ClipFaceFusion(net.encoders, net.unet.unet, net.loss_fn.weights, drop_inputs=("voice",), **kwargs)
    with pytest.raises(ValueError, match="fusion_mode"):
        ClipFaceFusion(net.encoders, net.unet.unet, net.loss_fn.weights, fusion_mode="sum", **kwargs)


def test_restating_the_defaults_changes_nothing(net):
    conds = batch()
    plain = net.condition(conds)
    with switched(net, drop_inputs=(), fusion_mode="attention", av_alignment=True, reference_in_condition=True):
        again = net.condition(conds)
    assert torch.equal(plain.c, again.c) and plain.fusion.keys == again.fusion.keys == ("T", "AV", "Age", "Emo", "I")
    assert torch.equal(plain.fusion.attention, again.fusion.attention)
    # the full row restates no switch: its profile builds the model above
    assert ABLATIONS["full"].apply(small_profile()).model == small_profile().model


# ------------------------------------------------------------------------------------------ drop_inputs
def test_drop_audio_is_the_batch_without_audio(net):
    gen = generated_images()
    with switched(net, drop_inputs=("audio",)):
        dropped = net.condition(batch())
        dropped_loss = net.loss(gen, dropped)
    without = net.condition(batch(audio=None))
    assert torch.equal(dropped.c, without.c)
    assert "AV" not in dropped.fusion.keys and not bool(dropped.inputs.has_audio.any())
    assert torch.equal(dropped.emotion, without.emotion)  # f_Emo from its text route alone
    assert_same_loss(dropped_loss, net.loss(gen, without))
    assert module_terms(dropped_loss, "av") == [] and module_terms(dropped_loss, "emo")


def test_drop_age_is_the_batch_without_target_ages(net):
    gen = generated_images()
    with switched(net, drop_inputs=("age",)):
        dropped = net.condition(batch())
        dropped_loss = net.loss(gen, dropped)
    without = net.condition(batch(target_age=None))
    assert torch.equal(dropped.c, without.c) and "Age" not in dropped.fusion.keys
    assert not bool(dropped.inputs.has_age.any()) and not dropped.age.any()
    assert_same_loss(dropped_loss, net.loss(gen, without))
    assert module_terms(dropped_loss, "age") == [] and module_terms(dropped_loss, "av")


def test_drop_emotion_removes_both_routes_of_eq7_but_keeps_the_av_token(net):
    gen = generated_images()
    full = net.condition(batch())
    with switched(net, drop_inputs=("emotion",)):
        dropped = net.condition(batch())
        dropped_loss = net.loss(gen, dropped)
    assert "Emo" not in dropped.fusion.keys and dropped.fusion.keys == ("T", "AV", "Age", "I")
    assert not dropped.emotion.any() and not bool(dropped.inputs.has_emotion.any())
    assert torch.equal(dropped.av_final, full.av_final)  # audio still forms f_AV^final (Eq. 16)
    assert torch.equal(dropped.fusion.normalized["AV"], full.fusion.normalized["AV"])
    assert not torch.equal(dropped.c, full.c)
    assert module_terms(dropped_loss, "emo") == [] and module_terms(dropped_loss, "av")
    # the same as a batch without emotion labels whose Emo token is left out of the fusion
    no_labels = net.condition(batch(target_emotion=None, intensity=None))
    assert torch.equal(dropped.fusion.normalized["T"], no_labels.fusion.normalized["T"])
    assert "Emo" in no_labels.fusion.keys  # there the audio route of Eq. 7 still gives a token


def test_drop_text_leaves_out_the_t_token_and_the_directional_clip_loss(net):
    gen = generated_images()
    full = net.condition(batch())
    with switched(net, drop_inputs=("text",)):
        dropped = net.condition(batch())
        dropped_loss = net.loss(gen, dropped)
    assert dropped.fusion.keys == ("AV", "Age", "Emo", "I") and "T" not in dropped.fusion.normalized
    assert not torch.equal(dropped.c, full.c)
    assert module_terms(dropped_loss, "clip") == [] and module_terms(net.loss(gen, full), "clip")
    for module in ("av", "age", "emo", "id", "cross_modal"):
        assert module_terms(dropped_loss, module), module


def test_a_sample_left_with_no_modality_names_drop_inputs(net):
    # sample 3 has only a caption and audio; without the reference, dropping text and audio leaves it nothing
    with switched(net, drop_inputs=("text", "audio")):
        with pytest.raises(ValueError, match=r"model\.drop_inputs=\['text', 'audio'\] leaves samples \[3\]"):
            net.condition(batch(reference=False))
        assert net.condition(batch()).fusion.keys == ("Age", "Emo", "I")  # the reference's token remains
    with switched(net, drop_inputs=("text", "age", "emotion"), av_alignment=False):
        # audio feeds neither the AV token nor Eq. 7 here, so no sample keeps a token
        with pytest.raises(ValueError, match=r"drop_inputs=.*av_alignment=False\) leaves samples \[0, 1, 2, 3\]"):
            net.condition(batch(reference=False))
    with switched(net, drop_inputs=("text", "emotion")):
        with pytest.raises(ValueError, match=r"leaves samples \[1\] with no modality"):
            net.condition(batch(reference=False))


# ------------------------------------------------------------------------------------------ fusion = mean
def test_mean_fusion_is_the_uniform_mean_of_the_present_layernormed_tokens(net):
    conds = batch()
    full = net.condition(conds)
    net.zero_grad(set_to_none=True)
    with switched(net, fusion_mode="mean"):
        mean = net.condition(conds)
        mean.c.sum().backward()
    fused = mean.fusion
    assert fused.keys == full.fusion.keys
    for k in fused.keys:
        assert torch.equal(fused.normalized[k], full.fusion.normalized[k])
        assert torch.equal(fused.present[k], full.fusion.present[k])
    keep = torch.stack([fused.present[k] for k in fused.keys], 1).float()  # (B, n)
    assert torch.allclose(fused.attention, keep / keep.sum(1, keepdim=True), rtol=0, atol=0)
    tokens = torch.stack([fused.normalized[k] for k in fused.keys], 1)
    expected = (tokens * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    assert torch.allclose(fused.final, expected, atol=1e-6) and torch.equal(fused.fused, fused.final)
    assert torch.equal(mean.c[:, :512], fused.final) and torch.equal(mean.c[:, 512:], full.c[:, 512:])
    # no attention, no FFN, no modality-type embedding takes part
    assert all(p.grad is None for p in net.fusion.parameters())
    assert net.encoders.multimodal.alpha.raw.grad is not None  # the tokens' own sources still train
    net.zero_grad(set_to_none=True)


def test_modality_fusion_mean_respects_per_sample_absence():
    fusion = ModalityFusion(FusionConfig(dim=8, heads=2, ffn_dim=16))
    g = torch.Generator().manual_seed(0)
    feats = {"T": torch.randn(3, 8, generator=g), "Age": torch.randn(3, 8, generator=g),
             "I": torch.randn(3, 8, generator=g)}
    present = {"Age": torch.tensor([True, False, True]), "I": torch.tensor([False, False, True])}
    out = fusion.mean(feats, present)
    assert out.keys == ("T", "Age", "I")
    assert torch.allclose(out.attention, torch.tensor([[.5, .5, 0.], [1., 0., 0.], [1 / 3, 1 / 3, 1 / 3]]))
    assert torch.allclose(out.final[1], out.normalized["T"][1])
    assert torch.allclose(out.final[0], (out.normalized["T"][0] + out.normalized["Age"][0]) / 2)
    with pytest.raises(ValueError, match="no modality at all"):
        fusion.mean({"Age": feats["Age"]}, {"Age": torch.tensor([True, False, True])})


# ------------------------------------------------------------------------------------------ av_alignment
def test_without_av_alignment_there_is_no_av_token_and_audio_reaches_c_through_eq7(net, monkeypatch):
    gen = generated_images()
    full = net.condition(batch())

    def never(*args, **kwargs):
        raise AssertionError("AudioVisualAlignment was called")

    monkeypatch.setattr(net.av, "forward", never)
    with switched(net, av_alignment=False):
        off = net.condition(batch())
        off_loss = net.loss(gen, off)
    monkeypatch.undo()
    assert off.fusion.keys == ("T", "Age", "Emo", "I") and not off.av_final.any()
    assert torch.equal(off.emotion, full.emotion)  # f_Emo,Audio still feeds Eq. 7
    assert torch.equal(off.fusion.present["Emo"], torch.tensor([True, True, False, True]))
    assert module_terms(off_loss, "av") == [] and module_terms(off_loss, "emo")
    # the audio-only sample (3) keeps its emotion loss through f_Emo,Audio
    with switched(net, av_alignment=False):
        only = net.loss(gen[3:], net.condition({k: (v[3:] if v is not None else None) for k, v in batch().items()}))
    assert module_terms(only, "emo") and module_terms(only, "av") == []


# ------------------------------------------------------------------------------------------ reference
def test_without_reference_in_condition_c_gets_the_no_reference_slots_but_the_loss_keeps_i_ref(net, monkeypatch):
    gen = generated_images()
    conds = batch()
    full = net.condition(conds)

    def never(*args, **kwargs):
        raise AssertionError("reference_features was called")

    monkeypatch.setattr(model_module, "reference_features", never)
    with switched(net, reference_in_condition=False):
        off = net.condition(conds)
        off_loss = net.loss(gen, off)
    monkeypatch.undo()
    assert torch.equal(off.c, net.conditioning(full.fusion.final, None, None))
    assert torch.equal(off.c[:, :512], full.c[:, :512])  # f_I is still the fifth token
    assert "I" in off.fusion.keys and off.inputs.reference is not None
    nulls = torch.cat([net.conditioning.null_identity, net.conditioning.null_appearance])
    assert torch.equal(off.c[:, 512:], nulls.expand(4, -1))
    assert not torch.equal(off.c[:, 512:], full.c[:, 512:])
    assert module_terms(off_loss, "id") and module_terms(off_loss, "clip")
    assert_same_loss(off_loss, net.loss(gen, full))  # the losses still compare against I_ref
