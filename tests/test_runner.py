"""The papermill runner: order, parameters, provenance, and the failure report on a failing notebook."""
import json

import nbformat
import pytest

from cff_lib.runner import NotebookFailure, discover_notebooks, reproduce


def _notebook(path, *cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "cff", "display_name": "cff", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell("# fixture"))
    params = nbformat.v4.new_code_cell('profile = "toy"\nfigures_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells.append(params)
    nb.cells.extend(nbformat.v4.new_code_cell(c) for c in cells)
    nbformat.write(nb, path)


@pytest.fixture()
def books(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_writes.ipynb",
              "from pathlib import Path\nPath(figures_dir, 'seen.txt').write_text(profile)")
    _notebook(folder / "02_fails.ipynb", "x = 1", "raise ValueError('deliberate failure in the fixture')")
    _notebook(folder / "03_never.ipynb", "from pathlib import Path\nPath(figures_dir, 'never.txt').write_text('x')")
    return folder


def test_discovery_orders_and_filters(books):
    assert [p.name for p in discover_notebooks(books)] == ["01_writes.ipynb", "02_fails.ipynb", "03_never.ipynb"]
    assert [p.name for p in discover_notebooks(books, only=["02"])] == ["02_fails.ipynb"]
    with pytest.raises(ValueError, match="only"):
        discover_notebooks(books, only=["99"])


def test_failure_report_names_notebook_cell_source_and_traceback(books, tmp_path):
    figs = tmp_path / "figs"
    figs.mkdir()
    with pytest.raises(NotebookFailure) as info:
        reproduce("ci", figures_dir=str(figs), build_dir=str(tmp_path / "build"), notebooks_dir=books,
                  echo=lambda *a: None)
    report = info.value.report
    assert "02_fails.ipynb" in report
    assert "cell index 4" in report  # injected-parameters cell shifts the index: md, params, injected, x=1, raise
    assert "raise ValueError('deliberate failure in the fixture')" in report
    assert "ValueError" in report and "deliberate failure in the fixture" in report
    # ran 01 with the injected parameters, stopped before 03
    assert (figs / "seen.txt").read_text() == "ci"
    assert not (figs / "never.txt").exists()
    record = json.loads((figs / "provenance.json").read_text())
    assert record["profile"] == "ci"
    assert record["notebooks"]["01_writes.ipynb"]["status"] == "ok"
    assert record["notebooks"]["02_fails.ipynb"]["status"] == "failed"
    assert "03_never.ipynb" not in record["notebooks"]
    assert (tmp_path / "build" / "02_fails.ipynb").is_file()  # executed copy kept for inspection


def test_cli_exits_non_zero_and_prints_the_report(books, tmp_path, capsys):
    from cff_lib import cli

    figs = tmp_path / "figs"
    figs.mkdir()
    code = cli.main(["reproduce", "--profile", "ci", "--figures-dir", str(figs), "--build-dir",
                     str(tmp_path / "b"), "--only", "02", "--notebooks-dir", str(books)])
    assert code == 1
    assert "deliberate failure in the fixture" in capsys.readouterr().err


def test_unknown_profile_is_a_clear_cli_error(capsys):
    from cff_lib import cli

    assert cli.main(["reproduce", "--profile", "no_such_profile"]) == 2
    assert "no_such_profile" in capsys.readouterr().err


def test_cli_synth_and_manifests_on_a_custom_tiny_profile(tmp_path, capsys):
    """`cff synth` generates a world, `cff manifests build/verify` round-trips, tampering is reported."""
    from cff_lib import cli

    profile = tmp_path / "tiny.yaml"
    profile.write_text(f"extends: ci\ndata:\n  root: {tmp_path / 'world'}\n  n_ffhq: 6\n  n_cacd_identities: 3\n"
                       "  cacd_images_per_identity: 2\n  n_ravdess_actors: 3\n  n_vox_speakers: 3\n"
                       "  voice_seconds: 0.5\n  n_train: 8\n  n_val: 4\n")
    import cff_lib.world as world
    from cff_lib.config import load_profile

    assert cli.main(["synth", "--profile", str(profile)]) == 0
    folder = world.manifest_dir(load_profile(str(profile)))
    try:
        assert cli.main(["manifests", "build", "--profile", str(profile)]) == 0
        assert cli.main(["manifests", "verify", "--profile", str(profile)]) == 0
        victim = next((tmp_path / "world" / "ffhq").rglob("*.png"))
        victim.write_bytes(victim.read_bytes()[:-7])
        assert cli.main(["manifests", "verify", "--profile", str(profile)]) == 1
        assert victim.name in capsys.readouterr().out
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_cli_weights_verify_reports_a_tampered_file(tmp_path, capsys):
    import torch

    from cff_lib import cli
    from cff_lib.config import load_profile
    from cff_lib.weights import save_weights

    profile = tmp_path / "w.yaml"
    profile.write_text(f"extends: ci\nmodel:\n  weights_dir: {tmp_path / 'w'}\n")
    save_weights({"x": torch.arange(4.0)}, tmp_path / "w" / "tiny", profile=load_profile(str(profile)),
                 command="test", metrics={})
    assert cli.main(["weights", "verify", "--profile", str(profile)]) == 0
    target = tmp_path / "w" / "tiny.safetensors"
    target.write_bytes(target.read_bytes()[:-1] + b"\x01")
    assert cli.main(["weights", "verify", "--profile", str(profile)]) == 1
    assert "tiny.safetensors: sha256 mismatch" in capsys.readouterr().err
