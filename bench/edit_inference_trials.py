"""Inference-only edit trials (issue 11): the shipped toy ClipFaceFusion read by the referees on the 48 *tuning*
faces (validation rows after the 200 held-out control faces, as bench/edit_recipe_trials.py) under other edit
settings: guidance scale w, start level ``ddim.edit_t0``, and the preserving edit (``ddim.preserve_threshold``,
cff_lib/ddim.py: DiffEdit's idea, Couairon et al. 2022: a mask from where the conditioned and unconditioned
chains disagree, the reconstruction's own levels kept outside it). The chosen point is the toy preset's.

    OMP_NUM_THREADS=2 .venv/bin/python bench/edit_inference_trials.py [TRIAL ...]
      -> bench/results/edit_inference_trials/{TRIAL.csv, summary.csv, TRIAL.png}

No training; each trial is one control measurement (~40 s on 2 cores).
"""
import dataclasses
import sys
from pathlib import Path

import torch

from cff_lib import control
from cff_lib.config import load_profile
from cff_lib.dataset import load_composite
from cff_lib.model import load_trained_model
from cff_lib.referees import load_referees, realism_reference

TUNING = slice(200, 248)
OUT = Path("bench/results/edit_inference_trials")
# name: (guidance w, t0, preserve threshold or None)
TRIALS = {
    "w2_t707": (2.0, 707, None),
    "w2_t707_keep0.05": (2.0, 707, 0.05),
    "w2_t707_keep0.10": (2.0, 707, 0.10),
    "w2_t707_keep0.20": (2.0, 707, 0.20),
    "w3_t707_keep0.10": (3.0, 707, 0.10),
    "w2_t800_keep0.10": (2.0, 800, 0.10),
    "w3_t800_keep0.10": (3.0, 800, 0.10),
    "w2_t800": (2.0, 800, None),
    "w2_t800_keep0.07": (2.0, 800, 0.07),
    "w2.5_t800_keep0.10": (2.5, 800, 0.10),
    "w2_t900_keep0.10": (2.0, 900, 0.10),
    "w2_t900_keep0.15": (2.0, 900, 0.15),
    "w2.5_t850_keep0.08": (2.5, 850, 0.08),
    "w2_t900_keep0.12": (2.0, 900, 0.12),
    "w1.5_t900_keep0.10": (1.5, 900, 0.10),
}


def main():
    torch.set_num_threads(2)
    names = sys.argv[1:] or list(TRIALS)
    p = load_profile("toy")
    model = load_trained_model(p)
    tuning = control.control_rows(load_composite(p).split("val"))[TUNING]
    refs = load_referees(p)
    reference = refs.features(realism_reference(p, 48))
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        w, t0, keep = TRIALS[name]
        model.unet.guidance_scale = w
        q = dataclasses.replace(p, ddim=dataclasses.replace(p.ddim, edit_t0=t0, guidance_scale=w,
                                                            preserve_threshold=keep))
        df = control.measure_control(model, q, tuning, referees=refs, n=len(tuning), progress=False)
        table = control.control_table(df, identity_threshold=refs.identity_threshold,
                                      reference_features=reference, kid_subset=24)
        table.to_csv(OUT / f"{name}.csv")
        e = table.set_index("variant").loc["edited"]
        rows.append({"trial": name, "w": w, "t0": t0, "keep": keep, "age_mae": e.age_mae,
                     "emotion_accuracy": e.emotion_accuracy, "same_identity": e.same_identity,
                     "identity_similarity": e.identity_similarity, "kid": e.kid,
                     "closer_than_reconstruction": e.closer_than_reconstruction})
        print(rows[-1], flush=True)
    import pandas as pd

    summary = OUT / "summary.csv"
    old = pd.read_csv(summary) if summary.exists() else pd.DataFrame()
    new = pd.DataFrame(rows)
    merged = pd.concat([old[~old.trial.isin(new.trial)] if len(old) else old, new])
    merged.to_csv(summary, index=False)
    print(merged.to_string())


if __name__ == "__main__":
    main()
