"""Sample grid of the current toy_v2 EMA weights (64 samples from pure noise, 50 DDIM steps, unclipped).

OMP_NUM_THREADS=1 .venv/bin/python bench/ddpm_v2_progress_grid.py  # -> figures/02_encoders/ddpm_v2_samples_progress.png
"""
import argparse
import json
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")

from cff_lib.atomic import atomic_path  # noqa: E402
from cff_lib.config import load_profile  # noqa: E402
from cff_lib.pretrain_ddpm import ddpm_sample_grid  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="weights/synthetic/pretraining")
    ap.add_argument("--name", default="ddpm_v2")
    ap.add_argument("--out", default="figures/02_encoders/ddpm_v2_samples_progress.png")
    ap.add_argument("--clip", action="store_true", help="clip f_θ to [-1, 1] at every step")
    args = ap.parse_args()
    torch.set_num_threads(1)
    step = json.loads((Path(args.weights) / f"{args.name}_progress.json").read_text())["history"][-1]["step"]
    fig = ddpm_sample_grid(load_profile("toy"), args.weights, n=64, seed=2024, n_steps=50, name=args.name,
                           clip_x0=args.clip)
    fig.axes[0].set_title(fig.axes[0].get_title() + f"\nEMA weights after {step} steps", fontsize=8)
    with atomic_path(Path(args.out)) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    print(args.out, "step", step)


if __name__ == "__main__":
    main()
