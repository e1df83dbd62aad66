"""The claims ledger (cff_lib/paper_claims.yaml) against the paper's text, and the verdict logic."""
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from cff_lib.claims import Claim, claims_report, judge, load_claims, write_claims_report

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / ".." / "shared" / "paper" / "ClipFaceFusion.md"

# Where each table's text starts, and what follows it.
REGIONS = {
    "Table 3": ("Table 3A comprehensive overview", "\n"),
    "Table 4": ("Table 4. Comparison of semantic coherence", "\n"),
    "Table 5": ("Table 5. Quantitative comparison", "The competitive advantage"),
    "Table 6": ("Table 6t-test results", "\n"),
    "Table 7": ("Table 7. Ablation results", "\n"),
    "Table 8": ("Table 8. Impact of principal hyperparameters", "\n"),
    "User study": ("\nUser study\n", "\nConclusion"),
}


@pytest.fixture(scope="module")
def claims():
    return load_claims()


@pytest.fixture(scope="module")
def regions():
    if not PAPER.is_file():
        pytest.skip(f"paper text not found at {PAPER} (expected ../shared/paper/ClipFaceFusion.md beside the repo)")
    text = PAPER.read_text(encoding="utf-8")
    out = {}
    for table, (start, end) in REGIONS.items():
        i = text.index(start)
        j = text.index(end, i + len(start))
        out[table] = text[i:j]
    return out


def _norm(s: str) -> str:
    return re.sub(r"[\s,]", "", s)


def _first_number(cell: str) -> float:
    return float(re.search(r"\d+(?:\.\d+)?(?:e-?\d+)?", cell).group(0))


def test_table_shapes(claims):
    per_table = Counter(c.table for c in claims)
    assert per_table == {"Table 3": 13, "Table 4": 6 * 2, "Table 5": 7 * 7, "Table 6": 3 * 4,
                         "Table 7": 11 * 7, "Table 8": 18 * 4, "User study": 13}
    rows = defaultdict(set)
    for c in claims:
        rows[c.table].add(c.row)
    assert len(rows["Table 4"]) == 6 and len(rows["Table 5"]) == 7 and len(rows["Table 6"]) == 3
    assert len(rows["Table 7"]) == 11 and len(rows["Table 8"]) == 18
    for table in ("Table 4", "Table 7", "Table 8"):
        assert all(c.pm is not None for c in claims if c.table == table), table
    assert all(c.pm is None for c in claims if c.table in ("Table 5", "Table 6"))


def test_cells_parse_to_value_and_pm(claims):
    for c in claims:
        parts = c.cell.split("±")
        assert _first_number(parts[0]) == pytest.approx(c.value), c.key
        if c.pm is not None:
            assert len(parts) == 2 and float(parts[1]) == pytest.approx(c.pm), c.key
        else:
            assert len(parts) == 1, c.key


def test_every_cell_appears_verbatim_in_its_table(claims, regions):
    for c in claims:
        assert c.cell in regions[c.table], f"{c.key}: {c.cell!r} not in the paper's {c.table}"


def test_rows_appear_verbatim_with_their_cells_in_order(claims, regions):
    rows = defaultdict(list)
    for c in claims:
        rows[(c.table, c.row)].append(c)
    for (table, row), cs in rows.items():
        if table == "User study":
            continue
        printed = cs[0].row_text + "".join(c.cell for c in cs)
        assert _norm(printed) in _norm(regions[table]), f"{table} / {row}: {printed!r}"


def test_known_spot_values(claims):
    by = {c.key: c for c in claims}
    assert by[("Table 5", "ClipFaceFusion", "FID")].value == 0.73
    assert "identity_similarity" in by[("Table 5", "ClipFaceFusion", "FID")].meaning
    assert by[("Table 7", "w/o Audio", "Emo Acc")].cell == "82.1 ± 2.3"
    assert by[("Table 8", "DDIM steps = 20", "FID")].cell == "0.54 ± 0.06"
    assert by[("Table 6", "CMC", "p-value")].kind == "bound"
    assert by[("User study", "ClipFaceFusion", "identity preservation")].value == 4.7
    assert by[("Table 3", "Random seed (DDIM)", "Value")].value == 2024
    assert by[("Table 5", "ClipFaceFusion", "S_dir")].direction == "↓"
    assert by[("Table 7", "Full ClipFaceFusion", "S_dir")].direction == "↑"
    for name in ("StyleCLIP", "GODiff", "MFCLIP", "SynAdult", "HydraMamba"):
        assert by[("Table 5", name, "SSIM")].not_reproducible
    assert all(c.not_reproducible for c in claims if c.table == "User study")


def _claim(**kw):
    base = dict(table="T", row="r", column="c", cell="0.5", value=0.5, pm=None, unit="", direction="↑",
                kind="measurement", meaning="m", row_text="r", not_reproducible=None)
    return Claim(**{**base, **kw})


def test_verdicts():
    with_pm = _claim(value=0.921, pm=0.006)
    assert judge(with_pm, (0.925, 0.01, "run x")).status == "reproduced"
    v = judge(with_pm, (0.900, 0.01, "run x"))
    assert v.status == "differs" and v.text.startswith("differs by -0.021")
    no_pm = _claim(value=0.80)
    assert judge(no_pm, (0.83, None, "run"), rel_tol=0.05).status == "reproduced"  # 0.03 <= 0.04
    assert judge(no_pm, (0.85, None, "run"), rel_tol=0.05).status == "differs"
    assert judge(_claim(value=16, kind="setting"), (16, None, "preset")).status == "adopted"
    assert judge(_claim(value=16, kind="setting"), (16.5, None, "preset")).status == "differs"
    bound = _claim(value=0.01, kind="bound")
    assert judge(bound, (0.004, None, "test")).status == "reproduced"
    assert judge(bound, (0.2, None, "test")).text == "differs: 0.2 is not < 0.01"
    assert judge(_claim(not_reproducible="quoted baseline"), None).text == \
        "not reproducible here: quoted baseline"
    assert judge(no_pm, None, reason="needs humans").text == "not reproducible here: needs humans"
    assert judge(no_pm, None).status == "not measured"
    with pytest.raises(ValueError, match="provenance"):
        judge(no_pm, (0.8, None, ""))
    with pytest.raises(ValueError, match="both"):
        judge(no_pm, (0.8, None, "x"), reason="y")


def test_a_stand_in_run_never_reproduces_a_result():
    with_pm = _claim(value=0.921, pm=0.006)
    v = judge(with_pm, (0.925, 0.01, "toy"), stand_in="synthetic world")
    assert v.status == "within ± (stand-in)" and "not a reproduction: synthetic world" in v.text
    v = judge(with_pm, (0.900, 0.01, "toy"), stand_in="synthetic world")
    assert v.status == "differs (stand-in)" and v.text.startswith("differs by -0.021")
    assert judge(_claim(value=0.01, kind="bound"), (0.004, None, "t"), stand_in="s").status == "within ± (stand-in)"
    assert judge(_claim(value=16, kind="setting"), (16, None, "preset"), stand_in="s").status == "adopted"
    assert judge(_claim(not_reproducible="quoted"), None, stand_in="s").status == "not reproducible here"
    text = claims_report([with_pm], {with_pm.key: (0.925, 0.01, "toy")}, stand_in="synthetic world")
    assert "1 within ± (stand-in)" in text and "reproduced." not in text.split("\n")[2]


def test_report_separates_paper_and_measured(claims, tmp_path):
    key = ("Table 7", "Full ClipFaceFusion", "SSIM")
    measured = {key: (0.5, 0.02, "ci profile, seeds 42 43")}
    reasons = {("Table 7", "w/o Audio", "SSIM"): "synthetic world has no such run"}
    text = claims_report(claims, measured, reasons)
    line = next(x for x in text.splitlines() if x.startswith("| Full ClipFaceFusion | SSIM"))
    cells = [s.strip() for s in line.strip("|").split("|")]
    assert cells[2] == "0.921 ± 0.006" and cells[3] == "0.921" and cells[4] == "0.006"
    assert cells[6] == "0.5" and cells[7] == "0.02" and cells[8] == "ci profile, seeds 42 43"
    assert cells[9].startswith("differs by -0.421")
    assert "not reproducible here: synthetic world has no such run" in text
    assert "## Table 3" in text and "## User study" in text
    with pytest.raises(ValueError, match="not claims"):
        claims_report(claims, {("Table 7", "Full", "SSIM"): (1.0, None, "x")})
    path = write_claims_report(tmp_path / "sub" / "claims.md", claims, measured, reasons)
    assert path.read_text(encoding="utf-8") == text + "\n"
    assert not list(path.parent.glob(".*.tmp"))


def test_load_claims_rejects_bad_ledgers(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims:\n- {table: T}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="exactly the fields"):
        load_claims(bad)
    with pytest.raises(FileNotFoundError):
        load_claims(tmp_path / "none.yaml")
