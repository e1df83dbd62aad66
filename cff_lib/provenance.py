"""Provenance stamps: which profile, code version and date produced a figure, table or checkpoint.

Every number in a table must come from a run the notebook made or loaded with provenance (DEVELOPERS.md);
the stamp is what makes that checkable.
"""
from __future__ import annotations

import datetime as _dt
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REHEARSAL_NOTE = "REHEARSAL (random weights, miniature data: the numbers mean nothing)"


def git_commit(repo: Path = REPO_ROOT) -> str:
    """Short commit of the working tree, with ``+dirty`` when it has uncommitted changes outside ``figures/``
    (the runner's own outputs, rewritten while it runs, do not make the code dirty); "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)figures"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


@dataclass(frozen=True)
class Stamp:
    profile: str  # preset name the run used
    fingerprint: str  # Profile.fingerprint() of the resolved preset
    commit: str  # git commit of the code, "+dirty" if modified
    date: str  # UTC date and time of the run, ISO 8601
    rehearsal: bool = False  # the profile is a rehearsal (random weights): its numbers mean nothing

    def line(self) -> str:
        line = f"profile {self.profile} ({self.fingerprint}) · commit {self.commit} · {self.date}"
        return (REHEARSAL_NOTE + " · " + line) if self.rehearsal else line

    def to_dict(self) -> dict:
        return asdict(self)


def make_stamp(profile) -> Stamp:
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return Stamp(profile=profile.name, fingerprint=profile.fingerprint(), commit=git_commit(), date=now,
                 rehearsal=bool(getattr(getattr(profile, "runner", None), "rehearsal", False)))
