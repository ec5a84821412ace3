"""Weight averages of a network: the EMA student, the DCR history model (Eq. 6), MCLIR's negatives."""

from __future__ import annotations

import copy

import torch
from torch import nn


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
