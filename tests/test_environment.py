"""The pinned environment: the lock, environment.yml and pyproject agree; the torchvision CPU fix works."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_environment_yml_matches_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = {}
    for line in pip:
        name, version = line.split("==")
        conda_pins[name.lower().replace("_", "-")] = version
    assert conda_pins == _lock(), "environment.yml drifted from requirements.lock: regenerate it (docs/environment.md)"
    assert "python=3.11" in env["dependencies"]


def test_lock_pins_torch_and_every_direct_dependency():
    pins = _lock()
    assert pins["torch"] == "2.13.0" and pins["torchvision"] == "0.28.0"
    assert not any(name.startswith("nvidia-") for name in pins), "CUDA packages crept into the CPU lock"
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("dependencies = [") : text.index("]", text.index("dependencies = ["))]
    for dep in re.findall(r'"([A-Za-z0-9_.-]+)', block):
        assert dep.lower().replace("_", "-") in pins, f"{dep} is a dependency but not pinned in requirements.lock"


def test_heavy_imports_work_in_a_fresh_interpreter():
    code = ("import cff_lib, open_clip, lpips, torchmetrics, diffusers, transformers, insightface; "
            "from transformers import Wav2Vec2Model; import torchvision; print(torchvision.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("0.28.0")


def test_torchvision_fix_is_active_even_without_importing_cff_lib_first():
    """The .pth hook installed by `make` covers notebooks that import open_clip before cff_lib."""
    code = "import torchvision, sys; print('cff_lib.torchvision_cpu_fix' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_offline_model_hub_fails_instead_of_downloading():
    """Offline, a hub id is an OSError (how fast: bench/bench_fail_fast.py, not a timed test)."""
    code = ("import os; os.environ['HF_HUB_OFFLINE']='1'\n"
            "from transformers import Wav2Vec2Model\n"
            "try:\n    Wav2Vec2Model.from_pretrained('facebook/wav2vec2-base')\nexcept OSError as e:\n"
            "    print('failed')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.startswith("failed"), out.stderr[-2000:]


def test_the_network_guard_sees_a_download_attempt(network_attempts):
    import urllib.request

    import pytest

    with pytest.raises(OSError):
        urllib.request.urlopen("http://example.invalid/weights.bin", timeout=1)
    assert network_attempts  # the guard the "fail fast" tests rely on can fail
