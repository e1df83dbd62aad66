"""cff_lib.evaluation: running the three methods, scoring, sweeps and Table 6 pairs.

Random backends and a tiny UNet; bad input must fail with clear errors passed through from metrics/stats.
"""
import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import random_referees

from cff_lib import baselines, evaluation
from cff_lib.conditional_unet import tiny_unet_config
from cff_lib.config import load_profile
from cff_lib.model import build_model


def small_profile():
    """ci at t0 20, 2 steps, with the plain edit (tiny random models barely move: a preserving edit keeps them
    at the reconstruction, which would hide whether each method samples through its own network)."""
    p = load_profile("ci")
    return dataclasses.replace(p, ddim=dataclasses.replace(p.ddim, t0=20, n_inv_steps=2, n_gen_steps=2,
                                                           preserve_threshold=None))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    p = small_profile()
    model = build_model(p, tmp_path_factory.mktemp("w"), allow_untrained=True,
                        unet_config=tiny_unet_config(32)).eval()
    return p, model, baselines.baseline_from_model(model).eval()


@pytest.fixture(scope="module")
def refs():
    return random_referees(32)


def _inputs(b: int = 4, size: int = 32):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    conds = {"caption": ["a 25-year-old sad woman", "a 45-year-old happy man", "a 70-year-old neutral woman",
                         "a 30-year-old angry man"][:b],
             "source_caption": ["a face of a woman", "a face of a man", "a face of a woman", "a face of a man"][:b],
             "target_age": [25.0, 45.0, 70.0, 30.0][:b], "target_emotion": ["sad", "happy", "neutral", "angry"][:b],
             "intensity": [0.5, 0.5, 0.5, 1.0][:b],
             "audio": [torch.randn(8000, generator=g), None, torch.randn(6000, generator=g), None][:b]}
    return images, conds


def test_run_methods_gives_one_batch_per_method_and_zero_baseline_equals_reconstruction(setup):
    p, model, bl = setup
    images, conds = _inputs()
    out = evaluation.run_methods(model, bl, images, conds, 42, p)
    assert set(out) == set(evaluation.METHODS)
    for v in out.values():
        assert v.shape == images.shape
    assert torch.equal(out[evaluation.TEXT_ONLY], out[evaluation.RECON])


def test_each_method_runs_on_its_own_unet_and_reconstruction_on_the_pretrained_ddpm(tmp_path):
    """Fine-tuning ClipFaceFusion's UNet must change its edits only: the reconstruction stays the pretrained
    DDPM's, and the baseline inverts with its own UNet (not with ClipFaceFusion's)."""
    import copy

    from cff_lib import ddim

    p = small_profile()
    model = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32)).eval()
    bl = baselines.baseline_from_model(model).eval()
    images, conds = _inputs()
    before = evaluation.run_methods(model, bl, images, conds, 42, p)
    with torch.no_grad():  # stand-in for fine-tuning: move the model's backbone weights
        for w in model.unet.unet.parameters():
            w.add_(0.05 * torch.randn_like(w))
    keys = {m: k for m, (k, _) in evaluation.method_unets(model, bl).items()}
    assert keys == {evaluation.CFF: "clipfacefusion", evaluation.TEXT_ONLY: "baseline",
                    evaluation.RECON: "pretrained"}
    after = evaluation.run_methods(model, bl, images, conds, 42, p)
    assert torch.equal(after[evaluation.RECON], before[evaluation.RECON])
    assert torch.equal(after[evaluation.TEXT_ONLY], before[evaluation.TEXT_ONLY])
    assert not torch.allclose(after[evaluation.CFF], before[evaluation.CFF])
    d = p.ddim
    own = ddim.edit(model.unet, images, model.condition({**conds, "reference": images}).c, d.t0,
                    d.n_inv_steps, d.n_gen_steps, spacing=d.spacing).clamp(-1, 1)
    torch.testing.assert_close(after[evaluation.CFF], own)
    frozen = copy.deepcopy(model)
    frozen.set_trainable("fusion")
    assert evaluation.method_unets(frozen, bl)[evaluation.CFF][0] == "pretrained"


def test_run_methods_rejects_bad_input(setup):
    p, model, bl = setup
    images, conds = _inputs()
    with pytest.raises(ValueError, match="empty"):
        evaluation.run_methods(model, bl, images[:0], {**conds, "caption": []}, 42, p)
    with pytest.raises(ValueError, match="one caption per image"):
        evaluation.run_methods(model, bl, images, {**conds, "caption": conds["caption"][:3]}, 42, p)
    with pytest.raises(ValueError, match="unknown methods"):
        evaluation.run_methods(model, bl, images, conds, 42, p, methods=("StyleCLIP",))
    with pytest.raises(ValueError, match="needs the baseline"):
        evaluation.run_methods(model, None, images, conds, 42, p)


def test_score_computes_every_metric(setup, refs):
    p, model, bl = setup
    images, conds = _inputs()
    out = evaluation.run_methods(model, bl, images, conds, 42, p)
    cond = model.condition({**conds, "reference": images})
    ctx = evaluation.metric_context(model, refs, profile=p, realism_n=8)
    s_cff, per = evaluation.score(model, ctx, out[evaluation.CFF], images, conds, cond, evaluation.CFF)
    s_txt, _ = evaluation.score(model, ctx, out[evaluation.TEXT_ONLY], images, conds, cond, evaluation.TEXT_ONLY)
    for k in evaluation.METRIC_NAMES:
        assert k in s_cff
    assert 0 <= s_cff["age_acc"] <= 100 and 0 <= s_cff["emo_acc"] <= 100
    assert math.isfinite(s_cff["cmc"]) and math.isnan(s_txt["cmc"])  # paper CMC: fused modalities only
    assert math.isfinite(s_txt["cmc_image"])
    assert per["ssim"].shape == (4,)
    # the fooling gap is the guide's reading minus the referee's, per sample
    np.testing.assert_allclose(per["fooling_gap_emo_pts"], per["emo_acc_guide"] - per["emo_acc"])
    assert s_cff["fooling_gap_age_y"] == pytest.approx(s_cff["age_mae_guide"] - s_cff["age_mae"])
    assert all(math.isnan(s_cff[k]) for k in evaluation.ORACLE_METRICS)  # no rows given: no oracle
    assert math.isfinite(s_cff["realism_kid"]) and s_cff["artefact_ratio"] > 0
    same, _ = evaluation.score(model, ctx, images, images, conds, cond, evaluation.SOURCE)
    assert same["ssim"] == pytest.approx(1.0) and same["identity_similarity"] == pytest.approx(1.0)
    assert same["artefact_ratio"] == pytest.approx(1.0) and same["lpips"] == pytest.approx(0.0, abs=1e-9)


def test_score_passes_size_and_count_errors_through(setup, refs):
    p, model, bl = setup
    images, conds = _inputs()
    cond = model.condition({**conds, "reference": images})
    ctx = evaluation.metric_context(model, refs, profile=p, realism_n=0)
    small = torch.zeros(4, 3, 16, 16)
    with pytest.raises(ValueError, match="same size"):
        evaluation.score(model, ctx, small, images, conds, cond, evaluation.RECON)
    with pytest.raises(ValueError, match="same number"):
        evaluation.score(model, ctx, images[:3], images, conds, cond, evaluation.RECON)


def test_seed_rows_and_empty_pool():
    pool = list(range(10))
    a, b = evaluation.seed_rows(pool, 42, 4), evaluation.seed_rows(pool, 43, 4)
    assert len(a) == 4 and a == evaluation.seed_rows(pool, 42, 4) and a != b
    assert evaluation.seed_rows(pool, 42, 0) == pool
    with pytest.raises(ValueError, match="empty"):
        evaluation.seed_rows([], 42, 4)


def _fake_eval(seeds, a, b):
    per_seed = {evaluation.CFF: {k: list(a) for k in evaluation.METRIC_NAMES},
                evaluation.TEXT_ONLY: {k: list(b) for k in evaluation.METRIC_NAMES}}
    per_sample = {m: {k: [np.asarray(v[k])] for k in v} for m, v in per_seed.items()}
    return evaluation.Evaluation(tuple(seeds), per_seed, per_sample, {s: ["x"] for s in seeds}, 0.0)


def test_ttest_table_pairs_per_seed_and_refuses_one_seed():
    ev = _fake_eval([42, 43, 44], [0.9, 0.8, 0.85], [0.7, 0.72, 0.69])
    t = evaluation.ttest_table(ev, ("ssim", "s_dir"))
    assert list(t["pairs"]) == ["per seed"] * 2 and (t["n"] == 3).all() and "p_holm" in t
    with pytest.raises(ValueError, match="at least 2"):
        evaluation.ttest_table(_fake_eval([42], [0.9], [0.7]), ("ssim",))
    with pytest.raises(ValueError, match="unit"):
        evaluation.paired_values(ev, "ssim", unit="batch")


def test_per_sample_pairs_count_each_face_once():
    per_seed = {m: {k: [0.0, 0.0] for k in evaluation.METRIC_NAMES} for m in (evaluation.CFF, evaluation.TEXT_ONLY)}
    per_sample = {evaluation.CFF: {"ssim": [np.asarray([0.9, 0.5]), np.asarray([0.5, 0.7])]},
                  evaluation.TEXT_ONLY: {"ssim": [np.asarray([0.8, 0.4]), np.asarray([0.4, 0.6])]}}
    rows = {42: ["f1", "f2"], 43: ["f2", "f3"]}  # f2 drawn by both seeds
    ev = evaluation.Evaluation((42, 43), per_seed, per_sample, rows, 0.0)
    a, b = evaluation.paired_values(ev, "ssim", unit="sample")
    np.testing.assert_allclose(a, [0.9, 0.5, 0.7])
    np.testing.assert_allclose(b, [0.8, 0.4, 0.6])
    ev.rows[43] = ["f3"]
    with pytest.raises(ValueError, match="3 faces"):
        evaluation.paired_values(ev, "ssim", unit="sample")


def test_evaluation_table_reports_mean_and_std_and_na():
    ev = _fake_eval([42, 43], [1.0, 3.0], [2.0, 2.0])
    ev.per_seed[evaluation.TEXT_ONLY]["cmc"] = [float("nan")] * 2
    t = ev.table(("ssim", "cmc"))
    assert t.iloc[0]["ssim"].startswith("2 ± 1.4")
    assert t.iloc[1]["cmc"] == "n/a"


def test_inversion_fidelity_and_integration_sweep(setup, refs):
    p, model, bl = setup
    images, conds = _inputs()
    inv = evaluation.inversion_fidelity(model, p, images, t0s=(10, 20), referees=refs)
    assert model.trainable == "fusion+unet"  # ci: both the pretrained DDPM and the model's UNet are reported
    assert list(inv["unet"]) == ["pretrained DDPM"] * 2 + ["ClipFaceFusion UNet"] * 2
    assert list(inv["t0"]) == [10, 20, 10, 20] and (inv["psnr_db"] > 0).all()
    # untrained: the model's UNet still is the pretrained one, so both halves read the same
    np.testing.assert_allclose(inv["psnr_db"][:2].to_numpy(), inv["psnr_db"][2:].to_numpy(), rtol=1e-5)
    sweep = evaluation.integration_sweep(model, p, images, conds, 42, levels=(0.0, 0.5, 1.0), referees=refs)
    assert list(sweep["n_with_reference"]) == [0, 2, 4]
    with pytest.raises(ValueError, match="must lie in"):
        evaluation.integration_sweep(model, p, images, conds, 42, levels=(1.5,), referees=refs)


def test_psnr_of_identical_images_is_infinite():
    x = torch.zeros(2, 3, 16, 16)
    assert np.isinf(evaluation.psnr(x, x)).all()
    assert np.isfinite(evaluation.psnr(x, x + 0.1)).all()


def test_evaluate_cached_reuses_a_matching_run_and_recomputes_otherwise(setup, tmp_path, monkeypatch):
    p, model, bl = setup
    calls = []

    def fake_evaluate(model, baseline, profile, *, seeds, n_samples, methods):
        calls.append(n_samples)
        return _fake_eval(seeds, [0.9, 0.8], [0.7, 0.72])

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    info = {"path": str(tmp_path / "absent.safetensors")}
    ev1, how1 = evaluation.evaluate_cached(model, bl, info, p, tmp_path, n_samples=3,
                                           methods=(evaluation.CFF, evaluation.TEXT_ONLY))
    ev2, how2 = evaluation.evaluate_cached(model, bl, info, p, tmp_path, n_samples=3,
                                           methods=(evaluation.CFF, evaluation.TEXT_ONLY))
    assert how1.startswith("computed") and how2.startswith("loaded") and calls == [3]
    assert ev2.per_seed[evaluation.CFF]["ssim"] == ev1.per_seed[evaluation.CFF]["ssim"]
    evaluation.evaluate_cached(model, bl, info, p, tmp_path, n_samples=4,
                               methods=(evaluation.CFF, evaluation.TEXT_ONLY))
    assert calls == [3, 4]


def test_paper_world_realism_is_measured_against_at_most_its_ffhq_test_split(monkeypatch):
    """The paper world has a realism reference too (its FFHQ test faces, at most the whole split; issue 15:
    realism was NaN there, and the rehearsal's 10 test faces are fewer than REALISM_REFERENCE)."""
    from types import SimpleNamespace

    from cff_lib import referees as referee_lib

    asked = []
    monkeypatch.setattr(referee_lib, "realism_reference_size", lambda profile: 5)
    monkeypatch.setattr(referee_lib, "realism_reference",
                        lambda profile, n: asked.append(n) or torch.zeros(n, 3, 8, 8))
    refs = SimpleNamespace(features=lambda x: np.ones((x.shape[0], 4)), feature_maps=torch.nn.Identity().eval())
    model = SimpleNamespace(encoders=SimpleNamespace(multimodal=SimpleNamespace(clip=None)))
    ctx = evaluation.metric_context(model, refs, profile=load_profile("paper_rehearsal"))
    assert asked == [5] and ctx.realism_features.shape == (5, 4)
    monkeypatch.setattr(referee_lib, "realism_reference_size", lambda profile: 1)  # too few for a covariance
    assert evaluation.metric_context(model, refs, profile=load_profile("paper_rehearsal")).realism_features is None


def test_methods_sharing_the_pretrained_ddpm_each_sample_with_their_own_projection(tmp_path):
    """Under ``trainable: fusion`` (the paper) all three methods share the pretrained DDPM's inversion; the
    text-only baseline must still sample through its own 512-d projection (issue 15: notebook 04 on the
    rehearsal stopped with "c must have shape (4, 1536), got (4, 512)": its c went into ClipFaceFusion's UNet)."""
    p = small_profile()
    model = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32)).eval()
    model.set_trainable("fusion")
    bl = baselines.baseline_from_model(model).eval()
    assert {k for k, _ in evaluation.method_unets(model, bl).values()} == {"pretrained"}
    with torch.no_grad():  # stand-in for a trained projection
        bl.unet.cond_proj.weight.normal_(0, 0.5)
    images, conds = _inputs()
    out = evaluation.run_methods(model, bl, images, conds, 42, p)
    torch.testing.assert_close(out[evaluation.TEXT_ONLY], bl.edit(images, conds["caption"], p))
    assert not torch.allclose(out[evaluation.TEXT_ONLY], out[evaluation.RECON])
