"""The per-worker training loop of Ray Train: the library's engine, DDP, checkpoints via Ray.

Every worker runs ``Engine.train_step`` (the one definition of a step). Gradients are
all-reduced by DDP, so the students, their EMA copies and the history models stay identical
across workers; data and degradations are seeded by rank, so every worker draws different
crops and negatives. Rank 0 validates, writes checkpoints and talks to MLflow.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import torch

from dckd.config import load_config
from dckd.data.specs import benchmark_sets
from dckd.evaluation.benchmarks import protocol_for
from dckd.training.engine import Engine
from dckd.training.loop import make_loader, test_and_log, validate_and_log, window_record
from trainers.ddp import average_gradients, wrap_ddp

STATE_FILE = "state.pt"


def _fail_once_if_asked(config: dict[str, Any], rank: int, iteration: int) -> None:
    """Fault injection for tests: the given rank's process dies once at the given iteration."""
    plan = config.get("fail_once")
    if not plan or plan["rank"] != rank or plan["iteration"] != iteration:
        return
    marker = Path(plan["marker"])
    if marker.exists():
        return
    marker.write_text("failed once")
    import os

    os._exit(17)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: ``config`` holds the experiment (as JSON data) and tracking settings."""
    cfg = load_config(data=config["experiment"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    engine = Engine(cfg, device=device, rank=rank, world_size=world,
                    wrap_student=wrap_ddp(device) if world > 1 else None,
                    sync_gradients=average_gradients if world > 1 else None,
                    notes=(lambda m: print(f"note: {m}", file=sys.stderr, flush=True)) if rank == 0 else
                    (lambda _m: None))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            engine.load(Path(folder) / STATE_FILE)
        if rank == 0:
            print(f"resuming from iteration {engine.iteration}", file=sys.stderr, flush=True)

    tracker = None
    if rank == 0:
        from dckd.tracking import RunTracker

        tracker = RunTracker(cfg, tracking_uri=config.get("tracking_uri"),
                             run_id=engine.extra.get("mlflow_run_id"),
                             parent_run_id=config.get("parent_run_id"))
        engine.extra["mlflow_run_id"] = tracker.start()
        tracker.log_params_once()
        tracker.log_config()

    total = cfg.train.iterations
    vals = benchmark_sets(cfg, "val") if rank == 0 else []
    protocol = protocol_for(cfg)
    window: list[dict[str, torch.Tensor]] = []
    last: dict[str, float] = {}
    tic = time.perf_counter()
    for batch in make_loader(cfg, engine.iteration, total, rank=rank):
        _fail_once_if_asked(config, rank, engine.iteration + 1)
        window.append({**engine.train_step(batch["lq"], batch["gt"]),
                       "_images": torch.tensor(float(batch["lq"].shape[0]))})
        t = engine.iteration
        if t % cfg.train.log_every == 0 or t == total:
            record = window_record(window, engine, time.perf_counter() - tic, world_size=world)
            last.update(record)
            if tracker is not None:
                tracker.log_metrics(record, step=t)
            window, tic = [], time.perf_counter()
        is_val = t % cfg.train.val_every == 0 or t == total
        is_ckpt = t % cfg.train.ckpt_every == 0 or t == total
        if not (is_val or is_ckpt):
            continue
        if is_val and rank == 0 and vals:
            results = validate_and_log(engine, vals, protocol, tracker)
            for name, m in results.items():
                last[f"val/{name}/psnr"], last[f"val/{name}/ssim"] = m["psnr"], m["ssim"]
            last["val_psnr"] = results[vals[0][0]]["psnr"]  # the first set: what Tune schedules on
        metrics = {"iteration": t, **last}
        if is_ckpt and rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                engine.save(Path(folder) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)

    if rank == 0:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        weights = engine.export_weights(cfg.run_dir / "student.pth")
        test_and_log(engine.eval_model(), cfg, engine.device, tracker, engine.teacher)
        if tracker is not None:
            tracker.log_artifact(weights)
            p = cfg.data.train.lq_patch
            example = vals[0][1][0]["lq"].unsqueeze(0) if vals else torch.zeros(1, 3, p, p)
            tracker.log_student(engine.ema, example, cfg.tracking.registered_name(cfg.name), cfg.tracking.alias)
            tracker.end()
