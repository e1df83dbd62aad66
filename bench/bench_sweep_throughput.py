"""Sweep throughput on this machine: two concurrent one-thread trials against two sequential two-thread trials.

A trial is a small real ClipFaceFusion training (``cff_lib.training.train``, the ``ci`` profile and its
composite set from notebooks/01, randomly initialised backends, ``--steps`` optimizer steps, no sample
grids), each in a fresh subprocess (as a Ray trial is a fresh worker process): ``concurrent`` starts two
trials at once with ``torch.set_num_threads(1)`` / ``OMP_NUM_THREADS=1`` each; ``sequential`` runs two
trials one after the other with 2 threads each. Throughput = trials per hour of wall time;
``ratio = concurrent / sequential`` (> 1: spreading trials over cores beats giving each trial all cores).
Ray's own start-up (about 10 s per ``ray.init``, once per sweep) is not in the ratio. The 1- and 5-minute
load averages before and after are recorded: the machine is shared, and a busy machine skews the ratio.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_sweep_throughput.py --steps 4

writes ``bench/results/sweep_throughput.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "sweep_throughput.json"


def trial(out_dir: str, threads: int, steps: int) -> None:
    """One trial (in this process): train ``steps`` steps of ci; prints its wall time as JSON."""
    import torch

    torch.set_num_threads(threads)
    from cff_lib import training
    from cff_lib.config import load_profile
    from cff_lib.model import build_model

    start = time.perf_counter()
    profile = load_profile("ci")
    model = build_model(profile, Path(out_dir) / "no_weights", allow_untrained=True)
    options = training.TrainOptions(sample_grids=False, checkpoint_every=steps)
    result = training.train(profile, Path(out_dir) / "run", max_steps=steps, progress=False, options=options,
                            model=model, resume=False)
    print(json.dumps({"threads": torch.get_num_threads(), "steps": result.steps, "train_wall_s": result.wall_s,
                      "wall_s": time.perf_counter() - start}))


def _start(threads: int, steps: int, folder: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, __file__, "--trial", folder, "--threads", str(threads),
                             "--steps", str(steps)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> dict:
    out, _ = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"trial failed (exit {p.returncode}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def measure(steps: int) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cff-bench-sweep-") as tmp:
        _finish(_start(2, 1, f"{tmp}/warm"))  # warm the file cache and the imports
        start = time.perf_counter()
        procs = [_start(1, steps, f"{tmp}/c{i}") for i in range(2)]
        concurrent = [_finish(p) for p in procs]
        concurrent_s = time.perf_counter() - start
        start = time.perf_counter()
        sequential = [_finish(_start(2, steps, f"{tmp}/s{i}")) for i in range(2)]
        sequential_s = time.perf_counter() - start
    load_after = os.getloadavg()
    per_hour = lambda wall: 2 * 3600.0 / wall  # noqa: E731
    return {
        "what": "two concurrent 1-thread trials vs two sequential 2-thread trials; a trial = a fresh process "
                f"training ci for {steps} steps (random backends), imports and model build included",
        "cpu_count": os.cpu_count(), "steps_per_trial": steps,
        "concurrent": {"wall_s": round(concurrent_s, 2), "trials_per_hour": round(per_hour(concurrent_s), 1),
                       "trials": concurrent},
        "sequential": {"wall_s": round(sequential_s, 2), "trials_per_hour": round(per_hour(sequential_s), 1),
                       "trials": sequential},
        "throughput_ratio_concurrent_over_sequential": round(sequential_s / concurrent_s, 3),
        "train_only_ratio": round(sum(t["train_wall_s"] for t in sequential)
                                  / max(t["train_wall_s"] for t in concurrent), 3),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--trial", default="", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args()
    if args.trial:
        trial(args.trial, args.threads, args.steps)
        return 0
    from cff_lib.atomic import atomic_write_text
    from cff_lib.provenance import git_commit

    result = {**measure(args.steps), "commit": git_commit()}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("concurrent", "sequential")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
