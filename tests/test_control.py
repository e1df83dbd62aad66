"""cff_lib.control: the summary table by hand, the threshold from ArcFace's record, and measure_control on a
tiny untrained model (zero-initialised projection: the edit *is* the reconstruction, reading for reading)."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import random_referees

from cff_lib import control
from cff_lib.composite import read_composite
from cff_lib.conditional_unet import tiny_unet_config
from cff_lib.config import load_profile
from cff_lib.model import build_model
from cff_lib.world import COMPOSITE_NAME, ensure_world, manifest_dir


def _per_sample():
    rows = []
    for variant, ages, emos, probs, ids in [
        ("source", [40, 10], [0, 0], [0.1, 0.2], [1.0, 1.0]),
        ("reconstruction", [30, 20], [0, 1], [0.3, 0.5], [0.9, 0.5]),
        ("edited", [5, 1], [1, 1], [0.8, 0.6], [0.6, 0.3]),
    ]:
        for a, e, p, i in zip(ages, emos, probs, ids, strict=True):
            rows.append({"variant": variant, "age_error": a, "emotion_correct": e, "target_emotion_prob": p,
                         "identity_similarity": i})
    return pd.DataFrame(rows)


def test_control_table_by_hand():
    t = control.control_table(_per_sample(), identity_threshold=0.55).set_index("variant")
    assert t.loc["edited", "age_mae"] == 3.0 and t.loc["reconstruction", "age_mae"] == 25.0
    assert t.loc["reconstruction", "emotion_accuracy"] == 0.5 and t.loc["edited", "emotion_accuracy"] == 1.0
    assert t.loc["edited", "target_emotion_prob"] == pytest.approx(0.7)
    assert t.loc["edited", "identity_similarity"] == pytest.approx(0.45)
    assert t.loc["edited", "same_identity"] == 0.5 and t.loc["reconstruction", "same_identity"] == 0.5
    assert t.loc["source", "same_identity"] == 1.0
    assert "same_identity" not in control.control_table(_per_sample()).columns
    with pytest.raises(ValueError, match="identity_threshold"):
        control.control_table(_per_sample(), identity_threshold=3.0)


def test_control_table_fooling_gap_by_hand():
    df = _per_sample()
    df["age_error_guide"] = df["age_error"] - 2.0  # the guide reads every face 2 years closer to its target
    df["emotion_correct_guide"] = 1.0
    df["identity_similarity_guide"] = 0.9
    t = control.control_table(df).set_index("variant")
    assert t.loc["edited", "fooling_gap_age_y"] == pytest.approx(-2.0)
    assert t.loc["edited", "fooling_gap_emotion_pts"] == pytest.approx(0.0)
    assert t.loc["source", "fooling_gap_emotion_pts"] == pytest.approx(100.0)


def test_oracle_shares_by_hand():
    """closer_than_source counts far-target faces nearer the oracle than their source; closer_than_reconstruction
    the same against each row's own reconstruction (which a softened copy of the source beats)."""
    rows = []
    for variant, mse in [("source", [0.08, 0.08, 0.08]), ("reconstruction", [0.07, 0.07, 0.01]),
                         ("edited", [0.06, 0.075, 0.0])]:
        for r, m in enumerate(mse):
            rows.append({"variant": variant, "row": r, "age_error": 1.0, "emotion_correct": 0.0,
                         "target_emotion_prob": 0.1, "identity_similarity": 1.0, "far_target": r < 2,
                         "oracle_mse": m, "source_oracle_mse": 0.08})
    t = control.control_table(pd.DataFrame(rows)).set_index("variant")
    assert t.loc["edited", "n_far_target"] == 2
    assert t.loc["reconstruction", "closer_than_source"] == 1.0 and t.loc["edited", "closer_than_source"] == 1.0
    assert t.loc["edited", "closer_than_reconstruction"] == 0.5  # row 0 beats 0.07, row 1 does not
    assert t.loc["reconstruction", "closer_than_reconstruction"] == 0.0
    assert np.isnan(t.loc["source", "closer_than_reconstruction"])


def test_bar_chart_has_a_panel_per_metric():
    fig = control.control_bar_chart(control.control_table(_per_sample(), identity_threshold=0.5))
    assert len(fig.axes) == 5
    assert len(control.control_bar_chart(control.control_table(_per_sample())).axes) == 4


def test_identity_threshold_from_the_arcface_record(tmp_path):
    assert control.identity_threshold(tmp_path) is None  # no record: the paper world
    record = {"metrics": {"arcface_threshold_clean": 0.4661}}
    (tmp_path / "arcface.provenance.json").write_text(json.dumps(record))
    with pytest.raises(ValueError):  # not a whole weight record
        control.identity_threshold(tmp_path)


def test_shipped_toy_record_gives_a_cosine_threshold():
    from cff_lib.model import weights_root

    value = control.identity_threshold(weights_root(load_profile("toy")))
    assert value is not None and 0.0 < value < 1.0


def test_untrained_model_edit_reads_exactly_as_the_reconstruction(tmp_path):
    p = load_profile("ci")
    ensure_world(p, progress=False)  # the ci faces (seconds); its composite set is committed
    p = dataclasses.replace(p, ddim=dataclasses.replace(p.ddim, t0=20, n_inv_steps=2, n_gen_steps=2))
    torch.set_num_threads(1)
    model = build_model(p, tmp_path, allow_untrained=True, unet_config=tiny_unet_config(32))
    rows = control.control_rows(read_composite(manifest_dir(p) / COMPOSITE_NAME).split("val"), 3)
    df = control.measure_control(model, p, rows, referees=random_referees(32), progress=False)
    assert len(df) == 4 * len(rows) and set(df["variant"]) == set(control.VARIANTS)
    truth = df[df["variant"] == "oracle"]  # the ceiling row reads the oracle targets: at distance 0 from them
    assert (truth["oracle_mse"] == 0).all() and (truth["source_oracle_mse"] > 0).all()
    recon = df[df["variant"] == "reconstruction"].reset_index(drop=True)
    edited = df[df["variant"] == "edited"].reset_index(drop=True)
    for col in ("age_est", "emotion_est", "target_emotion_prob", "identity_similarity", "age_guide",
                "emotion_guide", "identity_similarity_guide", "oracle_mse", "band_power"):
        assert recon[col].tolist() == edited[col].tolist(), col
    # the oracle is the same person at the target: the source is its own distance from it
    assert (df["source_oracle_mse"] > 0).all() and df["oracle_mse"].notna().all()
    table = control.control_table(df, identity_threshold=0.5,
                                  reference_features=np.stack(df["referee_feature"].to_list()), kid_subset=3)
    assert {"fooling_gap_age_y", "fooling_gap_emotion_pts", "kid", "artefact_ratio"} <= set(table.columns)
    assert table.set_index("variant").loc["source", "artefact_ratio"] == pytest.approx(1.0)
    src = df[df["variant"] == "source"]
    assert (src["identity_similarity"] - 1).abs().max() < 1e-5
    assert df["target_emotion_prob"].between(0, 1).all()


@pytest.mark.slow
def test_the_shipped_toy_model_moves_the_referees_toward_its_targets():
    """Referee-measured control on a few held-out toy faces (``make test-slow``): the edit must read closer to
    its target age and more like its target emotion than the reconstruction does, by the independent
    referees. A floor, not the issue's targets: it catches a model whose edits stopped moving the referees
    or stopped keeping the face (the shipped conditional prior's 200-face table, 2026-12-07: age error 12.2 y
    vs 27.6 y, P(target emotion) 0.86 vs 0.07, identity cosine 0.85 vs 0.997)."""
    from cff_lib.model import load_trained_model
    from cff_lib.referees import load_referees

    torch.set_num_threads(2)
    toy = load_profile("toy")
    ensure_world(toy)
    model = load_trained_model(toy)
    per_face = control.measure_control(model, toy, referees=load_referees(toy), n=16, progress=False)
    t = control.control_table(per_face).set_index("variant")
    assert t.loc["edited", "age_mae"] < t.loc["reconstruction", "age_mae"] - 8.0, t
    assert t.loc["edited", "target_emotion_prob"] > max(0.5, t.loc["reconstruction", "target_emotion_prob"]), t
    assert t.loc["edited", "identity_similarity"] > 0.7, t
