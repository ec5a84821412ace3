"""DUKD data upcycling (Zhang et al. 2023): extra student inputs made from the training pair.

* Zoom-in: LR-sized tiles cut from the GT patch. They look like LR inputs (same size) but carry
  real high-frequency detail; they have no GT, so the teacher's SR of each tile is the label.
* Zoom-out: the LR patch downscaled once more by 1/s with MATLAB bicubic, so the LR patch itself
  becomes the GT of a new pair (the same degradation that made the benchmark LR images).

Both are pure tensor functions; the DUKD term around them lives in ``dckd.terms.dukd``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from dckd.data.matlab_resize import contributions

__all__ = ["zoom_in_tiles", "zoom_out"]


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")


def _check_images(x: Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be a (B, C, H, W) batch, got shape {tuple(x.shape)}")


def zoom_in_tiles(gt: Tensor, scale: int, n_tiles: int, generator: torch.Generator) -> Tensor:
    """``n_tiles`` distinct cells of each GT patch's s x s grid of LR-sized tiles.

    ``gt`` is (B, C, sH, sW); the result is (B * n_tiles, C, H, W), sample-major (the tiles of
    sample b are rows b*n_tiles ... b*n_tiles + n_tiles - 1, in drawn order). Cells are drawn
    per sample without replacement with ``generator`` on the CPU, so a CPU generator gives the
    same tiles whatever device ``gt`` lives on. (DUKD's code draws one set of cells for the
    whole batch; per-sample draws cover more of the GT per step.)
    """
    _check_scale(scale)
    _check_images(gt, "gt")
    s = int(scale)
    cells = s * s
    if isinstance(n_tiles, bool) or not isinstance(n_tiles, int | np.integer) or not 1 <= n_tiles <= cells:
        raise ValueError(f"n_tiles must be an integer in [1, {cells}] (the {s}x{s} grid), got {n_tiles!r}")
    b, c, gh, gw = gt.shape
    if gh % s or gw % s:
        raise ValueError(f"GT size {gh}x{gw} is not divisible by the scale {s}: cannot cut LR-sized tiles")
    h, w = gh // s, gw // s
    # A random permutation per row: argsort of uniform noise, drawn where the generator lives.
    noise = torch.rand((b, cells), generator=generator, device=generator.device)
    picked = noise.argsort(dim=1)[:, : int(n_tiles)].to(gt.device)  # (B, n) cell = row * s + col
    # (B, C, s, H, s, W) -> (B, s, s, C, H, W) -> (B, s*s, C, H, W): cell index row-major.
    grid = gt.reshape(b, c, s, h, s, w).permute(0, 2, 4, 1, 3, 5).reshape(b, cells, c, h, w)
    rows = torch.arange(b, device=gt.device).unsqueeze(1)
    return grid[rows, picked].reshape(b * int(n_tiles), c, h, w)


@lru_cache(maxsize=32)
def _resize_matrix(in_length: int, scale: int) -> Tensor:
    """Dense (in/s x in) float64 CPU matrix of MATLAB's 1/s bicubic taps (mirrored taps summed).

    Callers only read it (``.to`` copies when device or dtype differ), so caching is safe.
    """
    out_length = in_length // scale
    weights, idx = contributions(in_length, out_length, 1.0 / scale)
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(out_length), weights.shape[1]), idx.ravel()), weights.ravel())
    return torch.from_numpy(matrix)


def zoom_out(lq: Tensor, scale: int) -> Tensor:
    """Downscale a (B, C, h, w) batch in [0, 1] by 1/s like MATLAB ``imresize(x, 1/s, 'bicubic')``.

    The per-axis weights are :func:`dckd.data.matlab_resize.contributions`, applied as two dense
    matrix products on ``lq``'s device (one op for the whole batch instead of DUKD's per-sample
    CPU round trip), in float64 except on devices without it. The result keeps ``lq``'s dtype
    and is clipped to [0, 1] (bicubic overshoots slightly at edges; DUKD's code does not clip):
    the student is only ever trained on LR inputs in that range.
    """
    _check_scale(scale)
    _check_images(lq, "lq")
    if not lq.is_floating_point():
        raise TypeError(f"zoom_out expects a float batch in [0, 1], got {lq.dtype}")
    s = int(scale)
    h, w = lq.shape[-2:]
    if h % s or w % s:
        raise ValueError(
            f"LR size {h}x{w} is not divisible by the scale {s}: zoom-out needs an exact {h // s}x{w // s} "
            f"result (MATLAB would give {-(-h // s)}x{-(-w // s)})"
        )
    work = torch.float64 if lq.device.type in ("cpu", "cuda") else torch.float32
    mh = _resize_matrix(h, s).to(device=lq.device, dtype=work)
    mw = _resize_matrix(w, s).to(device=lq.device, dtype=work)
    # Rows (H) first, then columns (W), as MATLAB.
    out = torch.matmul(mh, lq.to(work))
    out = torch.matmul(out, mw.t())
    return out.clamp_(0.0, 1.0).to(lq.dtype)
