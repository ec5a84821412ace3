"""The history model's schedule (Eq. 6) and the weight averages."""

from __future__ import annotations

import torch
from torch import nn

from dckd.config import HistoryConfig
from dckd.terms.dcr import HistorySchedule
from dckd.training.averaging import blend_into


def test_released_schedule_grows_1000_2000_3000() -> None:
    s = HistorySchedule(HistoryConfig())
    assert [s.step_at(t) for t in (1, 100_000, 100_001, 200_000, 200_001, 250_000)] == [
        1000, 1000, 2000, 2000, 3000, 3000]
    ups = s.update_iterations(0, 250_000)
    assert ups[:2] == [1000, 2000] and 100_000 in ups and 101_000 not in ups and 102_000 in ups
    assert 201_000 in ups and 202_000 not in ups and 204_000 in ups and ups[-1] == 249_000
    assert len(ups) == 100 + 50 + 17  # 201k, 204k, ..., 249k


def test_small_schedule_by_hand() -> None:
    s = HistorySchedule(HistoryConfig(update_every=3, growth_milestones=[6, 12]))
    # step 3 up to 6, 6 up to 12, 9 after: updates at 3, 6 | 12 | 18, 27
    assert s.update_iterations(0, 30) == [3, 6, 12, 18, 27]
    assert s.update_iterations(6, 18) == [12, 18]


def test_blend_is_alpha_old_plus_one_minus_alpha_new() -> None:
    target, source = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        target.weight.fill_(1.0)
        source.weight.fill_(11.0)
    blend_into(target, source, keep=0.1)
    assert torch.allclose(target.weight, torch.full_like(target.weight, 0.1 * 1 + 0.9 * 11))
