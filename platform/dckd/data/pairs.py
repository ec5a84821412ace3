"""Pairing degraded inputs with ground truth on disk, and loading a pair as uint8 arrays.

Two layouts of SR benchmarks exist (see the datasets notes): EDSR's ``HR/`` + ``LR_bicubic/X{s}/
{name}x{s}.png`` with HR not mod-cropped (layout A), and BasicSR's ``GTmod12/`` + ``LRbicx{s}/``
with identical names (layout B). :func:`sr_pairs` accepts both; :func:`load_pair` crops a
layout-A HR top-left to scale x LR size, as BasicSR and SwinIR evaluate it. Without an LR folder
the LR is generated with MATLAB bicubic (:func:`dckd.data.matlab_resize.bicubic_lr`).
Deblurring and deraining sets are two folders with the same file names (:func:`folder_pairs`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dckd.data.matlab_resize import bicubic_lr, modcrop
from dckd.errors import ConfigError, DataError
from dckd.imageio import images_by_stem, list_images, read_image


@dataclass(frozen=True)
class ImagePair:
    """One training or test sample on disk. ``lq_path`` None: LR generated from ``gt_path``."""

    lq_path: Path | None
    gt_path: Path
    name: str


def _check_scale(scale: int) -> None:
    if not isinstance(scale, int | np.integer) or isinstance(scale, bool) or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")


def sr_pairs(
    hr_dir: str | os.PathLike[str], scale: int, lr_dir: str | os.PathLike[str] | None = None
) -> list[ImagePair]:
    """Pairs for every HR image in ``hr_dir`` (sorted by file name).

    The LR partner of ``name.ext`` in ``lr_dir`` is the first existing of ``name.ext``,
    ``name.png``, ``{name}x{scale}.ext``, ``{name}x{scale}.png``. A missing partner raises
    :class:`DataError` naming the HR file. ``lr_dir=None``: LR generated on load.
    """
    _check_scale(scale)
    hr_files = list_images(hr_dir)
    if lr_dir is None:
        return [ImagePair(None, p, p.stem) for p in hr_files]
    lr_dir = Path(lr_dir)
    available = {p.name: p for p in list_images(lr_dir)}
    pairs: list[ImagePair] = []
    for hr in hr_files:
        candidates = [hr.name, f"{hr.stem}.png", f"{hr.stem}x{scale}{hr.suffix}", f"{hr.stem}x{scale}.png"]
        found = next((available[c] for c in dict.fromkeys(candidates) if c in available), None)
        if found is None:
            raise DataError(
                f"no LR image for {hr} in {lr_dir} (looked for {', '.join(dict.fromkeys(candidates))})"
            )
        pairs.append(ImagePair(found, hr, hr.stem))
    return pairs


def folder_pairs(input_dir: str | os.PathLike[str], target_dir: str | os.PathLike[str]) -> list[ImagePair]:
    """Pairs of degraded input and target with the same stem (deblurring, deraining).

    The extensions may differ (Rain13K inputs are sometimes .jpg beside .png targets). Every
    file must have a partner: the MATLAB scripts pair by position, which silently misaligns
    everything after one missing file, so a missing partner is an error here.
    """
    input_dir, target_dir = Path(input_dir), Path(target_dir)
    inputs, targets = images_by_stem(input_dir), images_by_stem(target_dir)
    for stem in sorted(set(targets) - set(inputs)):
        raise DataError(f"no input image in {input_dir} for target {targets[stem]}")
    for stem in sorted(set(inputs) - set(targets)):
        raise DataError(f"no target image in {target_dir} for input {inputs[stem]}")
    return [ImagePair(inputs[s], targets[s], s) for s in sorted(targets)]


def load_pair(pair: ImagePair, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair as ``(lq, gt)`` uint8 HWC RGB arrays with ``gt`` exactly ``scale`` x ``lq``.

    A GT larger than scale x LR by at most ``scale - 1`` pixels per axis (EDSR layout, HR not
    mod-cropped) is cropped top-left; any other size mismatch raises :class:`DataError`
    naming both files and their sizes.
    """
    _check_scale(scale)
    gt = read_image(pair.gt_path)
    if pair.lq_path is None:
        gt = modcrop(gt, scale)
        if gt.shape[0] == 0 or gt.shape[1] == 0:
            raise DataError(f"image {pair.gt_path} is smaller than the scale {scale}")
        return bicubic_lr(gt, scale), np.ascontiguousarray(gt)
    lq = read_image(pair.lq_path)
    lh, lw = lq.shape[:2]
    gh, gw = gt.shape[:2]
    th, tw = lh * scale, lw * scale
    if not (0 <= gh - th < scale and 0 <= gw - tw < scale):
        expected = f"{tw}x{th}" if scale == 1 else f"{tw}x{th} (up to {tw + scale - 1}x{th + scale - 1})"
        raise DataError(
            f"size mismatch: {pair.lq_path} is {lw}x{lh} and {pair.gt_path} is {gw}x{gh} (WxH); "
            f"at scale {scale} the ground truth must be {expected}"
        )
    if (gh, gw) != (th, tw):
        gt = np.ascontiguousarray(gt[:th, :tw])
    return lq, gt


__all__ = ["ImagePair", "folder_pairs", "load_pair", "sr_pairs"]
