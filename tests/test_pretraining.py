"""The shared pretraining helper: schedules, the loop, its checkpoints and time budget, the resumable state."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from cff_lib.pretraining import (
    check_steps,
    load_train_state,
    optimise,
    run_loop,
    save_train_state,
    warmup_then_cosine,
    warmup_times_cosine,
)


def test_schedules():
    assert [warmup_then_cosine(s, 10, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_then_cosine(4, 10, 4) == pytest.approx(1.0)
    assert warmup_then_cosine(10, 10, 4) == pytest.approx(0.1) == warmup_then_cosine(50, 10, 4)
    assert warmup_then_cosine(9, 10, 4, constant=True) == 1.0
    assert warmup_times_cosine(0, 100, 5) == pytest.approx(0.2)
    assert warmup_times_cosine(100, 100, 5) == pytest.approx(0.0, abs=1e-12)


def test_check_steps_names_the_argument():
    assert check_steps(None, 7) == 7 and check_steps(3) == 3
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="max_steps="):
            check_steps(bad, argument="max_steps")


def _problem():
    torch.manual_seed(0)
    w = torch.nn.Linear(3, 1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    return w, lambda _: torch.nn.functional.mse_loss(w(x), y)


def test_the_loop_sets_the_rate_steps_and_checkpoints_before_the_end():
    w, loss = _problem()
    opt = torch.optim.SGD(w.parameters(), lr=0.0)
    rates, saved = [], []
    losses, done = run_loop(opt, loss, steps=5, lr=0.1, lr_factor=lambda s: s + 1.0, progress=False,
                            after_step=lambda s: rates.append(opt.param_groups[0]["lr"]),
                            checkpoint=lambda d, ls: saved.append((d, len(ls))), checkpoint_every=2)
    assert done == 5 and len(losses) == 5 and losses[-1] < losses[0]
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert saved == [(2, 2), (4, 4)]  # never at the last step: the caller writes the finished run


def test_a_time_budget_stops_and_checkpoints():
    w, loss = _problem()
    saved = []
    losses, done = run_loop(torch.optim.SGD(w.parameters(), lr=0.01), loss, steps=100, lr=0.01,
                            lr_factor=lambda s: 1.0, progress=False, max_wall_s=1e-9, started=0.0,
                            checkpoint=lambda d, ls: saved.append(d))
    assert done == 1 and saved == [1]
    with pytest.raises(ValueError, match="grad_clip needs clip="):
        run_loop(torch.optim.SGD(w.parameters(), lr=0.01), loss, steps=1, lr=0.01, lr_factor=lambda s: 1.0,
                 grad_clip=1.0, progress=False)


def test_optimise_clips_only_when_asked():
    w, loss = _problem()
    assert len(optimise(w.parameters(), 4, 0.1, loss, "t", False)) == 4
    assert len(optimise(w.parameters(), 4, 0.1, loss, "t", False, grad_clip=None)) == 4


@dataclasses.dataclass(frozen=True)
class _Cfg:
    steps: int
    lr: float = 0.1


def test_state_round_trip_and_another_config_is_not_resumed(tmp_path):
    w, loss = _problem()
    opt = torch.optim.AdamW(w.parameters(), lr=0.1)
    run_loop(opt, loss, steps=3, lr=0.1, lr_factor=lambda s: 1.0, progress=False)
    path = tmp_path / "state.safetensors"
    save_train_state(path, {"w": w}, opt, 3, [1.0, 0.5, 0.25], _Cfg(steps=3))
    w2, _ = _problem()
    opt2 = torch.optim.AdamW(w2.parameters(), lr=0.1)
    assert load_train_state(path, {"w": w2}, opt2, _Cfg(steps=9)) == (3, [1.0, 0.5, 0.25])  # steps aside
    assert torch.equal(w2.weight, w.weight)
    assert load_train_state(path, {"w": w2}, opt2, _Cfg(steps=3, lr=0.2)) is None
    assert load_train_state(tmp_path / "absent.safetensors", {"w": w2}, opt2, _Cfg(steps=3)) is None
