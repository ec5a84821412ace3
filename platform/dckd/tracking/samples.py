"""Sample restorations for the tracking store: run the student (and teacher) on a few benchmark
items and lay input, teacher, student and ground truth side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dckd.imageio import to_uint8
from dckd.tracking.isolation import rng_untouched


def as_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A batch (NCHW), one image (CHW) or a sequence of images as a list of CHW tensors."""
    if isinstance(images, torch.Tensor):
        return list(images) if images.dim() == 4 else [images]
    return list(images)


def sample_panel(lq: torch.Tensor, teacher_out: torch.Tensor | None, student_out: torch.Tensor,
                 gt: torch.Tensor, gap: int = 2) -> np.ndarray:
    """input (nearest-upscaled to the GT size) | teacher | student | ground truth, as one uint8 image.

    Nearest upscaling shows the input's real pixels; a white ``gap`` keeps look-alike panels apart.
    """
    h, w = gt.shape[-2:]
    up = F.interpolate(lq.detach().float().cpu()[None], size=(h, w), mode="nearest")[0]
    panels = [up, *([teacher_out] if teacher_out is not None else []), student_out, gt]
    arrays = [to_uint8(p.detach().float().cpu()) for p in panels]
    hh, ww = min(a.shape[0] for a in arrays), min(a.shape[1] for a in arrays)
    sep = np.full((hh, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, a in enumerate(arrays):
        parts += [sep] if i else []
        parts.append(a[:hh, :ww])
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


@torch.no_grad()
def collect_samples(
    student: nn.Module,
    teacher: nn.Module | None,
    dataset: Any,
    count: int,
    device: torch.device | str,
    scale: int,
    max_lq_side: int = 96,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, list[torch.Tensor], list[torch.Tensor]]:
    """Restorations of the first ``count`` items of a benchmark set, centre-cropped to ``max_lq_side``.

    Cropping bounds the cost of a large teacher on full benchmark images at every validation.
    Returns ``(lq, teacher_out or None, student_out, gt)`` lists of CHW tensors for
    :meth:`dckd.tracking.RunTracker.log_samples`.
    """
    lqs: list[torch.Tensor] = []
    gts: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    teach: list[torch.Tensor] = []
    models = [m for m in (student, teacher) if m is not None]
    modes = [m.training for m in models]
    with rng_untouched():
        try:
            for m in models:
                m.eval()
            for i in range(min(count, len(dataset))):
                item = dataset[i]
                lq, gt = item["lq"], item["gt"]
                h, w = lq.shape[-2:]
                ch, cw = min(h, max_lq_side), min(w, max_lq_side)
                top, left = (h - ch) // 2, (w - cw) // 2
                lq = lq[:, top:top + ch, left:left + cw]
                gt = gt[:, top * scale:(top + ch) * scale, left * scale:(left + cw) * scale]
                x = lq[None].to(device)
                outs.append(student(x)[0].float().cpu())
                if teacher is not None:
                    teach.append(teacher(x)[0].float().cpu())
                lqs.append(lq)
                gts.append(gt)
        finally:
            for m, mode in zip(models, modes):
                m.train(mode)
    return lqs, (teach if teacher is not None else None), outs, gts
