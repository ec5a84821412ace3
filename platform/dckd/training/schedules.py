"""Learning-rate schedules as pure functions of the iteration, so resume is exact by construction."""

from __future__ import annotations

import bisect
import math

from dckd.config import ScheduleConfig


def lr_at(cfg: ScheduleConfig, base_lr: float, iteration: int, total: int) -> float:
    """The learning rate used for iteration ``iteration`` (1-based) of ``total``.

    multistep: BasicSR's MultiStepLR (x gamma after each milestone); cosine: annealing from
    base_lr to eta_min over the run; cosine_restart: BasicSR's CosineAnnealingRestartCyclicLR
    (Restormer: flat 3e-4 for 92k iterations, then cosine down to 1e-6 over 208k).
    """
    t = iteration - 1  # schedulers in BasicSR see the count of completed steps
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "multistep":
        return base_lr * cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), t)
    if cfg.name == "cosine":
        return cfg.eta_min + 0.5 * (base_lr - cfg.eta_min) * (1 + math.cos(math.pi * min(t, total) / total))
    start = 0
    for period, eta_min in zip(cfg.periods, cfg.eta_mins):
        if t <= start + period:
            return eta_min + 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * (t - start) / period))
        start += period
    return cfg.eta_mins[-1]
