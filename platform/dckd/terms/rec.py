"""L_rec: L1 between the student's output and the ground truth (every method has it)."""

from __future__ import annotations

from typing import Any

from dckd.terms.base import Term


class Rec(Term):
    name = "rec"

    def loss(self, step: Any) -> Any:
        import torch.nn.functional as F

        return self.cfg.weight * F.l1_loss(step.out, step.gt)
