"""Image files in and out: the one place where colour order and dtype change.

Everything inside the platform is RGB. On disk an image may be grayscale, palette, RGBA or
16-bit; it is normalised here to uint8 HWC RGB so that datasets, metrics and the CLI never see
those variants. Tensors are float32 CHW in [0, 1]; :func:`to_uint8` quantises them exactly as
BasicSR's ``tensor2img`` does (clamp, x255, round), since scores are computed on that result.

EXIF orientation is deliberately *not* applied: restoration pairs are aligned pixel by pixel as
stored, and rotating one file of a pair would break that alignment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dckd.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)
"""Suffixes (compared case-insensitively) that :func:`list_images` treats as images."""


def _sixteen_to_eight(arr: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 by rounding v/257 (the inverse of 8->16 bit replication)."""
    arr = np.clip(arr.astype(np.float64), 0, 65535)
    return np.floor(arr / 257.0 + 0.5).astype(np.uint8)


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (or 32-bit int holding 16-bit data) grayscale: scale, then replicate.
        gray = _sixteen_to_eight(np.asarray(img, dtype=np.int64) if mode == "I" else np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.asarray(img, dtype=np.float64)
        if gray.size and np.nanmax(gray) <= 1.0:
            gray = gray * 255.0
        gray = np.floor(np.clip(np.nan_to_num(gray), 0, 255) + 0.5).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("L", "1"):
        gray = np.asarray(img.convert("L"))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        # P, PA, LA, RGBA, CMYK, YCbCr...: Pillow's conversion drops alpha and expands palettes.
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 HWC RGB.

    Grayscale is replicated to three channels, alpha is dropped, 16-bit grayscale is scaled to
    8 bits by rounding v/257. (Pillow itself decodes 16-bit RGB PNGs to 8 bits by keeping the
    high byte, i.e. floor(v/256), at most 1 below rounding; it offers no 48-bit mode.) A missing, unreadable or corrupt file raises :class:`DataError` naming the path,
    so a bad file in a dataset of thousands is found at once.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            arr = _to_rgb_uint8(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"cannot read image {path}: unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr)


def write_image(path: str | os.PathLike[str], img: np.ndarray) -> Path:
    """Write a uint8 HW, HWx1 or HWx3 array; the format follows the file suffix.

    The file is written to a temporary name in the same folder and moved into place with
    ``os.replace``, so a reader (or a resumed run) never sees a half-written image.
    Returns the path written.
    """
    path = Path(path)
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise TypeError(f"write_image expects a uint8 numpy array, got {getattr(img, 'dtype', type(img))}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"write_image expects HW or HWC with 1 or 3 channels, got shape {img.shape}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot write image {path}: unknown image file extension {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_kwargs: dict[str, object] = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(np.ascontiguousarray(img)).save(fh, format=fmt, **save_kwargs)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name.

    Hidden files (``.name``, e.g. macOS ``._x.png`` resource forks) are skipped because they
    carry image suffixes without being images. A missing folder or one without images raises
    :class:`DataError`: an empty evaluation set would otherwise score as a silent NaN.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a directory")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DataError(f"image folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HWC (or HW) array -> float32 CHW tensor in [0, 1]."""
    if img.dtype != np.uint8:
        raise TypeError(f"to_tensor expects uint8, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    return torch.from_numpy(chw).to(torch.float32).div_(255.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Float CHW tensor (a leading batch dim of 1 is allowed) -> uint8 HWC array.

    Same semantics as BasicSR ``tensor2img``: clamp to [0, 1], multiply by 255, round half to
    even, in float32. The input tensor is not modified.
    """
    t = tensor.detach()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image; got a batch of shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3:
        raise ValueError(f"to_uint8 expects a CHW tensor, got shape {tuple(t.shape)}")
    t = t.to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0).mul(255.0).round()
    return np.ascontiguousarray(t.to(torch.uint8).permute(1, 2, 0).numpy())


def images_by_stem(folder: Path) -> dict[str, Path]:
    """The images of a folder keyed by file name without extension (pairs are matched that way)."""
    out: dict[str, Path] = {}
    for p in list_images(folder):
        if p.stem in out:
            raise DataError(f"two images share the name {p.stem!r} in {folder}: {out[p.stem].name}, {p.name}")
        out[p.stem] = p
    return out
