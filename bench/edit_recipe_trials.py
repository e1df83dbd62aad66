"""Edit-recipe trials (issue 11): train ClipFaceFusion briefly on a variant of the toy recipe, then read its
edits with the referees on 48 *tuning* faces (validation rows after the 200 control faces: never the
held-out control set, so no recipe is tuned to it).

Guides: "build/robust_guides" is weights/synthetic with the age/emotion estimators replaced by adversarially
fine-tuned ones (docs/errata.md, "Robust guides"):
  .venv/bin/python -c "from cff_lib.pretrain_vision import train_estimators; train_estimators('toy',
      'build/robust_guides', steps=300, adversarial_l2=1.0, pgd_steps=3, init_from='weights/synthetic')"
  then copy the other files of weights/synthetic, with their provenance records, beside them. The two
  robust estimators of the trials are committed in weights/synthetic/robust/ (copy them instead of retraining).

OMP_NUM_THREADS=1 .venv/bin/python bench/edit_recipe_trials.py VARIANT STEPS [THREADS]
  -> build/trials/VARIANT/{tuning_table.csv, tuning_per_sample.csv, trial.json}
VARIANT "shipped" (STEPS 0) reads the shipped toy model on the same faces.
"""
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from cff_lib import control, training
from cff_lib.config import load_profile
from cff_lib.dataset import load_composite
from cff_lib.model import build_model, load_trained_model
from cff_lib.referees import load_referees, realism_reference

VARIANTS = {
    "shipped": dict(weights="weights/synthetic", trainable="fusion+unet", l1=0.0),
    # robust guides + L1 to the source, the toy recipe otherwise (fusion+unet, t0 400, 8-step chains)
    "robust_l1_unet": dict(weights="build/robust_guides", trainable="fusion+unet", l1=1.0),
    # the same with the bottleneck adapter instead of the whole UNet (lr 1e-3 for the zero-initialised adapter)
    "robust_l1_adapter": dict(weights="build/robust_guides", trainable="adapter", l1=1.0, lr=1e-3),
    "std_l1_unet": dict(weights="weights/synthetic", trainable="fusion+unet", l1=1.0),
    "robust_unet": dict(weights="build/robust_guides", trainable="fusion+unet", l1=0.0),
}
TUNING = slice(200, 248)  # control rows after the 200 held-out control faces


def variant_profile(v: dict):
    p = load_profile("toy")
    return dataclasses.replace(
        p, model=dataclasses.replace(p.model, trainable=v["trainable"]),
        loss=dataclasses.replace(p.loss, lambda_l1_source=v["l1"]),
        train=dataclasses.replace(p.train, learning_rate=v.get("lr", p.train.learning_rate)))


def main():
    name, steps = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    v = VARIANTS[name]
    p = variant_profile(v)
    out = Path("build/trials") / name
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if name == "shipped":  # the shipped toy model (688 steps, standard guides, no L1), for comparison
        model = load_trained_model(p)
    else:
        res = training.train(p, out, max_steps=steps, weights_dir=v["weights"], progress=True)
        model = build_model(p, v["weights"])
        model.load_trained(res.model_file, check_backends=False)
    train_s = time.time() - t0
    tuning = control.control_rows(load_composite(p).split("val"))[TUNING]
    refs = load_referees(p)
    df = control.measure_control(model, p, tuning, referees=refs, n=len(tuning), progress=False)
    table = control.control_table(df, identity_threshold=refs.identity_threshold,
                                  reference_features=refs.features(realism_reference(p, 48)), kid_subset=24)
    print(table.to_string())
    table.to_csv(out / "tuning_table.csv")
    df.drop(columns=["referee_feature"]).to_csv(out / "tuning_per_sample.csv", index=False)
    (out / "trial.json").write_text(json.dumps({"variant": v, "steps": steps, "train_wall_s": train_s}, indent=2))
    print("train wall s", round(train_s))


if __name__ == "__main__":
    main()
