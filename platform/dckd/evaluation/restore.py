"""Restoring images of any size with a trained student, tile by tile.

A whole photograph through a transformer (or a big CNN) does not fit in memory, so the input is
cut into overlapping tiles in LR space and the restored tiles are blended back together. Each
tile's weight is 0 within ``overlap // 4`` pixels of an interior tile edge (where its zero
padding differs from the real neighbourhood) and rises linearly to 1 across the middle of the
overlap; the weights of two neighbours sum to 1 there. A fully convolutional network whose
receptive radius is at most ``overlap // 4`` LR pixels therefore gives the whole-image result
(up to float rounding in the blend); networks with global operations (channel attention) get
seamless transitions instead. When the tile covers the image there is no tiling at all.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dckd.imageio import to_tensor, to_uint8


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: a stride of ``tile - overlap``, the last tile flush with the border."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    starts.append(size - tile)
    return starts


def _ramp(length: int, lead: bool, trail: bool, overlap: int, scale: int) -> torch.Tensor:
    """1-D blend weights of a tile (HR pixels); only edges shared with a neighbour are ramped."""
    w = torch.ones(length, dtype=torch.float64)
    if overlap <= 0:
        return w
    margin = overlap // 4
    d = torch.arange(length, dtype=torch.float64) + 0.5
    ramp = ((d - margin * scale) / ((overlap - 2 * margin) * scale)).clamp(0.0, 1.0)
    if lead:
        w = torch.minimum(w, ramp)
    if trail:
        w = torch.minimum(w, ramp.flip(0))
    return w


def _check_scale(y: torch.Tensor, h: int, w: int, scale: int) -> None:
    if tuple(y.shape[-2:]) != (h * scale, w * scale):
        raise ValueError(f"model returned {tuple(y.shape[-2:])} for a {h}x{w} input; "
                         f"expected {h * scale}x{w * scale} at scale {scale}")


def _tiled(model: nn.Module, x: torch.Tensor, scale: int, tile: int, overlap: int) -> torch.Tensor:
    _, c, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    acc = torch.zeros((1, c, h * scale, w * scale), dtype=torch.float32, device=x.device)
    weight = torch.zeros((1, 1, h * scale, w * scale), dtype=torch.float32, device=x.device)
    for y0 in tile_starts(h, tile, overlap):
        wy = _ramp(th * scale, y0 > 0, y0 + th < h, overlap, scale)
        for x0 in tile_starts(w, tile, overlap):
            wx = _ramp(tw * scale, x0 > 0, x0 + tw < w, overlap, scale)
            out = model(x[..., y0:y0 + th, x0:x0 + tw])
            _check_scale(out, th, tw, scale)
            wt = (wy[:, None] * wx[None, :]).to(device=x.device, dtype=torch.float32)
            ys, xs = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
            acc[..., ys, xs] += out.float() * wt
            weight[..., ys, xs] += wt
    return acc / weight


def restore_image(
    model: nn.Module,
    img_uint8: np.ndarray,
    scale: int,
    tile: int = 128,
    overlap: int = 16,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Restore a uint8 HWC image of any size; ``tile`` and ``overlap`` are in LR pixels (tile 0: whole).

    Runs under ``torch.no_grad`` in eval mode (the model's mode is put back afterwards) and
    quantises with :func:`dckd.imageio.to_uint8`, as the benchmark scores do.
    """
    if tile < 0 or overlap < 0:
        raise ValueError(f"tile and overlap must be non-negative, got tile={tile}, overlap={overlap}")
    if tile > 0 and 2 * overlap >= tile:
        raise ValueError(f"overlap must be less than half the tile, got tile={tile}, overlap={overlap}")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    x = to_tensor(np.asarray(img_uint8))[None].to(device)
    h, w = x.shape[-2:]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if tile == 0 or (h <= tile and w <= tile):
                out = model(x)
                _check_scale(out, h, w, scale)
            else:
                out = _tiled(model, x, scale, tile, overlap)
    finally:
        model.train(was_training)
    return to_uint8(out[0].float())
