"""The paper world rehearsed (issue 15), slow: `cff rehearse build` writes random weights of the true
architectures (2.3 GiB) and 256² data in the real layouts under build/rehearsal/; the real loaders read them,
a bad file among them fails in seconds naming itself, and the notebooks run on the rehearsal profile without
touching the committed figures. Builds the rehearsal on first use (about a minute here), then reuses it."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch

from cff_lib.config import load_profile

pytestmark = pytest.mark.slow

REHEARSAL_NOTEBOOKS = {"01": "ok", "02": "skipped", "03": "ok"}
"""Notebooks run on paper_rehearsal in make test-slow and their status (02 trains the synthetic world's backends
and is skipped in the paper world; 03 trains 4 steps and reads the control, about 11 min here: measured 674 s
on the shared 2-core CPU); 04-10 are not run on the rehearsal yet."""


@pytest.fixture(scope="module")
def profile():
    from cff_lib import rehearsal

    p = load_profile("paper_rehearsal")
    rehearsal.build(p, progress=False, echo=lambda *_: None)
    return p


def test_rehearsal_passes_the_preflight_and_the_real_loaders_read_it(profile):
    from cff_lib import rehearsal
    from cff_lib.model import build_model, weights_root

    assert rehearsal.check(profile) == []
    marker = json.loads((weights_root(profile) / rehearsal.MARKER).read_text())
    assert marker["note"].startswith("REHEARSAL") and marker["stamp"]["rehearsal"] is True
    model = build_model(profile)
    assert model.untrained == () and model.image_size == 256
    assert sum(p.numel() for p in model.unet.unet.parameters()) == 113_673_219
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    out = model.edit(x, {"caption": ["a 70-year-old sad person"], "target_age": [70.0],
                         "target_emotion": ["sad"]}, t0=profile.ddim.t0, steps=1, spacing=profile.ddim.spacing)
    assert out.shape == x.shape and torch.isfinite(out).all()


def _copy_of(profile, tmp_path, replace: dict):
    """A weights folder of symlinks to the rehearsal's files, with ``replace`` (name -> writer) swapped in."""
    from cff_lib.model import weights_root

    src = weights_root(profile)
    dst = tmp_path / "weights"
    dst.mkdir()
    for p in src.iterdir():
        if p.name not in replace:
            (dst / p.name).symlink_to(p)
    for name, write in replace.items():
        write(dst / name)
    return dst


def test_a_truncated_clip_file_fails_build_model_in_seconds(profile, tmp_path):
    from cff_lib.model import build_model, weights_root
    from cff_lib.paper_world import PaperWorldError

    def truncated(path):  # the first 1 MiB of the real 605 MB file: an interrupted copy
        with open(weights_root(profile) / "open_clip_model.safetensors", "rb") as f:
            path.write_bytes(f.read(1 << 20))

    folder = _copy_of(profile, tmp_path, {"open_clip_model.safetensors": truncated})
    t = time.perf_counter()
    with pytest.raises(PaperWorldError) as err:
        build_model(profile, folder)
    assert time.perf_counter() - t < 60
    (problem,) = err.value.problems
    assert problem.startswith(str(folder / "open_clip_model.safetensors")) and "truncated" in problem


def test_a_vgg_file_in_the_arcface_slot_is_named(profile, tmp_path):
    from cff_lib.model import build_model, weights_root
    from cff_lib.paper_world import PaperWorldError

    folder = _copy_of(profile, tmp_path, {
        "backbone.pth": lambda p: p.symlink_to(weights_root(profile) / "vgg16-397923af.pth")})
    with pytest.raises(PaperWorldError) as err:
        build_model(profile, folder)
    (problem,) = err.value.problems
    assert "backbone.pth" in problem and "iresnet50" in problem


def test_cli_verify_on_the_rehearsal_and_on_a_paper_profile_without_files():
    run = subprocess.run([".venv/bin/python", "-m", "cff_lib.cli", "weights", "verify", "--profile",
                          "paper_rehearsal"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "every file has its architecture" in run.stdout, run.stderr[-2000:]


def test_rehearsal_notebooks_run_and_keep_out_of_the_committed_figures(profile):
    from cff_lib.provenance import REPO_ROOT
    from cff_lib.runner import reproduce, resolve_figures_dir

    def figures_state():
        return subprocess.run(["git", "status", "--porcelain", "--", "figures"], cwd=REPO_ROOT,
                              capture_output=True, text=True).stdout

    before = figures_state()
    results = reproduce(profile.name, only=list(REHEARSAL_NOTEBOOKS), echo=lambda *_: None)
    assert [r.status for r in results] == list(REHEARSAL_NOTEBOOKS.values())
    assert figures_state() == before
    figs = resolve_figures_dir("", profile)
    record = json.loads((figs / "provenance.json").read_text())
    assert record["rehearsal"] is True and record["profile"] == "paper_rehearsal"
    table = next(figs.rglob("*.md"), None) or next(figs.rglob("*.png"))
    assert table.is_file()
