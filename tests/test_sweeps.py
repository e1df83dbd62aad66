"""Sweeps over the run store: trial planning, resources, and Ray Tune with 2 concurrent trials storing exactly
what the sequential path stores (issue 12)."""
import json
import os
import pathlib
import sys
import time

import pytest
import torch
from ray import cloudpickle

from cff_lib import sweeps
from cff_lib.config import load_profile
from cff_lib.overlays import SWEEP
from cff_lib.runstore import EVALUATION_FILE, PARAMS_FILE, RUN_FILE, RunStore, _sha256

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers get these steps by value


def fake_train(profile, work: pathlib.Path) -> pathlib.Path:
    """ci-sized stand-in for training: a few seeded "steps" on a small tensor, ~1 s, with a trace of when."""
    from safetensors.torch import save_file

    start = time.time()
    g = torch.Generator().manual_seed(int(profile.fingerprint(), 16) % 2**31)
    w = torch.randn(16, 16, generator=g)
    for _ in range(profile.train.epochs * 4):
        w = torch.tanh(w @ w.T / 16 + profile.loss.lambda_cross_modal)
    time.sleep(1.0)
    out = work / "model.safetensors"
    save_file({"w": w.contiguous()}, str(out))
    trace = work.parent.parent / "trace"  # beside the store's folders, not in them
    trace.mkdir(exist_ok=True)
    (trace / f"{work.name}.json").write_text(json.dumps({"pid": os.getpid(), "start": start, "end": time.time(),
                                                         "threads": torch.get_num_threads()}))
    return out


def fake_evaluate(profile, params: pathlib.Path) -> dict:
    from safetensors.torch import load_file

    w = load_file(str(params))["w"]
    return {"ssim": float(w.mean()), "lpips": float(w.abs().mean()), "n_gen_steps": profile.ddim.n_gen_steps}


@pytest.fixture(scope="module")
def ci():
    return load_profile("ci")


def _specs(store, ci):
    return store.specs(ci, [None, "no_cmc", SWEEP["ddim_steps"].point(20)], seeds=[0])


def _stored(store: RunStore, outcomes) -> dict:
    out = {}
    for o in outcomes:
        folder = store.path(o.run_id)
        out[o.run_id] = {"params": _sha256(folder / PARAMS_FILE),
                         "evaluation": (folder / EVALUATION_FILE).read_text(),
                         "run": json.loads((folder / RUN_FILE).read_text()), "trained_in": o.trained_in}
    return out


def test_trials_group_each_training_with_its_inference_only_points(ci):
    store = RunStore("unused", code_version="v1")
    base, no_cmc, ddim20 = _specs(store, ci)
    groups = sweeps.plan_trials([ddim20, no_cmc, base, no_cmc])
    assert [[s.run_id for s in g] for g in groups] == [[base.run_id, ddim20.run_id], [no_cmc.run_id]]
    with pytest.raises(ValueError, match=r"specs\[0\] must be a RunSpec"):
        sweeps.plan_trials(["full"])


def test_trial_resources():
    assert sweeps.trial_resources(1, concurrency=2, n_gpus=0).as_ray() == {"cpu": 1, "gpu": 0.0}
    assert sweeps.trial_resources(2, concurrency=4, n_gpus=1).as_ray() == {"cpu": 2, "gpu": 0.25}
    assert sweeps.trial_resources(1, concurrency=1, n_gpus=8).gpu == 1.0
    assert sweeps.trial_resources(1, 0.5).gpu == 0.5
    for bad in ({"cpus_per_trial": 0}, {"cpus_per_trial": 1.5}, {"gpus_per_trial": -1}, {"gpus_per_trial": 1.5},
                {"concurrency": 0}):
        with pytest.raises(ValueError):
            sweeps.trial_resources(**{"cpus_per_trial": 1, **bad})
    with pytest.raises(ValueError, match="engine"):
        sweeps.run_sweep(RunStore("unused", code_version="v1"), [], engine="dask")


def test_ray_with_two_concurrent_trials_stores_what_the_sequential_path_stores(ci, tmp_path):
    seq_store = RunStore(tmp_path / "sequential", code_version="v1")
    seq = sweeps.run_sweep(seq_store, _specs(seq_store, ci), fake_train, fake_evaluate, engine="sequential")
    assert [o.status for o in seq.outcomes] == ["made"] * 3 and seq.n_trials == 2

    ray_store = RunStore(tmp_path / "ray", code_version="v1")
    specs = _specs(ray_store, ci)
    got = sweeps.run_sweep(ray_store, specs, fake_train, fake_evaluate, engine="ray", concurrency=2,
                           cpus_per_trial=1, gpus_per_trial=0, num_cpus=2)
    assert got.engine == "ray" and got.n_trials == 2 and got.resources.as_ray() == {"cpu": 1, "gpu": 0.0}
    assert [o.run_id for o in got.outcomes] == [o.run_id for o in seq.outcomes]
    assert [o.status for o in got.outcomes] == ["made"] * 3
    assert _stored(ray_store, got.outcomes) == _stored(seq_store, seq.outcomes)
    assert {r.status for r in ray_store.runs()} == {"complete"}

    traces = [json.loads(p.read_text()) for p in sorted((ray_store.root / "trace").glob("*.json"))]
    assert len(traces) == 2 and traces[0]["pid"] != traces[1]["pid"] and {t["threads"] for t in traces} == {1}
    first, second = sorted(traces, key=lambda t: t["start"])
    assert second["start"] < first["end"], "the two trials did not run at the same time"
    assert (sweeps.RAY_DIR / "tune").is_dir() and sweeps.RAY_DIR.is_relative_to(sweeps.REPO_ROOT / "build")

    again = sweeps.run_sweep(ray_store, specs, fake_train, fake_evaluate, engine="ray", concurrency=2, num_cpus=2,
                             gpus_per_trial=0)
    assert [o.status for o in again.outcomes] == ["cached"] * 3  # resumed: nothing finished is redone
    assert len(list((ray_store.root / "trace").glob("*.json"))) == 2
