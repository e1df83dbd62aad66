"""bench/bench_train.py runs one configuration end to end on the CPU and refuses bad arguments."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_train.py"


def test_bench_train_fp32_on_ci_writes_its_measurements(tmp_path):
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, str(BENCH), "--profile", "ci", "--batch", "2", "--warmup", "0",
                          "--repeats", "1", "--configs", "fp32", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ratios against fp32" in run.stdout
    (r,) = json.loads(out.read_text())["results"]
    assert r["config"] == "fp32" and r["batch"] == 2 and r["s_per_step"] > 0 and len(r["all_s"]) == 1


@pytest.mark.parametrize("args, message", [(["--configs", "int4"], "unknown --configs"),
                                           (["--repeats", "0"], "--repeats")])
def test_bench_train_bad_arguments(args, message):
    run = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and message in run.stderr
