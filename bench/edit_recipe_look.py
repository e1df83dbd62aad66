"""Source | edit of each trial model | oracle target, for 8 far-target tuning faces (val rows after the 200
control faces), each with the referees' reading. Run after bench/edit_recipe_trials.py:

OMP_NUM_THREADS=1 .venv/bin/python bench/edit_recipe_look.py shipped robust_l1_unet robust_l1_adapter
  (bench/results/edit_recipe_trials/tuning_faces_emotion.png: shipped robust_l1_adapter_emo
  robust_l1_adapter_emo_only robust_l1_adapter_balanced)
  -> build/trials/look.png
A trained conditional prior (the ``denoise`` variants) is named NAME:W:T0[:noised], e.g.
v2_denoise_unet_expr:3:707 (guidance scale 3, t0 707, from the inversion) or v2_denoise_unet_expr:3:800:noised.
"""
import sys

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cff_lib import control, oracle  # noqa: E402
from cff_lib.config import load_profile  # noqa: E402
from cff_lib.dataset import collate, dataset_for, load_composite  # noqa: E402
from cff_lib.emotions import EMOTIONS  # noqa: E402
from cff_lib.model import build_model, load_trained_model  # noqa: E402
from cff_lib.referees import load_referees  # noqa: E402

sys.path.insert(0, "bench")
from edit_recipe_trials import TUNING, VARIANTS, add_decoder_adapters, noised_start, variant_profile  # noqa: E402


def main():
    torch.set_num_threads(1)
    toy = load_profile("toy")
    rows = control.control_rows(load_composite(toy).split("val"))[TUNING]
    far = [r for r in rows if control.is_far_target(r)][:8]
    ds = dataset_for(toy, far)
    batch = collate([ds[i] for i in range(len(far))])
    x = batch["image"]
    cols = {"source": x}
    for spec in sys.argv[1:]:
        name, *reading = spec.split(":")
        noised = reading[2:] == ["noised"]
        if name == "shipped":
            m, d = load_trained_model(toy), toy.ddim
        else:
            p = variant_profile(VARIANTS[name])
            m, d = build_model(p, VARIANTS[name]["weights"]), p.ddim  # each trial edits at its own t0
            if VARIANTS[name].get("decoder_adapters"):
                add_decoder_adapters(m)
            m.load_trained(f"build/trials/{name}/clipfacefusion.safetensors", check_backends=False)
        t0 = int(reading[1]) if reading else d.t0
        if reading:
            m.unet.guidance_scale = float(reading[0])
        with noised_start(noised):
            cols[spec.replace(":", " ")] = m.edit(x, batch, t0, d.n_gen_steps, n_inv_steps=d.n_inv_steps)
    cols["oracle target"] = oracle.oracle_targets(toy, far)
    refs = load_referees(toy)
    fig, axes = plt.subplots(len(cols), len(far), figsize=(1.3 * len(far), 1.45 * len(cols)))
    for r, (label, imgs) in enumerate(cols.items()):
        read = refs.read(imgs.float())
        for c in range(len(far)):
            ax = axes[r, c]
            ax.imshow(((imgs[c].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(f"{read['age'][c]:.0f}y {EMOTIONS[int(read['emotion_probs'][c].argmax())][:5]}",
                          fontsize=6)
            if c == 0:
                ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(f"→ {far[c].target_age:.0f}y {far[c].target_emotion}", fontsize=6)
    fig.suptitle("Tuning faces (val rows after the 200 control faces); under each: the referees' reading",
                 fontsize=8)
    fig.tight_layout()
    out = "build/trials/look.png"
    fig.savefig(out, dpi=150)
    print(out)


if __name__ == "__main__":
    main()
