"""cff_lib.claims_evaluation: the claims ledger filled from an evaluation."""
import numpy as np

from cff_lib import claims_evaluation, evaluation
from cff_lib.config import load_profile


def _fake_eval(seeds, a, b):
    per_seed = {evaluation.CFF: {k: list(a) for k in evaluation.METRIC_NAMES},
                evaluation.TEXT_ONLY: {k: list(b) for k in evaluation.METRIC_NAMES}}
    per_sample = {m: {k: [np.asarray(v[k])] for k in v} for m, v in per_seed.items()}
    return evaluation.Evaluation(tuple(seeds), per_seed, per_sample, {s: ["x"] for s in seeds}, 0.0)


def test_claims_measured_keys_only_measured_rows():
    from cff_lib.claims import load_claims

    ev = _fake_eval([42, 43], [0.9, 0.8], [0.7, 0.72])
    claims = load_claims()
    measured, reasons = claims_evaluation.claims_measured(ev, claims, load_profile("ci"))
    rows = {k[1] for k in measured if k[0] in ("Table 4", "Table 5")}
    assert rows == {"ClipFaceFusion", "DiffusionCLIP"}
    assert not set(measured) & set(reasons)
    assert all(isinstance(v[2], str) and v[2] for v in measured.values())



def test_write_report_writes_the_measured_means_beside_the_paper(tmp_path):
    ev = _fake_eval([42, 43], [0.9, 0.8], [0.7, 0.72])
    text = claims_evaluation.write_report(tmp_path, ev, load_profile("ci"))
    assert (tmp_path / claims_evaluation.REPORT_NAME).read_text() == text
    assert "(profile ci)" in text
    for method, mean in (("ClipFaceFusion", 0.85), ("DiffusionCLIP", 0.71)):  # the means over the two seeds
        rows = [ln.split(" | ") for ln in text.splitlines() if ln.startswith(f"| {method} | SSIM ")]
        assert rows and all(float(cells[6]) == mean for cells in rows), (method, rows)


def test_a_rehearsal_report_is_stamped_and_calls_nothing_reproduced(tmp_path):
    """paper_rehearsal is the paper world on random weights: its report says REHEARSAL and judges as a
    stand-in (a random-weight mean that lands within the paper's ± must not read "reproduced")."""
    from cff_lib.provenance import REHEARSAL_NOTE

    ev = _fake_eval([42], [0.9], [0.7])
    text = claims_evaluation.write_report(tmp_path, ev, load_profile("paper_rehearsal"))
    assert text.startswith(f"# {REHEARSAL_NOTE}") and "stand-in run" in text
    assert "| reproduced" not in text
    assert "REHEARSAL" not in claims_evaluation.write_report(tmp_path, ev, load_profile("paper"))
