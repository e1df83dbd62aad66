"""Where does the target emotion get lost? Linear probes of each stage of ClipFaceFusion's conditioning (issue 11).

For 400 training rows (every one has a target age and a target emotion), a ridge-regression linear probe is fitted
on the first 300 rows and scored on the last 100, at each stage from the modality tokens to what the UNet sees:

- ``Emo token`` / ``Age token``: f'_Emo and f'_Age of Eq. 10 (standardised, before fusion);
- ``fused.final``: f_final of Eq. 12;
- ``c``: the conditioning vector (f_final with the reference slots);
- ``cond_proj(c)``: what is added to the UNet's timestep embedding (conditional_unet);
- ``adapter.cond(c)``: the bottleneck adapter's view of c, when the model has one.

Probe accuracy is the fraction of held-out rows whose target emotion (8 classes, chance 12.5 %) or target age decade
is read correctly. A stage that a zero-initialised layer has not moved yet reads at chance by construction.

OMP_NUM_THREADS=2 .venv/bin/python bench/condition_probe.py VARIANT [--untrained]
  VARIANT is a name of bench/edit_recipe_trials.py; its trained parts are read from build/trials/VARIANT/.
  -> prints the table and writes bench/results/edit_recipe_trials/VARIANT.probe.json
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_recipe_trials import VARIANTS, add_decoder_adapters, variant_profile  # noqa: E402

from cff_lib.dataset import load_composite, load_rows  # noqa: E402
from cff_lib.model import build_model  # noqa: E402

N_ROWS, N_FIT = 400, 300


def probe_accuracy(x: np.ndarray, labels: list, ridge: float = 10.0) -> float:
    """Held-out accuracy of a one-vs-rest ridge probe fitted on the first N_FIT rows of ``x`` (N, D)."""
    lab = np.asarray(labels)
    fit = np.arange(len(lab)) < N_FIT
    x = (x - x[fit].mean(0)) / (x[fit].std(0) + 1e-6)
    classes = sorted(set(lab[fit].tolist()))
    y = np.stack([(lab == k).astype(np.float64) for k in classes], 1)  # (N, K)
    a = x[fit]
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y[fit])  # (D, K)
    pred = np.asarray(classes)[(x[~fit] @ w).argmax(1)]
    return float((pred == lab[~fit]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("--untrained", action="store_true", help="probe the model before training (no checkpoint)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    v = VARIANTS[args.variant]
    p = variant_profile(v)
    model = build_model(p, v["weights"])
    if v.get("decoder_adapters"):
        add_decoder_adapters(model)
    if not args.untrained:
        ckpt = Path("build/trials") / args.variant / "clipfacefusion.safetensors"
        if not ckpt.exists():
            raise SystemExit(f"no trained model at {ckpt}: run bench/edit_recipe_trials.py {args.variant} first")
        model.load_trained(ckpt, check_backends=False)
    model.eval()
    rows = [r for r in load_composite(p).split("train")
            if r.image is not None and r.target_emotion is not None and r.target_age is not None][:N_ROWS]
    images, cond = load_rows(p, rows)
    with torch.no_grad():
        out = model.condition({**cond, "reference": images})
        stages = {"Emo token": out.fusion.normalized["Emo"], "Age token": out.fusion.normalized["Age"],
                  "fused.final": out.fusion.final, "c": out.c}
        if not args.untrained:  # zero-initialised projections read exact zeros before training
            stages["cond_proj(c)"] = model.unet.cond_proj(out.c)
            if getattr(model.unet, "adapter", None) is not None:
                stages["adapter.cond(c)"] = model.unet.adapter.cond(out.c)
    emotion = list(cond["target_emotion"])
    decade = [int(a // 10) for a in cond["target_age"]]
    table = {k: {"emotion": round(probe_accuracy(x.numpy(), emotion), 3),
                 "age_decade": round(probe_accuracy(x.numpy(), decade), 3)} for k, x in stages.items()}
    for k, r in table.items():
        print(f"{k:>16}: emotion {r['emotion']:.2f}  age decade {r['age_decade']:.2f}")
    record = {"variant": args.variant, "trained": not args.untrained, "rows": len(rows), "fit_rows": N_FIT,
              "held_out_rows": len(rows) - N_FIT, "probe": "one-vs-rest ridge (lambda 10) on standardised features",
              "accuracy": table}
    out_dir = Path("bench/results/edit_recipe_trials")
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".probe_untrained.json" if args.untrained else ".probe.json"
    (out_dir / f"{args.variant}{suffix}").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
