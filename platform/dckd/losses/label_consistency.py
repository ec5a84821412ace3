"""Label-consistency augmentation (DUKD), in the form the DCKD release uses for DCKD*.

Per image, each of colour inversion, flip along H, flip along W and H<->W transpose is drawn
with probability p. The teacher restores the augmented LR; its output is reverted by applying
the inverse operations in *reverse* order (the DCKD release does this correctly; DUKD's own
code does not), and the student's output on the clean LR is pulled towards it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OPS = ("invert", "flip_h", "flip_w", "transpose")


@dataclass(frozen=True)
class LabelConsistencyOps:
    """The drawn operations: a (B, 4) boolean matrix in the order of ``OPS``."""

    mask: torch.Tensor

    @classmethod
    def draw(cls, batch: int, prob: float, generator: torch.Generator, square: bool) -> LabelConsistencyOps:
        mask = torch.rand((batch, len(OPS)), generator=generator) < prob
        if not square:  # a transpose would change the shape of one image of the batch
            mask[:, 3] = False
        return cls(mask=mask)


def _apply(img: torch.Tensor, op: str) -> torch.Tensor:
    if op == "invert":
        return 1.0 - img
    if op == "flip_h":
        return img.flip(-2)
    if op == "flip_w":
        return img.flip(-1)
    return img.transpose(-2, -1)


def augment(x: torch.Tensor, ops: LabelConsistencyOps) -> torch.Tensor:
    """Apply each image's operations in the order of ``OPS``."""
    out = []
    for img, row in zip(x, ops.mask.tolist()):
        for op, on in zip(OPS, row):
            if on:
                img = _apply(img, op)
        out.append(img)
    return torch.stack(out)


def revert(y: torch.Tensor, ops: LabelConsistencyOps) -> torch.Tensor:
    """Undo ``augment`` on restored images: each operation is its own inverse, in reverse order."""
    out = []
    for img, row in zip(y, ops.mask.tolist()):
        for op, on in reversed(list(zip(OPS, row))):
            if on:
                img = _apply(img, op)
        out.append(img)
    return torch.stack(out)
