"""The Ray Train worker: the library's one training loop with DDP, rank-seeded data and Ray reports.

Every worker runs :func:`dckd.training.loop.run_training` with a :class:`~trainers.reporter.RayReporter`.
Gradients are all-reduced by DDP (and :func:`~trainers.ddp.average_gradients` for trainables other
than the student), so the students, their EMA copies and the history models stay identical across
workers; data and degradations are seeded by rank, so every worker draws different crops and
negatives. Rank 0 validates, writes the run directory (as a local run does, less ``checkpoints/``:
Ray keeps those in its storage path) and talks to MLflow.
"""

from __future__ import annotations

import sys
from typing import Any

import ray.train
import ray.train.torch

from dckd.config import load_config
from dckd.tracking import RunTracker
from dckd.training.engine import Engine
from dckd.training.loop import run_training
from trainers.ddp import any_rank, average_gradients, wrap_ddp
from trainers.reporter import STATE_FILE, RayReporter

__all__ = ["STATE_FILE", "train_loop_per_worker"]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: ``config`` holds the experiment (as JSON data), tracking settings and, in
    tests, ``fail_once`` ({rank, iteration, marker}: that rank dies once before that step)."""
    cfg = load_config(data=config["experiment"])
    reporter = RayReporter(fail_once=config.get("fail_once"))
    rank, world = reporter.rank, reporter.world_size
    device = ray.train.torch.get_device()
    engine = Engine(cfg, device=device, rank=rank, world_size=world,
                    wrap_student=wrap_ddp(device) if world > 1 else None,
                    sync_gradients=average_gradients if world > 1 else None,
                    any_rank=any_rank if world > 1 else None,
                    notes=(lambda m: print(f"note: {m}", file=sys.stderr, flush=True)) if rank == 0 else
                    (lambda _m: None))
    tracker = RunTracker(cfg, tracking_uri=config.get("tracking_uri"),
                         parent_run_id=config.get("parent_run_id")) if rank == 0 else None
    run_training(cfg, engine, reporter, tracker, allow_config_change=bool(config.get("allow_config_change")))
