"""Short DDPM pre-training trials comparing recipes (schedule x prediction target) on the synthetic faces.

Each trial trains the shipped small UNet (or --unet) for --steps steps at batch 64 on one thread, then writes
build/ddpm_trials/<name>.png (64 DDIM samples from pure noise, 50 steps, unclipped; plus *_clip.png with x0
clipping) and build/ddpm_trials/<name>.json (held-out ε-MSE, x0-MSE, loss, s/step).

OMP_NUM_THREADS=1 .venv/bin/python bench/ddpm_recipe_trials.py --steps 400 eps_linear v_cosine v_linear_zero_snr
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cff_lib.config import load_profile
from cff_lib.pretrain_ddpm import DdpmPretrainConfig, ddpm_samples, evaluate_ddpm, fit_ddpm, image_grid

RECIPES = {
    "eps_linear": dict(schedule="linear", prediction_type="epsilon"),
    "eps_cosine": dict(schedule="cosine", prediction_type="epsilon"),
    "v_cosine": dict(schedule="cosine", prediction_type="v_prediction"),
    "v_linear": dict(schedule="linear", prediction_type="v_prediction"),
    "v_linear_zero_snr": dict(schedule="linear_zero_snr", prediction_type="v_prediction"),
    "v_cosine_zero_snr": dict(schedule="cosine_zero_snr", prediction_type="v_prediction"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recipes", nargs="+", choices=sorted(RECIPES))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--unet", default="synthetic")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--faces", type=int, default=4000)
    ap.add_argument("--out", default="build/ddpm_trials")
    args = ap.parse_args()
    torch.set_num_threads(1)
    profile = load_profile("toy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.recipes:
        cfg = DdpmPretrainConfig(steps=args.steps, batch_size=64, learning_rate=args.lr, weight_decay=0.0,
                                 warmup_steps=min(100, args.steps // 8), grad_clip=1.0, ema_decay=0.995,
                                 n_train_faces=args.faces, n_heldout_faces=256, max_world_faces=0,
                                 checkpoint_every=0, unet=args.unet, **RECIPES[name])
        tag = f"{name}_{args.unet}_{args.steps}"
        t0 = time.time()
        ema, losses, done, bank = fit_ddpm(profile, cfg, progress=False,
                                           state_file=out / f"{tag}_state.safetensors")
        train_s = time.time() - t0
        metrics = evaluate_ddpm(profile, ema, cfg)
        for clip in (False, True):
            x = ddpm_samples(ema, n=64, seed=2024, n_steps=50, clip_x0=clip)
            Image.fromarray(image_grid(x, nrow=8)).resize((8 * 34 * 3 + 6, 8 * 34 * 3 + 6), Image.NEAREST).save(
                out / f"{tag}{'_clip' if clip else ''}.png")
            metrics[f"sample_mean_abs{'_clip' if clip else ''}"] = float(x.abs().mean())
            metrics[f"sample_saturated_frac{'_clip' if clip else ''}"] = float((x.abs() > 0.98).float().mean())
            # colour cast: spread of per-image mean colour (real faces: small)
            metrics[f"sample_channel_mean_std{'_clip' if clip else ''}"] = float(x.mean((2, 3)).std(0).mean())
        real = torch.from_numpy(np.asarray(bank[:64])).float() / 127.5 - 1
        metrics["real_channel_mean_std"] = float(real.mean((2, 3)).std(0).mean())
        metrics["real_saturated_frac"] = float((real.abs() > 0.98).float().mean())
        record = {"recipe": name, "config": dataclasses.asdict(cfg), "train_s": train_s,
                  "s_per_step": train_s / done, "loss_first50": float(np.mean(losses[:50])),
                  "loss_last50": float(np.mean(losses[-50:])), **metrics}
        (out / f"{tag}.json").write_text(json.dumps(record, indent=2))
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()
                          if k != "config" and "_t" not in k}), flush=True)


if __name__ == "__main__":
    main()
