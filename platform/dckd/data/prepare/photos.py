"""The scikit-image photographs that stand in for the real datasets, and their synthetic blur and rain.

The demo and the tests need real-looking images without a download; these are cut from them deterministically.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

PHOTO_TRAIN = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left")
PHOTO_TEST = ("chelsea", "rocket")


@dataclass(frozen=True)
class PhotoRef:
    """A region of a scikit-image photograph, optionally degraded (synthetic blur or rain)."""

    photo: str
    top: int
    left: int
    height: int
    width: int
    effect: Literal["", "blur", "rain"] = ""
    seed: int = 0


@functools.cache
def photo(name: str) -> np.ndarray:
    """A scikit-image colour photograph (read-only: it is shared by every region cut from it)."""
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    img = np.ascontiguousarray(img[..., :3])
    img.flags.writeable = False
    return img


def _shift(padded: np.ndarray, dy: int, dx: int, pad: int, h: int, w: int) -> np.ndarray:
    """The h x w window of an array padded by ``pad``, moved by (dy, dx)."""
    return padded[pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def motion_blur(img: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Uniform linear motion blur (edge-padded), a stand-in for GoPro's averaged frames."""
    rad = math.radians(angle_deg)
    pad, (h, w) = length, img.shape[:2]
    padded = np.pad(img.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros(img.shape, dtype=np.float64)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, length):
        acc += _shift(padded, round(t * math.sin(rad)), round(t * math.cos(rad)), pad, h, w)
    return np.floor(acc / length + 0.5).clip(0, 255).astype(np.uint8)


def rain_streaks(img: np.ndarray, seed: int, density: float = 0.004, length: int = 15) -> np.ndarray:
    """Bright slanted streaks blended over the image, a stand-in for the synthetic rain sets."""
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    drops = (rng.random((h, w)) < density) * rng.uniform(0.35, 0.85, (h, w))
    rad = math.radians(float(rng.uniform(70, 110)))
    pad = length
    padded = np.pad(drops, pad)
    streak = np.zeros((h, w))
    for t in range(length):
        streak = np.maximum(streak, _shift(padded, round(t * math.sin(rad)), round(t * math.cos(rad)), pad, h, w))
    a = streak[..., None]
    out = img.astype(np.float64) * (1 - a) + 235.0 * a
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)
