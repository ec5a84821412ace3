"""L_dmm: the distribution mapping module (paper Eq. 8-9), cross-entropy of codebook distributions.

The student's output and the teacher's are matched as distributions over the VQGAN codebook;
the codebook logits come from the step's shared encoder passes (the ones DCR also reads).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dckd.config.base import NonNegative, TermConfig
from dckd.terms.base import Term


class DMMConfig(TermConfig):
    """Distribution mapping module (Eq. 8-9)."""

    weight: NonNegative = 0.001
    released_double_softmax: bool = Field(
        default=False,
        description="the released code feeds the student's probabilities to F.cross_entropy (softmax "
        "twice); default: Eq. 9 as written, one log-softmax",
    )


class DMM(Term):
    name = "dmm"
    config = DMMConfig
    needs_teacher = True
    needs_encoder = True

    def gather(self, step: Any) -> None:
        step.encoder.request(codebook=True)

    def loss(self, step: Any) -> Any:
        from dckd.losses import distribution_loss

        enc = step.encoder
        ce = distribution_loss(enc.anchor_logits(), enc.positive_logits(), self.cfg.released_double_softmax)
        return self.cfg.weight * ce
