"""Device-time estimates of training runs from a short timed calibration of their training step.

A step's time is close to affine in the pixels it processes, ``a + b * batch * patch^2`` (every
network here is convolutional or window attention; the VQGAN, teacher and history passes all
scale with the patch). Calibration builds the run's engine (random weights: speed does not
depend on them), and times training steps at two small sizes on this process's device with the
run's threads and precision; the fit gives the step time at every stage's size. A run small
enough is timed at its own size instead. One calibration serves every run with the same
networks and method (:func:`calibration_key`).

What it leaves out, and the report's estimate-against-actual shows: validation and test
passes, start-up (building networks, the data cache, Ray), and checkpoint writing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dckd.config import ExperimentConfig

#: Below this many LR pixels per step (batch x patch^2) a run is timed at its own size.
OWN_SIZE_PIXELS = 8 * 32 * 32
#: The batch sizes of the two calibration points, at :func:`calibration_patch`.
POINTS = (1, 4)


@dataclass(frozen=True)
class Calibration:
    """Fitted step time ``a + b * pixels`` (seconds; pixels = batch x LR patch^2) and how it was measured."""

    a: float
    b: float
    points: tuple[tuple[int, int, float], ...]  # (batch, patch, seconds per step)
    device: str
    calibrate_s: float  # what the calibration itself took

    def step_s(self, batch: int, patch: int) -> float:
        return max(0.0, self.a + self.b * batch * patch * patch)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "points": [list(p) for p in self.points]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        return cls(a=d["a"], b=d["b"], points=tuple(tuple(p) for p in d["points"]), device=d["device"],
                   calibrate_s=d["calibrate_s"])


def calibration_key(cfg: ExperimentConfig) -> str:
    """What a step's speed depends on: the networks, the method and how the step computes."""
    t = cfg.train
    key = {"task": cfg.task, "scale": cfg.scale,
           "student": cfg.student.model_dump(mode="json", exclude={"checkpoint"}),
           "teacher": None if cfg.teacher is None else cfg.teacher.model_dump(mode="json", exclude={"checkpoint"}),
           "method": cfg.method.model_dump(mode="json"),
           "vqgan": cfg.vqgan.model_dump(mode="json", exclude={"checkpoint"}) if cfg.method.needs_vqgan else None,
           "how": [t.device, t.threads, t.precision, t.channels_last, t.compile, t.frozen_chunk_rows]}
    return json.dumps(key, sort_keys=True)


def calibration_patch(cfg: ExperimentConfig) -> int:
    """The LR patch of the calibration points: 16 for SR (64 HR px at x4), 64 for same-size tasks."""
    return 16 if cfg.scale > 1 else 64


def _sizes(cfg: ExperimentConfig) -> list[tuple[int, int]]:
    from dckd.training.loop import training_stages

    return [(s.batch_size, s.lq_patch) for s in training_stages(cfg)]


def time_step(cfg: ExperimentConfig, batch: int, patch: int, steps: int = 2, warmup: int = 1,
              engine: Any = None) -> float:
    """Seconds per training step at this size: the fastest of ``steps`` after ``warmup`` (least noise)."""
    import torch

    from dckd.training.engine import Engine

    engine = engine or Engine(_random_weights(cfg), notes=lambda _msg: None)
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(batch, 3, patch, patch, generator=g)
    gt = torch.rand(batch, 3, patch * cfg.scale, patch * cfg.scale, generator=g)
    cuda = engine.device.type == "cuda"
    times = []
    for i in range(warmup + steps):
        tic = time.perf_counter()
        engine.train_step(lq, gt)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return min(times)


def _random_weights(cfg: ExperimentConfig) -> ExperimentConfig:
    update: dict[str, Any] = {"student": cfg.student.model_copy(update={"checkpoint": None}),
                              "vqgan": cfg.vqgan.model_copy(update={"checkpoint": None})}
    if cfg.teacher is not None:
        update["teacher"] = cfg.teacher.model_copy(update={"checkpoint": None})
    return cfg.model_copy(update=update)


def calibrate(cfg: ExperimentConfig) -> Calibration:
    """Time the run's step (its threads, device, precision) and fit ``a + b * pixels``."""
    import torch

    from dckd.training.engine import Engine

    tic = time.perf_counter()
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        engine = Engine(_random_weights(cfg), notes=lambda _msg: None)
        sizes = _sizes(cfg)
        if max(b * p * p for b, p in sizes) <= OWN_SIZE_PIXELS and len(set(sizes)) == 1:
            (batch, patch), = set(sizes)
            s = time_step(cfg, batch, patch, engine=engine)
            return Calibration(a=s, b=0.0, points=((batch, patch, s),), device=str(engine.device),
                               calibrate_s=time.perf_counter() - tic)
        patch = calibration_patch(cfg)
        points = tuple((b, patch, time_step(cfg, b, patch, engine=engine)) for b in POINTS)
        (b1, p1, t1), (b2, p2, t2) = points
        slope = (t2 - t1) / (b2 * p2 * p2 - b1 * p1 * p1)
        if slope <= 0:  # noise swamped the difference: proportional to the larger point instead
            slope, intercept = t2 / (b2 * p2 * p2), 0.0
        else:
            intercept = max(0.0, t1 - slope * b1 * p1 * p1)
        return Calibration(a=intercept, b=slope, points=points, device=str(engine.device),
                           calibrate_s=time.perf_counter() - tic)
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Estimate:
    """One run's estimated training time: seconds per step (first stage), wall and device seconds."""

    step_s: float
    train_s: float
    device_s: float
    workers: int
    devices_per_worker: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def estimate(cfg: ExperimentConfig, calib: Calibration, use_gpu: bool | None = None) -> Estimate:
    """The run's training steps on ``ray.num_workers`` workers (batch per worker, as configured)."""
    from dckd.training.loop import training_stages

    total, start, first = 0.0, 0, None
    for stage in training_stages(cfg):
        end = cfg.train.iterations if stage.end is None else min(stage.end, cfg.train.iterations)
        step = calib.step_s(stage.batch_size, stage.lq_patch)
        first = step if first is None else first
        total += max(0, end - start) * step
        start = end
    gpu = cfg.ray.use_gpu if use_gpu is None else use_gpu
    per_worker = float(cfg.ray.gpus_per_worker or 1.0) if gpu else 1.0
    workers = cfg.ray.num_workers
    return Estimate(step_s=first or 0.0, train_s=total, device_s=total * workers * per_worker, workers=workers,
                    devices_per_worker=per_worker)


def calibrate_all(cfgs: dict[str, ExperimentConfig], progress: Callable[[str], None] | None = None,
                  calibrator: Callable[[ExperimentConfig], Calibration] = calibrate) -> dict[str, Calibration]:
    """One calibration per distinct :func:`calibration_key`; returns them by each run's key (name)."""
    by_key: dict[str, Calibration] = {}
    out: dict[str, Calibration] = {}
    distinct = {calibration_key(c) for c in cfgs.values()}
    for name, cfg in cfgs.items():
        key = calibration_key(cfg)
        if key not in by_key:
            if progress:
                progress(f"calibrating {len(by_key) + 1}/{len(distinct)}: {name}")
            by_key[key] = calibrator(cfg)
        out[name] = by_key[key]
    return out


def hours(seconds: float) -> str:
    """Device time in the unit a person reads it in."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


