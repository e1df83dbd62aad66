"""The claims ledger: every number of the paper's Tables 3-8 and user study, set beside what this companion
regenerates (paper "Quantitative results", "Ablation studies", "Comprehensive parameter examination",
"User study"; Tables 3, 4, 5, 6, 7, 8).

``cff_lib/paper_claims.yaml`` transcribes each printed number once (tests/test_claims.py checks each against
the paper's text). :func:`load_claims` reads it into :class:`Claim` records; :func:`claims_report` renders a
Markdown report in which the paper's number and the regenerated number sit in *separate* columns, each row
with a verdict (:func:`judge`):

- ``reproduced``: the regenerated mean lies within the paper's ± of the paper's value (|m - v| <= ±); where no
  ± is printed, within ``rel_tol`` (default 5 %) of the value (|m - v| <= rel_tol * |v|). A ``bound``
  (printed "< 0.01") is reproduced when m < bound.
- ``adopted``: a ``setting`` (Table 3's hyper-parameters) that the run used exactly (relative 1e-9). It is a
  configuration the companion copied from the paper, not a result, so it is never counted as reproduced.
  The regenerated std is shown but does not widen the tolerance.
- ``differs by X``: outside that tolerance; X = m - v (and relative).
- ``not reproducible here: <reason>``: a reason passed by the caller for this claim, or the ledger's standing
  one (quoted baselines with no runnable editor here; the user study, which needs human raters).
- ``not measured``: no regenerated value and no reason -- a gap the notebook must close or explain.

When the regenerated values come from a stand-in (``stand_in`` = why they are not comparable, e.g. the
synthetic world: other data, other judges), a result is never called reproduced: ``within ± (stand-in)``
and ``differs (stand-in)`` replace ``reproduced`` and ``differs``, and the verdict says why. Settings stay
``adopted``.

Regenerated values are in the claim's unit (percent for "Age Acc" / "Emo Acc", as printed).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cff_lib.atomic import atomic_write_text

LEDGER = Path(__file__).resolve().parent / "paper_claims.yaml"
KINDS = ("measurement", "setting", "bound", "human")
DEFAULT_REL_TOL = 0.05  # relative tolerance where the paper prints no ±
SYNTHETIC_WORLD = ("synthetic world: other data, small stand-in models and judges; the number is not "
                   "comparable to the paper's")
TABLE_ORDER = ("Table 3", "Table 4", "Table 5", "Table 6", "Table 7", "Table 8", "User study")

ClaimKey = tuple[str, str, str]


@dataclass(frozen=True)
class Claim:
    """One number printed in the paper."""

    table: str  # "Table 3" .. "Table 8" or "User study"
    row: str  # method / configuration / setting, in plain text
    column: str  # metric or quantity (without the printed arrow)
    cell: str  # the cell exactly as printed, e.g. "0.921 ± 0.006", "90.7%", "< 0.01"
    value: float  # the printed number
    pm: float | None  # the printed ± (one std over the paper's five seeds), None when none is printed
    unit: str  # "%", "Likert 1-5", ... or "" for unitless
    direction: str  # the arrow as printed ("↑", "↓") or "" when none
    kind: str  # "measurement" | "setting" | "bound" | "human"
    meaning: str  # what the number is in THIS companion (e.g. "FID" -> identity_similarity, errata)
    row_text: str  # the row label as printed in the paper's text ("" when the cell stands alone)
    not_reproducible: str | None  # standing reason it cannot be regenerated here, or None

    @property
    def key(self) -> ClaimKey:
        return (self.table, self.row, self.column)


@dataclass(frozen=True)
class Verdict:
    """The comparison of one claim with its regenerated value."""

    status: str  # "reproduced" | "adopted" (a setting used as printed) | "differs" | "not reproducible here"
    #              | "not measured"
    text: str  # the verdict as written in the report
    tolerance: float | None  # the absolute tolerance applied (None when nothing was compared)


def load_claims(path: str | os.PathLike | None = None) -> list[Claim]:
    """Read the ledger (default: the packaged ``paper_claims.yaml``) into Claims, in ledger order."""
    import yaml

    path = Path(path) if path is not None else LEDGER
    if not path.is_file():
        raise FileNotFoundError(f"claims ledger not found at {str(path)!r}")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        raise ValueError(f"{path}: expected a mapping with a 'claims' list")
    fields = set(Claim.__dataclass_fields__)
    claims, seen = [], set()
    for i, raw in enumerate(doc["claims"]):
        if not isinstance(raw, dict) or set(raw) != fields:
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"{path}: claims[{i}] must have exactly the fields {sorted(fields)}, got {got}")
        if raw["kind"] not in KINDS:
            raise ValueError(f"{path}: claims[{i}].kind={raw['kind']!r} must be one of {KINDS}")
        c = Claim(**{**raw, "value": float(raw["value"]),
                     "pm": None if raw["pm"] is None else float(raw["pm"])})
        if c.key in seen:
            raise ValueError(f"{path}: claims[{i}] repeats the key {c.key}")
        seen.add(c.key)
        claims.append(c)
    return claims


def _check_measured(m: Any, key: ClaimKey) -> tuple[float, float | None, str]:
    if not isinstance(m, (tuple, list)) or len(m) != 3:
        raise ValueError(f"measured[{key}] must be (mean, std or None, provenance), got {m!r}")
    mean, std, prov = m
    if not isinstance(mean, (int, float)) or not math.isfinite(mean):
        raise ValueError(f"measured[{key}] mean must be a finite number, got {mean!r}")
    if std is not None and not isinstance(std, (int, float)):
        raise ValueError(f"measured[{key}] std must be a number or None, got {std!r}")
    if not isinstance(prov, str) or not prov.strip():
        raise ValueError(f"measured[{key}] needs a provenance string (which run produced it)")
    std = None if std is None or math.isnan(std) else float(std)
    return float(mean), std, prov


def judge(claim: Claim, measured: tuple | None, reason: str | None = None,
          rel_tol: float = DEFAULT_REL_TOL, stand_in: str | None = None) -> Verdict:
    """Verdict for one claim given its regenerated ``(mean, std, provenance)`` or a ``reason`` (see module);
    ``stand_in``: why regenerated results are not comparable to the paper's (then nothing is "reproduced")."""
    verdict = _compare(claim, measured, reason, rel_tol)
    if stand_in and claim.kind != "setting" and verdict.status in ("reproduced", "differs"):
        if verdict.status == "reproduced":
            return Verdict("within ± (stand-in)", f"within the paper's tolerance, not a reproduction: {stand_in}",
                           verdict.tolerance)
        return Verdict("differs (stand-in)", f"{verdict.text}; {stand_in}", verdict.tolerance)
    return verdict


def _compare(claim: Claim, measured: tuple | None, reason: str | None, rel_tol: float) -> Verdict:
    if measured is not None and reason is not None:
        raise ValueError(f"claim {claim.key} has both a measured value and a reason; give one")
    if measured is None:
        reason = reason or claim.not_reproducible
        if reason:
            return Verdict("not reproducible here", f"not reproducible here: {reason}", None)
        return Verdict("not measured", "not measured", None)
    mean, _, _ = _check_measured(measured, claim.key)
    v = claim.value
    if claim.kind == "bound":
        if mean < v:
            return Verdict("reproduced", "reproduced", None)
        return Verdict("differs", f"differs: {mean:.4g} is not < {v:g}", None)
    if claim.kind == "setting":
        tol = 1e-9 * max(1.0, abs(v))
    elif claim.pm is not None:
        tol = claim.pm
    else:
        tol = rel_tol * abs(v)
    diff = mean - v
    if abs(diff) <= tol + 1e-12:
        if claim.kind == "setting":
            return Verdict("adopted", "adopted (a setting used as printed, not a result)", tol)
        return Verdict("reproduced", "reproduced", tol)
    rel = f" ({diff / v:+.1%})" if v != 0 else ""
    return Verdict("differs", f"differs by {diff:+.4g}{rel}", tol)


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.4g}"


def _md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def claims_report(claims: list[Claim], measured: Mapping[ClaimKey, tuple | None],
                  reasons: Mapping[ClaimKey, str] | None = None, rel_tol: float = DEFAULT_REL_TOL,
                  title: str = "Paper claims vs regenerated values", stand_in: str | None = None) -> str:
    """Markdown: one section per table, one row per claim, the paper's and the regenerated numbers in
    separate columns, and a verdict. ``measured`` / ``reasons`` are keyed by ``Claim.key``; unknown keys
    raise ValueError (a typo must not silently leave a claim unmeasured). ``stand_in``: see :func:`judge`."""
    if not claims:
        raise ValueError("claims is empty")
    if not (isinstance(rel_tol, (int, float)) and 0 <= rel_tol < 1):
        raise ValueError(f"rel_tol={rel_tol!r} must lie in [0, 1)")
    reasons = dict(reasons or {})
    measured = dict(measured or {})
    known = {c.key for c in claims}
    for name, d in (("measured", measured), ("reasons", reasons)):
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ValueError(f"{name} has keys that are not claims: {unknown[:3]}")
    verdicts = [(c, judge(c, measured.get(c.key), reasons.get(c.key), rel_tol, stand_in)) for c in claims]
    counts: dict[str, int] = {}
    for _, v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    lines = [f"# {title}", "",
             f"{len(claims)} claims: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".", "",
             f"Verdict rule: reproduced = within the paper's ± (or ±{rel_tol:.0%} of the value where none is "
             "printed; '< x' bounds by comparison); adopted = a Table 3 setting the run used exactly (configuration "
             "copied from the paper, not a result). Paper and regenerated numbers are separate columns.", ""]
    if stand_in:
        lines += [f"The regenerated values come from a stand-in run ({stand_in}), so no result is called "
                  "reproduced: 'within ± (stand-in)' and 'differs (stand-in)' only say how the numbers compare.",
                  ""]
    tables = sorted({c.table for c in claims},
                    key=lambda t: (TABLE_ORDER.index(t) if t in TABLE_ORDER else len(TABLE_ORDER), t))
    for table in tables:
        lines += [f"## {table}", "",
                  "| row | column | paper (as printed) | paper value | paper ± | unit | regenerated mean | "
                  "regenerated std | provenance | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c, v in verdicts:
            if c.table != table:
                continue
            m = measured.get(c.key)
            mean, std, prov = _check_measured(m, c.key) if m is not None else (None, None, "")
            column = f"{c.column} {c.direction}".strip()
            lines.append("| " + " | ".join(_md(x) for x in (
                c.row, column, c.cell, f"{c.value:g}", _fmt(c.pm), c.unit or "—", _fmt(mean), _fmt(std),
                prov or "—", v.text)) + " |")
        lines.append("")
    return "\n".join(lines)


def write_claims_report(path: str | os.PathLike, claims: list[Claim],
                        measured: Mapping[ClaimKey, tuple | None],
                        reasons: Mapping[ClaimKey, str] | None = None,
                        rel_tol: float = DEFAULT_REL_TOL, title: str = "Paper claims vs regenerated values",
                        stand_in: str | None = None) -> Path:
    """Write :func:`claims_report` to ``path`` atomically; returns the path."""
    text = claims_report(claims, measured, reasons, rel_tol=rel_tol, title=title, stand_in=stand_in)
    atomic_write_text(path, text + "\n")
    return Path(path)
