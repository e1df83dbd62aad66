"""Overlays: Table 7's rows and Table 8's sweep as validated changes to a profile (cff_lib.overlays)."""
import dataclasses

import pytest

from cff_lib import overlays
from cff_lib.config import ModelConfig, ProfileError, load_profile
from cff_lib.overlays import ABLATIONS, SWEEP, OverlayError, apply_overlay

TABLE7 = ["full", "w/o audio", "w/o age", "w/o emotion", "w/o text", "w/o multi-modal fusion",
          "w/o audio-visual alignment", "w/o age & emotion losses", "w/o identity preservation", "w/o CMC loss",
          "w/o I_ref integration"]


@pytest.fixture(scope="module")
def ci():
    return load_profile("ci")


def test_table7_has_its_eleven_rows_in_order_and_each_fits_every_preset(ci):
    assert [v.name for v in ABLATIONS.values()] == TABLE7
    for name in ("ci", "toy", "paper", "paper_method", "paper_hparam"):
        base = load_profile(name)
        prints = {v.key: v.apply(base).fingerprint() for v in overlays.ablations(base)}
        assert prints["full"] == base.fingerprint()
        assert len(set(prints.values())) == 11, "two rows resolve to the same configuration"


def test_rows_use_existing_settings_where_they_can(ci):
    row = {k: v.apply(ci) for k, v in ABLATIONS.items()}
    assert (row["no_age_emotion_losses"].loss.lambda_age, row["no_age_emotion_losses"].loss.lambda_emo) == (0, 0)
    assert row["no_identity"].loss.lambda_id == 0.0 and row["no_cmc"].loss.lambda_cross_modal == 0.0
    assert row["no_av_alignment"].loss.lambda_av == 0.0 and row["no_av_alignment"].model.av_alignment is False
    assert row["no_audio"].model.drop_inputs == ("audio",) and row["no_text"].model.drop_inputs == ("text",)
    assert row["no_fusion"].model.fusion == "mean"
    assert row["no_reference"].model.reference_in_condition is False
    for key in ("no_age_emotion_losses", "no_identity", "no_cmc"):  # only the loss section moves
        assert row[key].model == ci.model and row[key].ddim == ci.ddim and row[key].train == ci.train


def test_no_row_waits_for_the_model_now_that_it_honours_every_switch(ci):
    assert overlays.PENDING_MODEL_SWITCHES == frozenset()
    assert {k: v.needs_model for k, v in ABLATIONS.items() if v.needs_model} == {}
    assert all(overlays.pending_switches(v.apply(ci)) == [] for v in ABLATIONS.values())
    assert all(v.note for v in ABLATIONS.values())


def test_registry_records_which_rows_wait_for_a_switch_the_model_does_not_read(ci, monkeypatch):
    monkeypatch.setattr(overlays, "PENDING_MODEL_SWITCHES",
                        frozenset({"model.drop_inputs", "model.fusion", "model.av_alignment",
                                   "model.reference_in_condition"}))
    waiting = {k: v.needs_model for k, v in ABLATIONS.items() if v.needs_model}
    assert waiting == {"no_audio": ("model.drop_inputs",), "no_age": ("model.drop_inputs",),
                       "no_emotion": ("model.drop_inputs",), "no_text": ("model.drop_inputs",),
                       "no_fusion": ("model.fusion",), "no_av_alignment": ("model.av_alignment",),
                       "no_reference": ("model.reference_in_condition",)}
    assert overlays.pending_switches(ci) == []
    assert overlays.pending_switches(ABLATIONS["no_fusion"].apply(ci)) == ["model.fusion='mean'"]
    assert overlays.pending_switches(ABLATIONS["no_audio"].apply(ci)) == ["model.drop_inputs=['audio']"]


def test_new_switches_at_their_defaults_keep_every_fingerprint():
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.metadata.get("later")}
    assert defaults == {"drop_inputs": (), "fusion": "attention", "av_alignment": True,
                        "reference_in_condition": True}
    restated = {"model": {"drop_inputs": [], "fusion": "attention", "av_alignment": True,
                          "reference_in_condition": True}}
    for name in ("ci", "toy", "paper"):
        base = load_profile(name)
        assert apply_overlay(base, restated).fingerprint() == base.fingerprint()
        assert not set(defaults) & set(base.settings()["model"])


def test_apply_overlay_returns_a_new_frozen_profile_and_leaves_both_inputs_alone(ci):
    overlay = {"loss": {"lambda_id": 0.8}, "ddim": {"n_gen_steps": 7}}
    before = ci.to_dict()
    out = apply_overlay(ci, overlay)
    assert out is not ci and out.loss.lambda_id == 0.8 and out.ddim.n_gen_steps == 7
    assert out.loss.lambda_av == ci.loss.lambda_av and out.name == ci.name
    assert ci.to_dict() == before and overlay == {"loss": {"lambda_id": 0.8}, "ddim": {"n_gen_steps": 7}}
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.loss.lambda_id = 1.0  # type: ignore[misc]
    assert apply_overlay(ci, {}) == ci
    assert apply_overlay(ci, {"loss": {"lambda_id": 1}}).loss.lambda_id == 1.0  # an int is a float, as in YAML


@pytest.mark.parametrize("overlay, message", [
    ({"loss": {"lambda_idd": 0.8}}, r"overlay\.loss: unknown key\(s\) lambda_idd"),
    ({"los": {"lambda_id": 0.8}}, r"'los' is not a section"),
    ({"name": "other"}, r"'name' is not a section"),
    ({"loss": {"lambda_id": "0.8"}}, r"overlay\.loss\.lambda_id: expected float, got str '0\.8'"),
    ({"train": {"batch_size": True}}, r"overlay\.train\.batch_size: expected int, got bool"),
    ({"ddim": {"n_gen_steps": 20.0}}, r"overlay\.ddim\.n_gen_steps: expected int, got float"),
    ({"loss": 0.8}, r"overlay\.loss: expected a mapping"),
    ({"ddim": {"t0": 1200}}, r"ddim\.t0 must lie in \[1, 999\]"),
    ({"model": {"drop_inputs": ["voice"]}}, r"model\.drop_inputs must list each of text\|audio\|age\|emotion"),
    ({"model": {"drop_inputs": ["age", "age"]}}, r"model\.drop_inputs"),
    ({"model": {"drop_inputs": [{"audio": 1}]}}, r"model\.drop_inputs must list"),
    ({"model": {"drop_inputs": "audio"}}, r"overlay\.model\.drop_inputs: expected a list"),
    ({"model": {"fusion": "concat"}}, r"model\.fusion must be attention\|mean"),
    ({"model": {"av_alignment": "no"}}, r"overlay\.model\.av_alignment: expected bool"),
])
def test_bad_overlays_are_errors_naming_the_key(ci, overlay, message):
    with pytest.raises(OverlayError, match=message) as err:
        apply_overlay(ci, overlay, label="my row")
    assert isinstance(err.value, ProfileError) and str(err.value).startswith("my row on ci")


def test_an_overlay_must_be_a_mapping(ci):
    with pytest.raises(OverlayError, match="must be a mapping"):
        apply_overlay(ci, [("loss", {})])
    with pytest.raises(OverlayError, match="section 'loss' must be a mapping"):
        overlays.Variant(name="x", key="x", overlay={"loss": 1.0})


def test_unknown_ablation_names_it_and_lists_the_rows():
    assert overlays.ablation("W/O Audio") is ABLATIONS["no_audio"] is overlays.ablation("no_audio")
    assert overlays.ablation("w/o I_ref integration").key == "no_reference"
    with pytest.raises(OverlayError, match=r"unknown ablation 'w/o voice'.*no_audio \(w/o audio\)"):
        overlays.ablation("w/o voice")
    with pytest.raises(OverlayError, match="unknown ablation 'nope'"):
        overlays.ablations(names=["no_age", "nope"])


def test_registry_overlays_are_read_only():
    with pytest.raises(TypeError):
        ABLATIONS["no_identity"].overlay["loss"]["lambda_id"] = 1.0  # type: ignore[index]
    assert overlays.thaw(ABLATIONS["no_audio"].overlay) == {"model": {"drop_inputs": ["audio"]}}


def test_table8_sweep_one_setting_at_a_time(ci):
    assert {k: s.values for k, s in SWEEP.items()} == {
        "lambda_id": (0.8, 1.0, 1.4), "lambda_av": (0.2, 0.5, 0.8), "lambda_age": (0.2, 0.4, 0.7),
        "lambda_emo": (0.2, 0.4, 0.7), "ddim_steps": (20, 50, 100), "learning_rate": (1e-5, 2e-5, 3e-5)}
    points = overlays.sweep_points(ci)
    assert len(points) == 18 and len({p.key for p in points}) == 18
    for p in points:
        changed = {k for k, v in overlays.flatten(p.overlay).items()}
        assert changed <= {"loss.lambda_id", "loss.lambda_av", "loss.lambda_age", "loss.lambda_emo",
                           "ddim.n_inv_steps", "ddim.n_gen_steps", "train.learning_rate"}
        assert len({k.split(".")[0] for k in changed}) == 1
    steps = [p for p in points if p.key.startswith("ddim_steps=")]
    assert [p.apply(ci).ddim.n_gen_steps for p in steps] == [20, 50, 100]
    assert all(p.apply(ci).ddim.n_inv_steps == p.apply(ci).ddim.n_gen_steps for p in steps)
    assert all(p.inference_only for p in steps) and not any(p.inference_only for p in points if p not in steps)
    assert SWEEP["ddim_steps"].inference_only and not SWEEP["learning_rate"].inference_only
    assert not ABLATIONS["full"].inference_only


def test_a_sweep_point_at_the_base_value_is_the_base(ci):
    at_base = SWEEP["lambda_id"].point(ci.loss.lambda_id)
    assert at_base.apply(ci).fingerprint() == ci.fingerprint()
    assert SWEEP["lambda_id"].point(1.4).apply(ci).fingerprint() != ci.fingerprint()


@pytest.mark.parametrize("values, message", [
    ({"lambda_id": ["0.8"]}, r"λ_ID = 0\.8 on ci: overlay\.loss\.lambda_id: expected float, got str"),
    ({"ddim_steps": [20.0]}, r"DDIM steps = 20\.0 on ci: overlay\.ddim\.n_inv_steps: expected int, got float"),
    ({"learning_rate": [True]}, r"overlay\.train\.learning_rate: expected float, got bool"),
    ({"ddim_steps": [2000]}, r"ddim\.n_inv_steps must lie in \[1, t0\]"),
    ({"lambda_id": 0.8}, r"'lambda_id': values must be a non-empty list"),
    ({"lambda_id": []}, r"'lambda_id': values must be a non-empty list"),
])
def test_sweep_values_of_the_wrong_type_are_errors_naming_the_setting(ci, values, message):
    with pytest.raises(OverlayError, match=message):
        overlays.sweep_points(ci, values=values)


def test_unknown_sweep_settings_are_errors(ci):
    with pytest.raises(OverlayError, match=r"unknown sweep setting 'lambda_xx'.*lambda_id \(λ_ID\)"):
        overlays.sweep_points(ci, settings=["lambda_xx"])
    with pytest.raises(OverlayError, match=r"values given for \['lambda_av'\]"):
        overlays.sweep_points(ci, settings=["lambda_id"], values={"lambda_av": [0.1]})
    assert len(overlays.sweep_points(ci, settings=["λ_ID"], values={"lambda_id": [0.5, 0.6]})) == 2


def test_split_overlay_separates_inference_settings():
    training, inference = overlays.split_overlay({"loss": {"lambda_id": 0.8}, "ddim": {"n_gen_steps": 9, "t0": 300}})
    assert training == {"loss": {"lambda_id": 0.8}, "ddim": {"t0": 300}}
    assert inference == {"ddim": {"n_gen_steps": 9}}
    assert overlays.nest(overlays.flatten({"a": {"b": 1}})) == {"a": {"b": 1}}
    with pytest.raises(OverlayError, match="'lambda_id' must be 'section.key'"):
        overlays.nest({"lambda_id": 1.0})
