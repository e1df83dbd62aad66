"""The one backend factory (cff_lib.backends): every network of a world is built there, and only there."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from cff_lib.backends import PARTS, SYNTHETIC_FILES, build_backends, create_backend

LIB = Path(__file__).resolve().parents[1] / "cff_lib"
TOY_WEIGHTS = LIB.parent / "weights" / "synthetic"

# the per-family constructors the factory dispatches to; each family's own module defines (and may use) them
FAMILY_FACTORIES = {
    "create_clip": "clip_encoder", "build_synthetic_clip": "clip_encoder", "load_synthetic_clip": "clip_encoder",
    "create_audio_encoder": "audio_encoder", "create_audio_emotion_head": "audio_encoder",
    "create_arcface": "arcface", "create_vgg": "vgg_perceptual", "create_age_estimator": "estimators",
    "create_emotion_estimator": "estimators",
}


def _calls(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def test_no_module_but_the_factory_calls_the_encoder_families_constructors():
    offenders = {}
    for path in sorted(LIB.glob("*.py")):
        if path.stem == "backends":
            continue
        bad = sorted(c for c in _calls(path) & set(FAMILY_FACTORIES) if FAMILY_FACTORIES[c] != path.stem)
        if bad:
            offenders[path.stem] = bad
    assert not offenders, f"build backends through cff_lib.backends.create_backend, not {offenders}"


def test_the_source_check_sees_a_planted_call(tmp_path):
    planted = tmp_path / "model.py"
    planted.write_text("from cff_lib.clip_encoder import create_clip\nclip = create_clip('synthetic')\n")
    assert "create_clip" in _calls(planted)


def test_clear_errors_name_the_argument():
    with pytest.raises(ValueError, match="part='clipp'"):
        create_backend("clipp", "synthetic", image_size=32)
    with pytest.raises(ValueError, match="backend"):
        create_backend("clip", "real", image_size=32)
    with pytest.raises(ValueError, match="image_size=None"):
        create_backend("arcface", "synthetic")  # a random synthetic part needs the world's size
    with pytest.raises(ValueError, match="image_size=True"):
        create_backend("unet", "synthetic", image_size=True)


def test_random_synthetic_parts_take_the_world_architecture():
    from cff_lib.arcface import synthetic_arcface_config
    from cff_lib.clip_encoder import synthetic_clip_config
    from cff_lib.conditional_unet import synthetic_unet_config
    from cff_lib.estimators import synthetic_estimator_config

    assert create_backend("clip", "synthetic", image_size=32).config == synthetic_clip_config(32)
    assert create_backend("arcface", "synthetic", image_size=32).backbone.config == synthetic_arcface_config(32)
    assert create_backend("age", "synthetic", image_size=32).config == synthetic_estimator_config(32)
    assert create_backend("unet", "synthetic", image_size=32).config.sample_size == \
        synthetic_unet_config(32)["sample_size"]
    assert set(PARTS) == set(SYNTHETIC_FILES)


@pytest.mark.skipif(not (TOY_WEIGHTS / "clip.safetensors").is_file(), reason="no shipped toy weights")
def test_the_model_and_the_pretraining_loaders_build_the_same_networks_from_one_folder():
    from cff_lib.pretrain_audio import load_audio_backends
    from cff_lib.pretrain_ddpm import load_ddpm
    from cff_lib.vision_models import load_vision_models

    world = build_backends("synthetic", TOY_WEIGHTS, image_size=32)
    assert set(world.digests) == set(SYNTHETIC_FILES) and "untrained" not in world.digests.values()
    vision, audio = load_vision_models(TOY_WEIGHTS), load_audio_backends(TOY_WEIGHTS)
    enc = world.encoders
    pairs = [(enc.multimodal.clip, vision.clip), (enc.age, vision.age), (enc.emotion, vision.emotion),
             (enc.arcface, vision.arcface), (enc.vgg, vision.vgg), (enc.multimodal.audio, audio.encoder),
             (enc.multimodal.audio_emotion, audio.emotion_head), (world.unet, load_ddpm(TOY_WEIGHTS))]
    for ours, theirs in pairs:
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_missing_synthetic_file_is_named_unless_untrained_is_allowed(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"clip \(clip.safetensors\).*notebooks/02_encoders"):
        build_backends("synthetic", tmp_path, image_size=32)
    torch.manual_seed(0)
    world = build_backends("synthetic", tmp_path, image_size=32, allow_untrained=True)
    assert set(world.digests.values()) == {"untrained"}
