import dataclasses

import pytest

from cff_lib.config import ProfileError, list_profiles, load_profile


def test_every_preset_loads_and_is_frozen():
    assert {"ci", "toy", "paper", "paper_method", "paper_hparam"} <= set(list_profiles())
    for name in list_profiles():
        p = load_profile(name)
        assert p.name == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.train.learning_rate = 1.0  # type: ignore[misc]


def test_the_three_paper_parameter_sets_are_named_presets():
    table3, method, hparam = (load_profile(n) for n in ("paper", "paper_method", "paper_hparam"))
    weights = lambda p: (p.loss.lambda_clip, p.loss.lambda_av, p.loss.lambda_age, p.loss.lambda_emo, p.loss.lambda_id)  # noqa: E731
    assert weights(table3) == (0.7, 0.5, 0.4, 0.4, 1.0)
    assert weights(method) == (0.3, 0.2, 0.2, 0.2, 0.3)
    assert weights(hparam) == (0.28, 0.22, 0.2, 0.2, 0.18)
    assert (table3.train.learning_rate, method.train.learning_rate, hparam.train.learning_rate) == (2e-5, 1e-4, 7e-5)
    assert (table3.train.batch_size, hparam.train.batch_size) == (16, 32)
    assert (table3.train.weight_decay, hparam.train.weight_decay) == (0.01, 1e-5)
    assert (table3.ddim.n_gen_steps, method.ddim.n_gen_steps, hparam.ddim.n_gen_steps) == (50, 500, 550)
    assert (hparam.loss.lambda_age_reg, hparam.loss.lambda_emo_reg) == (0.09, 0.06)
    assert (table3.loss.lambda_age_reg, table3.loss.lambda_emo_reg) == (0.1, 0.05)


def test_default_profiles_run_the_synthetic_world():
    for name in ("toy", "ci"):
        p = load_profile(name)
        assert p.data.world == "synthetic" and p.model.backend == "synthetic"
    assert load_profile("paper").data.world == "real"
    assert load_profile("toy").data.mix == {"ffhq": 0.5, "cacd": 0.3, "ravdess": 0.1, "voxceleb": 0.1}


def _write(tmp_path, text):
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    return str(path)


def test_unknown_key_is_rejected_with_its_name(tmp_path):
    path = _write(tmp_path, "extends: ci\ntrain:\n  learning_rat: 0.1\n")
    with pytest.raises(ProfileError, match=r"train.*learning_rat"):
        load_profile(path)


def test_wrong_type_is_rejected_with_its_name(tmp_path):
    path = _write(tmp_path, "extends: ci\ntrain:\n  batch_size: sixteen\n")
    with pytest.raises(ProfileError, match=r"train\.batch_size: expected int"):
        load_profile(path)


def test_invalid_values_are_rejected(tmp_path):
    with pytest.raises(ProfileError, match="t0"):
        load_profile(_write(tmp_path, "extends: ci\nddim:\n  t0: 1200\n"))
    with pytest.raises(ProfileError, match="mix"):
        bad_mix = "extends: ci\ndata:\n  mix: {ffhq: 0.9, cacd: 0.3, ravdess: 0.1, voxceleb: 0.1}\n"
        load_profile(_write(tmp_path, bad_mix))


def test_missing_profile_names_it():
    with pytest.raises(ProfileError, match="'nope' does not exist"):
        load_profile("nope")


def test_overrides_inherit_and_fingerprint_changes(tmp_path):
    base = load_profile("ci")
    custom = load_profile(_write(tmp_path, "extends: ci\ntrain:\n  learning_rate: 0.5\n"))
    assert custom.train.learning_rate == 0.5 and custom.train.batch_size == base.train.batch_size
    assert custom.fingerprint() != base.fingerprint()
