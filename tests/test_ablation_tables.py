"""Tables 7 and 8 from the run store: what is measured and what is not, mean ± std over training seeds,
paired differences to the base with Holm, paper numbers in their own table, the two figures."""
import pathlib

import matplotlib
import pytest

from cff_lib import ablation_tables as at
from cff_lib.config import load_profile
from cff_lib.overlays import ablations, sweep_points
from cff_lib.runstore import RunStore

matplotlib.use("Agg")


def fake_train(profile, work: pathlib.Path) -> pathlib.Path:
    out = work / "model.safetensors"
    out.write_bytes(profile.fingerprint().encode())
    return out


def fake_evaluate(profile, params: pathlib.Path) -> dict:
    shift = 0.1 * profile.loss.lambda_cross_modal + 0.01 * profile.train.seed + 0.001 * profile.ddim.n_gen_steps
    return {"metrics": {m: [0.5 + shift, 0.52 + shift] for m in at.TABLE7_METRICS}, "eval_seeds": [1, 2]}


@pytest.fixture(scope="module")
def ci():
    return load_profile("ci")


def test_table7_measured_paired_and_paper(ci, tmp_path):
    store = RunStore(tmp_path, code_version="v1")
    variants = ablations(ci, ["full", "no_cmc", "no_audio"])
    specs = at.plan(store, ci, variants, [0, 1])
    store.sweep([s for s in specs if s.label != "no_audio"], fake_train, fake_evaluate)  # no_audio: not run
    long = at.collect(store, specs, variants, list(at.TABLE7_METRICS))
    assert at.missing_rows(long) == ["w/o audio (seeds 0, 1)"]
    table = at.summary_table(long, variants, at.TABLE7_METRICS).set_index("row")
    assert table.loc["full", "training seeds measured"] == "2 of 2"
    assert table.loc["full", "SSIM ↑ (measured)"].startswith("0.5") and "±" in table.loc["full", "SSIM ↑ (measured)"]
    assert table.loc["w/o audio", "SSIM ↑ (measured)"] == at.NOT_MEASURED
    paired = at.paired_to_base(long, variants, at.TABLE7_METRICS, base="full")
    cmc = paired[(paired["row"] == "w/o CMC loss") & (paired["metric"] == "ssim")].iloc[0]
    assert cmc["n_pairs"] == 2 and cmc["mean_diff"] == pytest.approx(-0.1 * ci.loss.lambda_cross_modal)
    assert cmc["p_holm"] >= cmc["p"] or cmc["p"] == 0.0
    audio = paired[(paired["row"] == "w/o audio") & (paired["metric"] == "ssim")].iloc[0]
    assert audio["n_pairs"] == 0 and audio["test"] == at.NOT_MEASURED
    paper = at.paper_table("7", variants, at.TABLE7_METRICS).set_index("row")
    assert paper.loc["full", "SSIM (paper)"] == "0.921 ± 0.006"
    assert not set(paper.columns) & set(table.columns)  # paper and measured numbers never share a column
    at.forest_plot(paired, at.TABLE7_METRICS)
    with pytest.raises(ValueError, match="base 'nope'"):
        at.paired_to_base(long, variants, at.TABLE7_METRICS, base="nope")


def test_table8_base_point_and_small_multiples(ci, tmp_path):
    store = RunStore(tmp_path, code_version="v1")
    variants = sweep_points(ci, ["ddim_steps"], {"ddim_steps": [ci.ddim.n_gen_steps, 3]})
    specs = at.plan(store, ci, variants, [0])
    store.sweep(specs, fake_train, fake_evaluate)
    long = at.collect(store, specs, variants, list(at.TABLE8_METRICS))
    base = at.base_key(long, variants, [store.spec(ci, None, seed=0).run_id])
    assert base == f"ddim_steps={ci.ddim.n_gen_steps}"
    paired = at.paired_to_base(long, variants, at.TABLE8_METRICS, base=base)
    assert set(paired["row"]) == {"DDIM steps = 3"} and (paired["n_pairs"] == 1).all()
    assert paired["test"].str.startswith("no test: needs ≥ 2 training seeds").all()
    assert "(1 seed)" in at.summary_table(long, variants, at.TABLE8_METRICS).iloc[0, 2]
    at.small_multiples(long, variants, at.TABLE8_METRICS, at.base_value(ci))


def test_notebook_plans(ci):
    variants, seeds, run = at.notebook_variants(ci, "7")
    assert [v.key for v in variants] == list(at.CI_ABLATIONS) and seeds == at.CI_SEEDS and run
    variants, seeds, run = at.notebook_variants(ci, "8")
    assert len(variants) == 2 and run and variants[1].inference_only  # the second point needs no training
    toy = load_profile("toy")
    variants, seeds, run = at.notebook_variants(toy, "8")
    assert len(variants) == 18 and seeds == at.TOY_TRAINING_SEEDS and not run
    with pytest.raises(ValueError, match="table="):
        at.notebook_variants(ci, "9")
