"""A content-addressed run store: each ablation row and sweep point trained and evaluated once (issue 12).

A run is (profile + overlay, training seed, code version). Its id (:attr:`RunSpec.run_id`) is the sha256 of a
canonical JSON of the resolved settings (``Profile.settings`` of the profile after the overlay and the
seed), the seed and the code version: same inputs, same id; a change of any setting, of the seed or of the
code version, another id. An overlay counts through what it changes, so one that restates the base's own
values (Table 8's optimal points) is the base's run, trained once.

Layout under the store's root::

    runs/<run id>/           a finished run, renamed into place whole (cff_lib.atomic.atomic_directory)
        run.json             the spec: profile, overlay, seed, code version, resolved settings, trained_in
        params.safetensors   the trained parameters
        evaluation.json      what the evaluate step returned
        provenance.json      cff_lib.provenance stamp of the run's profile, and the code version
        timings.json         seconds of training and of evaluation; UTC start and end
        manifest.json        sha256 and size of each file above
    runs/.<run id>.*.tmp     a run being written; one left by a killed process is "incomplete"
    work/<run id>/           the train step's scratch folder (its checkpoints let a killed training
                             resume); removed once the run is stored

A finished run whose files match their manifest is never recomputed (:meth:`RunStore.ensure` calls nothing),
so resuming a killed sweep (:meth:`RunStore.sweep` again) re-runs nothing finished. A run whose files fail
their hashes is reported by id and label (a :class:`CorruptRunWarning`, and :attr:`RunOutcome.problems`) and
redone. ``cff runs`` lists, shows and cleans (:meth:`RunStore.runs`, :meth:`RunStore.show`,
:meth:`RunStore.clean`).

The two steps are callables passed in (tests use tiny fakes):

- ``train(profile, work_dir) -> path``: train the run's resolved profile, keeping any checkpoints in
  ``work_dir``; return the trained parameters' file (safetensors);
- ``evaluate(profile, params_path) -> dict``: a JSON-ready evaluation of those parameters.

:func:`default_train` and :func:`default_evaluate` are thin defaults over ``cff_lib.training.train`` and
``cff_lib.control.measure_control`` / ``control_table``. A variant that changes only inference settings
(``overlays.NO_RETRAIN``: Table 8's DDIM steps) is not trained: its parameters are copied from the run of
its :meth:`RunSpec.training_spec` (the same spec without those settings), made first if missing.

Errors: an unknown ablation, an unknown overlay key or a value of the wrong type is an
``overlays.OverlayError`` raised when the spec is made, before anything runs. A store that cannot be written
(read-only, full disk) is a :class:`RunStoreError` naming the store, the run and the file; the run's
temporary folder is removed, so nothing is half-written.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cff_lib.atomic import atomic_directory
from cff_lib.config import Profile, load_profile
from cff_lib.overlays import (
    OverlayError,
    Variant,
    ablation,
    apply_overlay,
    flatten,
    freeze,
    pending_switches,
    split_overlay,
    thaw,
)
from cff_lib.provenance import git_commit, make_stamp

SCHEMA = 1  # version of the identity's JSON layout; bump it and every run id changes
ID_LENGTH = 16  # hex digits of the sha256 kept as the run id (64 bits)
RUNS_DIR, WORK_DIR = "runs", "work"
RUN_FILE, PARAMS_FILE, EVALUATION_FILE = "run.json", "params.safetensors", "evaluation.json"
PROVENANCE_FILE, TIMINGS_FILE, MANIFEST_FILE = "provenance.json", "timings.json", "manifest.json"
RUN_FILES = (RUN_FILE, PARAMS_FILE, EVALUATION_FILE, PROVENANCE_FILE, TIMINGS_FILE)
"""The files a finished run holds besides its manifest, each listed in the manifest with its sha256."""
OWNER_FILE = ".owner"  # pid and host of the process writing a temporary or scratch folder

Train = Callable[[Profile, Path], "str | os.PathLike"]
Evaluate = Callable[[Profile, Path], Mapping]


class RunStoreError(OSError):
    """The run store cannot be written (read-only, full disk, no permission); names store, run and file."""


class CorruptRunWarning(UserWarning):
    """A finished run's files fail their manifest; the run is redone."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _canonical(obj: Any) -> str:
    """The one JSON text of ``obj`` that its identity hashes: sorted keys, no spaces, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                      default=list)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode("utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _named(spec: RunSpec) -> str:
    """``<run id> (<label>)``: how messages name a run."""
    return f"{spec.run_id} ({spec.label or 'base'})"


# ------------------------------------------------------------------------------------------ run identity
@dataclass(frozen=True)
class RunSpec:
    profile: Profile  # the base profile (a preset: load_profile("toy")); a name is loaded
    overlay: Mapping = field(default_factory=dict)  # changed settings (cff_lib.overlays); never train.seed
    seed: int | None = None  # training seed, the run's train.seed (None: the base profile's)
    code_version: str = "unknown"  # version of the code (RunStore.spec: provenance.git_commit())
    label: str = ""  # the variant's name ("no_audio", "lambda_id=0.8"); shown, not part of the identity
    resolved: Profile = field(init=False, repr=False, compare=False)  # base + overlay + seed: what runs

    def __post_init__(self) -> None:
        profile = load_profile(self.profile) if isinstance(self.profile, str) else self.profile
        if not isinstance(profile, Profile):
            raise ValueError(f"RunSpec.profile must be a Profile or a preset name, got {type(profile).__name__}")
        object.__setattr__(self, "profile", profile)
        if not isinstance(self.label, str):
            raise ValueError(f"RunSpec.label must be a string, got {self.label!r}")
        label = self.label or "overlay"
        overlay = freeze(self.overlay)
        if "train.seed" in flatten(overlay):
            raise OverlayError(f"{label}: the overlay sets train.seed; give the training seed as RunSpec.seed")
        object.__setattr__(self, "overlay", overlay)
        seed = profile.train.seed if self.seed is None else self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"RunSpec.seed must be a non-negative int, got {self.seed!r}")
        object.__setattr__(self, "seed", seed)
        if not isinstance(self.code_version, str) or not self.code_version:
            raise ValueError(f"RunSpec.code_version must be a non-empty string, got {self.code_version!r}")
        changed = apply_overlay(profile, overlay, label=label)
        seeded = {"train": {"seed": seed}}
        if seed != changed.train.seed and changed.data.world_seed is None:  # the world stays the one on disk
            seeded["data"] = {"world_seed": changed.train.seed}
        resolved = apply_overlay(changed, seeded, label=f"{label} (seed {seed})")
        object.__setattr__(self, "resolved", resolved)

    def identity(self) -> dict:
        """What the run id hashes: the resolved settings, the seed and the code version."""
        return {"schema": SCHEMA, "profile": self.profile.name, "settings": self.resolved.settings(),
                "seed": self.seed, "code_version": self.code_version}

    @property
    def run_id(self) -> str:
        return hashlib.sha256(_canonical(self.identity()).encode()).hexdigest()[:ID_LENGTH]

    def training_spec(self) -> RunSpec:
        """The spec whose training gives this run its parameters: this one without its
        ``overlays.NO_RETRAIN`` settings (itself when it has none)."""
        training, inference = split_overlay(self.overlay)
        if not inference:
            return self
        return RunSpec(self.profile, training, self.seed, self.code_version, label="")

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "label": self.label, "profile": self.profile.name,
                "overlay": thaw(self.overlay), "seed": self.seed, "code_version": self.code_version,
                "identity": self.identity()}


@dataclass(frozen=True)
class RunOutcome:
    run_id: str  # the run's id (its folder's name)
    path: Path  # its folder
    status: str  # "cached" (found finished, nothing called), "made" (now), "redone" (it was corrupt)
    label: str = ""  # the spec's label
    trained_in: str = ""  # id of the run whose training gave the parameters (itself unless inference-only)
    problems: tuple[str, ...] = ()  # why a corrupt run was redone: "file: what failed"

    def evaluation(self) -> dict:
        return _read_json(self.path / EVALUATION_FILE)


@dataclass(frozen=True)
class RunInfo:
    run_id: str  # the run's id
    status: str  # "complete", "corrupt", "incomplete" (left by a killed process), "active" (being
    #              written by a live process) or "training" (scratch checkpoints of an unfinished training)
    path: Path  # the folder
    label: str = ""  # the spec's label (complete and corrupt runs whose run.json reads)
    profile: str = ""  # base profile name
    seed: int | None = None  # training seed
    code_version: str = ""  # code version
    problems: tuple[str, ...] = ()  # for "corrupt": what failed


# ------------------------------------------------------------------------------------------ the store
def _owner_record() -> bytes:
    return _json_bytes({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()})


def _owner_alive(folder: Path) -> bool:
    """Whether the process that wrote ``folder/.owner`` still runs on this host (no record: it does not)."""
    try:
        owner = _read_json(folder / OWNER_FILE)
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return True  # another machine's: cannot tell, so keep it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """Runs under ``root`` (module docstring). ``code_version``: default ``provenance.git_commit()``,
    read once per store, so one sweep's runs share it even if files change while it runs."""

    def __init__(self, root: str | os.PathLike, *, code_version: str | None = None):
        if not isinstance(root, (str, os.PathLike)) or not str(root):
            raise ValueError(f"root must be a folder path, got {root!r}")
        if code_version is not None and (not isinstance(code_version, str) or not code_version):
            raise ValueError(f"code_version must be a non-empty string or None, got {code_version!r}")
        self.root = Path(root)
        self._code_version = code_version

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    @property
    def code_version(self) -> str:
        if self._code_version is None:
            self._code_version = git_commit()
        return self._code_version

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    @property
    def work_dir(self) -> Path:
        return self.root / WORK_DIR

    def path(self, run_id: str) -> Path:
        """Folder of the finished run ``run_id``."""
        if not isinstance(run_id, str) or not run_id or any(c not in "0123456789abcdef" for c in run_id):
            raise ValueError(f"run id {run_id!r} is not a lower-case hex id (cff runs list shows them)")
        return self.runs_dir / run_id

    # -------------------------------------------------------------- specs
    def spec(self, profile: Profile | str, variant: Variant | Mapping | str | None = None, *,
             seed: int | None = None, label: str | None = None) -> RunSpec:
        """A :class:`RunSpec` with this store's code version. ``variant``: a :class:`~cff_lib.overlays.Variant`,
        a Table 7 row's key or label (``"no_audio"``, ``"w/o audio"``), an overlay mapping, or None (the base)."""
        if isinstance(variant, str):
            variant = ablation(variant)
        if isinstance(variant, Variant):
            overlay, name = variant.overlay, variant.key
        elif variant is None:
            overlay, name = {}, "base"
        elif isinstance(variant, Mapping):
            overlay, name = variant, "overlay"
        else:
            raise OverlayError(f"variant must be a Variant, an ablation name, an overlay mapping or None, got "
                               f"{type(variant).__name__} {variant!r}")
        return RunSpec(profile, overlay, seed, self.code_version, label=label if label is not None else name)

    def specs(self, profile: Profile | str, variants: Iterable[Variant | Mapping | str | None],
              seeds: Sequence[int] | None = None) -> list[RunSpec]:
        """One spec per (variant, seed), variant-major; all validated before any runs."""
        seeds = list(seeds) if seeds is not None else [None]
        if not seeds:
            raise ValueError("seeds must list at least one training seed")
        return [self.spec(profile, v, seed=s) for v in variants for s in seeds]

    # -------------------------------------------------------------- checking
    def verify(self, run_id: str) -> list[str]:
        """Problems of the finished run ``run_id`` ("file: what is wrong"); empty when every file matches
        the manifest and run.json describes this very run."""
        return self._verify_folder(self.path(run_id))

    def _verify_folder(self, folder: Path) -> list[str]:
        if not folder.is_dir():
            return [f"{folder.name}: no such run folder in {self.runs_dir}"]
        try:
            files = _read_json(folder / MANIFEST_FILE)["files"]
            entries = {str(k): (str(v["sha256"]), int(v["bytes"])) for k, v in files.items()}
        except FileNotFoundError:
            return [f"{MANIFEST_FILE}: missing"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            return [f"{MANIFEST_FILE}: unreadable ({type(err).__name__}: {err})"]
        problems = [f"{name}: not in the manifest" for name in RUN_FILES if name not in entries]
        for name, (digest, size) in sorted(entries.items()):
            path = folder / name
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif path.stat().st_size != size:
                problems.append(f"{name}: {path.stat().st_size} bytes, the manifest says {size}")
            elif _sha256(path) != digest:
                problems.append(f"{name}: sha256 does not match the manifest")
        extra = sorted(p.name for p in folder.iterdir() if p.name not in entries and p.name != MANIFEST_FILE)
        problems += [f"{name}: not in the manifest" for name in extra]
        if not problems:
            identity = _read_json(folder / RUN_FILE).get("identity")
            if hashlib.sha256(_canonical(identity).encode()).hexdigest()[:ID_LENGTH] != folder.name:
                problems.append(f"{RUN_FILE}: describes another run than {folder.name}")
        return problems

    # -------------------------------------------------------------- making runs
    def ensure(self, spec: RunSpec, train: Train, evaluate: Evaluate) -> RunOutcome:
        """The finished run of ``spec``: found (nothing called), or trained, evaluated and stored now."""
        if not isinstance(spec, RunSpec):
            raise ValueError(f"spec must be a RunSpec (RunStore.spec makes one), got {type(spec).__name__}")
        for name, fn in (("train", train), ("evaluate", evaluate)):
            if not callable(fn):
                raise ValueError(f"{name} must be a callable, got {type(fn).__name__} {fn!r}")
        rid, folder = spec.run_id, self.path(spec.run_id)
        problems: tuple[str, ...] = ()
        if folder.is_dir():
            problems = tuple(self._verify_folder(folder))
            if not problems:
                return RunOutcome(rid, folder, "cached", spec.label, self._trained_in(folder))
            warnings.warn(f"run {_named(spec)} in {self.runs_dir} fails its check: "
                          f"{'; '.join(problems)}; redoing it", CorruptRunWarning, stacklevel=2)
        started, clock = _now(), time.perf_counter()
        base = spec.training_spec()
        if base.run_id != rid:  # inference only: the parameters of the run without those settings
            made = self.ensure(base, train, evaluate)
            params, trained_in, train_s = made.path / PARAMS_FILE, made.run_id, 0.0
        else:
            work = self._scratch(spec)
            try:
                params = Path(train(spec.resolved, work))
            finally:  # no process trains here any more (what it left lets the next training resume)
                with contextlib.suppress(OSError):
                    (work / OWNER_FILE).unlink()
            trained_in, train_s = rid, time.perf_counter() - clock
            if not params.is_file():
                raise ValueError(f"train returned {str(params)!r} for run {_named(spec)}, which is not a file")
        clock_eval = time.perf_counter()
        evaluation = evaluate(spec.resolved, params)
        evaluate_s = time.perf_counter() - clock_eval
        if not isinstance(evaluation, Mapping):
            raise ValueError(f"evaluate returned a {type(evaluation).__name__} for run {_named(spec)}; it must "
                             "return a dict")
        try:
            evaluation_blob = _json_bytes(dict(evaluation))
        except (TypeError, ValueError) as err:
            raise ValueError(f"evaluate's result for run {_named(spec)} is not JSON: {err}") from None
        timings = {"train_s": round(train_s, 3), "evaluate_s": round(evaluate_s, 3),
                   "total_s": round(time.perf_counter() - clock, 3), "started": started, "finished": _now()}
        self._commit(spec, params, evaluation_blob, timings, trained_in)
        if trained_in == rid:
            shutil.rmtree(self.work_dir / rid, ignore_errors=True)
        return RunOutcome(rid, folder, "redone" if problems else "made", spec.label, trained_in, problems)

    def sweep(self, specs: Iterable[RunSpec], train: Train, evaluate: Evaluate) -> list[RunOutcome]:
        """:meth:`ensure` each spec in order (a spec met twice runs once); run it again after a kill and
        only what had not finished runs."""
        specs = list(specs)
        for i, s in enumerate(specs):
            if not isinstance(s, RunSpec):
                raise ValueError(f"specs[{i}] must be a RunSpec, got {type(s).__name__}")
        done: dict[str, RunOutcome] = {}
        for s in specs:
            if s.run_id not in done:
                done[s.run_id] = self.ensure(s, train, evaluate)
        return [done[s.run_id] for s in specs]

    def _trained_in(self, folder: Path) -> str:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return str(_read_json(folder / RUN_FILE).get("trained_in", folder.name))
        return folder.name

    def _failure(self, err: OSError, action: str, after: str = "nothing of the run was kept") -> RunStoreError:
        """A :class:`RunStoreError` saying what could not be done (``action``), why, and what was kept."""
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            why = "no space left on the device"
        elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            why = "the store is read-only (or not writable by this user)"
        else:
            why = f"{type(err).__name__}: {err}"
        out = RunStoreError(f"run store {self.root}: cannot {action}: {why}; {after}")
        out.errno = err.errno
        return out

    def _scratch(self, spec: RunSpec) -> Path:
        """The train step's scratch folder of ``spec``'s run (kept across a kill, so training can resume)."""
        work = self.work_dir / spec.run_id
        try:
            work.mkdir(parents=True, exist_ok=True)
            (work / OWNER_FILE).write_bytes(_owner_record())
        except OSError as err:
            raise self._failure(err, f"write the scratch folder {work} of run {_named(spec)}") from err
        return work

    def _commit(self, spec: RunSpec, params: Path, evaluation: bytes, timings: dict, trained_in: str) -> None:
        """Write the run's files into a temporary folder and rename it into place (atomic_directory)."""
        rid, what = spec.run_id, f"the folder {self.runs_dir}"
        record = {**spec.to_dict(), "trained_in": trained_in}
        provenance = {"stamp": make_stamp(spec.resolved).to_dict(), "code_version": spec.code_version,
                      "run_id": rid}
        contents = {EVALUATION_FILE: evaluation, PROVENANCE_FILE: _json_bytes(provenance),
                    TIMINGS_FILE: _json_bytes(timings), RUN_FILE: _json_bytes(record)}
        try:
            with atomic_directory(self.path(rid)) as tmp:
                what = f"{tmp / OWNER_FILE}"
                (tmp / OWNER_FILE).write_bytes(_owner_record())
                what = f"{PARAMS_FILE} (from {params})"
                shutil.copyfile(params, tmp / PARAMS_FILE)
                for name, data in contents.items():
                    what = name
                    (tmp / name).write_bytes(data)
                what = MANIFEST_FILE
                manifest = {"run_id": rid, "files": {
                    name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                    for name in RUN_FILES}}
                (tmp / MANIFEST_FILE).write_bytes(_json_bytes(manifest))
                (tmp / OWNER_FILE).unlink()
                what = f"the finished folder {self.path(rid)}"
        except OSError as err:
            raise self._failure(err, f"write {what} of run {_named(spec)}") from err

    # -------------------------------------------------------------- reading and cleaning
    def runs(self) -> list[RunInfo]:
        """Every run folder: finished (complete or corrupt), temporary (incomplete or active), scratch."""
        out: list[RunInfo] = []
        finished: set[str] = set()
        if self.runs_dir.is_dir():
            for p in sorted(self.runs_dir.iterdir()):
                if not p.is_dir():
                    continue
                if p.name.startswith("."):
                    if p.name.endswith(".tmp"):
                        rid = p.name[1:].split(".", 1)[0]
                        out.append(RunInfo(rid, "active" if _owner_alive(p) else "incomplete", p))
                    continue
                problems = tuple(self._verify_folder(p))
                meta: dict = {}
                with contextlib.suppress(OSError, ValueError):
                    meta = _read_json(p / RUN_FILE)
                    meta = meta if isinstance(meta, dict) else {}
                out.append(RunInfo(p.name, "corrupt" if problems else "complete", p, str(meta.get("label", "")),
                                   str(meta.get("profile", "")), meta.get("seed"), str(meta.get("code_version", "")),
                                   problems))
                if not problems:
                    finished.add(p.name)
        if self.work_dir.is_dir():
            for p in sorted(self.work_dir.iterdir()):
                if p.is_dir() and p.name not in finished:
                    out.append(RunInfo(p.name, "active" if _owner_alive(p) else "training", p))
        return out

    def resolve(self, run_id: str) -> str:
        """The finished run whose id is or starts with ``run_id`` (at least 4 digits)."""
        if not isinstance(run_id, str) or len(run_id) < 4:
            raise ValueError(f"run id {run_id!r}: give at least 4 hex digits (cff runs list shows the ids)")
        ids = sorted({r.run_id for r in self.runs() if r.status in ("complete", "corrupt")
                      and r.run_id.startswith(run_id)})
        if not ids:
            raise FileNotFoundError(f"no finished run {run_id!r} in {self.runs_dir}")
        if len(ids) > 1:
            raise ValueError(f"run id {run_id!r} is ambiguous in {self.runs_dir}: {', '.join(ids)}")
        return ids[0]

    def show(self, run_id: str) -> dict:
        """One finished run: status, problems, its spec, timings, evaluation and provenance (what reads)."""
        rid = self.resolve(run_id)
        folder = self.path(rid)
        problems = self._verify_folder(folder)
        out: dict[str, Any] = {"run_id": rid, "path": str(folder), "status": "corrupt" if problems else "complete",
                               "problems": problems}
        for key, name in (("run", RUN_FILE), ("timings", TIMINGS_FILE), ("provenance", PROVENANCE_FILE),
                          ("evaluation", EVALUATION_FILE)):
            try:
                out[key] = _read_json(folder / name)
            except (OSError, ValueError) as err:
                out[key] = f"unreadable: {type(err).__name__}: {err}"
        return out

    def clean(self, *, work: bool = False, dry_run: bool = False) -> list[Path]:
        """Delete corrupt runs and the temporary folders killed processes left (never a live process's);
        with ``work``, also the scratch folders of unfinished trainings. Returns what was (or, with
        ``dry_run``, would be) deleted."""
        doomed = [r.path for r in self.runs() if r.status in ("corrupt", "incomplete")
                  or (work and r.status == "training")]
        if not dry_run:
            for path in doomed:
                try:
                    shutil.rmtree(path)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    raise self._failure(err, f"delete {path}", "it is kept") from err
        return doomed


# ------------------------------------------------------------------------------------------ default steps
def _refuse_pending(profile: Profile, step: str) -> None:
    pending = pending_switches(profile)
    if pending:
        raise ValueError(f"cannot {step} profile {profile.name!r} with {', '.join(pending)}: cff_lib.model does "
                         "not honour these switches yet (overlays.PENDING_MODEL_SWITCHES), so the run would "
                         "silently be the full model")


def default_train(profile: Profile, work_dir: Path, *, max_steps: int | None = None) -> Path:
    """``cff_lib.training.train`` of ``profile`` into ``work_dir`` (resuming its checkpoints there); the
    trained file. ``max_steps``: the schedule's length (None: the profile's epochs)."""
    _refuse_pending(profile, "train")
    from cff_lib.training import train

    return Path(train(profile, work_dir, max_steps=max_steps, progress=False).model_file)


def default_evaluate(profile: Profile, params: Path) -> dict:
    """The control measurement (``cff_lib.control``: referee and guide readings, fooling gap, oracle share,
    artefact ratio) of the parameters in ``params`` on the profile's held-out faces."""
    _refuse_pending(profile, "evaluate")
    from cff_lib.control import control_table, identity_threshold, measure_control
    from cff_lib.model import build_model, weights_root

    model = build_model(profile)
    model.load_trained(params)
    model.eval()
    table = control_table(measure_control(model, profile, progress=False), identity_threshold(weights_root(profile)))
    return {"control": table.to_dict(orient="records")}


__all__ = ["CorruptRunWarning", "RunInfo", "RunOutcome", "RunSpec", "RunStore", "RunStoreError",
           "default_evaluate", "default_train"]
