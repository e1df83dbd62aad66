"""Realism of the synthetic DDPMs' samples from pure noise, read by the referees (issue 11, criterion 1).

For each DDPM file given: n DDIM samples (unclipped, and with x0 clipped at every step) against n fresh
renders, beside the floor of n other fresh renders (cff_lib.sample_realism). Writes OUT.json and, with
--grid K, OUT_<name>.png (K unclipped samples) per DDPM.

OMP_NUM_THREADS=1 .venv/bin/python bench/ddpm_realism.py --ddpm weights/synthetic:ddpm \\
    --ddpm weights/synthetic/pretraining:ddpm_v2 --out bench/results/ddpm_realism
"""
import argparse
import json
import time
from pathlib import Path

import torch

from cff_lib.atomic import atomic_path, atomic_write_text
from cff_lib.config import load_profile
from cff_lib.pretrain_ddpm import ddpm_samples, load_ddpm
from cff_lib.provenance import make_stamp
from cff_lib.referees import load_referees
from cff_lib.sample_realism import ddpm_realism
from cff_lib.weights import read_record


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="toy")
    ap.add_argument("--ddpm", action="append", required=True, help="FOLDER:NAME of a DDPM file (repeatable)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default="bench/results/ddpm_realism")
    ap.add_argument("--clip", choices=("both", "off", "on"), default="both", help="x0 clipping in the sampler")
    ap.add_argument("--grid", type=int, default=0, help="also write OUT_<name>.png: a grid of this many samples")
    args = ap.parse_args()
    torch.set_num_threads(1)
    profile = load_profile(args.profile)
    refs = load_referees(profile)
    rows = []
    for spec in args.ddpm:
        folder, _, name = spec.partition(":")
        unet = load_ddpm(folder, name)
        trained = read_record(Path(folder) / name).config["train"]["steps"]
        if args.grid:  # what a reader looks at: the first samples, unclipped, same seed and steps
            from torchvision.utils import save_image

            grid = ddpm_samples(unet, args.grid, 2024, args.steps, "ddim", False)
            png = Path(f"{args.out}_{name}.png")
            with atomic_path(png) as tmp:
                save_image(grid * 0.5 + 0.5, str(tmp), format="png", nrow=int(args.grid ** 0.5))
        for clip in {"both": (False, True), "off": (False,), "on": (True,)}[args.clip]:
            t = time.time()
            row = {"ddpm": spec, "train_steps": trained,
                   **ddpm_realism(unet, profile, refs, n=args.n, n_steps=args.steps, clip_x0=clip),
                   "wall_s": round(time.time() - t, 1)}
            print(json.dumps(row))
            rows.append(row)
    atomic_write_text(Path(args.out).with_suffix(".json"),
                      json.dumps({"rows": rows, "provenance": make_stamp(profile).to_dict()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
