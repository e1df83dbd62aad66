"""cff_lib.referees, cff_lib.oracle and the realism metrics: the judges that only evaluate.

- No training path reaches a referee (imports, optimiser parameters, gradients).
- The shipped toy referees are independent of the guides: a few PGD steps against a guide move that guide's
  reading far more than the referee's.
- The oracle renders the source's identity (by the referee verifier) with the target's ground-truth labels.
- KID ≈ 0 on a set against itself and > 0 against a shifted set; the band-power artefact measure rises with
  blotches; bad input fails naming the file or argument.
"""
import ast
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_referees

from cff_lib import metrics, oracle, referees
from cff_lib.config import load_profile
from cff_lib.model import weights_root
from cff_lib.provenance import REPO_ROOT

TOY = load_profile("toy")
TOY_WEIGHTS = weights_root(TOY)
SHIPPED = all(p.is_file() for p in referees.referee_paths(TOY_WEIGHTS).values())
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="the toy referees are not in weights/synthetic yet")


# ------------------------------------------------------------------------------------------ never trained against
TRAINING_MODULES = ("training", "losses", "model", "baselines", "fusion", "pretrain_vision", "pretrain_audio",
                    "pretrain_ddpm", "conditional_unet", "encoders", "face_banks", "vision_heldout", "vision_models")


@pytest.mark.parametrize("name", TRAINING_MODULES)
def test_no_training_module_imports_the_referees(name):
    tree = ast.parse((REPO_ROOT / "cff_lib" / f"{name}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not any("referees" in m for m in imported), f"cff_lib/{name}.py imports {imported}"
    # the oracle's ground truth enters one loss only: the conditional prior's, on training rows, through
    # training.with_oracle_targets (which refuses any other split: tests/test_conditional_prior.py)
    allowed = {"cff_lib", "cff_lib.oracle"} if name == "training" else set()
    assert not any("oracle" in m for m in imported - allowed), f"cff_lib/{name}.py imports {imported}"



def test_referees_are_frozen_and_outside_every_optimiser(tmp_path):
    from cff_lib.conditional_unet import tiny_unet_config
    from cff_lib.model import build_model

    refs = random_referees(32)
    assert not any(p.requires_grad for p in refs.parameters())
    assert all(not m.training for m in refs.modules())
    p = load_profile("ci")
    model = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    # what training.train hands to AdamW, and everything the model owns
    in_opt = {id(q) for q in model.trainable_parameters()} | {id(q) for q in model.parameters()}
    assert in_opt and not in_opt & {id(q) for q in refs.parameters()}
    # a loss on a referee's reading of a trainable image leaves the referee without gradient
    x = torch.zeros(2, 3, 32, 32, requires_grad=True)
    refs.attributes(x).age.sum().backward()
    assert x.grad is not None and all(q.grad is None for q in refs.parameters())


def test_loaded_referees_are_frozen(tmp_path):
    refs = _save_random(tmp_path)
    loaded = referees.load_referees(tmp_path)
    assert not any(p.requires_grad for p in loaded.parameters())
    loaded.attributes.train()  # a parent's .train() cannot unfreeze them
    assert not loaded.attributes.training
    assert loaded.identity_threshold == pytest.approx(0.42)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    np.testing.assert_allclose(loaded.read(x)["age"], refs.read(x)["age"], rtol=1e-6)


def _save_random(folder: Path):
    from cff_lib.weights import save_weights

    refs = random_referees(32)
    for key, stem in referees.REFEREE_FILES.items():
        save_weights(getattr(refs, key), folder / stem, profile=TOY, command="tests", metrics={"threshold_clean": 0.42})
    return refs


# ------------------------------------------------------------------------------------------ bad input
def test_missing_referee_weights_name_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="referee_attributes.safetensors.*cff_lib.referees"):
        referees.load_referees(tmp_path)


def test_paper_world_without_referees_fails_clearly(tmp_path):
    paper = load_profile("paper")
    paper = dataclasses.replace(paper, model=dataclasses.replace(paper.model, weights_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="paper_world.md"):
        referees.load_referees(paper)


def test_referee_file_of_another_architecture_is_named(tmp_path):
    from cff_lib.estimators import AgeEstimator, synthetic_estimator_config
    from cff_lib.weights import save_weights

    _save_random(tmp_path)
    save_weights(AgeEstimator(synthetic_estimator_config(32)), tmp_path / "referee_attributes", profile=TOY,
                 command="tests", metrics={})
    with pytest.raises(ValueError, match="referee_attributes.safetensors"):
        referees.load_referees(tmp_path)
    # right class name, wrong widths
    from cff_lib.weights import save_weights as save

    other = referees.AttributeReferee(referees.RefereeNetConfig(widths=(8, 16, 32, 64), groups=8))
    save(other, tmp_path / "referee_attributes", profile=TOY, command="tests", metrics={})
    torch.manual_seed(0)
    loaded = referees.load_referees(tmp_path)  # the architecture is read from the file: it loads as it is
    assert loaded.attributes.config.widths == (8, 16, 32, 64)


def test_kid_needs_enough_samples():
    with pytest.raises(ValueError, match="subset_size"):
        metrics.kernel_inception_distance(np.zeros((5, 4)), np.zeros((50, 4)), subset_size=10)


def test_oracle_for_a_row_without_ground_truth_is_an_error():
    ci = load_profile("ci")
    with pytest.raises(ValueError, match="not a face file"):
        oracle.oracle_image(ci, "ffhq/99999/99999.png", 30.0, "happy")
    with pytest.raises(ValueError, match="paper world"):
        oracle.oracle_image(load_profile("paper"), "ffhq/00000/00001.png", 30.0, "happy")
    with pytest.raises(ValueError, match="target_emotion"):
        oracle.oracle_image(ci, "ffhq/00000/00001.png", 30.0, "bored")


# ------------------------------------------------------------------------------------------ oracle
def test_oracle_changes_only_the_asked_attributes():
    from cff_lib.synthetic_faces import FaceAttributes, render_face

    ci = load_profile("ci")
    face = oracle.world_face(ci, "ffhq/00000/00003.png")
    img = oracle.oracle_image(ci, "ffhq/00000/00003.png", 70.0, "angry", 0.8)
    want = render_face(FaceAttributes(face.attrs.identity, 70.0, "angry", 0.8), ci.data.image_size,
                       variation_seed=face.variation_seed)
    np.testing.assert_allclose(img.numpy(), np.asarray(want, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1)
    same = oracle.oracle_image(ci, "ffhq/00000/00003.png", None, None)  # no target: the source as rendered
    src = render_face(face.attrs, ci.data.image_size, variation_seed=face.variation_seed)
    np.testing.assert_allclose(same.numpy(), np.asarray(src, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1)


@needs_shipped
def test_oracle_keeps_the_identity_by_the_referee_verifier():
    refs = referees.load_referees(TOY)
    paths = [f"ffhq/00000/{i:05d}.png" for i in range(0, 40)]
    src = torch.stack([oracle.oracle_image(TOY, p, None, None) for p in paths])
    tgt = torch.stack([oracle.oracle_image(TOY, p, 20.0 + (i * 7) % 60, "happy" if i % 2 else "sad", 1.0)
                       for i, p in enumerate(paths)])
    sim = refs.identity_similarity(src, tgt)
    assert (sim >= refs.identity_threshold).mean() >= 0.8, sim
    # and the referee reads the oracle's ground-truth labels
    read = refs.read(tgt)
    target_ages = np.asarray([20.0 + (i * 7) % 60 for i in range(len(paths))])
    assert np.abs(read["age"] - target_ages).mean() < 8.0
    emo = np.asarray(["happy" if i % 2 else "sad" for i in range(len(paths))])
    from cff_lib.emotions import EMOTIONS

    assert (np.asarray(EMOTIONS)[read["emotion_probs"].argmax(1)] == emo).mean() >= 0.8


# ------------------------------------------------------------------------------------------ independence (PGD)
@needs_shipped
def test_pgd_against_a_guide_moves_the_guide_far_more_than_the_referee():
    from cff_lib.emotions import EMOTIONS
    from cff_lib.vision_models import load_vision_models

    torch.set_num_threads(2)
    guides = load_vision_models(TOY_WEIGHTS)
    refs = referees.load_referees(TOY)
    x0 = torch.stack([oracle.oracle_image(TOY, f"ffhq/00000/{i:05d}.png", None, None) for i in range(24)])
    target = torch.full((len(x0),), EMOTIONS.index("angry"))
    x = x0.clone()
    eps, step = 4 / 127.5, 1 / 127.5  # L_inf budget of 2 grey levels... x2 (images span [-1, 1])
    for _ in range(10):  # PGD toward "angry" against the guide EmoEst
        x.requires_grad_(True)
        loss = F.cross_entropy(guides.emotion(x).logits, target)
        (g,) = torch.autograd.grad(loss, x)
        x = (x.detach() - step * g.sign()).clamp(x0 - eps, x0 + eps).clamp(-1, 1)
    with torch.no_grad():
        gp = lambda im: guides.emotion(im).logits.softmax(1)[:, target[0]]  # noqa: E731
        rp = lambda im: torch.from_numpy(refs.read(im)["emotion_probs"][:, target[0].item()])  # noqa: E731
        guide_move = float((gp(x) - gp(x0)).mean())
        referee_move = float((rp(x) - rp(x0)).mean())
    assert guide_move > 0.5, guide_move  # the attack works on the guide
    assert referee_move < 0.25 * guide_move, (guide_move, referee_move)
    # the same for age: PGD pushing AgeEst 30 years older (measured: guide +18.9 y, referee +2.3 y)
    a0 = guides.age(x0).age.detach()
    x = x0.clone()
    for _ in range(10):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(F.l1_loss(guides.age(x).age, (a0 + 30).clamp(16, 99)), x)
        x = (x.detach() - step * g.sign()).clamp(x0 - eps, x0 + eps).clamp(-1, 1)
    with torch.no_grad():
        guide_years = float((guides.age(x).age - a0).mean())
        referee_years = float(np.mean(refs.read(x)["age"] - refs.read(x0)["age"]))
    assert guide_years > 10 and abs(referee_years) < 0.25 * guide_years, (guide_years, referee_years)


# ------------------------------------------------------------------------------------------ realism
def test_kid_of_a_set_against_itself_is_near_zero_and_a_shift_is_positive():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = metrics.kernel_inception_distance(a, b, subset_size=100, n_subsets=20)
    shifted, _ = metrics.kernel_inception_distance(a, b + 0.5, subset_size=100, n_subsets=20)
    assert abs(same) < 0.02 and shifted > 10 * max(abs(same), 1e-3)


def test_band_power_sees_blotches():
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(4, 3, 4, 4, generator=g) * 2 - 1, size=32, mode="bilinear")
    blotchy = (smooth + 0.3 * torch.sign(torch.randn(4, 3, 8, 8, generator=g)).repeat_interleave(4, -1)
               .repeat_interleave(4, -2)).clamp(-1, 1)
    assert metrics.artefact_ratio(blotchy, smooth) > 3.0
    assert metrics.artefact_ratio(smooth, smooth) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="band"):
        metrics.band_power(smooth, band=(0.3, 0.1))


def test_augment_and_corrupt_keep_the_image_range_and_shape():
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    y = referees.augment(x, torch.Generator().manual_seed(0))
    z = referees.corrupt(x)
    for t in (y, z):
        assert t.shape == x.shape and t.min() >= -1 and t.max() <= 1
    assert not torch.equal(y, x) and not torch.equal(z, x)


def test_realism_reference_is_deterministic_and_never_a_world_file():
    ci = load_profile("ci")
    a, b = referees.realism_reference(ci, 6), referees.realism_reference(ci, 6)
    assert torch.equal(a, b) and a.shape == (6, 3, ci.data.image_size, ci.data.image_size)
    with pytest.raises(ValueError, match="n="):
        referees.realism_reference(ci, 1)


def test_train_referees_tiny_run_writes_loadable_files(tmp_path):
    torch.set_num_threads(1)
    ci = load_profile("ci")
    from cff_lib.world import ensure_world, prepare_manifests

    ensure_world(ci, progress=False)
    prepare_manifests(ci, progress=False)
    m = referees.train_referees(ci, tmp_path, steps=2, progress=False)
    assert "age_mae_clean" in m and "threshold_clean" in m
    refs = referees.load_referees(tmp_path)
    assert refs.identity_threshold == pytest.approx(m["threshold_clean"])
    # a truncated file is refused by its sha256 record, naming it
    path = tmp_path / "referee_identity.safetensors"
    shutil.copy(path, tmp_path / "backup")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="referee_identity"):
        referees.load_referees(tmp_path)


def test_paper_world_realism_reference_is_the_ffhq_test_split(tmp_path, monkeypatch):
    """The paper world's "real" reference: FFHQ test-split faces (path order), preprocessed as every face; a
    missing manifest or too few test faces fail naming the manifest."""
    from PIL import Image

    from cff_lib import manifests, world

    paper = load_profile("paper")
    root, mdir = tmp_path / "data", tmp_path / "manifests"
    for i in range(30):
        folder = root / "ffhq" / f"{i // 1000 * 1000:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 16), (8 * i, 255 - 8 * i, 100)).save(folder / f"{i:05d}.png")
    monkeypatch.setattr(world, "data_root", lambda profile: root)
    monkeypatch.setattr(world, "manifest_dir", lambda profile: mdir)
    with pytest.raises(FileNotFoundError, match="ffhq"):
        referees.realism_reference(paper, 2)
    mdir.mkdir()
    m = manifests.build_manifest("ffhq", root / "ffhq", progress=False)
    manifests.write_manifest(m, mdir / manifests.manifest_filename("ffhq"))
    test = m.split("test")
    assert len(test) >= 2 and {e.split for e in m.entries} == {"train", "val", "test"}
    assert referees.realism_reference_size(paper) == len(test)
    assert referees.realism_reference_size(load_profile("ci")) is None  # fresh renders: any number
    got = referees.realism_reference(paper, 2)
    size = paper.data.image_size
    assert got.shape == (2, 3, size, size)
    i = int(Path(test[0].path).stem)  # the first test face's colour, after the [-1, 1] scaling
    expect = torch.tensor([8 * i, 255 - 8 * i, 100]) / 127.5 - 1
    assert torch.allclose(got[0, :, size // 2, size // 2], expect, atol=0.02)
    with pytest.raises(ValueError, match=f"has {len(test)}"):
        referees.realism_reference(paper, len(test) + 1)
