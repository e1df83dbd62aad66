"""Sweeps: a list of run-store runs spread over Ray Tune trials, or run one after another (issue 12).

A sweep is a list of :class:`cff_lib.runstore.RunSpec` (Table 7's rows, Table 8's points, × training seeds).
:func:`plan_trials` groups them into **trials**: one per distinct training (a spec and the inference-only
specs that reuse its parameters, ``RunSpec.training_spec``), so two trials never train the same run at the
same time. Every trial calls :meth:`RunStore.sweep` on its group, so a finished run is never recomputed and
a killed sweep, started again, re-runs only what had not finished (Ray's own experiment state is not
needed for that).

Engines (:func:`run_sweep`):

- ``"sequential"``: the trials in order in this process (no Ray);
- ``"ray"``: each trial a Ray Tune trial with ``{"cpu": k, "gpu": f}`` resources (:func:`trial_resources`:
  ``cpus_per_trial`` CPU threads, ``torch.set_num_threads(k)`` inside the trial; a fraction of a GPU when
  the machine has GPUs), at most ``concurrency`` at once. Locally Ray starts with
  ``ray.init(num_cpus=..., include_dashboard=False)``; with ``address`` (``"auto"`` or ``"ray://host:10001"``
  or ``"host:6379"``) it joins an existing cluster (docs/sweeps.md: laptop, one multi-GPU machine, a cluster,
  SLURM). Ray's temporary folder and Tune's storage live under ``build/ray/`` (never in the tracked tree).

Both engines store the same runs with the same files (tests/test_sweeps.py): the run id, the trained
parameters and the evaluation do not depend on the engine; only timings and dates do.

``python -m cff_lib.sweeps --profile ci --ablations full,no_cmc --seeds 0 --engine ray --concurrency 2``
is the command-line form (``--help``).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cff_lib.provenance import REPO_ROOT
from cff_lib.runstore import RunOutcome, RunSpec, RunStore, default_evaluate, default_train

ENGINES = ("sequential", "ray")
RAY_DIR = REPO_ROOT / "build" / "ray"  # Ray's temporary folder (tmp/) and Tune's storage (tune/)
RAY_TMP_MAX = 45  # characters of Ray's temporary folder's path (its sockets' paths must stay under 108 bytes)
DEFAULT_STORE = REPO_ROOT / "build" / "run_store"  # the store ``cff runs`` reads by default

Train = Callable[[Any, Path], Any]
Evaluate = Callable[[Any, Path], Mapping]


# ------------------------------------------------------------------------------------------ planning
def plan_trials(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """The specs grouped by the training that gives their parameters (first-met order; a spec met twice
    once): each group is one trial, its training spec first when it is in the sweep."""
    groups: dict[str, list[RunSpec]] = {}
    seen: set[str] = set()
    for i, s in enumerate(specs):
        if not isinstance(s, RunSpec):
            raise ValueError(f"specs[{i}] must be a RunSpec (RunStore.spec makes one), got {type(s).__name__}")
        if s.run_id in seen:
            continue
        seen.add(s.run_id)
        groups.setdefault(s.training_spec().run_id, []).append(s)
    for key, group in groups.items():
        group.sort(key=lambda s, k=key: s.run_id != k)  # the training itself first; stable otherwise
    return list(groups.values())


@dataclass(frozen=True)
class TrialResources:
    cpu: int  # CPU threads of one trial (Ray's "cpu"; torch.set_num_threads inside the trial)
    gpu: float  # GPUs of one trial, a fraction for several trials per GPU (0 on a CPU machine)

    def as_ray(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


def trial_resources(cpus_per_trial: int = 1, gpus_per_trial: float | None = None, *, concurrency: int = 1,
                    n_gpus: int | None = None) -> TrialResources:
    """``{"cpu": k, "gpu": f}`` of one trial. ``gpus_per_trial`` None: the machine's GPUs shared by the
    ``concurrency`` trials (1 / concurrency of a GPU each, at most 1), 0 where there is none."""
    if isinstance(cpus_per_trial, bool) or not isinstance(cpus_per_trial, int) or cpus_per_trial < 1:
        raise ValueError(f"cpus_per_trial={cpus_per_trial!r} must be a positive int")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency={concurrency!r} must be a positive int")
    if gpus_per_trial is None:
        if n_gpus is None:
            import torch

            n_gpus = torch.cuda.device_count()
        gpus_per_trial = min(1.0, n_gpus / concurrency) if n_gpus else 0.0
    if isinstance(gpus_per_trial, bool) or not isinstance(gpus_per_trial, (int, float)) or gpus_per_trial < 0:
        raise ValueError(f"gpus_per_trial={gpus_per_trial!r} must be a number >= 0")
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise ValueError(f"gpus_per_trial={gpus_per_trial!r}: above 1, Ray needs a whole number of GPUs")
    return TrialResources(cpus_per_trial, float(gpus_per_trial))


# ------------------------------------------------------------------------------------------ one trial
def _portable(spec: RunSpec) -> dict:
    """What rebuilds ``spec`` in another process (a spec's frozen overlay does not pickle)."""
    return {"profile": spec.profile, "overlay": spec.to_dict()["overlay"], "seed": spec.seed,
            "code_version": spec.code_version, "label": spec.label}


def _spec(portable: Mapping) -> RunSpec:
    return RunSpec(portable["profile"], portable["overlay"], portable["seed"], portable["code_version"],
                   label=portable["label"])


def _outcome_record(o: RunOutcome) -> dict:
    return {"run_id": o.run_id, "path": str(o.path), "status": o.status, "label": o.label,
            "trained_in": o.trained_in, "problems": list(o.problems)}


def _outcome(record: Mapping) -> RunOutcome:
    return RunOutcome(record["run_id"], Path(record["path"]), record["status"], record["label"],
                      record["trained_in"], tuple(record["problems"]))


def run_trial(store_root: str, code_version: str, group: Sequence[Mapping], train: Train, evaluate: Evaluate,
              threads: int | None = None) -> list[dict]:
    """One trial: :meth:`RunStore.sweep` of ``group`` (portable specs) with ``threads`` torch threads; the
    outcomes as plain records. The same function runs in this process and inside a Ray trial."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    store = RunStore(store_root, code_version=code_version)
    return [_outcome_record(o) for o in store.sweep([_spec(p) for p in group], train, evaluate)]


def _ray_trainable(config: Mapping) -> None:
    from ray import tune

    records = run_trial(config["store_root"], config["code_version"], config["groups"][config["trial"]],
                        config["train"], config["evaluate"], config["threads"])
    tune.report({"outcomes": json.dumps(records), "n_runs": len(records)})


# ------------------------------------------------------------------------------------------ the sweep
@dataclass(frozen=True)
class SweepResult:
    outcomes: tuple[RunOutcome, ...]  # one per spec, in the order given
    engine: str  # "sequential" or "ray"
    n_trials: int  # trials (distinct trainings)
    resources: TrialResources | None  # per trial (Ray only)
    wall_s: float  # wall time of the whole sweep

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


def _ray_init(num_cpus: int, address: str | None, ray_dir: Path) -> bool:
    """Start (or join) Ray; True when this call started it (so it shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}  # trials keep the repository as working directory
    os.environ.update(env)
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    else:
        tmp = ray_dir / "tmp"
        if len(str(tmp.resolve())) > RAY_TMP_MAX:  # Ray puts unix sockets 60 characters deeper (limit 107)
            raise ValueError(f"ray_dir {ray_dir}: Ray's temporary folder {tmp} is too long a path for its unix "
                             f"sockets (at most {RAY_TMP_MAX} characters); choose a shorter ray_dir")
        tmp.mkdir(parents=True, exist_ok=True)
        ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=str(tmp), runtime_env={"env_vars": env},
                 log_to_driver=False, configure_logging=False)
    return True


def run_sweep(store: RunStore, specs: Sequence[RunSpec], train: Train = default_train,
              evaluate: Evaluate = default_evaluate, *, engine: str = "ray", concurrency: int = 2,
              cpus_per_trial: int = 1, gpus_per_trial: float | None = None, num_cpus: int | None = None,
              address: str | None = None, ray_dir: str | os.PathLike = RAY_DIR, name: str = "cff_sweep"
              ) -> SweepResult:
    """Every spec's finished run (module docstring). ``num_cpus``: CPUs a local Ray may use (default
    concurrency × cpus_per_trial); ``address``: an existing Ray cluster instead. ``train`` and ``evaluate``
    must pickle for Ray (module-level functions do)."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; choose one of {ENGINES}")
    if not isinstance(store, RunStore):
        raise ValueError(f"store must be a RunStore, got {type(store).__name__}")
    specs = list(specs)
    groups = plan_trials(specs)
    portable = [[_portable(s) for s in g] for g in groups]
    root, version = str(Path(store.root).resolve()), store.code_version
    start = time.perf_counter()
    records: list[dict] = []
    resources = None
    if engine == "sequential" or not groups:
        threads = cpus_per_trial if engine == "ray" else None
        for g in portable:
            records += run_trial(root, version, g, train, evaluate, threads)
    else:
        resources = trial_resources(cpus_per_trial, gpus_per_trial, concurrency=concurrency)
        records = _ray_sweep(root, version, portable, train, evaluate, resources, concurrency,
                             num_cpus or concurrency * cpus_per_trial, address, Path(ray_dir), name)
    by_id = {r["run_id"]: _outcome(r) for r in records}
    missing = [s.label or s.run_id for s in specs if s.run_id not in by_id]
    if missing:
        raise RuntimeError(f"sweep {name}: no outcome for {missing}")
    return SweepResult(tuple(by_id[s.run_id] for s in specs), engine, len(groups), resources,
                       time.perf_counter() - start)


def _ray_sweep(root: str, version: str, groups: list, train: Train, evaluate: Evaluate,
               resources: TrialResources, concurrency: int, num_cpus: int, address: str | None,
               ray_dir: Path, name: str) -> list[dict]:
    import ray
    from ray import tune

    started = _ray_init(num_cpus, address, ray_dir)
    try:
        trainable = tune.with_resources(_ray_trainable, resources.as_ray())
        space = {"trial": tune.grid_search(list(range(len(groups)))), "groups": groups, "store_root": root,
                 "code_version": version, "train": train, "evaluate": evaluate, "threads": resources.cpu}
        storage = ray_dir / "tune"
        storage.mkdir(parents=True, exist_ok=True)
        tuner = tune.Tuner(trainable, param_space=space,
                           tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=False),
                           run_config=tune.RunConfig(name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                                     storage_path=str(storage), verbose=0))
        grid = tuner.fit()
        failed = [(r.config or {}).get("trial", "?") for r in grid if r.error is not None]
        if failed:
            errors = "; ".join(f"{type(r.error).__name__}: {r.error}" for r in grid if r.error is not None)
            raise RuntimeError(f"sweep {name}: trials {failed} failed ({errors[:2000]}); the runs that finished "
                               "are in the store: run the sweep again to redo only the rest")
        return [rec for r in grid for rec in json.loads(r.metrics["outcomes"])]
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cff_lib.sweeps --profile toy --ablations all --sweep lambda_id --seeds 0 1 2 ...``."""
    import argparse

    from cff_lib.config import load_profile
    from cff_lib.overlays import ABLATIONS, SWEEP, ablations, sweep_points

    ap = argparse.ArgumentParser(prog="python -m cff_lib.sweeps", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="toy")
    ap.add_argument("--ablations", default="", help=f"comma-separated Table 7 rows, or 'all' ({', '.join(ABLATIONS)})")
    ap.add_argument("--sweep", default="", help=f"comma-separated Table 8 settings, or 'all' ({', '.join(SWEEP)})")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default the profile's)")
    ap.add_argument("--store", default=str(DEFAULT_STORE))
    ap.add_argument("--engine", choices=ENGINES, default="ray")
    ap.add_argument("--concurrency", type=int, default=2, help="trials at once (Ray)")
    ap.add_argument("--cpus-per-trial", type=int, default=1)
    ap.add_argument("--gpus-per-trial", type=float, default=None, help="default: the GPUs shared by the trials")
    ap.add_argument("--num-cpus", type=int, default=0, help="CPUs of a local Ray (default concurrency x cpus)")
    ap.add_argument("--address", default="", help="an existing Ray cluster ('auto' on a cluster node)")
    ap.add_argument("--evaluate", choices=("tables", "control"), default="tables",
                    help="tables: Tables 7/8's metrics and the control measurement (ablation_tables."
                         "table_evaluate, what notebooks 08/09 read); control: the control measurement only")
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    variants = []
    if args.ablations:
        variants += ablations(profile, None if args.ablations == "all" else args.ablations.split(","))
    if args.sweep:
        variants += sweep_points(profile, None if args.sweep == "all" else args.sweep.split(","))
    if not variants:
        raise SystemExit("give --ablations and/or --sweep")
    store = RunStore(args.store)
    specs = store.specs(profile, variants, seeds=args.seeds)
    from cff_lib.ablation_tables import table_evaluate

    evaluate = table_evaluate if args.evaluate == "tables" else default_evaluate
    result = run_sweep(store, specs, default_train, evaluate, engine=args.engine, concurrency=args.concurrency,
                       cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                       num_cpus=args.num_cpus or None, address=args.address or None)
    for o in result.outcomes:
        print(f"{o.run_id}  {o.status:<7} {o.label}")
    print(f"== {len(result.outcomes)} runs, {result.n_trials} trials, {result.statuses()}, {result.wall_s:.0f} s "
          f"({result.engine})")
    return 0


__all__ = ["ENGINES", "RAY_DIR", "SweepResult", "TrialResources", "plan_trials", "run_sweep",
           "run_trial", "trial_resources"]


if __name__ == "__main__":
    raise SystemExit(main())
