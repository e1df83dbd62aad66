"""Writing figures (PNG + PDF) and tables (CSV + Markdown + LaTeX), each carrying its provenance stamp.

Figures get the stamp as a small footer line; tables get it as a comment line in Markdown/LaTeX and in a
``.provenance.json`` sidecar (CSV stays plain). All writes are atomic.
"""
from __future__ import annotations

import json
from pathlib import Path

from cff_lib.atomic import atomic_path, atomic_write_text
from cff_lib.provenance import Stamp

CSV_FLOAT_FORMAT = "%.4g"
"""Floats in CSV tables keep 4 significant digits: the precision a rerun reproduces (thread scheduling changes
float sums in the 7th digit), so a second ``make reproduce`` leaves every CSV byte-identical."""


def save_figure(fig, name: str, out_dir: str | Path, stamp: Stamp, dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``out_dir/name.png`` and ``.pdf`` with the stamp in its footer."""
    out_dir = Path(out_dir)
    fig.text(0.995, 0.003, stamp.line(), ha="right", va="bottom", fontsize=6, color="0.45")
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight", metadata=_metadata(ext, stamp))
        paths.append(path)
    return paths


def _metadata(ext: str, stamp: Stamp) -> dict:
    key = "Description" if ext == "png" else "Subject"
    return {key: stamp.line()}


def save_table(df, name: str, out_dir: str | Path, stamp: Stamp, caption: str = "",
               float_format: str = "{:.4g}") -> list[Path]:
    """Save a pandas DataFrame as CSV, Markdown and LaTeX (``out_dir/name.{csv,md,tex}``)."""
    out_dir = Path(out_dir)
    if df is None or len(df) == 0:
        raise ValueError(f"table {name!r} is empty; nothing to write")
    def fmt(value) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""  # unknown / not applicable cells stay empty, never "nan"
        return float_format.format(value)

    csv = df.to_csv(index=False, float_format=CSV_FLOAT_FORMAT)
    md = (f"<!-- {stamp.line()} -->\n" + (f"**{caption}**\n\n" if caption else "")
          + _markdown(df, fmt) + "\n")
    tex = (f"% {stamp.line()}\n"
           + df.to_latex(index=False, float_format=fmt, na_rep="", caption=caption or None, escape=True))
    paths = []
    for ext, text in (("csv", csv), ("md", md), ("tex", tex)):
        path = out_dir / f"{name}.{ext}"
        atomic_write_text(path, text)
        paths.append(path)
    atomic_write_text(out_dir / f"{name}.provenance.json", json.dumps(stamp.to_dict(), indent=2) + "\n")
    return paths


def _markdown(df, fmt) -> str:
    cols = [str(c) for c in df.columns]
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in df.itertuples(index=False):
        rows.append("| " + " | ".join(fmt(v) if isinstance(v, float) or v is None else str(v) for v in rec) + " |")
    return "\n".join(rows)
