"""Torch datasets: deterministic random training patches and whole-image benchmark sets.

:class:`TrainPatches` is a pure function of ``(seed, rank, k)`` for the global sample number
``k = iteration * batch + position``. That is what makes resuming exact and independent of
DataLoader workers: a run restarted at iteration ``i`` asks for samples ``i*B ...`` and gets the
very patches the uninterrupted run would have seen, without saving any RNG or sampler state.
Each rank walks its own permutation of the images per epoch (epoch = k // n_images), so ranks
see different data without a DistributedSampler.

With Restormer's progressive schedule the batch size varies, so ``k`` counts samples drawn
before the batch (:class:`IterationBatches` computes it in closed form from the stages), and the
index handed to the dataset is ``(k, lq_patch)``: the patch side is part of the request, not
hidden state, so a resumed run still gets identical batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dckd.data.pairs import ImagePair, load_pair
from dckd.errors import ConfigError, DataError
from dckd.imageio import to_tensor

_PERM_STREAM = 0
_SAMPLE_STREAM = 1
_VIRTUAL_LENGTH = 2**62


def derive_seed(*ints: int) -> int:
    """A stable 63-bit seed from a tuple of integers (same on every machine and Python).

    Python's ``hash`` is salted per process and ``seed + rank`` style arithmetic collides
    ((1, 0) vs (0, 1)), so the integers are hashed with BLAKE2b instead. The result fits
    ``torch.Generator.manual_seed`` and ``numpy.random.default_rng``.
    """
    text = ",".join(str(int(i)) for i in ints)
    digest = hashlib.blake2b(f"dckd-seed:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class PatchPlan:
    """Everything random about one training sample: which image, where, which transforms."""

    index: int
    top: int
    left: int
    hflip: bool
    vflip: bool
    rot90: bool


def _augment(img: np.ndarray, plan: PatchPlan) -> np.ndarray:
    # Same order as BasicSR's ``augment``: horizontal flip, vertical flip, then transpose.
    if plan.hflip:
        img = img[:, ::-1]
    if plan.vflip:
        img = img[::-1]
    if plan.rot90:
        img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


def reflect_pad(lq: np.ndarray, gt: np.ndarray, size: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad an LR image smaller than ``size`` (and its GT by scale x as much) at the bottom/right.

    Restormer's ``padding`` (``cv2.BORDER_REFLECT``, i.e. numpy ``symmetric``) lets images smaller
    than the training patch, such as Rain13K's 481x321 ones at patch 384, still be cropped.
    """
    dh, dw = max(0, size - lq.shape[0]), max(0, size - lq.shape[1])
    if dh == 0 and dw == 0:
        return lq, gt
    if dh > lq.shape[0] or dw > lq.shape[1]:
        raise DataError(f"image of LR size {lq.shape[1]}x{lq.shape[0]} is too small to reflect-pad to {size}")
    lq = np.pad(lq, ((0, dh), (0, dw), (0, 0)), mode="symmetric")
    gt = np.pad(gt, ((0, dh * scale), (0, dw * scale), (0, 0)), mode="symmetric")
    return lq, gt


class TrainPatches(Dataset):
    """Random aligned LR/GT patches with flips and 90-degree rotations, deterministic per sample.

    ``dataset[k]`` depends only on ``(seed, rank, k)`` and the files; ``dataset[(k, p)]`` is the
    same sample with LR patch side ``p`` instead of ``lq_patch``. ``len()`` is huge: drive it with
    ``sampler=range(start * batch, end * batch)`` or :class:`IterationBatches`. ``cache_in_memory``
    keeps decoded (and, for generated LR, downscaled) uint8 pairs; each DataLoader worker holds its own copy.
    Without it, generated-LR pairs are re-downscaled on every access, so prefer LR folders or
    the cache for large HR images. ``pad_to``: images with an LR side below it are reflect-padded
    to it first (:func:`reflect_pad`) instead of being refused.
    """

    def __init__(
        self,
        pairs: list[ImagePair],
        scale: int,
        lq_patch: int = 48,
        hflip: bool = True,
        rot: bool = True,
        seed: int = 0,
        rank: int = 0,
        cache_in_memory: bool = False,
        pad_to: int | None = None,
    ) -> None:
        if not pairs:
            raise DataError("no training image pairs were given")
        if not isinstance(lq_patch, int) or lq_patch < 1:
            raise ConfigError(f"lq_patch must be a positive integer, got {lq_patch!r}")
        self.pairs = list(pairs)
        self.scale = scale
        self.lq_patch = lq_patch
        self.hflip = hflip
        self.rot = rot
        self.seed = seed
        self.rank = rank
        self.cache_in_memory = cache_in_memory
        self.pad_to = pad_to
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return _VIRTUAL_LENGTH

    @property
    def num_images(self) -> int:
        return len(self.pairs)

    def image_index(self, k: int) -> int:
        """Index into ``pairs`` of global sample ``k``: ``perm(seed, rank, k // n)[k % n]``."""
        if k < 0:
            raise IndexError(f"sample number must be >= 0, got {k}")
        n = len(self.pairs)
        epoch = k // n
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.rank, _PERM_STREAM, epoch))
            self._perm = (epoch, torch.randperm(n, generator=g))
        return int(self._perm[1][k % n])

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        pair = load_pair(self.pairs[index], self.scale)
        if self.pad_to is not None:
            pair = reflect_pad(*pair, self.pad_to, self.scale)
        if self.cache_in_memory:
            self._cache[index] = pair
        return pair

    def _plan(self, k: int, index: int, lq_shape: tuple[int, ...], p: int) -> PatchPlan:
        h, w = lq_shape[:2]
        if h < p or w < p:
            pair = self.pairs[index]
            src = pair.lq_path if pair.lq_path is not None else pair.gt_path
            raise DataError(f"image {src} has LR size {w}x{h}, smaller than the {p}x{p} training patch")
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.rank, _SAMPLE_STREAM, k))
        top = int(torch.randint(0, h - p + 1, (1,), generator=g))
        left = int(torch.randint(0, w - p + 1, (1,), generator=g))
        coins = (torch.rand(3, generator=g) < 0.5).tolist()
        return PatchPlan(
            index=index,
            top=top,
            left=left,
            hflip=bool(self.hflip and coins[0]),
            vflip=bool(self.rot and coins[1]),
            rot90=bool(self.rot and coins[2]),
        )

    def sample_plan(self, k: int, lq_patch: int | None = None) -> PatchPlan:
        """The random decisions behind ``self[k]`` (or ``self[(k, lq_patch)]``), for tests and debugging."""
        index = self.image_index(k)
        lq, _ = self._load(index)
        return self._plan(k, index, lq.shape, lq_patch or self.lq_patch)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(item, tuple):
            k, p = int(item[0]), int(item[1])
            if p < 1:
                raise ConfigError(f"lq_patch must be a positive integer, got {p!r}")
        else:
            k, p = int(item), self.lq_patch
        index = self.image_index(k)
        lq, gt = self._load(index)
        plan = self._plan(k, index, lq.shape, p)
        s = self.scale
        lq_crop = lq[plan.top : plan.top + p, plan.left : plan.left + p]
        gt_crop = gt[plan.top * s : (plan.top + p) * s, plan.left * s : (plan.left + p) * s]
        pair = self.pairs[index]
        return {
            "lq": to_tensor(_augment(lq_crop, plan)),
            "gt": to_tensor(_augment(gt_crop, plan)),
            # Empty lq_path: the LR was generated from gt_path with MATLAB bicubic.
            "lq_path": str(pair.lq_path) if pair.lq_path is not None else "",
            "gt_path": str(pair.gt_path),
        }


@dataclass(frozen=True)
class Stage:
    """Iterations up to ``end`` (inclusive, 1-based; None: no end) use this patch and batch size."""

    end: int | None
    lq_patch: int
    batch_size: int


class IterationBatches:
    """Batch sampler for iterations ``start + 1 .. end``: a list of dataset indices per iteration.

    With one open-ended stage the indices are the plain sample numbers ``(t-1)*B .. t*B-1`` (the
    numbering of the fixed-batch loader, so existing runs resume unchanged). With several stages
    each index is ``(k, lq_patch)``, where ``k`` is the number of samples drawn before it by the
    whole run; it is computed from the stages, never accumulated, so any ``start`` resumes exactly.
    """

    def __init__(self, stages: Sequence[Stage], start: int, end: int) -> None:
        if not stages:
            raise ConfigError("at least one training stage is needed")
        for a, b in zip(stages, stages[1:]):
            if a.end is None or (b.end is not None and b.end <= a.end):
                raise ConfigError("stage ends must be strictly increasing; only the last may be open")
        if start < 0 or end < start:
            raise ValueError(f"need 0 <= start <= end, got start={start}, end={end}")
        self.stages = list(stages)
        self.start, self.end = start, end

    def stage_of(self, t: int) -> Stage:
        """The stage of iteration ``t`` (1-based); after the last end the last stage continues."""
        for st in self.stages:
            if st.end is None or t <= st.end:
                return st
        return self.stages[-1]

    def samples_before(self, t: int) -> int:
        """Samples drawn by iterations 1 .. t-1 (the first sample number of iteration t)."""
        n = t - 1
        done, prev = 0, 0
        for i, st in enumerate(self.stages):
            stop = n if i == len(self.stages) - 1 or st.end is None else min(n, st.end)
            done += max(0, stop - prev) * st.batch_size
            prev = stop
            if stop >= n:
                break
        return done

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[list[Any]]:
        plain = len(self.stages) == 1
        k = self.samples_before(self.start + 1)
        for t in range(self.start + 1, self.end + 1):
            st = self.stage_of(t)
            if plain:
                yield list(range(k, k + st.batch_size))
            else:
                yield [(k + j, st.lq_patch) for j in range(st.batch_size)]
            k += st.batch_size


class BenchmarkSet(Dataset):
    """Whole test images, decoded once at construction (benchmarks are small).

    Loading eagerly makes a corrupt or mismatched file fail before any model runs.
    """

    def __init__(self, pairs: list[ImagePair], scale: int) -> None:
        if not pairs:
            raise DataError("no benchmark image pairs were given")
        self.pairs = list(pairs)
        self.scale = scale
        self._arrays = [load_pair(p, scale) for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(lq, gt)`` of item ``i`` as uint8 HWC arrays, the form metrics are computed on."""
        return self._arrays[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        lq, gt = self._arrays[i]
        pair = self.pairs[i]
        return {
            "lq": to_tensor(lq),
            "gt": to_tensor(gt),
            "name": pair.name,
            "lq_path": str(pair.lq_path) if pair.lq_path is not None else "",
            "gt_path": str(pair.gt_path),
        }
