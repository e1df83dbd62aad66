"""Execute every notebook, in order, on the `ci` profile into a scratch folder (never the committed figures)."""
import json

import pytest

from cff_lib.runner import discover_notebooks, reproduce


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    figs = tmp_path_factory.mktemp("figures")
    build = tmp_path_factory.mktemp("build")
    results = reproduce("ci", figures_dir=str(figs), build_dir=str(build))
    return figs, build, results


def test_every_notebook_ran(ci_run):
    figs, build, results = ci_run
    assert [r.notebook for r in results] == [p.name for p in discover_notebooks()]
    assert all(r.status == "ok" for r in results)
    assert all((build / r.notebook).is_file() for r in results)
    record = json.loads((figs / "provenance.json").read_text())
    assert record["profile"] == "ci" and set(record["notebooks"]) == {r.notebook for r in results}


def test_each_notebook_wrote_its_figures(ci_run):
    figs, _, results = ci_run
    for r in results:
        folder = figs / r.notebook.removesuffix(".ipynb")
        pngs = sorted(folder.glob("*.png"))
        assert pngs, f"{r.notebook} wrote no figure into {folder}"
        for png in pngs:
            assert png.with_suffix(".pdf").is_file(), f"{png.name} has no PDF twin"
        for csv in folder.glob("*.csv"):
            for ext in (".md", ".tex"):
                assert csv.with_suffix(ext).is_file(), f"table {csv.name} has no {ext} twin"


def test_data_assembly_outputs(ci_run):
    figs, _, _ = ci_run
    names = {p.stem for p in (figs / "01_data_assembly").glob("*.png")}
    assert {"sample_grid", "label_distributions", "waveform_spectrogram", "batch_mixing"} <= names
