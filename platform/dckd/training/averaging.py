"""Weight averages of the student: the EMA student and the DCR history model (paper Eq. 6)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dckd.config import HistoryConfig


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy that never trains: eval mode, no gradients."""
    clone = copy.deepcopy(model)
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


@torch.no_grad()
def blend_into(target: nn.Module, source: nn.Module, keep: float) -> None:
    """``target = keep*target + (1-keep)*source`` on parameters; buffers are copied.

    BasicSR's EMA (decay 0.999) and the DCKD history update (alpha 0.1) are both this.
    """
    t_params = [p for p in target.parameters()]
    s_params = [p.detach() for p in source.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("models differ in their parameters")
    if t_params:
        torch._foreach_lerp_(t_params, s_params, 1.0 - keep)
    for tb, sb in zip(target.buffers(), source.buffers()):
        tb.copy_(sb)


class HistorySchedule:
    """When the history model is updated: ``t % s(t) == 0`` with a step that grows.

    ``s(t) = update_every * (1 + number of growth milestones below t)``: with the released
    values that is 1000 for iterations 1-100k, 2000 up to 200k and 3000 after.
    """

    def __init__(self, cfg: HistoryConfig) -> None:
        self.update_every = cfg.update_every
        self.milestones = sorted(cfg.growth_milestones)

    def step_at(self, iteration: int) -> int:
        return self.update_every * (1 + sum(1 for m in self.milestones if iteration > m))

    def due(self, iteration: int) -> bool:
        return iteration > 0 and iteration % self.step_at(iteration) == 0

    def update_iterations(self, start: int, end: int) -> list[int]:
        """Iterations in (start, end] at which an update happens (for logs and tests)."""
        return [t for t in range(start + 1, end + 1) if self.due(t)]
