"""What a run cost: wall time, device-seconds, images/s and peak memory, kept across resumes.

``device_s`` is workers x devices per worker x wall seconds: on a GPU a device is a GPU
(``ray.gpus_per_worker`` on Ray, one locally); a CPU worker counts as one device, whatever its
cores. ``train_s`` is the time in training steps (loading included, validation and
checkpointing not); ``wall_s`` is everything the run's calls took, setup and test included.
The totals live in the engine's ``extra`` state, so they travel with every checkpoint and a
resumed run adds to them (work redone after a failure is not counted twice: it restarts from
the checkpoint's totals).
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import torch

KEY = "cost"


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory of this process, or its peak resident set on the CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def devices_per_worker(device: torch.device, gpus_per_worker: float | None) -> float:
    return float(gpus_per_worker or 1.0) if device.type == "cuda" else 1.0


class CostMeter:
    """Accumulates one run's cost into ``extra[KEY]`` (call :meth:`update` before each checkpoint)."""

    def __init__(self, extra: dict[str, Any], device: torch.device, world_size: int, per_worker: float) -> None:
        self.extra = extra
        self.device = device
        base = dict(extra.get(KEY) or {})
        self.base_wall = float(base.get("wall_s", 0.0))
        self.train_s = float(base.get("train_s", 0.0))
        self.images = float(base.get("images", 0.0))
        self.base_peak = float(base.get("peak_mem_mb", 0.0))
        self.workers = world_size
        self.per_worker = per_worker
        self.tic = time.perf_counter()

    def add_step(self, seconds: float, images: float) -> None:
        self.train_s += seconds
        self.images += images * self.workers

    def update(self) -> dict[str, float]:
        wall = self.base_wall + time.perf_counter() - self.tic
        record = {"wall_s": wall, "train_s": self.train_s, "device_s": wall * self.workers * self.per_worker,
                  "images": self.images, "images_per_s": self.images / self.train_s if self.train_s > 0 else 0.0,
                  "peak_mem_mb": max(self.base_peak, peak_memory_mb(self.device)),
                  "workers": float(self.workers), "devices_per_worker": self.per_worker}
        self.extra[KEY] = record
        return record


def metrics(record: dict[str, float]) -> dict[str, float]:
    """The MLflow metrics of a cost record (``cost/wall_s``, ``cost/device_s``, ...)."""
    return {f"cost/{k}": float(v) for k, v in record.items()}
