"""The claims ledger filled from an evaluation: the numbers notebooks 06 and 07 set beside the paper's.

:func:`claims_measured` maps an :class:`cff_lib.evaluation.Evaluation` (and Table 6's paired tests) onto the
ledger's claims (``cff_lib/paper_claims.yaml``): Tables 4-5 rows ClipFaceFusion and DiffusionCLIP (= the
text-only baseline), Table 6, and Table 3's settings read from the paper preset; every other claim gets a
reason. :func:`write_report` writes ``claims_report.md`` with :func:`cff_lib.claims.write_claims_report`;
:func:`quoted_table` shows the paper's printed values as a clearly labelled quoted table.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cff_lib.evaluation import CFF, TEXT_ONLY, Evaluation

CLAIM_COLUMNS = {"SSIM": ("ssim", 1.0), "LPIPS": ("lpips", 1.0), "S_dir": ("s_dir", 1.0),
                 "Age Acc": ("age_acc", 1.0), "Emo Acc": ("emo_acc", 1.0), "FID": ("identity_similarity", 1.0),
                 "CMC": ("cmc", 1.0), "CLIPScore": ("clip_score", 1.0),
                 "Text–Image Cosine Similarity": ("text_image_cosine", 1.0)}
CLAIM_ROWS = {"ClipFaceFusion": CFF, "DiffusionCLIP": TEXT_ONLY}


def claims_measured(ev: Evaluation, claims, profile, ttests=None) -> tuple[dict, dict]:
    """(measured, reasons) for ``claims.write_claims_report``: Tables 4-5 rows ClipFaceFusion and
    DiffusionCLIP (= our text-only baseline) and Table 6 from ``ttests``; every other claim a reason."""
    measured, reasons = {}, {}
    prov = (f"profile {profile.name}, seeds {list(ev.seeds)}, {len(next(iter(ev.rows.values())))} held-out "
            "faces per seed, cff_lib.evaluation.evaluate; attributes, identity and CLIP metrics read by the "
            "referees (cff_lib.referees), never by the loss's guides")
    t6 = {"Emotion accuracy": "emo_acc", "Age accuracy": "age_acc", "CMC": "cmc_image"}
    for c in claims:
        if c.table in ("Table 4", "Table 5") and c.row in CLAIM_ROWS and c.column in CLAIM_COLUMNS:
            metric, method = CLAIM_COLUMNS[c.column][0], CLAIM_ROWS[c.row]
            m, s = _nan_mean_std(ev.per_seed[method][metric])
            if math.isfinite(m):
                note = ("" if c.row == "ClipFaceFusion"
                        else "; DiffusionCLIP = our text-only baseline, same pretrained DDPM")
                note += "; LPIPS(referees), not LPIPS-alex" if metric == "lpips" else ""
                measured[c.key] = (m, s, prov + note)
            else:
                reasons[c.key] = "CMC is not defined for a text-only method (one modality; cff_lib.evaluation)"
        elif c.table == "Table 6" and ttests is not None and c.row in t6:
            row = ttests[ttests["metric"] == t6[c.row]]
            if len(row) == 0:
                reasons[c.key] = "metric not in the t-test table"
                continue
            r = row.iloc[0]
            val = {"ClipFaceFusion mean": r["mean_a"], "Baseline mean": r["mean_b"], "t-value": r["t"],
                   "p-value": r["p_holm"]}.get(c.column)
            note = "; CMC as cmc_image (image-grounded, our definition)" if c.row == "CMC" else ""
            if val is None or not math.isfinite(float(val)):
                reasons[c.key] = f"{c.column} is not finite with these pairs (n = {int(r['n'])})"
            else:
                measured[c.key] = (float(val), None, prov + f"; paired {r['pairs']}, Holm-adjusted p" + note)
        elif c.table == "Table 3" and c.row in TABLE3_SETTINGS:
            measured[c.key] = (_setting(TABLE3_SETTINGS[c.row]), None, "setting of cff_lib/presets/paper.yaml "
                               f"(load_profile('paper').{TABLE3_SETTINGS[c.row]}); read, not trained here")
        elif c.not_reproducible is None:
            reasons[c.key] = ("not measured by notebooks 06/07: ablations (Table 7), parameter sweeps (Table 8) "
                              "and settings outside the paper preset are outside this evaluation")
    return measured, reasons


TABLE3_SETTINGS = {"Learning rate": "train.learning_rate", "Batch size": "train.batch_size",
                   "Weight decay": "train.weight_decay", "Dropout": "model.dropout", "DDIM steps": "ddim.n_gen_steps",
                   "λ_ID": "loss.lambda_id", "λ_AV": "loss.lambda_av", "λ_Age": "loss.lambda_age",
                   "λ_Emo": "loss.lambda_emo", "λ_CLIP": "loss.lambda_clip", "Random seed (global)": "train.seed",
                   "Random seed (audio)": "train.audio_seed", "Random seed (DDIM)": "train.ddim_seed"}


def _setting(dotted: str) -> float:
    from cff_lib.config import load_profile

    obj = load_profile("paper")
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return float(obj)


def _nan_mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    v = np.asarray(values, dtype=float)
    if np.isnan(v).all():
        return float("nan"), None
    v = v[~np.isnan(v)]
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def quoted_table(tables: Sequence[str] = ("Table 4", "Table 5")):
    """The paper's printed values (claims ledger), one row per method, in a clearly labelled quoted table."""
    import pandas as pd

    from cff_lib.claims import load_claims

    rows: dict[tuple[str, str], dict[str, str]] = {}
    for c in load_claims():
        if c.table in tables:
            key = (c.table, c.row)
            rows.setdefault(key, {"table": c.table, "method": c.row, "source": "paper-reported (quoted)"})
            rows[key][f"{c.column} {c.direction}".strip()] = c.cell
    return pd.DataFrame(list(rows.values())).fillna("")


REPORT_NAME = "claims_report.md"


def write_report(figures_root, ev: Evaluation, profile, ttests=None) -> str:
    """Write ``figures_root/claims_report.md`` (claims.write_claims_report) and return its text. A stand-in
    run never calls a claim reproduced: the synthetic world, and a rehearsal (``runner.rehearsal``: random
    weights of the paper world, whose title then starts with the REHEARSAL note)."""
    from cff_lib.claims import SYNTHETIC_WORLD, load_claims, write_claims_report
    from cff_lib.provenance import REHEARSAL_NOTE

    claims = load_claims()
    measured, reasons = claims_measured(ev, claims, profile, ttests)
    rehearsal = bool(profile.runner.rehearsal)
    title = f"Paper claims vs regenerated values (profile {profile.name})"
    stand_in = SYNTHETIC_WORLD if profile.data.world == "synthetic" else None
    if rehearsal:
        title, stand_in = f"{REHEARSAL_NOTE} · {title}", stand_in or REHEARSAL_NOTE
    path = write_claims_report(Path(figures_root) / REPORT_NAME, claims, measured, reasons, title=title,
                               stand_in=stand_in)
    return path.read_text()


__all__ = ["CLAIM_COLUMNS", "CLAIM_ROWS", "REPORT_NAME", "TABLE3_SETTINGS", "claims_measured", "quoted_table",
           "write_report"]
