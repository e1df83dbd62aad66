"""The notebook runner behind ``make reproduce``: papermill, in order, stop at the first failure.

Each ``notebooks/NN_name.ipynb`` is executed with the ``cff`` kernel (installed into .venv by ``make``),
the repository root as working directory, a per-cell timeout and logged output. Executed copies go to a
git-ignored build folder (``build/notebooks/<profile>/``); figures and tables go to ``figures_dir``, with
``provenance.json`` recording profile, commit, date and wall time per notebook. On failure the runner
prints the notebook, the failing cell's index and source, and the traceback, and returns non-zero.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cff_lib.atomic import atomic_write_text
from cff_lib.config import load_profile
from cff_lib.provenance import REPO_ROOT, make_stamp

KERNEL_NAME = "cff"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class NotebookResult:
    notebook: str  # notebook file name
    status: str  # "ok", "failed" or "skipped"
    wall_s: float  # wall time of the execution, seconds
    output: str  # executed copy


class NotebookFailure(RuntimeError):
    """A notebook cell raised; ``report`` is the human-readable account the runner prints."""

    def __init__(self, report: str):
        super().__init__(report)
        self.report = report


def discover_notebooks(folder: Path = REPO_ROOT / "notebooks", only: list[str] | None = None) -> list[Path]:
    """Notebooks named ``NN_snake_case.ipynb`` in order; ``only`` keeps those whose name starts with a prefix."""
    books = sorted(p for p in folder.glob("*.ipynb") if re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name))
    if only:
        books = [p for p in books if any(p.name.startswith(o) for o in only)]
        if not books:
            raise ValueError(f"only={only}: no notebook in {folder} starts with that")
    if not books:
        raise FileNotFoundError(f"no NN_name.ipynb notebooks in {folder}")
    return books


def resolve_figures_dir(figures_dir: str, profile=None) -> Path:
    """The notebooks' ``figures_dir`` parameter: empty means the profile's ``runner.figures_dir`` (a
    rehearsal's own folder, so it never overwrites the committed figures), else the repository's ``figures/``.
    ``profile``: a Profile or a preset name."""
    if figures_dir:
        return Path(figures_dir)
    if isinstance(profile, str):
        profile = load_profile(profile)
    own = getattr(getattr(profile, "runner", None), "figures_dir", "") if profile is not None else ""
    if own:
        return Path(own) if Path(own).is_absolute() else REPO_ROOT / own
    if profile is not None and profile.runner.rehearsal:
        return REPO_ROOT / "build" / "rehearsal" / profile.name / "figures"
    return REPO_ROOT / "figures"


@dataclass(frozen=True)
class EvaluationSession:
    """What notebooks 04-07 start from (:func:`open_evaluation_notebook`)."""

    cfg: object  # the resolved profile (cff_lib.config.Profile)
    stamp: object  # provenance stamp of this run (cff_lib.provenance.Stamp)
    figures_root: Path  # the run's figures folder (the ``figures_dir`` parameter resolved)
    out: Path  # this notebook's folder under it
    model: object  # the trained ClipFaceFusion (cff_lib.model.load_trained_model)
    baseline: object  # the text-only baseline (cff_lib.baselines.load_or_train_baseline)
    baseline_info: dict  # how the baseline was obtained (loaded / trained, steps, record)
    t_start: float  # time.perf_counter() when the session opened

    def wall_time(self) -> str:
        return f"notebook wall time {time.perf_counter() - self.t_start:.1f} s"


def open_evaluation_notebook(profile: str, figures_dir: str, notebook: str) -> EvaluationSession:
    """The one set-up of the evaluation notebooks (04-07): the profile, its stamp, the notebook's figure
    folder, the trained model and the text-only baseline (trained first where the profile has none yet).
    Prints the stamp and what was loaded, as every notebook's first output."""
    from cff_lib.baselines import load_or_train_baseline
    from cff_lib.model import load_trained_model

    t_start = time.perf_counter()
    cfg = load_profile(profile)
    stamp = make_stamp(cfg)
    root = resolve_figures_dir(figures_dir, cfg)
    print(stamp.line())
    model = load_trained_model(cfg)
    baseline, info = load_or_train_baseline(model, cfg)
    print("ClipFaceFusion trained parts:", model.untrained or "all backends trained")
    print("text-only baseline:", {k: v for k, v in info.items() if k != "history"})
    return EvaluationSession(cfg, stamp, root, root / notebook, model, baseline, info, t_start)


def _check_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        raise RuntimeError(f"the Jupyter kernel {KERNEL_NAME!r} is not installed in this environment; "
                           "run `make env` (it installs it into .venv)") from None


def failure_report(notebook: Path, err) -> str:
    """The account of a failed cell: notebook, cell index and source, exception and traceback."""
    tb = _ANSI.sub("", "\n".join(getattr(err, "traceback", []) or [str(err)]))
    source = getattr(err, "source", "") or "(source unavailable)"
    index = getattr(err, "cell_index", "?")
    return (f"\nFAILED: {notebook}\n  cell index {index} (execution count {getattr(err, 'exec_count', '?')})\n"
            f"--- cell source ---\n{source}\n--- traceback ---\n{tb}\n"
            f"--- {getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}\n")


def run_notebook(notebook: Path, output: Path, parameters: dict, cell_timeout_s: int) -> float:
    """Execute one notebook with papermill; returns its wall time or raises NotebookFailure."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters=parameters, kernel_name=KERNEL_NAME,
            cwd=str(REPO_ROOT), execution_timeout=cell_timeout_s, log_output=True, progress_bar=False,
        )
    except PapermillExecutionError as err:
        raise NotebookFailure(failure_report(notebook, err)) from None
    return time.perf_counter() - start


def notebook_worlds(notebook: Path) -> tuple[tuple[str, ...], str]:
    """(the worlds a notebook runs in, what stands in for it elsewhere) from its ``metadata.cff``:
    ``{"worlds": ["synthetic"], "elsewhere": "..."}``; a notebook without that entry runs in every world."""
    meta = json.loads(Path(notebook).read_text(encoding="utf-8")).get("metadata", {}).get("cff", {})
    return tuple(meta.get("worlds", ("synthetic", "real"))), str(meta.get("elsewhere", ""))


def reproduce(profile_name: str, *, figures_dir: str = "", build_dir: str = "", only: list[str] | None = None,
              notebooks_dir: str | Path | None = None, echo=print) -> list[NotebookResult]:
    """Run every notebook in order on ``profile_name``; stops at the first failure (raising NotebookFailure)."""
    profile = load_profile(profile_name)
    _check_kernel()
    books = discover_notebooks(Path(notebooks_dir) if notebooks_dir else REPO_ROOT / "notebooks", only)
    figs = resolve_figures_dir(figures_dir, profile).resolve()
    build = Path(build_dir) if build_dir else REPO_ROOT / "build" / "notebooks" / profile.name
    stamp = make_stamp(profile)
    results: list[NotebookResult] = []
    echo(f"== reproduce: profile {profile.name} ({profile.description}); {len(books)} notebooks; figures -> {figs}")
    try:
        for book in books:
            echo(f"-> {book.name}")
            worlds, elsewhere = notebook_worlds(book)
            if profile.data.world not in worlds:  # e.g. notebook 02 trains the synthetic world's backends
                results.append(NotebookResult(book.name, "skipped", 0.0, ""))
                echo(f"   skipped: runs in the {'/'.join(worlds)} world only; {elsewhere}")
                continue
            params = {"profile": profile.name, "figures_dir": str(figs)}
            out = build / book.name
            try:
                wall = run_notebook(book, out, params, profile.runner.cell_timeout_s)
            except NotebookFailure:
                results.append(NotebookResult(book.name, "failed", float("nan"), str(out)))
                raise
            results.append(NotebookResult(book.name, "ok", wall, str(out)))
            _write_provenance(figs, stamp, results)  # after each notebook: a killed run keeps what it did
            over = " (over the profile's budget)" if wall > profile.runner.notebook_budget_s else ""
            echo(f"   ok in {wall:.1f} s{over}")
    finally:
        _write_provenance(figs, stamp, results)
        echo(timing_summary(results))
    return results


def _write_provenance(figs: Path, stamp, results: list[NotebookResult]) -> None:
    path = figs / "provenance.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update(stamp.to_dict())
    nb = record.get("notebooks", {})
    for r in results:
        nb[r.notebook] = {"status": r.status, "wall_s": None if r.wall_s != r.wall_s else round(r.wall_s, 2),
                          "profile": stamp.profile, "commit": stamp.commit, "date": stamp.date}
    record["notebooks"] = dict(sorted(nb.items()))
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def timing_summary(results: list[NotebookResult]) -> str:
    lines = ["", f"{'notebook':<32} {'status':<7} {'wall s':>8}"]
    for r in results:
        wall = "-" if r.wall_s != r.wall_s else f"{r.wall_s:.1f}"
        lines.append(f"{r.notebook:<32} {r.status:<7} {wall:>8}")
    total = sum(r.wall_s for r in results if r.wall_s == r.wall_s)
    lines.append(f"{'total':<32} {'':<7} {total:>8.1f}")
    return "\n".join(lines)
