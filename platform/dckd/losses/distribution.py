"""The distribution mapping loss of paper Eq. 8-9 on VQGAN codebook logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distribution_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      released_double_softmax: bool = False) -> torch.Tensor:
    """Cross-entropy between per-position codebook distributions, mean over positions.

    Logits are the negated squared distances to the codebook, (..., M) with M codebook
    entries; Eq. 8's distribution is their softmax. Eq. 9: ``-sum_i C_T,i log C_S,i``.
    With ``released_double_softmax`` the student's *probabilities* are fed to
    ``F.cross_entropy`` as the released code does, which applies log-softmax a second time.
    """
    m = student_logits.shape[-1]
    s = student_logits.reshape(-1, m).float()
    t = F.softmax(teacher_logits.detach().reshape(-1, m).float(), dim=-1)
    if released_double_softmax:
        return F.cross_entropy(F.softmax(s, dim=-1), t)
    return -(t * F.log_softmax(s, dim=-1)).sum(dim=-1).mean()
