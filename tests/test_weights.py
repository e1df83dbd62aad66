"""Weight files with provenance: save / verify / load round trip, tampering, wrong architectures."""
import dataclasses
import json

import pytest
import torch

from cff_lib.config import load_profile
from cff_lib.estimators import AgeEstimator, EmotionEstimator, EstimatorConfig, create_age_estimator
from cff_lib.weights import (
    PretrainReport,
    load_state_into,
    load_verified,
    read_record,
    save_weights,
    verified_path,
    verify_weights,
)

TINY = EstimatorConfig(widths=(4, 4, 8, 8), input_size=16, feature_dim=16)


@pytest.fixture(scope="module")
def profile():
    return load_profile("ci")


def test_round_trip(tmp_path, profile):
    net = AgeEstimator(TINY)
    rec = save_weights(net, tmp_path / "age_estimator", profile=profile, command="make it", metrics={"mae": 3},
                       config={"steps": 5})
    st, js = tmp_path / "age_estimator.safetensors", tmp_path / "age_estimator.provenance.json"
    assert st.is_file() and js.is_file()
    assert rec.kind == "AgeEstimator" and rec.size_bytes == st.stat().st_size and rec.profile == "ci"
    assert rec.fingerprint == profile.training_fingerprint() and rec.metrics == {"mae": 3.0}
    assert rec.config["steps"] == 5 and rec.config["architecture"]["widths"] == [4, 4, 8, 8]
    assert read_record(st) == rec and json.loads(js.read_text())["command"] == "make it"
    assert verify_weights(tmp_path, expected=("age_estimator",)) == []
    loaded = load_verified(tmp_path / "age_estimator.safetensors", kind="AgeEstimator")
    assert torch.equal(loaded.tensors["age_head.weight"], net.age_head.weight)
    again = create_age_estimator("synthetic", verified_path(tmp_path / "age_estimator"))
    assert again.config == TINY
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(again(x).age, net.eval()(x).age)


def test_plain_module_and_tensors(tmp_path, profile):
    lin = torch.nn.Linear(3, 4)
    save_weights(lin, tmp_path / "lin", profile=profile, command="c", metrics={}, config={"width": 4})
    other = load_state_into(torch.nn.Linear(3, 4), tmp_path / "lin")
    assert torch.equal(other.weight, lin.weight)
    with pytest.raises(ValueError, match=r"lin\.safetensors does not fit Linear.*shape"):
        load_state_into(torch.nn.Linear(3, 5), tmp_path / "lin")
    save_weights({"a": torch.ones(2)}, tmp_path / "t.safetensors", profile=profile, command="c", metrics={})
    assert load_verified(tmp_path / "t").config == {}
    with pytest.raises(ValueError, match="module_or_tensors"):
        save_weights([1, 2], tmp_path / "bad", profile=profile, command="c", metrics={})
    with pytest.raises(ValueError, match="command"):
        save_weights(lin, tmp_path / "bad", profile=profile, command=" ", metrics={})


def test_tampered_file_is_reported_and_refused(tmp_path, profile):
    save_weights(AgeEstimator(TINY), tmp_path / "age", profile=profile, command="regen", metrics={})
    st = tmp_path / "age.safetensors"
    data = bytearray(st.read_bytes())
    data[-1] ^= 0xFF
    st.write_bytes(bytes(data))
    problems = verify_weights(tmp_path)
    assert len(problems) == 1 and "age.safetensors" in problems[0] and "sha256 mismatch" in problems[0]
    with pytest.raises(ValueError, match=r"age\.safetensors: sha256 mismatch.*[0-9a-f]{64}.*[0-9a-f]{64}"):
        load_verified(st)


def test_missing_pieces(tmp_path, profile):
    save_weights(AgeEstimator(TINY), tmp_path / "a", profile=profile, command="c", metrics={})
    save_weights(AgeEstimator(TINY), tmp_path / "b", profile=profile, command="c", metrics={})
    (tmp_path / "a.provenance.json").unlink()
    (tmp_path / "b.safetensors").unlink()
    (tmp_path / "c.provenance.json").write_text("{not json")
    problems = "\n".join(verify_weights(tmp_path, expected=("d",)))
    for name in ("a.safetensors", "b.safetensors", "d.safetensors"):
        assert name in problems
    assert verify_weights(tmp_path / "nowhere")[0].endswith("weights folder is missing")
    with pytest.raises(FileNotFoundError, match="provenance record"):
        load_verified(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"b\.safetensors is missing"):
        load_verified(tmp_path / "b")


def test_wrong_architecture_and_corrupt_file(tmp_path, profile):
    save_weights(EmotionEstimator(TINY), tmp_path / "emo", profile=profile, command="c", metrics={})
    with pytest.raises(ValueError, match=r"emo\.safetensors holds a 'EmotionEstimator' checkpoint, expected "
                                         r"'AgeEstimator'"):
        load_verified(tmp_path / "emo", kind="AgeEstimator")
    with pytest.raises(ValueError, match="EmotionEstimator"):
        create_age_estimator("synthetic", verified_path(tmp_path / "emo"))
    # a corrupt file whose record matches it (e.g. truncated before the record was written)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    rec = json.loads((tmp_path / "emo.provenance.json").read_text())
    from cff_lib.weights import sha256_file

    rec.update(name="bad", file="bad.safetensors", sha256=sha256_file(bad), size_bytes=bad.stat().st_size)
    (tmp_path / "bad.provenance.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a readable safetensors file"):
        load_verified(bad)


def test_pretrain_report_is_frozen():
    r = PretrainReport("clip", {"top1": 0.5}, 1.0, 3, ("w.safetensors",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.steps = 4
