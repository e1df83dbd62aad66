"""Trainable mixing coefficients that stay in [0, 1] by construction.

The paper's α (Eq. 5), β (Eq. 7), η and γ (Eq. 16) and ν (emotion regulariser) are "trainable parameters in
[0, 1]". Each is a sigmoid of an unconstrained scalar, so no optimiser step can leave the interval.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class UnitCoefficient(nn.Module):
    """A scalar ``sigmoid(raw)`` in (0, 1), initialised to ``init``."""

    def __init__(self, init: float = 0.5, trainable: bool = True):
        super().__init__()
        if not 0.0 < init < 1.0:
            raise ValueError(f"init={init} must lie strictly inside (0, 1)")
        raw = torch.tensor(math.log(init / (1.0 - init)))
        if trainable:
            self.raw = nn.Parameter(raw)
        else:
            self.register_buffer("raw", raw)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.raw)

    def extra_repr(self) -> str:
        return f"value={float(self()):.4f}"
