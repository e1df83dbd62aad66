"""Does a trained conditional prior draw the emotion it is told to? (issue 11; errata "A conditional prior")

Editing mixes two questions: whether the model knows what an emotion looks like, and whether an edit from the
source's x_t0 can reach it. This probe asks the first alone. For each of 12 tuning faces (val control rows
200:212, never the held-out control set) it generates from pure noise, one fixed noise per face, under the
conditions "this person (I_ref = the face), at the row's target age, <emotion>" for each of the eight
emotions (caption and emotion prompt, no audio, intensity 1), at classifier-free guidance scales w. The
referees read the 96 faces per w: emotion accuracy against the asked emotion (chance 12.5 %), age error
against the asked age, and the identity referee's verdict against I_ref. A prior that learned the expression
scores well above chance here even if its edits do not; one that did not stays at chance.

OMP_NUM_THREADS=1 .venv/bin/python bench/prior_generation_probe.py VARIANT [W ...]   (default w 1 3 5)
  reads build/trials/VARIANT/clipfacefusion.safetensors (bench/edit_recipe_trials.py VARIANT STEPS)
  -> bench/results/prior_generation_probe/VARIANT.json and build/trials/VARIANT/generation_probe_w{W}.png
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_recipe_trials import TUNING, VARIANTS, variant_profile  # noqa: E402

from cff_lib import control, ddim  # noqa: E402
from cff_lib.captions import caption_from_attributes, source_caption  # noqa: E402
from cff_lib.dataset import load_composite, load_rows  # noqa: E402
from cff_lib.emotions import EMOTIONS  # noqa: E402
from cff_lib.model import build_model  # noqa: E402
from cff_lib.referees import load_referees  # noqa: E402

N_FACES = 12
STEPS = 20  # DDIM steps from x_T (the toy preset's n_gen_steps)


def asked_conditions(rows, emotion: str) -> dict:
    """The rows' conditions with the emotion replaced: caption and prompt name ``emotion``; no audio."""
    return {"caption": [caption_from_attributes(age=r.target_age, emotion=emotion, gender=r.gender) for r in rows],
            "source_caption": [source_caption(r.gender) for r in rows],
            "target_age": [r.target_age for r in rows], "target_emotion": [emotion] * len(rows),
            "intensity": [1.0] * len(rows), "audio": [None] * len(rows)}


def main():
    name = sys.argv[1]
    scales = [float(w) for w in sys.argv[2:]] or [1.0, 3.0, 5.0]
    torch.set_num_threads(1)
    v = VARIANTS[name]
    p = variant_profile(v)
    folder = Path("build/trials") / name
    model = build_model(p, v["weights"])
    model.load_trained(folder / "clipfacefusion.safetensors", check_backends=False)
    model.eval()
    refs = load_referees(p)
    rows = control.control_rows(load_composite(p).split("val"))[TUNING][:N_FACES]
    images, _ = load_rows(p, rows)
    record = {"variant": name, "faces": N_FACES, "ddim_steps": STEPS, "rows": "val control rows 200:212",
              "readings": {}}
    t_start = time.time()
    for w in scales:
        model.unet.guidance_scale = w  # classifier-free guidance (ConditionalUNet.forward)
        asked, grid = [], []
        ages, emos, ident = [], [], []
        for emotion in EMOTIONS:
            with torch.no_grad():
                c = model.condition({**asked_conditions(rows, emotion), "reference": images}).c  # (12, cond_dim)
                noise_gen = torch.Generator().manual_seed(0)  # the same noise for every emotion
                x = ddim.generate(model.unet, c, STEPS, generator=noise_gen).clamp(-1, 1)  # (12, 3, S, S)
            r = refs.read(x)
            ages.append(r["age"])
            emos.append(r["emotion_probs"].argmax(1))
            ident.append(refs.identity_similarity(x, images))
            asked += [EMOTIONS.index(emotion)] * len(rows)
            grid.append(x)
        emos, ages, ident = np.concatenate(emos), np.concatenate(ages), np.concatenate(ident)
        asked = np.array(asked)
        target_age = np.tile([r.target_age for r in rows], len(EMOTIONS))
        confusion = np.zeros((8, 8), dtype=int)
        for a, e in zip(asked, emos, strict=True):
            confusion[a, e] += 1
        record["readings"][f"w{w:g}"] = {
            "emotion_accuracy": float((emos == asked).mean()),
            "age_mae": float(np.abs(ages - target_age).mean()),
            "identity_similarity": float(ident.mean()),
            "verified": float((ident >= refs.identity_threshold).mean()),
            "distinct_emotions_read": int(len(set(emos.tolist()))),
            "confusion_rows_asked_cols_read": confusion.tolist()}
        print(f"w {w:g}:", {k: v for k, v in record["readings"][f"w{w:g}"].items() if "confusion" not in k})
        save_grid(folder / f"generation_probe_w{w:g}.png", images[:6], [g[:6] for g in grid], w, name)
    record["wall_s"] = round(time.time() - t_start, 1)
    out = Path("bench/results/prior_generation_probe")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")


def save_grid(path: Path, sources, per_emotion, w, name):
    """Rows: six faces; columns: the face, then its generation under each asked emotion."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def show(ax, x):
        ax.imshow(((x.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])

    n = sources.shape[0]
    fig, axes = plt.subplots(n, 9, figsize=(9 * 1.1, n * 1.1))
    for i in range(n):
        show(axes[i, 0], sources[i])
        for j, x in enumerate(per_emotion):
            show(axes[i, j + 1], x[i])
    for j, title in enumerate(["I_ref"] + list(EMOTIONS)):
        axes[0, j].set_title(title, fontsize=8)
    fig.suptitle(f"{name}: generated from noise under each asked emotion (w {w:g}, same noise per row)",
                 fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    main()
