"""Fingerprint of ClipFaceFusion.condition for one checkout: run it on two trees to show a refactor is bit-identical.

    .venv/bin/python bench/condition_fingerprint.py /path/to/other/checkout   # e.g. a `git worktree add` of HEAD~1
    .venv/bin/python bench/condition_fingerprint.py .

Prints two lines of SHA-256 prefixes:
- ``ci``: an untrained ``ci`` model with a tiny UNet, every parameter nudged off its initial value, on the mixed
  test batch of tests/test_model.py. The hashes cover c, f_Age and f_Emo, and the gradients of sum(c).
- ``toy``: the shipped toy model in weights/synthetic, on the same batch resized to the toy resolution. The
  line is skipped when those weights are absent.

Under the editable install, the torchvision fix's .pth imports this checkout's cff_lib at start-up. The script
drops those modules (keeping the fix: its operators can register only once) and imports cff_lib from TREE.
"""
import sys

for _name in [k for k in sys.modules if k.split(".")[0] == "cff_lib" and "torchvision_cpu_fix" not in k]:
    del sys.modules[_name]

import hashlib  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def main(tree: str) -> None:
    root = str(Path(tree).resolve())
    sys.path[:0] = [root, root + "/tests"]
    import cff_lib

    if not cff_lib.__file__.startswith(root):
        raise SystemExit(f"imported cff_lib from {cff_lib.__file__}, not from {root}")
    from test_model import _conditions, small_profile

    from cff_lib.conditional_unet import tiny_unet_config
    from cff_lib.config import load_profile
    from cff_lib.model import build_model, load_trained_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(small_profile(), tempfile.mkdtemp(), allow_untrained=True, unet_config=tiny_unet_config(32))
    torch.manual_seed(1)
    for p in model.parameters():  # move α, β and every head off their init so the mixtures matter
        p.data.add_(0.01 * torch.randn_like(p))
    cond = model.condition(_conditions())
    cond.c.sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    print("ci ", "c/age/emo", _digest(torch.cat([cond.c.flatten(), cond.age.flatten(), cond.emotion.flatten()])),
          "grads", _digest(grads), f"({grads.numel()} values)")

    weights = Path(root) / "weights" / "synthetic"
    if not (weights / "clipfacefusion.safetensors").is_file():
        print("toy skipped: no shipped weights under", weights)
        return
    profile = load_profile("toy")
    toy = load_trained_model(profile, weights).eval()
    conds = _conditions()
    size = profile.data.image_size
    conds["image"] = torch.nn.functional.interpolate(conds["image"], size=(size, size))
    with torch.no_grad():
        cond = toy.condition(conds)
    print("toy", "c/age/emo", _digest(torch.cat([cond.c.flatten(), cond.age.flatten(), cond.emotion.flatten()])))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: condition_fingerprint.py TREE (a checkout of this repository)")
    main(sys.argv[1])
