"""``cff train {vision,audio,ddpm,model,baseline}``: one command for every trainer, and the old entry points that
provenance records quote still parse and run as its aliases."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cff_lib import cli, train_commands
from cff_lib.train_commands import ALIASES, TARGETS, parse, run

ROOT = Path(__file__).resolve().parents[1]


def _quoted_commands() -> list[tuple[str, str]]:
    """(where, command) of every ``python -m cff_lib.<alias>`` in the weights' records and the docs."""
    out = []
    for path in sorted((ROOT / "weights").rglob("*.json")):
        command = json.loads(path.read_text()).get("command", "")
        if command.startswith("python -m cff_lib."):
            out.append((str(path.relative_to(ROOT)), command))
    for path in sorted((ROOT / "docs").glob("*.md")):
        for line in path.read_text().splitlines():
            for alias in ALIASES:
                if f"python -m {alias} " in line:
                    out.append((str(path.relative_to(ROOT)), line[line.index("python -m"):].split("`")[0]))
    return out


def test_every_quoted_entry_point_parses_as_its_cff_train_target():
    seen = set()
    for where, command in _quoted_commands():
        words = shlex.split(command)
        module = words[2]
        if module not in ALIASES:
            continue  # other modules' own commands (referees, sweeps)
        seen.add(module)
        args = parse(ALIASES[module], words[3:])  # argparse exits on an unknown or malformed argument
        assert args.profile == words[words.index("--profile") + 1], where
        same = cli.build_parser().parse_args(["train", ALIASES[module], *words[3:]])
        assert vars(same) | {"func": None, "command": None} == vars(args) | {"func": None, "command": None}, where
    assert seen == set(ALIASES), f"no quoted command found for {set(ALIASES) - seen}"


def test_targets_match_the_trainers():
    from cff_lib import pretrain_ddpm, pretrain_vision

    assert train_commands.VISION_MODELS == tuple(pretrain_vision.TRAINERS)
    assert train_commands.DDPM_PRESETS == tuple(sorted(pretrain_ddpm.PRESETS))
    assert set(TARGETS) == {"vision", "audio", "ddpm", "model", "baseline"}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train"])  # a target is required
    with pytest.raises(ValueError, match="target='dpm'"):
        parse("dpm", [])


@pytest.mark.parametrize("target", ["vision", "audio", "ddpm"])
def test_the_paper_world_is_refused_by_name(target, capsys):
    assert cli.main(["train", target, "--profile", "paper"]) == 2
    assert "paper" in capsys.readouterr().err


def test_the_ddpm_guard_keeps_the_shipped_file(monkeypatch, capsys):
    from cff_lib import pretrain_ddpm

    def must_not_train(*a, **k):
        raise AssertionError("the guard let another recipe overwrite the shipped (toy_v2) ddpm")

    monkeypatch.setattr(pretrain_ddpm, "train_ddpm", must_not_train)
    out = str(ROOT / "weights" / "synthetic")
    assert cli.main(["train", "ddpm", "--preset", "toy", "--out", out]) == 2
    assert "would overwrite" in capsys.readouterr().err


def test_an_alias_reports_errors_as_cff_does(capsys):
    def fails(args):
        raise FileNotFoundError(f"no weights for {args.profile}")

    assert run("model", fails, ["--profile", "ci", "--max-steps", "3"], prog="python -m cff_lib.training") == 2
    assert capsys.readouterr().err.startswith("python -m cff_lib.training: error: no weights for ci")
    assert run("model", lambda args: args.max_steps, ["--max-steps", "3"]) == 3


def test_cff_train_audio_trains_and_its_record_quotes_a_working_alias(tmp_path, capsys):
    assert cli.main(["train", "audio", "--profile", "ci", "--steps", "2", "--out", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 2 and Path(report["weights"][0]).is_file()
    command = json.loads((tmp_path / "audio.provenance.json").read_text())["command"]
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "cff_lib.pretrain_audio"]
    assert parse(ALIASES[words[2]], words[3:]).out == str(tmp_path)


def test_the_module_entry_point_runs_as_the_alias():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "cff_lib.pretrain_audio", "--profile", "paper"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("python -m cff_lib.pretrain_audio: error:") and "wav2vec2" in done.stderr
