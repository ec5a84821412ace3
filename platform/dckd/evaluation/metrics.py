"""PSNR and SSIM under the BasicSR / MATLAB protocol, on uint8 HWC RGB arrays.

Why uint8: published numbers are computed on outputs rounded to 8 bits (BasicSR
``tensor2img``), so scoring a float tensor directly gives slightly different values. Call
:func:`dckd.imageio.to_uint8` first.

The protocol (one place, referred to by task name):

* ``crop_border`` pixels are removed from every edge *before* the Y conversion;
* Y is BT.601 as MATLAB ``rgb2ycbcr``: ``16 + (65.481 R + 128.553 G + 24.966 B) / 255`` on
  [0, 255] input, kept as float64 (BasicSR/SwinIR) or rounded to an integer (``round_y``, as
  MATLAB does for uint8 images, which the Restormer deraining script relies on);
* PSNR = 10 log10(255^2 / MSE) in float64, ``inf`` for identical images;
* SSIM of Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K = (0.01, 0.03), L = 255,
  mean over the 'valid' region, per channel and averaged for RGB. scikit-image's
  ``structural_similarity`` with the arguments below reproduces BasicSR's ``calculate_ssim``
  to ~1e-13, so it is the reference implementation rather than a hand-written copy.

Known difference: the official GoPro script uses MATLAB's built-in ``ssim``, which treats an
RGB image as a 3-D volume; the ``deblur`` protocol here averages per-channel 2-D SSIM (as
BasicSR does), so its SSIM is not bit-comparable with those tables.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from dckd.errors import ConfigError, DataError
from dckd.imageio import images_by_stem, read_image

_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
TASKS: tuple[str, ...] = ("sr", "derain", "deblur")


def rgb_to_y(img: np.ndarray, round_y: bool = False) -> np.ndarray:
    """Y channel (float64, HxW, on the [16, 235] scale) of an RGB image on [0, 255].

    ``round_y`` rounds half away from zero to integers, like MATLAB's uint8 ``rgb2ycbcr``.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 RGB array, got shape {img.shape}")
    y = 16.0 + (img.astype(np.float64) @ _Y_COEFFS) / 255.0
    if round_y:
        y = np.clip(np.floor(y + 0.5), 0.0, 255.0)
    return y


def _prepare(
    pred: np.ndarray, gt: np.ndarray, crop_border: int, y_channel: bool, round_y: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate, crop, optionally convert to Y; returns float64 arrays."""
    if pred.shape != gt.shape:
        raise DataError(f"prediction shape {pred.shape} does not match ground truth shape {gt.shape}")
    for what, arr in (("prediction", pred), ("ground truth", gt)):
        if arr.dtype != np.uint8:
            raise TypeError(f"{what} must be uint8 on [0, 255] (use dckd.imageio.to_uint8), got {arr.dtype}")
        if arr.ndim not in (2, 3):
            raise ValueError(f"{what} must be HW or HWC, got shape {arr.shape}")
    if crop_border < 0:
        raise ConfigError(f"crop_border must be >= 0, got {crop_border}")
    if round_y and not y_channel:
        raise ConfigError("round_y only applies to Y-channel scoring (set y_channel too)")
    if crop_border:
        c = crop_border
        if pred.shape[0] <= 2 * c or pred.shape[1] <= 2 * c:
            raise DataError(f"image of shape {pred.shape} is too small for crop_border={c}")
        pred = pred[c:-c, c:-c, ...]
        gt = gt[c:-c, c:-c, ...]
    if y_channel and pred.ndim == 3 and pred.shape[2] == 3:
        return rgb_to_y(pred, round_y), rgb_to_y(gt, round_y)
    if y_channel and pred.ndim == 3 and pred.shape[2] != 1:
        raise ValueError(f"y_channel needs RGB (3 channels), got shape {pred.shape}")
    # A single-channel image already is the channel to score (BasicSR's to_y_channel does the same).
    return pred.astype(np.float64), gt.astype(np.float64)


def psnr(
    pred: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False, round_y: bool = False
) -> float:
    """PSNR in dB (peak 255) of two uint8 images; ``inf`` when they are identical."""
    a, b = _prepare(pred, gt, crop_border, y_channel, round_y)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * np.log10(255.0**2 / mse))


def ssim(
    pred: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False, round_y: bool = False
) -> float:
    """SSIM (Wang et al. 2004, 11x11 Gaussian sigma 1.5, valid region) of two uint8 images."""
    a, b = _prepare(pred, gt, crop_border, y_channel, round_y)
    if a.shape[0] < 11 or a.shape[1] < 11:
        raise DataError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape[:2]}")
    channel_axis = 2 if a.ndim == 3 else None
    return float(
        structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=channel_axis,
        )
    )


@dataclass(frozen=True)
class Protocol:
    """How a task is scored; refer to it by task name via :meth:`for_task`."""

    crop_border: int = 0
    y_channel: bool = True
    round_y: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.crop_border, int) or self.crop_border < 0:
            raise ConfigError(f"crop_border must be a non-negative integer, got {self.crop_border!r}")
        if self.round_y and not self.y_channel:
            raise ConfigError("round_y only applies to Y-channel scoring (set y_channel too)")

    @classmethod
    def for_task(cls, task: str, scale: int = 1) -> Protocol:
        """The paper protocol: ``sr`` crop=scale on Y; ``derain`` Y rounded, no crop;
        ``deblur`` RGB, no crop."""
        if task == "sr":
            if not isinstance(scale, int) or scale < 1:
                raise ConfigError(f"SR scale must be a positive integer, got {scale!r}")
            return cls(crop_border=scale, y_channel=True, round_y=False)
        if task == "derain":
            return DERAIN
        if task == "deblur":
            return DEBLUR
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")

    def score(self, pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
        """(PSNR, SSIM) of one uint8 image pair under this protocol."""
        kw = {"crop_border": self.crop_border, "y_channel": self.y_channel, "round_y": self.round_y}
        return psnr(pred, gt, **kw), ssim(pred, gt, **kw)


DERAIN = Protocol(crop_border=0, y_channel=True, round_y=True)
DEBLUR = Protocol(crop_border=0, y_channel=False, round_y=False)


def _list_names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def score_folders(
    gt_dir: str | os.PathLike[str], pred_dir: str | os.PathLike[str], protocol: Protocol
) -> dict[str, Any]:
    """Score every prediction against the ground truth with the same file stem.

    Matching is by stem (not by position in two sorted listings, as the MATLAB scripts do) so
    a missing or extra file is an error instead of a silently shifted pairing. Returns
    ``{"psnr": mean, "ssim": mean, "per_image": [{"name", "psnr", "ssim"}...], "count": n}``;
    a mean PSNR is ``inf`` if any image is identical to its ground truth.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gts, preds = images_by_stem(gt_dir), images_by_stem(pred_dir)
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no prediction in {pred_dir} for: {_list_names([gts[s].name for s in missing])}")
        if extra:
            parts.append(f"no ground truth in {gt_dir} for: {_list_names([preds[s].name for s in extra])}")
        raise DataError("unmatched files; " + "; ".join(parts))
    per_image: list[dict[str, Any]] = []
    for stem in sorted(gts):
        gt = read_image(gts[stem])
        pred = read_image(preds[stem])
        if gt.shape != pred.shape:
            raise DataError(
                f"size mismatch: {preds[stem]} is {pred.shape[1]}x{pred.shape[0]} but "
                f"{gts[stem]} is {gt.shape[1]}x{gt.shape[0]} (WxH)"
            )
        p, s = protocol.score(pred, gt)
        per_image.append({"name": stem, "psnr": p, "ssim": s})
    return {
        "psnr": float(np.mean([r["psnr"] for r in per_image])),
        "ssim": float(np.mean([r["ssim"] for r in per_image])),
        "per_image": per_image,
        "count": len(per_image),
    }


def json_ready(obj: Any) -> Any:
    """Replace non-finite floats (the PSNR of an exact restoration is infinite) by ``None``.

    JSON has no infinity; ``json.dumps(..., allow_nan=False)`` on the result always succeeds.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    return obj
