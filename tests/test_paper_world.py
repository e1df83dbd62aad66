"""Pre-flight of the paper world (cff_lib.paper_world) and the rehearsal profile (issue 15): bad input fails in
seconds with the file and the fix named; the rehearsal only ever writes into its own folders."""
from __future__ import annotations

import json

import pytest
import torch

from cff_lib import paper_world
from cff_lib.config import load_profile, with_changes
from cff_lib.naming import CacdName, format_cacd, format_ffhq


def _tiny_safetensors(path, **extra):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(4, 4), "b": torch.ones(8), **extra}, str(path))
    return path


def test_truncated_safetensors_is_named_with_the_fix(tmp_path):
    path = _tiny_safetensors(tmp_path / "open_clip_model.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # an interrupted copy
    problems = paper_world.check_one("clip", path)
    assert len(problems) == 1 and problems[0].startswith(str(path))
    assert "truncated" in problems[0] and "copy it again" in problems[0]
    path.write_bytes(b"\x00" * 3)  # not even a header
    assert paper_world.check_one("clip", path)[0].startswith(str(path))


def test_wrong_architecture_names_the_file_and_the_expected_one(tmp_path):
    # a VGG-ish state dict where arcface_torch's iresnet50 backbone.pth belongs
    path = tmp_path / "backbone.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, path)
    (problem,) = paper_world.check_one("arcface", path)
    assert problem.startswith(str(path)) and "iresnet50" in problem and "missing" in problem
    assert "backbone.pth" in problem.split(";")[-1]  # how to fix: which file to place


def test_wrong_clip_and_vgg_shapes_are_named(tmp_path):
    # right names, wrong shapes (a ViT-L-ish width) in the CLIP slot
    want, _ = paper_world.expected_shapes("clip", tmp_path / "x")
    from safetensors.torch import save_file

    state = {k: torch.zeros(s, dtype=torch.float16) for k, s in want.items()}
    state["visual.conv1.weight"] = torch.zeros(1024, 3, 14, 14, dtype=torch.float16)
    path = tmp_path / "open_clip_model.safetensors"
    save_file(state, str(path))
    (problem,) = paper_world.check_one("clip", path)
    assert "visual.conv1.weight" in problem and "ViT-B-32" in problem
    # the features alone (no classifier) are a valid VGG-16 perceptual file; a missing conv layer is not
    vgg, _ = paper_world.expected_shapes("vgg", tmp_path / "x")
    feats = {k: torch.zeros(1) for k in vgg if k.startswith("features.")}
    torch.save({k: torch.zeros(vgg[k]) for k in feats}, tmp_path / "vgg16-397923af.pth")
    assert paper_world.check_one("vgg", tmp_path / "vgg16-397923af.pth") == []
    torch.save({k: torch.zeros(vgg[k]) for k in list(feats)[2:]}, tmp_path / "vgg16-397923af.pth")
    assert "features.0.weight" in paper_world.check_one("vgg", tmp_path / "vgg16-397923af.pth")[0]


def test_unet_folder_of_another_configuration_is_refused(tmp_path):
    from cff_lib.conditional_unet import paper_unet_config

    folder = tmp_path / "ddpm-ema-celebahq-256"
    folder.mkdir()
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in paper_unet_config().items()}
    cfg["sample_size"], cfg["block_out_channels"] = 64, [32, 64, 64, 128, 128, 128]
    (folder / "config.json").write_text(json.dumps(cfg))
    (problem,) = paper_world.check_one("unet", folder)
    assert problem.startswith(str(folder / "config.json")) and "sample_size=64" in problem
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in paper_unet_config().items()}
    (folder / "config.json").write_text(json.dumps(cfg))
    (problem,) = paper_world.check_one("unet", folder)  # right config, no weights file
    assert "diffusion_pytorch_model" in problem


def test_wav2vec2_large_is_not_base(tmp_path):
    folder = tmp_path / "wav2vec2-base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 1024, "num_hidden_layers": 24}))
    (problem,) = paper_world.check_one("audio", folder)
    assert "config.json" in problem and "wav2vec2-base" in problem


def test_estimator_file_of_the_other_kind_is_named(tmp_path):
    from cff_lib.estimators import EmotionEstimator, EstimatorConfig

    small = EstimatorConfig(widths=(8, 8, 8, 8), blocks=(1, 1, 1, 1), input_size=32)
    path = EmotionEstimator(small).save(tmp_path / "age_estimator.safetensors")
    (problem,) = paper_world.check_one("age", path)
    assert problem.startswith(str(path)) and "EmotionEstimator" in problem and "AgeEstimator" in problem


def _data_root(tmp_path, datasets=("ffhq", "cacd", "ravdess", "voxceleb")):
    root = tmp_path / "real"
    files = {"ffhq": format_ffhq(42), "cacd": format_cacd(CacdName(53, "Robin_Williams", 1)),
             "ravdess": "Actor_12/03-01-06-01-02-01-12.wav", "voxceleb": "id10001/1zcIwhmdeo4/00001.wav"}
    for name in datasets:
        (root / name / files[name]).parent.mkdir(parents=True, exist_ok=True)
        (root / name / files[name]).write_bytes(b"x")
    return root


def test_data_root_missing_a_dataset_is_named(tmp_path):
    root = _data_root(tmp_path, ("ffhq", "cacd", "ravdess"))
    (problem,) = paper_world.check_data_root(root)
    assert problem.startswith(str(root / "voxceleb")) and "docs/data.md" in problem
    (root / "voxceleb" / "misc").mkdir(parents=True)  # a folder, but no VoxCeleb file in it
    (problem,) = paper_world.check_data_root(root)
    assert "holds no voxceleb file" in problem
    assert paper_world.check_data_root(_data_root(tmp_path / "ok")) == []
    assert "does not exist" in paper_world.check_data_root(tmp_path / "nowhere")[0]


def test_ensure_world_refuses_an_incomplete_real_root_before_any_work(tmp_path):
    from cff_lib.world import ensure_world

    root = _data_root(tmp_path, ("ffhq", "cacd", "ravdess"))
    profile = with_changes(load_profile("paper"), {"data": {"root": str(root)}})
    with pytest.raises(FileNotFoundError, match="voxceleb"):
        ensure_world(profile)
    (root / "voxceleb").mkdir()
    with pytest.raises(paper_world.PaperWorldError, match="holds no voxceleb file"):
        ensure_world(profile)


def test_rehearsal_profile_changes_only_what_it_declares():
    paper, rehearsal = load_profile("paper").to_dict(), load_profile("paper_rehearsal").to_dict()
    changed = {(s, k) for s in paper if isinstance(paper[s], dict)
               for k in paper[s] if paper[s][k] != rehearsal[s][k]}
    allowed = {("data", k) for k in ("root", "n_ffhq", "n_cacd_identities", "cacd_images_per_identity",
                                     "n_ravdess_actors", "n_vox_speakers", "vox_videos_per_speaker",
                                     "vox_utterances_per_video", "n_train", "n_val")}
    allowed |= {("model", "weights_dir"), ("ddim", "n_inv_steps"), ("ddim", "n_gen_steps"),
                ("ddim", "n_train_steps"), ("train", "batch_size"), ("train", "epochs"), ("eval", "seeds"),
                ("eval", "n_samples"), ("runner", "cell_timeout_s"), ("runner", "notebook_budget_s"),
                ("runner", "figures_dir"), ("runner", "rehearsal")}
    assert changed <= allowed, changed - allowed
    r = load_profile("paper_rehearsal")
    # the paper's choices that do not dominate the cost are kept
    assert (r.ddim.t0, r.ddim.spacing, r.train.mixed_precision, r.train.gradient_checkpointing, r.data.mix,
            r.data.image_size, r.model.unet, r.model.backend) == (500, "diffusionclip", "fp16", True,
                                                                   load_profile("paper").data.mix, 256, "paper",
                                                                   "pretrained")
    # one comment per changed field in the preset
    from cff_lib.config import PRESET_DIR

    lines = (PRESET_DIR / "paper_rehearsal.yaml").read_text().splitlines()
    for _, key in changed:
        (line,) = [x for x in lines if x.strip().startswith(f"{key}:")]
        assert "#" in line, line


def test_rehearsal_is_stamped_and_keeps_out_of_the_committed_figures():
    from cff_lib.provenance import REHEARSAL_NOTE, REPO_ROOT, make_stamp
    from cff_lib.runner import resolve_figures_dir

    r = load_profile("paper_rehearsal")
    assert make_stamp(r).line().startswith(REHEARSAL_NOTE)
    assert "REHEARSAL" not in make_stamp(load_profile("paper")).line()
    assert resolve_figures_dir("", r) == REPO_ROOT / "build" / "rehearsal" / "figures"
    assert resolve_figures_dir("", "paper_rehearsal") == REPO_ROOT / "build" / "rehearsal" / "figures"
    assert resolve_figures_dir("", load_profile("toy")) == REPO_ROOT / "figures"
    assert resolve_figures_dir("/x/y", r).as_posix() == "/x/y"
    # a rehearsal's own data, weights and manifests stay out of git
    import subprocess

    for path in (r.data.root, r.model.weights_dir, "data_manifests/real/paper_rehearsal/ffhq.csv",
                 r.runner.figures_dir):
        out = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT)
        assert out.returncode == 0, f"{path} is not git-ignored"
    # the fingerprints of the existing presets do not move (later fields at their default)
    assert load_profile("paper").settings()["runner"] == {"cell_timeout_s": 86400, "notebook_budget_s": 604800}


def test_rehearse_build_refuses_a_profile_that_is_not_a_rehearsal():
    from cff_lib import rehearsal

    for name in ("paper", "toy"):
        with pytest.raises(ValueError, match="not a rehearsal"):
            rehearsal.build_weights(load_profile(name))
    with pytest.raises(ValueError, match="not a rehearsal"):
        rehearsal.clean(load_profile("paper"))
