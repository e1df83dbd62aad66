"""Are a guide's gradients semantic? Attack it toward a target and ask the referees what changed.

For held-out clean renders (a seed stream no guide, referee or DDPM trained on), L2 PGD
(:func:`cff_lib.robustness.l2_pgd`, no random start) pushes each guide set toward a target: EmoEst toward
another emotion (log-probability of the target), AgeEst 30 years older or younger. Per budget it reports how
often the *guide* then reads the target and how often the independent *referee* does. A guide whose attack
fools only itself has noise gradients (what the toy ClipFaceFusion's edits followed); one whose attack also
moves the referee has gradients that change the face. A picture of the attacked faces is written too, to look
at: the amplified difference shows whether the change sits on the mouth and brows or everywhere as noise.

OMP_NUM_THREADS=1 .venv/bin/python bench/guide_gradient_probe.py --guides weights/synthetic \\
    --guides build/robust_guides --out bench/results/guide_gradient_probe
"""
import argparse
import json
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cff_lib.ages import AGE_MAX, AGE_MIN  # noqa: E402
from cff_lib.atomic import atomic_path, atomic_write_text  # noqa: E402
from cff_lib.config import load_profile  # noqa: E402
from cff_lib.emotions import EMOTIONS  # noqa: E402
from cff_lib.face_banks import render_bank  # noqa: E402
from cff_lib.provenance import make_stamp  # noqa: E402
from cff_lib.referees import load_referees  # noqa: E402
from cff_lib.robustness import l2_pgd  # noqa: E402
from cff_lib.vision_models import load_vision_models  # noqa: E402

PROBE_STREAM = 0x9B0BE  # a render stream of its own (the training banks use 1 and 2, the referees theirs)


def probe(guides, refs, bank, targets, older, radius: float, steps: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Attack ``guides`` at one L2 ``radius``; returns (readings, emotion-attacked images, age-attacked)."""
    x0 = bank.floats(torch.arange(len(bank)))
    emo = l2_pgd(lambda z: F.log_softmax(guides.emotion(z).logits, 1).gather(1, targets[:, None])[:, 0],
                 x0, radius, steps, random_start=False)
    sign = older.float() * 2 - 1  # +1: push older, -1: younger
    age = l2_pgd(lambda z: sign * guides.age(z).age, x0, radius, steps, random_start=False)
    with torch.no_grad():
        g0, g_emo = guides.emotion(x0).logits.argmax(1), guides.emotion(emo).logits.argmax(1)
        ga0, ga = guides.age(x0).age, guides.age(age).age
    r0, r_emo, ra = refs.read(x0), refs.read(emo), refs.read(age)
    t = targets.numpy()
    out = {
        "radius": radius,
        "rms_change_emotion": float((emo - x0).pow(2).mean().sqrt()),
        "guide_reads_target_emotion": float((g_emo == targets).float().mean()),
        "guide_reads_target_emotion_before": float((g0 == targets).float().mean()),
        "referee_reads_target_emotion": float((r_emo["emotion_probs"].argmax(1) == t).mean()),
        "referee_reads_target_emotion_before": float((r0["emotion_probs"].argmax(1) == t).mean()),
        "referee_p_target_before": float(r0["emotion_probs"][np.arange(len(t)), t].mean()),
        "referee_p_target_after": float(r_emo["emotion_probs"][np.arange(len(t)), t].mean()),
        "guide_age_shift_toward_target_y": float((sign * (ga - ga0)).mean()),
        "referee_age_shift_toward_target_y": float((sign.numpy() * (ra["age"] - r0["age"])).mean()),
        "referee_identity_cos_emotion_attack": float(refs.identity_similarity(x0, emo).mean()),
    }
    return out, emo, age


def figure(x0, attacked: dict[str, torch.Tensor], radius: float, targets, n: int = 8):
    """Rows: source, then per guide set the attacked face and its difference (×8, around grey)."""
    rows = [("source", x0[:n])]
    for name, x in attacked.items():
        rows += [(f"{name}: attacked", x[:n]), (f"{name}: diff ×8", ((x - x0) * 8).clamp(-1, 1)[:n])]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.2 * len(rows)))
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(((imgs[c].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(f"→ {EMOTIONS[int(targets[c])]}", fontsize=6)
    fig.suptitle(f"L2 PGD toward a target emotion at radius {radius} (images in [-1, 1]); held-out renders",
                 fontsize=8)
    fig.tight_layout()
    return fig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="toy")
    ap.add_argument("--guides", action="append", required=True, help="a guide weights folder (repeatable)")
    ap.add_argument("--n", type=int, default=48, help="held-out faces")
    ap.add_argument("--radii", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    ap.add_argument("--steps", type=int, default=10, help="PGD steps")
    ap.add_argument("--out", default="bench/results/guide_gradient_probe", help="stem of the .json and .png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    profile = load_profile(args.profile)
    refs = load_referees(profile)
    bank = render_bank(profile.train.seed, PROBE_STREAM, args.n, 1, profile.data.image_size, clean=True,
                       name="probe renders")
    g = torch.Generator().manual_seed(0)
    targets = (bank.emotion + torch.randint(1, len(EMOTIONS), (len(bank),), generator=g)) % len(EMOTIONS)
    older = (bank.age < (AGE_MIN + AGE_MAX) / 2)  # the young get older, the old younger (room to move)
    results, t_start = {}, time.time()
    attacked_at: dict[float, dict[str, torch.Tensor]] = {r: {} for r in args.radii}
    for folder in args.guides:
        guides = load_vision_models(folder)
        rows = []
        for radius in args.radii:
            row, emo, _ = probe(guides, refs, bank, targets, older, radius, args.steps)
            rows.append(row)
            attacked_at[radius][folder] = emo
            print(folder, json.dumps(row))
        results[folder] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"results": results, "n_faces": args.n, "pgd_steps": args.steps, "stream": PROBE_STREAM,
              "wall_s": round(time.time() - t_start, 1), "provenance": make_stamp(profile).to_dict()}
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    x0 = bank.floats(torch.arange(len(bank)))
    radius = args.radii[len(args.radii) // 2]
    fig = figure(x0, attacked_at[radius], radius, targets)
    with atomic_path(out.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=160)
    print("wrote", out.with_suffix(".json"), out.with_suffix(".png"))


if __name__ == "__main__":
    main()
