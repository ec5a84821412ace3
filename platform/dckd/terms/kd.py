"""L_kd: logits distillation, L1 between the student's and the teacher's outputs."""

from __future__ import annotations

from typing import Any

from dckd.terms.base import Term


class KD(Term):
    name = "kd"
    needs_teacher = True

    def loss(self, step: Any) -> Any:
        import torch.nn.functional as F

        return self.cfg.weight * F.l1_loss(step.out, step.teacher_out)
