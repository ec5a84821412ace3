"""MATLAB-compatible bicubic ``imresize`` (the one that made the SR benchmark LR images).

PIL, OpenCV and torch bicubic all differ from MATLAB (kernel parameter, no antialiasing,
pixel-centre convention), and the difference is worth tenths of a dB, so LR images generated
here follow MATLAB's ``imresize(img, scale, 'bicubic')`` step by step, as BasicSR's
``matlab_functions.imresize`` does:

* Keys cubic kernel with a = -0.5, base width 4;
* for scale < 1 with antialiasing, the kernel is stretched: width 4/scale, h(x) = scale*w(scale*x);
* output length ceil(in * scale); 1-based centre u = x/scale + 0.5 (1 - 1/scale), taps
  floor(u - width/2) ... + ceil(width) + 1, weights normalised per output sample, all-zero tap
  columns dropped (MATLAB ``contributions``);
* out-of-range taps are served by half-sample symmetric mirroring (MATLAB's
  ``aux = [1:n, n:-1:1]`` indexing, which equals numpy ``mode='symmetric'`` padding);
* separable: rows (H) first, then columns (W).

Arithmetic is float64 (as MATLAB's double) whatever the input dtype; the result is returned in
the input's dtype, neither clipped nor rounded. :func:`bicubic_lr` does the uint8 round trip.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dckd.errors import DataError

Array = np.ndarray | torch.Tensor


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def contributions(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out_length x taps, float64) and 0-based source indices, mirrored into range.

    A transcription of MATLAB ``imresize``'s ``contributions`` subfunction.
    """
    kernel_width = 4.0
    stretch = scale < 1 and antialiasing
    if stretch:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * cubic(scale * dist) if stretch else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    idx = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx[:, keep]


def _resize_axis_np(img: np.ndarray, axis: int, weights: np.ndarray, idx: np.ndarray) -> np.ndarray:
    moved = np.moveaxis(img, axis, 0)
    out = np.zeros((weights.shape[0],) + moved.shape[1:], dtype=np.float64)
    extra = (None,) * (moved.ndim - 1)
    for p in range(weights.shape[1]):
        out += weights[(slice(None), p, *extra)] * moved[idx[:, p]]
    return np.moveaxis(out, 0, axis)


def _resize_axis_torch(img: torch.Tensor, dim: int, weights: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    moved = img.movedim(dim, 0)
    w = torch.from_numpy(weights).to(device=img.device, dtype=img.dtype)
    ix = torch.from_numpy(idx).to(img.device)
    out = torch.zeros((weights.shape[0],) + tuple(moved.shape[1:]), dtype=img.dtype, device=img.device)
    shape = (-1,) + (1,) * (moved.ndim - 1)
    for p in range(weights.shape[1]):
        out += w[:, p].reshape(shape) * moved.index_select(0, ix[:, p])
    return out.movedim(0, dim)


def imresize(img: Array, scale: float, antialiasing: bool = True) -> Array:
    """Resize a float image in [0, 1] by ``scale`` like MATLAB bicubic ``imresize``.

    ``img`` is a numpy HWC or HW array, or a torch CHW or HW tensor. Output size per axis is
    ``ceil(in * scale)``: mod-crop first (:func:`modcrop`) so that downscaling by an integer
    factor gives exactly in/scale. Values are not clipped or rounded.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    is_torch = isinstance(img, torch.Tensor)
    if is_torch:
        if not img.is_floating_point():
            raise TypeError("imresize expects a float tensor in [0, 1]; use bicubic_lr for uint8 images")
        h_axis, w_axis = (0, 1) if img.ndim == 2 else (img.ndim - 2, img.ndim - 1)
    else:
        img = np.asarray(img)
        if not np.issubdtype(img.dtype, np.floating):
            raise TypeError("imresize expects a float array in [0, 1]; use bicubic_lr for uint8 images")
        h_axis, w_axis = 0, 1
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects HW/HWC (numpy) or HW/CHW (torch), got shape {tuple(img.shape)}")
    in_h, in_w = int(img.shape[h_axis]), int(img.shape[w_axis])
    out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
    if in_h == 0 or in_w == 0 or out_h == 0 or out_w == 0:
        raise ValueError(f"cannot resize an image of size {in_h}x{in_w} by {scale}")
    wh, ih = contributions(in_h, out_h, scale, antialiasing)
    ww, iw = contributions(in_w, out_w, scale, antialiasing)
    if is_torch:
        dtype = img.dtype
        work = img.to(torch.float64) if img.device.type in ("cpu", "cuda") else img.to(torch.float32)
        out_t = _resize_axis_torch(work, h_axis, wh, ih)
        out_t = _resize_axis_torch(out_t, w_axis, ww, iw)
        return out_t.to(dtype)
    out = _resize_axis_np(img.astype(np.float64, copy=False), h_axis, wh, ih)
    out = _resize_axis_np(out, w_axis, ww, iw)
    return out.astype(img.dtype, copy=False)


def modcrop(img: Array, scale: int) -> Array:
    """Keep the top-left region whose height and width are multiples of ``scale``.

    numpy arrays are HW/HWC, torch tensors HW/CHW (as everywhere in the platform).
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if isinstance(img, torch.Tensor) and img.ndim == 3:
        h, w = img.shape[-2:]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The benchmark LR image of a uint8 HR image: modcrop, imresize 1/scale, clip, x255, round.

    Rounding is half away from zero, as MATLAB's conversion to uint8.
    """
    if hr.dtype != np.uint8:
        raise TypeError(f"bicubic_lr expects a uint8 image, got {hr.dtype}")
    if not isinstance(scale, int | np.integer) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    cropped = modcrop(hr, scale)
    if cropped.shape[0] == 0 or cropped.shape[1] == 0:
        raise DataError(f"image of size {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}")
    lr = imresize(cropped.astype(np.float64) / 255.0, 1.0 / scale)
    return np.floor(np.clip(lr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
