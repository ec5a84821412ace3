"""Paired statistics of per-image scores: is a PSNR gain more than noise?

Two methods scored on the same test images give one difference per image. Its mean is the gain;
a percentile bootstrap over the images (fixed seed, so a report is reproducible) gives its 95%
interval, and the Wilcoxon signed-rank test (scipy) its p-value. A difference is *resolved* at
95% when the interval excludes zero.

With several seeds per method, each image's score is first averaged over the seeds, so the
interval is over images at the seed-averaged model; the spread across seeds (of the per-seed
mean difference) is reported beside it, because the bootstrap over images does not see it.
Images are paired by name: only those scored for both methods (and by every seed) count.
Tiles of a few images (``eval.score_tiles``) are compared through each image's PSNR recomputed
from its tiles' errors, with a bootstrap stratified by image (:func:`tiled_difference`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """mean(a − b) over paired images, its bootstrap interval and the Wilcoxon p-value."""

    n: int
    mean: float
    low: float
    high: float
    p_value: float | None  # None: fewer than two images, or every difference zero
    level: float = LEVEL

    @property
    def resolved(self) -> bool:
        """The interval excludes zero: the sign of the difference is not noise at this level."""
        return self.n > 1 and (self.low > 0 or self.high < 0)


def bootstrap_interval(diffs: Sequence[float] | np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the images with replacement ``samples`` times.

    Draws are ``numpy.random.default_rng(seed).integers(0, n, size=(samples, n))``; the bounds are
    ``numpy.percentile`` (linear interpolation) of the resampled means at (1 ± level) / 2.
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = d.size
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        return float(d[0]), float(d[0])
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    means = d[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def wilcoxon_p(diffs: Sequence[float] | np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value (scipy's default method: exact for small n without ties)."""
    from scipy.stats import wilcoxon

    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2 or not np.any(d != 0):
        return None
    return float(wilcoxon(d).pvalue)


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                      samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                      level: float = LEVEL) -> PairedDifference:
    """Paired statistics of ``a − b`` (equal-length arrays, element i of both from the same image)."""
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_.shape != b_.shape:
        raise ValueError(f"paired scores need equal lengths, got {a_.shape} and {b_.shape}")
    d = a_ - b_
    low, high = bootstrap_interval(d, samples, seed, level)
    return PairedDifference(n=int(d.size), mean=float(d.mean()) if d.size else math.nan, low=low, high=high,
                            p_value=wilcoxon_p(d), level=level)


PerImage = Mapping[str, float]  # image name -> score


# --------------------------------------------------------------------------- tiles of few images
def tile_image(name: str) -> str | None:
    """The image a tile score belongs to (``chelsea@2,5`` -> ``chelsea``); None for a whole image."""
    return name.split("@", 1)[0] if "@" in name else None


def is_tiled(scores: PerImage) -> bool:
    return bool(scores) and all(tile_image(n) is not None for n in scores)


def _mse(psnr: np.ndarray) -> np.ndarray:
    """Mean squared error in units of the peak squared: PSNR = 10 log10(1 / MSE)."""
    return np.power(10.0, -np.asarray(psnr, dtype=np.float64) / 10.0)


def tiled_difference(a: PerImage, b: PerImage, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = LEVEL) -> PairedDifference:
    """PSNR(a) − PSNR(b) of the images the tiles cut, averaged over the images, with a stratified bootstrap.

    A table scores each whole image; averaging per-tile PSNRs would weigh a flat 56 dB sky tile
    like a textured 30 dB one, and can give the opposite sign. So each image's PSNR is recomputed
    from its tiles' mean squared error (equal tiles: the MSE of the tiled area), the difference is
    averaged over images, and the bootstrap resamples tiles within each image (the image is the
    stratum). The Wilcoxon test is on the per-tile MSE differences ``mse(b) − mse(a)`` (positive:
    ``a`` is better), which weigh tiles by their error as the image PSNR does.
    """
    names = sorted(set(a) & set(b))
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(tile_image(n) or n, []).append(n)
    if not groups:
        return PairedDifference(n=0, mean=math.nan, low=math.nan, high=math.nan, p_value=None, level=level)
    rng = np.random.default_rng(seed)
    point, boot = [], np.zeros(samples)
    for tiles in groups.values():
        ma, mb = _mse([a[n] for n in tiles]), _mse([b[n] for n in tiles])
        point.append(10.0 * math.log10(mb.mean() / ma.mean()))
        idx = rng.integers(0, len(tiles), size=(samples, len(tiles)))
        boot += 10.0 * np.log10(mb[idx].mean(axis=1) / ma[idx].mean(axis=1))
    boot /= len(groups)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(boot, [tail, 100.0 - tail]) if len(names) > 1 else (point[0], point[0])
    d_mse = _mse([b[n] for n in names]) - _mse([a[n] for n in names])
    return PairedDifference(n=len(names), mean=float(np.mean(point)), low=float(low), high=float(high),
                            p_value=wilcoxon_p(d_mse), level=level)


def seed_averaged(per_seed: Sequence[PerImage]) -> dict[str, float]:
    """Each image's score averaged over the seeds that all scored it (images some seed lacks are dropped)."""
    if not per_seed:
        return {}
    common = set(per_seed[0]).intersection(*per_seed[1:])
    return {name: float(np.mean([s[name] for s in per_seed])) for name in sorted(common)}


def compare(cell: Sequence[PerImage], reference: Sequence[PerImage], **kw: float) -> PairedDifference:
    """Paired difference of a cell against a reference, each given as one per-image mapping per seed.

    Tile scores (``image@row,col``, ``eval.score_tiles``) go through :func:`tiled_difference`,
    each tile's MSE averaged over the seeds; whole images through :func:`paired_difference`."""
    if all(is_tiled(s) for s in [*cell, *reference]) and cell and reference:
        a, b = _seed_averaged_mse(cell), _seed_averaged_mse(reference)
        return tiled_difference(a, b, **kw)  # type: ignore[arg-type]
    a, b = seed_averaged(cell), seed_averaged(reference)
    names = sorted(set(a) & set(b))
    return paired_difference([a[n] for n in names], [b[n] for n in names], **kw)  # type: ignore[arg-type]


def _seed_averaged_mse(per_seed: Sequence[PerImage]) -> dict[str, float]:
    """Each tile's PSNR of its MSE averaged over the seeds (the seed-averaged error, in dB)."""
    mse = [{n: float(_mse(np.array([v]))[0]) for n, v in s.items()} for s in per_seed]
    return {n: -10.0 * math.log10(m) for n, m in seed_averaged(mse).items()}


def seed_spread(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation) over seeds; the std is None for a single seed."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def per_seed_differences(cell: Mapping[int, PerImage], reference: Mapping[int, PerImage]) -> list[float]:
    """For each seed both sides ran, the mean over shared images of cell − reference (same seed:
    same initial weights, data order and draws, so the seeds pair too)."""
    out = []
    for seed in sorted(set(cell) & set(reference)):
        names = sorted(set(cell[seed]) & set(reference[seed]))
        if names and is_tiled(cell[seed]) and is_tiled(reference[seed]):
            out.append(tiled_difference(cell[seed], reference[seed], samples=1).mean)
        elif names:
            out.append(float(np.mean([cell[seed][n] - reference[seed][n] for n in names])))
    return out
