"""The dynamic contrastive loss of paper Eq. 5, computed as the authors' release does."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def dynamic_contrastive_loss(
    anchor: Sequence[torch.Tensor],
    positive: Sequence[torch.Tensor],
    negatives: Sequence[torch.Tensor],
    level_weights: Sequence[float],
    eps: float = 1e-7,
) -> torch.Tensor:
    """``sum_i w_i * |f_i(A) - f_i(P)|_1 / (sum_j |f_i(A) - f_ij(N)|_1 + eps)``.

    ``anchor[i]`` and ``positive[i]`` are level-i features of shape (B, C, H, W);
    ``negatives[i]`` is (N*B, C, H, W), the N negative sets stacked along the batch in the
    order they were made. Every |.|_1 is a mean over all elements of the batch (``nn.L1Loss``
    as released), so the ratio does not depend on the feature size. Positives and negatives
    carry no gradient: only the anchor (the student) is pulled and pushed.
    """
    if not (len(anchor) == len(positive) == len(negatives) == len(level_weights)):
        raise ValueError(
            f"levels differ: anchor {len(anchor)}, positive {len(positive)}, "
            f"negatives {len(negatives)}, weights {len(level_weights)}"
        )
    total = anchor[0].new_zeros(())
    for a, p, n, w in zip(anchor, positive, negatives, level_weights):
        if w == 0:
            continue
        b = a.shape[0]
        if n.shape[0] % b:
            raise ValueError(f"negatives batch {n.shape[0]} is not a multiple of the anchor batch {b}")
        d_ap = (a - p.detach()).abs().mean()
        diff = a.unsqueeze(0) - n.detach().view(n.shape[0] // b, *a.shape)
        d_an = diff.abs().flatten(1).mean(dim=1).sum()
        total = total + w * d_ap / (d_an + eps)
    return total
