"""Per-image work: copies, DIV2K sub-image crops and MATLAB-compatible bicubic LR, written as PNG.

Each job is a small picklable value so the runner can hand jobs to worker processes.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dckd.data.matlab_resize import bicubic_lr, modcrop
from dckd.data.prepare.photos import PhotoRef, motion_blur, photo, rain_streaks
from dckd.errors import DataError, DckdError
from dckd.imageio import read_image

PNG_COMPRESSION = 3  # BasicSR extract_subimages writes cv2 PNG compression 3

ImageRef = Path | PhotoRef


@dataclass(frozen=True)
class CopyJob:
    """One file to ``dst``: byte copy when the suffix is kept, else decoded and written as PNG."""

    src: ImageRef
    dst: str


@dataclass(frozen=True)
class SubImageJob:
    """DIV2K recipe for one HR image: mod-crop, bicubic LR per scale, BasicSR sub-images of each."""

    src: ImageRef
    name: str
    scales: tuple[int, ...]
    crop: int
    step: int
    mod: int


@dataclass(frozen=True)
class ScaledJob:
    """A whole HR image (copied) and its bicubic LR per scale: benchmark and validation images."""

    src: ImageRef
    hr: str
    lr: tuple[tuple[int, str], ...]


Job = CopyJob | SubImageJob | ScaledJob


def window_starts(size: int, crop: int, step: int, thresh: int = 0) -> list[int]:
    """BasicSR ``extract_subimages`` starts on one axis: 0, step, ... while start+crop <= size,
    plus one window flush with the far edge when more than ``thresh`` pixels are left over."""
    if size < crop:
        raise ValueError(f"size {size} is smaller than the crop {crop}")
    starts = list(range(0, size - crop + 1, step))
    if size - (starts[-1] + crop) > thresh:
        starts.append(size - crop)
    return starts


def load_ref(ref: ImageRef) -> np.ndarray:
    """The uint8 RGB pixels of an image source."""
    if isinstance(ref, Path):
        return read_image(ref)
    img = photo(ref.photo)[ref.top: ref.top + ref.height, ref.left: ref.left + ref.width]
    if img.shape[:2] != (ref.height, ref.width):
        raise DataError(f"photo {ref.photo} has no {ref.height}x{ref.width} region at ({ref.top}, {ref.left})")
    if ref.effect == "blur":
        return motion_blur(img, length=7 + ref.seed % 7, angle_deg=float(ref.seed % 180))
    if ref.effect == "rain":
        return rain_streaks(img, ref.seed)
    return img.copy()


def _entry(staging: Path, rel: str) -> dict[str, Any]:
    path = staging / rel
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return {"path": rel, "size": path.stat().st_size, "sha256": h.hexdigest()}


def _write_png(staging: Path, rel: str, img: np.ndarray) -> dict[str, Any]:
    path = staging / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG", compress_level=PNG_COMPRESSION)
    return _entry(staging, rel)


def _copy_or_write(staging: Path, src: ImageRef, dst: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """Copy a file byte for byte when its suffix is kept; else write its pixels as PNG."""
    if isinstance(src, Path) and src.suffix.lower() == Path(dst).suffix.lower():
        target = staging / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        return _entry(staging, dst), None
    img = load_ref(src)
    return _write_png(staging, dst, img), img


def run_job(job: Job, staging: Path) -> list[dict[str, Any]]:
    """Write one job's files under ``staging``; returns their manifest entries."""
    try:
        if isinstance(job, CopyJob):
            return [_copy_or_write(staging, job.src, job.dst)[0]]
        if isinstance(job, ScaledJob):
            entry, img = _copy_or_write(staging, job.src, job.hr)
            if img is None:
                img = load_ref(job.src)
            out = [entry]
            for s, rel in job.lr:
                if img.shape[0] < s or img.shape[1] < s:
                    raise DataError(f"image {job.src} is smaller than the scale {s}")
                out.append(_write_png(staging, rel, bicubic_lr(img, s)))
            return out
        hr = modcrop(load_ref(job.src), job.mod)
        h, w = hr.shape[:2]
        if h < job.crop or w < job.crop:
            raise DataError(f"image {job.src} is {w}x{h} after mod-crop to {job.mod}, smaller than the "
                            f"{job.crop}x{job.crop} sub-image crop")
        rows, cols = window_starts(h, job.crop, job.step), window_starts(w, job.crop, job.step)
        out = []
        grids = [("train_HR_sub", 1, hr)] + [(f"train_LR_bicubic/X{s}_sub", s, bicubic_lr(hr, s)) for s in job.scales]
        for folder, s, img in grids:
            c = job.crop // s
            idx = 0
            for top in rows:
                for left in cols:
                    idx += 1
                    crop = img[top // s: top // s + c, left // s: left // s + c]
                    out.append(_write_png(staging, f"{folder}/{job.name}_s{idx:03d}.png", crop))
        return out
    except DckdError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot prepare {getattr(job, 'src', job)}: {exc}") from exc
