"""The age range shared by every part of the companion (one home; the world, the encoders and the judges import it).

CACD's range in the paper ("ages 16-99") is the synthetic world's too: the renderers draw ages in it, Eq. 4's
numeric embedding and the preprocessing min-max scale it to [0, 1], and the age estimators bin it by year.
Inputs outside ``AGE_LIMITS`` are rejected as errors; ages between the limits and the range extrapolate.
"""
from __future__ import annotations

AGE_MIN = 16.0
"""Youngest age of CACD's range (years): maps to 0 under min-max scaling."""

AGE_MAX = 99.0
"""Oldest age of CACD's range (years): maps to 1."""

AGE_LIMITS = (0.0, 120.0)
"""Ages outside these (years) are input errors."""
