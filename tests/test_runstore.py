"""The run store: content-addressed runs, never recomputed, resumable after a kill, hash-checked, atomic."""
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from cff_lib import cli, runstore
from cff_lib.config import load_profile
from cff_lib.overlays import ABLATIONS, SWEEP, OverlayError, sweep_points
from cff_lib.runstore import MANIFEST_FILE, PARAMS_FILE, RUN_FILES, CorruptRunWarning, RunSpec, RunStore, RunStoreError


@pytest.fixture(scope="module")
def ci():
    return load_profile("ci")


class Steps:
    """Fake train and evaluate steps that count their calls; ``kill_at``: the train call (1-based) that is
    interrupted as a kill would interrupt it."""

    def __init__(self, kill_at: int | None = None):
        self.trained: list[str] = []
        self.evaluated: list[str] = []
        self.kill_at = kill_at

    def train(self, profile, work: pathlib.Path) -> pathlib.Path:
        self.trained.append(profile.fingerprint())
        (work / "checkpoint.bin").write_bytes(b"half a training")
        if self.kill_at is not None and len(self.trained) == self.kill_at:
            raise KeyboardInterrupt("killed")
        out = work / "model.safetensors"
        out.write_bytes(("weights of " + profile.fingerprint()).encode())
        return out

    def evaluate(self, profile, params: pathlib.Path) -> dict:
        self.evaluated.append(profile.fingerprint())
        return {"fingerprint": profile.fingerprint(), "params": params.read_text(),
                "n_gen_steps": profile.ddim.n_gen_steps, "ssim": 0.5}


def _store(tmp_path, version="v1"):
    return RunStore(tmp_path / "store", code_version=version)


def _leftovers(store: RunStore) -> list[str]:
    return sorted(p.name for p in store.runs_dir.iterdir() if p.name.startswith(".")) if store.runs_dir.is_dir() else []


# ------------------------------------------------------------------------------------------ identity
def test_same_inputs_give_the_same_run_id_and_any_change_another(ci, tmp_path):
    a = RunSpec(ci, {"loss": {"lambda_id": 0.8}}, seed=1, code_version="abc")
    b = RunSpec(load_profile("ci"), {"loss": {"lambda_id": 0.8}}, seed=1, code_version="abc", label="other label")
    assert a.run_id == b.run_id and len(a.run_id) == runstore.ID_LENGTH and int(a.run_id, 16) >= 0
    others = [RunSpec(ci, {"loss": {"lambda_id": 0.9}}, seed=1, code_version="abc"),
              RunSpec(ci, {"loss": {"lambda_id": 0.8}}, seed=2, code_version="abc"),
              RunSpec(ci, {"loss": {"lambda_id": 0.8}}, seed=1, code_version="abd"),
              RunSpec(load_profile("toy"), {"loss": {"lambda_id": 0.8}}, seed=1, code_version="abc"),
              RunSpec(ci, {"loss": {"lambda_id": 0.8}, "ddim": {"n_gen_steps": 6}}, seed=1, code_version="abc"),
              RunSpec(ci, {}, seed=1, code_version="abc")]
    ids = [s.run_id for s in others]
    assert a.run_id not in ids and len(set(ids)) == len(ids)
    restated = RunSpec(ci, {"loss": {"lambda_id": ci.loss.lambda_id}}, seed=1, code_version="abc")
    assert restated.run_id == RunSpec(ci, {}, seed=1, code_version="abc").run_id
    assert a.resolved.train.seed == 1 and a.resolved.loss.lambda_id == 0.8 and ci.train.seed == 42
    assert RunSpec("ci", code_version="x").seed == ci.train.seed


def test_bad_specs_are_errors_before_anything_runs(ci, tmp_path):
    store = _store(tmp_path)
    with pytest.raises(OverlayError, match="unknown ablation 'w/o voice'"):
        store.specs(ci, ["no_audio", "w/o voice"], seeds=[0])
    with pytest.raises(OverlayError, match=r"overlay\.loss: unknown key\(s\) lambda_idd"):
        store.spec(ci, {"loss": {"lambda_idd": 1.0}})
    with pytest.raises(OverlayError, match="give the training seed as RunSpec.seed"):
        store.spec(ci, {"train": {"seed": 3}})
    with pytest.raises(ValueError, match="RunSpec.seed must be a non-negative int"):
        store.spec(ci, None, seed="0")
    with pytest.raises(ValueError, match="RunSpec.code_version"):
        RunSpec(ci, {}, code_version="")
    with pytest.raises(ValueError, match="run id 'ZZ' is not"):
        store.path("ZZ")
    with pytest.raises(ValueError, match="train must be a callable"):
        store.ensure(store.spec(ci), None, Steps().evaluate)
    assert not store.root.exists()


# ------------------------------------------------------------------------------------------ making runs
def test_a_finished_run_holds_its_files_and_is_never_recomputed(ci, tmp_path):
    store, steps = _store(tmp_path), Steps()
    spec = store.spec(ci, ABLATIONS["no_cmc"], seed=0)
    made = store.ensure(spec, steps.train, steps.evaluate)
    assert made.status == "made" and made.path == store.runs_dir / spec.run_id and made.trained_in == spec.run_id
    assert sorted(p.name for p in made.path.iterdir()) == sorted(RUN_FILES + (MANIFEST_FILE,))
    manifest = json.loads((made.path / MANIFEST_FILE).read_text())["files"]
    assert set(manifest) == set(RUN_FILES)
    assert (made.path / PARAMS_FILE).read_text() == "weights of " + spec.resolved.fingerprint()
    run = json.loads((made.path / "run.json").read_text())
    assert run["label"] == "no_cmc" and run["overlay"] == {"loss": {"lambda_cross_modal": 0.0}} and run["seed"] == 0
    prov = json.loads((made.path / "provenance.json").read_text())
    assert prov["stamp"]["fingerprint"] == spec.resolved.fingerprint() and prov["code_version"] == "v1"
    timings = json.loads((made.path / "timings.json").read_text())
    assert set(timings) == {"train_s", "evaluate_s", "total_s", "started", "finished"}
    assert made.evaluation()["fingerprint"] == spec.resolved.fingerprint()
    assert not (store.work_dir / spec.run_id).exists() and _leftovers(store) == []
    again = store.ensure(store.spec(ci, "w/o CMC loss", seed=0), steps.train, steps.evaluate)
    assert again.status == "cached" and again.run_id == spec.run_id
    assert (len(steps.trained), len(steps.evaluated)) == (1, 1)


def test_a_resumed_sweep_reruns_nothing_finished(ci, tmp_path):
    store = _store(tmp_path)
    specs = store.specs(ci, [None, ABLATIONS["no_identity"], SWEEP["lambda_av"].point(0.2),
                             SWEEP["learning_rate"].point(1e-5)], seeds=[0])
    killed = Steps(kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        store.sweep(specs, killed.train, killed.evaluate)
    status = {r.run_id: r.status for r in store.runs()}
    assert status == {specs[0].run_id: "complete", specs[1].run_id: "complete", specs[2].run_id: "training"}
    assert _leftovers(store) == []  # the killed run left no half-written run folder
    resumed = Steps()
    outcomes = store.sweep(specs, resumed.train, resumed.evaluate)
    assert [o.status for o in outcomes] == ["cached", "cached", "made", "made"]
    assert resumed.trained == [specs[2].resolved.fingerprint(), specs[3].resolved.fingerprint()]
    assert len(resumed.evaluated) == 2
    assert {r.status for r in store.runs()} == {"complete"}
    third = Steps()
    assert [o.status for o in store.sweep(specs, third.train, third.evaluate)] == ["cached"] * 4
    assert third.trained == [] and third.evaluated == []


def test_a_spec_met_twice_in_a_sweep_runs_once(ci, tmp_path):
    store, steps = _store(tmp_path), Steps()
    specs = store.specs(ci, [None, SWEEP["lambda_id"].point(ci.loss.lambda_id), None], seeds=[0])
    outcomes = store.sweep(specs, steps.train, steps.evaluate)
    assert len({o.run_id for o in outcomes}) == 1 and len(steps.trained) == 1 and len(steps.evaluated) == 1


def test_inference_only_points_reuse_the_base_parameters(ci, tmp_path):
    store, steps = _store(tmp_path), Steps()
    specs = store.specs(ci, [p for p in sweep_points(ci, ["ddim_steps"])], seeds=[0])
    base = store.spec(ci, None, seed=0)
    outcomes = store.sweep(specs, steps.train, steps.evaluate)
    assert steps.trained == [base.resolved.fingerprint()]  # one training, at the base's settings
    assert len(steps.evaluated) == 4  # the base, then each point with its own DDIM steps
    assert [o.evaluation()["n_gen_steps"] for o in outcomes] == [20, 50, 100]
    base_params = (store.path(base.run_id) / PARAMS_FILE).read_bytes()
    for o in outcomes:
        assert o.trained_in == base.run_id and (o.path / PARAMS_FILE).read_bytes() == base_params
        assert json.loads((o.path / "timings.json").read_text())["train_s"] == 0.0


def test_callables_returning_nonsense_write_nothing(ci, tmp_path):
    store, steps = _store(tmp_path), Steps()
    spec = store.spec(ci, seed=0)
    with pytest.raises(ValueError, match="not JSON"):
        store.ensure(spec, steps.train, lambda p, f: {"x": object()})
    with pytest.raises(ValueError, match="must return a dict"):
        store.ensure(spec, steps.train, lambda p, f: [1, 2])
    with pytest.raises(ValueError, match="which is not a file"):
        store.ensure(spec, lambda p, w: w / "nothing.safetensors", steps.evaluate)
    assert not store.path(spec.run_id).exists() and _leftovers(store) == []


# ------------------------------------------------------------------------------------------ corruption
def _flip_a_bit(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, problem", [
    (lambda d: _flip_a_bit(d / PARAMS_FILE), "params.safetensors: sha256 does not match"),
    (lambda d: (d / "evaluation.json").write_text("{}"), "evaluation.json: 2 bytes, the manifest says"),
    (lambda d: (d / "timings.json").unlink(), "timings.json: missing"),
    (lambda d: (d / MANIFEST_FILE).write_text("{not json"), "manifest.json: unreadable"),
    (lambda d: (d / MANIFEST_FILE).unlink(), "manifest.json: missing"),
    (lambda d: (d / "stray.txt").write_text("?"), "stray.txt: not in the manifest"),
])
def test_a_corrupted_run_is_reported_by_name_and_redone(ci, tmp_path, damage, problem):
    store, steps = _store(tmp_path), Steps()
    spec = store.spec(ci, ABLATIONS["no_identity"], seed=0)
    store.ensure(spec, steps.train, steps.evaluate)
    folder = store.path(spec.run_id)
    damage(folder)
    assert any(p.startswith(problem) for p in store.verify(spec.run_id)), store.verify(spec.run_id)
    listed = {r.run_id: r for r in store.runs()}[spec.run_id]
    assert listed.status == "corrupt" and listed.label == ("no_identity" if "run.json" not in problem else "")
    with pytest.warns(CorruptRunWarning, match=rf"run {spec.run_id} \(no_identity\).*{problem.split(':')[0]}"):
        redone = store.ensure(spec, steps.train, steps.evaluate)
    assert redone.status == "redone" and any(p.startswith(problem) for p in redone.problems)
    assert len(steps.trained) == 2 and store.verify(spec.run_id) == []
    assert store.ensure(spec, steps.train, steps.evaluate).status == "cached"


def test_a_run_json_moved_to_another_folder_is_caught(ci, tmp_path):
    store, steps = _store(tmp_path), Steps()
    a, b = store.spec(ci, seed=0), store.spec(ci, seed=1)
    store.sweep([a, b], steps.train, steps.evaluate)
    shutil.rmtree(store.path(b.run_id))
    shutil.copytree(store.path(a.run_id), store.path(b.run_id))
    assert store.verify(b.run_id) == [f"run.json: describes another run than {b.run_id}"]


# ------------------------------------------------------------------------------------------ atomicity
def test_a_kill_while_the_run_folder_is_written_leaves_nothing(ci, tmp_path, monkeypatch):
    store, steps = _store(tmp_path), Steps()
    spec = store.spec(ci, seed=0)
    real = pathlib.Path.write_bytes

    def killed_on_timings(self, data):
        if self.name == "timings.json":
            raise KeyboardInterrupt("killed while writing the run")
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", killed_on_timings)
    with pytest.raises(KeyboardInterrupt):
        store.ensure(spec, steps.train, steps.evaluate)
    monkeypatch.undo()
    assert not store.path(spec.run_id).exists() and _leftovers(store) == []
    assert [r.status for r in store.runs()] == ["training"]  # the scratch folder survives, for a resume
    assert store.ensure(spec, steps.train, steps.evaluate).status == "made" and store.verify(spec.run_id) == []


def test_a_folder_left_by_a_killed_process_is_incomplete_and_cleaned(ci, tmp_path):
    store, steps = _store(tmp_path), Steps()
    spec = store.spec(ci, seed=0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    left = store.runs_dir / f".{spec.run_id}.k1ll3d.tmp"  # as atomic_directory names it; SIGKILL skips the cleanup
    left.mkdir(parents=True)
    (left / PARAMS_FILE).write_bytes(b"half")
    (left / runstore.OWNER_FILE).write_text(json.dumps({"pid": int(dead), "host": runstore.socket.gethostname()}))
    live = store.runs_dir / ".0123456789abcdef.l1ve.tmp"
    live.mkdir()
    (live / runstore.OWNER_FILE).write_bytes(runstore._owner_record())
    assert {r.path.name: r.status for r in store.runs()} == {left.name: "incomplete", live.name: "active"}
    made = store.ensure(spec, steps.train, steps.evaluate)  # the leftover is not taken for a finished run
    assert made.status == "made" and len(steps.trained) == 1
    assert store.clean(dry_run=True) == [left] and left.exists()
    assert store.clean() == [left] and not left.exists() and live.exists()
    assert store.verify(spec.run_id) == []


def test_clean_removes_corrupt_runs_and_with_work_unfinished_trainings(ci, tmp_path):
    store = _store(tmp_path)
    good, bad, unfinished = store.spec(ci, seed=0), store.spec(ci, seed=1), store.spec(ci, seed=2)
    steps = Steps(kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        store.sweep([good, bad, unfinished], steps.train, steps.evaluate)
    _flip_a_bit(store.path(bad.run_id) / PARAMS_FILE)
    assert store.clean() == [store.path(bad.run_id)]
    assert store.clean(work=True) == [store.work_dir / unfinished.run_id]
    assert [(r.run_id, r.status) for r in store.runs()] == [(good.run_id, "complete")]


# ------------------------------------------------------------------------------------------ disk errors
def test_a_full_disk_is_a_clear_error_and_nothing_is_half_written(ci, tmp_path, monkeypatch):
    store, steps = _store(tmp_path), Steps()
    spec = store.spec(ci, seed=0)
    real = pathlib.Path.write_bytes

    def full(self, data):
        if store.runs_dir in self.parents:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    with pytest.raises(RunStoreError, match="no space left on the device") as err:
        store.ensure(spec, steps.train, steps.evaluate)
    assert err.value.errno == errno.ENOSPC and str(store.root) in str(err.value) and spec.run_id in str(err.value)
    assert "nothing of the run was kept" in str(err.value)
    assert not store.path(spec.run_id).exists() and _leftovers(store) == []


def test_a_full_disk_while_copying_the_parameters_names_the_file(ci, tmp_path, monkeypatch):
    store, steps = _store(tmp_path), Steps()
    spec = store.spec(ci, seed=0)

    def full(src, dst, **kw):
        pathlib.Path(dst).write_bytes(b"par")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runstore.shutil, "copyfile", full)
    with pytest.raises(RunStoreError, match=r"cannot write params\.safetensors .* no space left"):
        store.ensure(spec, steps.train, steps.evaluate)
    monkeypatch.undo()
    assert not store.path(spec.run_id).exists() and _leftovers(store) == []


def test_a_read_only_store_is_a_clear_error(ci, tmp_path, monkeypatch):
    store, steps = _store(tmp_path), Steps()
    first = store.spec(ci, seed=0)
    store.ensure(first, steps.train, steps.evaluate)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "mkdir", read_only)  # what a read-only mount answers (root ignores chmod)
    with pytest.raises(RunStoreError, match="is read-only") as err:
        store.ensure(store.spec(ci, seed=1), steps.train, steps.evaluate)
    assert err.value.errno == errno.EROFS and str(store.root) in str(err.value)
    assert store.ensure(first, steps.train, steps.evaluate).status == "cached"  # reading still works
    assert [r.status for r in store.runs()] == ["complete"] and len(steps.trained) == 1


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_a_clear_error(ci, tmp_path):
    store, steps = _store(tmp_path), Steps()
    store.root.mkdir()
    store.root.chmod(0o555)
    try:
        with pytest.raises(RunStoreError, match="is read-only"):
            store.ensure(store.spec(ci, seed=0), steps.train, steps.evaluate)
    finally:
        store.root.chmod(0o755)
    assert list(store.root.iterdir()) == []


# ------------------------------------------------------------------------------------------ defaults and CLI
def test_the_default_steps_refuse_switches_the_model_does_not_honour_yet(ci, tmp_path, monkeypatch):
    for row in ABLATIONS.values():  # the model honours every Table 7 switch: no row is refused
        runstore._refuse_pending(row.apply(ci), "train")
    from cff_lib import overlays

    monkeypatch.setattr(overlays, "PENDING_MODEL_SWITCHES", frozenset({"model.fusion"}))
    profile = ABLATIONS["no_fusion"].apply(ci)
    with pytest.raises(ValueError, match=r"model\.fusion='mean'.*does not honour"):
        runstore.default_train(profile, tmp_path)
    with pytest.raises(ValueError, match=r"model\.fusion='mean'"):
        runstore.default_evaluate(profile, tmp_path / "x.safetensors")


def test_the_default_steps_call_entry_points_that_exist():
    import inspect

    from cff_lib import control, model, training

    assert {"max_steps", "progress"} <= set(inspect.signature(training.train).parameters)
    assert "model_file" in {f.name for f in __import__("dataclasses").fields(training.TrainResult)}
    assert {"progress"} <= set(inspect.signature(control.measure_control).parameters)
    assert callable(control.control_table) and callable(control.identity_threshold)
    assert callable(model.build_model) and callable(model.weights_root)


def test_cff_runs_lists_shows_and_cleans(ci, tmp_path, capsys):
    store, steps = _store(tmp_path), Steps()
    good, bad = store.spec(ci, ABLATIONS["no_cmc"], seed=0), store.spec(ci, seed=1)
    store.sweep([good, bad], steps.train, steps.evaluate)
    _flip_a_bit(store.path(bad.run_id) / PARAMS_FILE)
    assert cli.main(["runs", "list", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert f"{good.run_id}  complete" in out and "no_cmc" in out and f"{bad.run_id}  corrupt" in out
    assert "params.safetensors: sha256 does not match" in out and "1 complete, 1 corrupt" in out
    assert cli.main(["runs", "show", good.run_id[:6], "--store", str(store.root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "complete" and shown["run"]["label"] == "no_cmc" and "identity" not in shown["run"]
    assert shown["evaluation"]["ssim"] == 0.5
    assert cli.main(["runs", "show", bad.run_id, "--store", str(store.root)]) == 1
    capsys.readouterr()
    assert cli.main(["runs", "show", "ffff0000", "--store", str(store.root)]) == 2
    assert "no finished run 'ffff0000'" in capsys.readouterr().err
    assert cli.main(["runs", "clean", "--store", str(store.root)]) == 0
    assert f"deleted {store.path(bad.run_id)}" in capsys.readouterr().out
    assert [r.run_id for r in store.runs()] == [good.run_id]


def test_a_run_on_another_training_seed_sees_the_same_world():
    """The world's generator seed defaults to train.seed; a run store seed must not move the faces on disk
    (the conditional prior's oracle looks its training rows up in the world)."""
    from cff_lib.world import world_spec

    ci = load_profile("ci")
    other = RunSpec(ci, {}, seed=ci.train.seed + 1, code_version="abc").resolved
    assert other.train.seed == ci.train.seed + 1
    assert world_spec(other) == world_spec(ci)
    assert RunSpec(ci, {}, code_version="abc").resolved.fingerprint() == ci.fingerprint()


def test_world_seed_must_be_a_non_negative_int():
    from cff_lib.config import ProfileError
    from cff_lib.overlays import apply_overlay

    with pytest.raises((ProfileError, ValueError), match="world_seed"):
        apply_overlay(load_profile("ci"), {"data": {"world_seed": -1}}, label="bad")
