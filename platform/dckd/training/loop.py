"""The in-process training loop behind ``dckd train --local``: data, progress, validation, checkpoints.

Run directory layout (``output_dir``)::

    config.yaml              the validated configuration, as run
    metrics.jsonl            one JSON object per log line and per validation
    checkpoints/iter_*.pt    full training state (resume continues exactly)
    student.pth              final weights in BasicSR format (params, params_ema)
    summary.json             final validation and the run's notes

With ``tracking.enabled`` the run is also an MLflow run (``dckd.tracking``): params and the config
once, metrics at each log line and validation, sample restorations at each validation, and at the
end the final checkpoint and the EMA student, registered under ``tracking.alias``. Its id is kept
in every checkpoint, so a resumed run continues the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from dckd.config import ExperimentConfig
from dckd.data import TrainPatches
from dckd.data.datasets import IterationBatches, Stage
from dckd.data.specs import benchmark_sets, train_pairs
from dckd.evaluation.benchmarks import evaluate_sets, protocol_for
from dckd.tracking import RunTracker, collect_samples
from dckd.training.engine import Engine

log = logging.getLogger("dckd")

_CKPT = re.compile(r"^iter_(\d+)\.pt$")


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / f"iter_{iteration:09d}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return max(found)[1] if found else None


def _prune(run_dir: Path, keep: int) -> None:
    folder = run_dir / "checkpoints"
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name)))
    for _, p in found[:-keep]:
        p.unlink(missing_ok=True)


def training_stages(cfg: ExperimentConfig) -> list[Stage]:
    """Patch side and batch size per iteration range: ``data.train.progressive``, else one open stage."""
    t = cfg.data.train
    if t.progressive is None:
        return [Stage(end=None, lq_patch=t.lq_patch, batch_size=cfg.train.batch_size)]
    p = t.progressive
    return [Stage(end=m, lq_patch=lp, batch_size=bs) for m, lp, bs in zip(p.milestones, p.lq_patches, p.batch_sizes)]


def make_loader(cfg: ExperimentConfig, start_iter: int, end_iter: int, rank: int = 0) -> DataLoader:
    """Batches for iterations start_iter+1 .. end_iter: sample k of the run is always the same patch.

    The batch of iteration t has the patch side and batch size of its stage (progressive learning);
    ``rank`` gives each Ray worker its own sample stream.
    """
    t = cfg.data.train
    dataset = TrainPatches(
        train_pairs(cfg), cfg.scale, lq_patch=t.lq_patch, hflip=t.hflip, rot=t.rot,
        seed=cfg.seed, rank=rank, cache_in_memory=t.cache_in_memory,
        pad_to=t.lq_patch if t.reflect_pad else None,
    )
    return DataLoader(
        dataset,
        batch_sampler=IterationBatches(training_stages(cfg), start_iter, end_iter),
        num_workers=t.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def train_local(
    cfg: ExperimentConfig,
    resume: bool = True,
    stop_at: int | None = None,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Train in this process; resume from the latest checkpoint in the run directory if there is one.

    ``stop_at`` ends the run early at that iteration (with a checkpoint), as an interruption would;
    its MLflow run is then marked KILLED until a resume continues it. ``tracking_uri`` overrides
    the config's (see :func:`dckd.tracking.resolve_tracking_uri`).
    """
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    engine = Engine(cfg, notes=lambda msg: print(f"note: {msg}", file=sys.stderr, flush=True))
    latest = latest_checkpoint(run_dir) if resume else None
    if latest is not None:
        engine.load(latest)
        print(f"resuming from {latest} (iteration {engine.iteration})", file=sys.stderr)
    start_iter = engine.iteration
    tracker = RunTracker(cfg, tracking_uri=tracking_uri, run_id=engine.extra.get("mlflow_run_id"))
    run_id = tracker.start()
    if run_id is not None:
        engine.extra["mlflow_run_id"] = run_id
    try:
        summary = _train(cfg, engine, tracker, run_dir, start_iter, stop_at, progress, on_log)
    except BaseException as exc:
        tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    tracker.end("FINISHED" if summary["finished"] else "KILLED")
    return summary


def _train(cfg: ExperimentConfig, engine: Engine, tracker: RunTracker, run_dir: Path, start_iter: int,
           stop_at: int | None, progress: bool,
           on_log: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    tracker.log_params_once()
    tracker.log_config()
    total = cfg.train.iterations
    end = min(total, stop_at) if stop_at is not None else total
    metrics = JsonlWriter(run_dir / "metrics.jsonl")
    vals = benchmark_sets(cfg, "val")
    protocol = protocol_for(cfg)
    bar = _progress(engine.iteration, end, cfg.name, enabled=progress)
    window: list[dict[str, torch.Tensor]] = []
    tic = time.perf_counter()
    last_val: dict[str, Any] = {}
    example: torch.Tensor | None = None
    for batch in make_loader(cfg, engine.iteration, end):
        terms = engine.train_step(batch["lq"], batch["gt"])
        example = batch["lq"][:1]
        window.append({**terms, "_images": torch.tensor(float(batch["lq"].shape[0]))})
        t = engine.iteration
        bar.update(1)
        if t % cfg.train.log_every == 0 or t == end:
            record = window_record(window, engine, time.perf_counter() - tic)
            metrics.write({"kind": "train", "iter": t, **record})
            bar.set_postfix(loss=f"{record['total']:.4f}")
            if on_log:
                on_log({"kind": "train", "iter": t, **record})
            tracker.log_metrics(record, step=t)
            window, tic = [], time.perf_counter()
        if vals and (t % cfg.train.val_every == 0 or t == total):
            last_val = validate_and_log(engine, vals, protocol, tracker)
            metrics.write({"kind": "val", "iter": t, **_flatten(last_val)})
            bar.write(f"[{cfg.name}] iter {t}: " + ", ".join(
                f"{name} {m['psnr']:.2f} dB / {m['ssim']:.4f}" for name, m in last_val.items()), file=sys.stderr)
        if t % cfg.train.ckpt_every == 0 or t == end:
            engine.save(checkpoint_path(run_dir, t))
            _prune(run_dir, cfg.train.keep_checkpoints)
    bar.close()
    summary = {
        "name": cfg.name,
        "iteration": engine.iteration,
        "finished": engine.iteration >= total,
        "val": last_val,
        "vqgan_pretrained": engine.vqgan_pretrained,
        "notes": engine.notes,
        "mlflow_run_id": engine.extra.get("mlflow_run_id"),
    }
    if engine.iteration >= total:
        engine.export_weights(run_dir / "student.pth")
        if start_iter < total and cfg.data.test:
            summary["test"] = test_and_log(engine.eval_model(), cfg, engine.device, tracker, engine.teacher)
            print(f"[{cfg.name}] test: " + ", ".join(f"{name} {m['psnr']:.2f} dB / {m['ssim']:.4f}"
                                                     for name, m in summary["test"].items()), file=sys.stderr)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if tracker.enabled and start_iter < total <= engine.iteration:  # this call finished the run
        tracker.log_checkpoint(checkpoint_path(run_dir, engine.iteration))
        tracker.log_text((run_dir / "summary.json").read_text(), "summary.json")
        if example is None:
            example = torch.zeros(1, 3, cfg.data.train.lq_patch, cfg.data.train.lq_patch)
        tracker.log_student(engine.ema, example, cfg.tracking.registered_name(cfg.name),
                            cfg.tracking.alias)
    return summary


def window_record(window: list[dict[str, torch.Tensor]], engine: Engine, elapsed: float,
                  world_size: int = 1) -> dict[str, float]:
    """Mean of each loss term over the steps since the last log line, the lr and the throughput.

    A step's ``_images`` entry (its batch size: progressive schedules change it) counts images;
    without it every step counts ``train.batch_size``.
    """
    record = {k: float(torch.stack([w[k] for w in window]).mean()) for k in window[0] if not k.startswith("_")}
    record["lr"] = engine.lr(engine.iteration)
    images = (sum(float(w["_images"]) for w in window) if "_images" in window[0]
              else len(window) * engine.cfg.train.batch_size)
    record["images_per_s"] = images * world_size / max(elapsed, 1e-9)
    return record


def validate_and_log(engine: Engine, vals: list, protocol, tracker: RunTracker | None) -> dict[str, Any]:
    """Score the evaluated student on every benchmark set; log ``val/<set>/psnr|ssim`` and samples."""
    results = evaluate_sets(engine.eval_model(), vals, protocol, engine.device)
    if tracker is not None and tracker.enabled:
        t = engine.iteration
        tracker.log_metrics({f"val/{k}": v for k, v in _flatten(results).items()}, step=t)
        if engine.cfg.tracking.samples:
            tracker.log_samples(t, *collect_samples(engine.eval_model(), engine.teacher, vals[0][1],
                                                    engine.cfg.tracking.samples, engine.device, engine.cfg.scale))
    return results


def test_and_log(model: torch.nn.Module, cfg: ExperimentConfig, device: torch.device, tracker: RunTracker | None,
                 teacher: torch.nn.Module | None = None, step: int | None = None) -> dict[str, Any]:
    """Score ``model`` on every ``data.test`` set once training is over (the numbers a paper table reports).

    Logs ``test/<set>/psnr|ssim`` and side-by-side samples of the first set under ``test_samples/``.
    """
    sets = benchmark_sets(cfg, "test")
    if not sets:
        return {}
    results = evaluate_sets(model, sets, protocol_for(cfg), device)
    if tracker is not None and tracker.enabled:
        t = cfg.train.iterations if step is None else step
        tracker.log_metrics({f"test/{k}": v for k, v in _flatten(results).items()}, step=t)
        if cfg.tracking.samples:
            tracker.log_samples(t, *collect_samples(model, teacher, sets[0][1], cfg.tracking.samples, device,
                                                    cfg.scale), artifact_dir="test_samples")
    return results


def _flatten(val: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{name}/{k}": v for name, m in val.items() for k, v in m.items() if k in ("psnr", "ssim")}


def _progress(start: int, end: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=end, initial=start, desc=name, unit="it", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr, mininterval=1.0)
