"""L_lcr: DUKD's label consistency as the DCKD release computes it.

The teacher sees a flipped/rotated copy of the LR input in the step's one teacher pass; its
output, reverted, is a second target for the student's output on the clean input.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dckd.config.base import NonNegative, TermConfig
from dckd.terms.base import Term


class LCRConfig(TermConfig):
    """DUKD label consistency as the DCKD release computes it (teacher on augmented LR, reverted)."""

    weight: NonNegative = 1.0
    prob: float = Field(default=0.5, ge=0.0, le=1.0)


class LCR(Term):
    name = "lcr"
    config = LCRConfig
    needs_teacher = True

    def plan(self, step: Any) -> None:
        from dckd.losses import LabelConsistencyOps, augment

        lq = step.lq
        self._ops = LabelConsistencyOps.draw(lq.shape[0], self.cfg.prob, step.rng.cpu,
                                             square=lq.shape[-1] == lq.shape[-2])
        self._rows = step.teacher_rows(augment(lq, self._ops))

    def loss(self, step: Any) -> Any:
        import torch.nn.functional as F

        from dckd.losses import revert

        target = revert(step.teacher_result(self._rows), self._ops)
        return self.cfg.weight * F.l1_loss(step.out, target)
