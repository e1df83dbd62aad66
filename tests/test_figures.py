import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cff_lib.figures import save_figure, save_table  # noqa: E402
from cff_lib.provenance import Stamp  # noqa: E402

STAMP = Stamp(profile="ci", fingerprint="abc", commit="deadbeef", date="2026-11-24T00:00:00+00:00")


def test_table_formats_and_stamp(tmp_path):
    df = pd.DataFrame({"method": ["ours", "baseline"], "ssim": [0.91234, float("nan")], "n": [3, 4]})
    paths = save_table(df, "t", tmp_path, STAMP, caption="Table X")
    assert {p.suffix for p in paths} == {".csv", ".md", ".tex"}
    md = (tmp_path / "t.md").read_text()
    assert STAMP.line() in md and "| ours | 0.9123 | 3 |" in md and "nan" not in md
    assert "nan" not in (tmp_path / "t.tex").read_text()
    assert json.loads((tmp_path / "t.provenance.json").read_text())["commit"] == "deadbeef"
    with pytest.raises(ValueError, match="empty"):
        save_table(df.iloc[:0], "empty", tmp_path, STAMP)


def test_csv_is_byte_identical_when_a_rerun_differs_in_the_seventh_digit(tmp_path):
    a = pd.DataFrame({"method": ["ours"], "ssim": [0.7781234], "fid": [12.345678]})
    b = pd.DataFrame({"method": ["ours"], "ssim": [0.7781236], "fid": [12.345679]})
    save_table(a, "a", tmp_path, STAMP)
    save_table(b, "b", tmp_path, STAMP)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_text().splitlines()[1] == "ours,0.7781,12.35"


def test_figure_png_and_pdf(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = save_figure(fig, "f", tmp_path, STAMP)
    assert [p.name for p in paths] == ["f.png", "f.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
