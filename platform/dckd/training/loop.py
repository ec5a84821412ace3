"""The training loop, one for every run: ``dckd train --local`` and each Ray Train worker run it.

:func:`run_training` resumes the engine, trains, validates, writes the run directory and talks to
MLflow; what differs between a local and a Ray run is the :class:`~dckd.training.reporters.Reporter`
passed in (progress and checkpoints) and the engine (device, DDP). Rank 0, or the local process,
validates, writes the run directory and tracks; the other ranks only train and report.

Run directory layout (``output_dir``), the same for both::

    config.yaml              the validated configuration, as run
    metrics.jsonl            one JSON object per log line and per validation
    student.pth              final weights in BasicSR format (params, params_ema)
    summary.json             final validation and test scores, the run's cost (dckd.training.cost) and
                             notes (or why it stopped)
    test_scores.csv          per-image (per-tile with eval.score_tiles) test PSNR/SSIM
    config.before-iter_N.yaml  the config a resume with --allow-config-change replaced at iteration N

A local run keeps its checkpoints there too (``checkpoints/iter_*.pt``: full training state,
resume continues exactly). A Ray run keeps them in Ray's storage path instead (``ray.storage_path``,
by default ``<output_dir>/ray``), where ``ray.train.get_checkpoint()`` finds them after a worker
failure or a rerun, and where they may be on S3, off this machine.

With ``tracking.enabled`` the run is also an MLflow run (``dckd.tracking``): params and the config
once, metrics at each log line and validation, sample restorations at each validation, and, when
this call finishes the run, the test scores, ``summary.json``, the final checkpoint (as
``checkpoints/iter_*.pt``) and the EMA student (input example: the last training batch's first
input), registered under ``tracking.alias``. Its id is kept in every checkpoint, so a resumed run
continues the same MLflow run. A run resumed after it had finished trains, tests and logs nothing
again; its summary keeps the scores it had.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from dckd.config import ExperimentConfig
from dckd.config.changes import describe, trajectory_changes
from dckd.config.secrets import masked
from dckd.data import TrainPatches
from dckd.data.datasets import IterationBatches, Stage
from dckd.data.specs import benchmark_sets, train_pairs
from dckd.errors import NonFiniteLossError, ResumeConfigError
from dckd.evaluation.benchmarks import SCORES_FILE, evaluate_sets, protocol_for, scores_csv
from dckd.tracking import RunTracker, check_server, collect_samples
from dckd.training.cost import CostMeter, devices_per_worker
from dckd.training.cost import metrics as cost_metrics
from dckd.training.engine import Engine
from dckd.training.reporters import (
    LocalReporter,
    Reporter,
    checkpoint_name,
    checkpoint_path,
    latest_checkpoint,
)
from dckd.training.rundir import append_record, make_dir, remove_orphans, trim_metrics, write_text

__all__ = [
    "checkpoint_path", "latest_checkpoint", "make_loader", "run_training", "test_and_log", "train_local",
    "training_stages", "validate_and_log", "window_record",
]

log = logging.getLogger("dckd")


def training_stages(cfg: ExperimentConfig) -> list[Stage]:
    """Patch side and batch size per iteration range: ``data.train.progressive``, else one open stage."""
    t = cfg.data.train
    if t.progressive is None:
        return [Stage(end=None, lq_patch=t.lq_patch, batch_size=cfg.train.batch_size)]
    p = t.progressive
    return [Stage(end=m, lq_patch=lp, batch_size=bs) for m, lp, bs in zip(p.milestones, p.lq_patches, p.batch_sizes)]


def loader_workers(cfg: ExperimentConfig, device: torch.device, cpus: float | None = None) -> tuple[int, str]:
    """``data.train.num_workers``, or its default for this device, with the rule that gave it.

    On a CPU device the step computes on every core it has, and loader processes would take
    them from it: 0 (the patches are cut in the step's process). On a GPU the loader must keep
    up with a step that no longer waits for the CPU: one process per CPU of this worker minus
    one for the step's own process, at most 8. The CPUs are ``ray.cpus_per_worker`` on a Ray
    worker (``cpus``), else those this process may use, shared among the visible GPUs.
    """
    if cfg.data.train.num_workers is not None:
        return cfg.data.train.num_workers, "data.train.num_workers"
    if device.type != "cuda":
        return 0, "default on a CPU device: 0 (the step uses the cores)"
    if cpus is None:
        import os

        own = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        gpus = max(1, torch.cuda.device_count())
        cpus, where = own / gpus, f"{own} CPUs / {gpus} GPU(s)"
    else:
        where = f"ray.cpus_per_worker={cpus:g}"
    n = max(0, min(8, int(cpus) - 1))
    return n, f"default on a GPU: {where}, minus 1 for the step, at most 8"


def make_loader(cfg: ExperimentConfig, start_iter: int, end_iter: int, rank: int = 0,
                device: torch.device | None = None, cpus: float | None = None) -> DataLoader:
    """Batches for iterations start_iter+1 .. end_iter: sample k of the run is always the same patch.

    The batch of iteration t has the patch side and batch size of its stage (progressive learning);
    ``rank`` gives each Ray worker its own sample stream. ``device`` and ``cpus`` choose the
    default number of loader processes (``loader_workers``).
    """
    t = cfg.data.train
    workers, _rule = loader_workers(cfg, device or torch.device("cpu"), cpus)
    dataset = TrainPatches(
        train_pairs(cfg), cfg.scale, lq_patch=t.lq_patch, hflip=t.hflip, rot=t.rot,
        seed=cfg.seed, rank=rank, cache_in_memory=t.cache_in_memory,
        pad_to=t.lq_patch if t.reflect_pad else None,
    )
    return DataLoader(
        dataset,
        batch_sampler=IterationBatches(training_stages(cfg), start_iter, end_iter),
        num_workers=workers,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def train_local(
    cfg: ExperimentConfig,
    resume: bool = True,
    stop_at: int | None = None,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    tracking_uri: str | None = None,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Train in this process; resume from the latest checkpoint in the run directory if there is one.

    ``stop_at`` ends the run early at that iteration (with a checkpoint), as an interruption would;
    its MLflow run is then marked KILLED until a resume continues it. ``tracking_uri`` overrides
    the config's (see :func:`dckd.tracking.resolve_tracking_uri`). ``allow_config_change`` lets a
    resume continue with a config that changes the training (see :mod:`dckd.config.changes`).
    """
    tracker = RunTracker(cfg, tracking_uri=tracking_uri)
    if tracker.enabled:
        check_server(tracker.tracking_uri)  # a server that is down fails the run before any work
    engine = Engine(cfg, notes=lambda msg: print(f"note: {msg}", file=sys.stderr, flush=True))
    return run_training(cfg, engine, LocalReporter(cfg, resume=resume, progress=progress),
                        tracker, stop_at=stop_at, on_log=on_log,
                        allow_config_change=allow_config_change)


def run_training(
    cfg: ExperimentConfig,
    engine: Engine,
    reporter: Reporter,
    tracker: RunTracker | None = None,
    stop_at: int | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Resume, train to ``train.iterations`` (or ``stop_at``), validate, test; returns the run's summary.

    ``tracker`` is used on rank 0 only (other ranks may pass None); it is started here, after
    resuming, so that it continues the MLflow run whose id the checkpoint carries. A non-finite
    loss (``train.on_nonfinite: stop``) or a refused config change ends the run on every rank
    through :meth:`Reporter.stop`: nothing is registered, the last good checkpoint is kept.
    """
    chief = reporter.rank == 0
    tracker = tracker if chief else None
    if chief:
        for orphan in remove_orphans(cfg.run_dir):
            reporter.message(f"removed {orphan}: the temporary file of a write that was interrupted")
    try:
        reporter.resume(engine)
        cost = CostMeter(engine.extra, engine.device, reporter.world_size,
                         devices_per_worker(engine.device, cfg.ray.gpus_per_worker if reporter.on_ray else None))
        changes = _resumed_config_changes(cfg, engine, reporter, allow_config_change)
        if chief:
            _open_run_dir(cfg, engine, reporter, changes)
        if tracker is not None and (run_id := tracker.start(engine.extra.get("mlflow_run_id"))) is not None:
            engine.extra["mlflow_run_id"] = run_id
        if tracker is not None:
            tracker.set_tags({"dckd.precision": engine.precision.name,
                              "dckd.precision_reason": engine.precision.reason})
        if tracker is not None and engine.extra.get("config_changes"):
            tracker.set_tags({"dckd.config_changes": json.dumps(engine.extra["config_changes"])})
        summary = _train(cfg, engine, reporter, tracker, stop_at, on_log, cost)
    except (NonFiniteLossError, ResumeConfigError) as exc:  # raised alike on every rank
        if tracker is not None:
            tracker.end("FAILED")
        if isinstance(exc, NonFiniteLossError):
            kept = f"; the last good checkpoint is {reporter.last_saved}" if reporter.last_saved else \
                "; no checkpoint had been written"
            exc = NonFiniteLossError(f"{exc}{kept}; nothing was registered")
            if chief:
                write_text(cfg.run_dir / "summary.json",
                           json.dumps({**_summary(cfg, engine, {}), "stopped": str(exc)}, indent=2), "run summary")
        reporter.stop(exc, engine)  # raises, except where the last report carries it (Ray)
        return {**_summary(cfg, engine, {}), "stopped": str(exc), "error": type(exc).__name__}
    except BaseException as exc:
        if tracker is not None:
            tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        reporter.close()
    if tracker is not None:
        tracker.end("FINISHED" if summary["finished"] else "KILLED")
    return summary


def _resumed_config_changes(cfg: ExperimentConfig, engine: Engine, reporter: Reporter,
                            allow: bool) -> list[tuple[str, Any, Any]]:
    """Compare the config with the resumed checkpoint's: changes that alter the training are refused
    (:class:`ResumeConfigError`) unless ``allow``; returns them (empty on a fresh start)."""
    if engine.resumed_config is None:
        return []
    changed, free = trajectory_changes(masked(engine.resumed_config), cfg.stored())
    if free and reporter.rank == 0:
        reporter.message(f"resumed with other settings that do not change the training: {describe(free)}")
    if changed and not allow:
        raise ResumeConfigError(
            f"{cfg.run_dir}: the checkpoint of iteration {engine.iteration} was trained with another config: "
            f"{describe(changed)}. This changes the training from here on; rerun with --allow-config-change "
            "to continue anyway (the change is recorded), with --fresh to start a new run (the earlier one "
            "is kept aside), or under another name")
    if changed:
        record = {"iter": engine.iteration, "changes": [{"field": k, "from": a, "to": b} for k, a, b in changed]}
        engine.extra["config_changes"] = [*engine.extra.get("config_changes", []), record]
        if reporter.rank == 0:
            reporter.message(f"continuing with a changed config (--allow-config-change): {describe(changed)}")
    return changed


def _open_run_dir(cfg: ExperimentConfig, engine: Engine, reporter: Reporter,
                  changes: list[tuple[str, Any, Any]]) -> None:
    """Rank 0 before training: ``config.yaml`` (the one it replaces kept when the config changed)
    and ``metrics.jsonl`` cut back to the resumed iteration (a resumed run logs the rest again)."""
    run_dir = cfg.run_dir
    make_dir(run_dir)
    config_file = run_dir / "config.yaml"
    if changes and config_file.is_file():
        write_text(run_dir / f"config.before-iter_{engine.iteration:09d}.yaml", config_file.read_text(), "config")
    write_text(config_file, cfg.to_yaml(), "config")
    dropped = trim_metrics(run_dir / "metrics.jsonl", engine.iteration)
    if dropped:
        reporter.message(f"metrics.jsonl: dropped {dropped} line(s) past iteration {engine.iteration}, "
                         "which this run trains again")
    if changes:
        append_record(run_dir / "metrics.jsonl", {"kind": "config_change", **engine.extra["config_changes"][-1]})


def _train(cfg: ExperimentConfig, engine: Engine, reporter: Reporter, tracker: RunTracker | None,
           stop_at: int | None, on_log: Callable[[dict[str, Any]], None] | None, cost: CostMeter) -> dict[str, Any]:
    chief = reporter.rank == 0
    start_iter, total = engine.iteration, cfg.train.iterations
    end = min(total, stop_at) if stop_at is not None else total
    finishes = start_iter < total <= end  # this call takes the run to its last iteration
    if tracker is not None:
        tracker.log_params_once()
        tracker.log_config()
    log_file = cfg.run_dir / "metrics.jsonl" if chief else None  # _open_run_dir made its folder
    vals = benchmark_sets(cfg, "val") if chief else []
    protocol = protocol_for(cfg)

    def upload_final(path: Path) -> None:
        if tracker is not None and finishes and engine.iteration == total:
            tracker.log_checkpoint(path, name=checkpoint_name(total))

    window: list[dict[str, torch.Tensor]] = []
    last: dict[str, float] = {}  # what the reporter passes on (Ray, Tune): the newest of everything
    last_val: dict[str, Any] = {}
    example: torch.Tensor | None = None
    reporter.begin(start_iter, end)
    tic = mark = time.perf_counter()
    for batch in make_loader(cfg, start_iter, end, rank=reporter.rank, device=engine.device,
                             cpus=cfg.ray.cpus_per_worker if reporter.on_ray else None):
        reporter.before_step(engine.iteration + 1)
        terms = engine.train_step(batch["lq"], batch["gt"])
        cost.add_step(time.perf_counter() - mark, float(batch["lq"].shape[0]))
        example = batch["lq"][:1]
        window.append({**terms, "_images": torch.tensor(float(batch["lq"].shape[0]))})
        t = engine.iteration
        record = None
        if t % cfg.train.log_every == 0 or t == end:
            record = window_record(window, engine, time.perf_counter() - tic, world_size=reporter.world_size)
            last.update(record)
            if log_file is not None:
                append_record(log_file, {"kind": "train", "iter": t, **record})
                if on_log:
                    on_log({"kind": "train", "iter": t, **record})
            if tracker is not None:
                tracker.log_metrics(record, step=t)
            window, tic = [], time.perf_counter()
        is_val = t % cfg.train.val_every == 0 or t == total
        is_ckpt = t % cfg.train.ckpt_every == 0 or t == end
        if is_val and vals:
            last_val = validate_and_log(engine, vals, protocol, tracker)
            last.update({f"val/{k}": v for k, v in _flatten(last_val).items()})
            last["val_psnr"] = last_val[vals[0][0]]["psnr"]  # the first set: what Tune schedules on
            if log_file is not None:
                append_record(log_file, {"kind": "val", "iter": t, **_flatten(last_val)})
            reporter.message(f"[{cfg.name}] iter {t}: {_scores(last_val)}")
        if is_val or is_ckpt:
            cost.update()  # into the checkpoint: a resumed run adds to these totals
            reporter.report(engine, {"iteration": t, **last}, checkpoint=is_ckpt, on_saved=upload_final)
        reporter.after_step(t, record)
        mark = time.perf_counter()
    summary = _summary(cfg, engine, last_val)
    if chief:
        _close_run(cfg, engine, reporter, tracker, summary, finishes, example, cost)
    return summary


def _close_run(cfg: ExperimentConfig, engine: Engine, reporter: Reporter, tracker: RunTracker | None,
               summary: dict[str, Any], finishes: bool, example: torch.Tensor | None, cost: CostMeter) -> None:
    """Rank 0 after the last step: final weights, the test once, summary.json, the student to MLflow.

    A run that had finished before this call keeps the val and test scores of its summary.
    """
    run_dir, total = cfg.run_dir, cfg.train.iterations
    previous = _read_summary(run_dir) if engine.iteration >= total and not finishes else {}
    if not summary["val"] and "val" in previous:
        summary["val"] = previous["val"]
    if engine.iteration >= total:
        engine.export_weights(run_dir / "student.pth")
    if finishes and cfg.data.test:
        summary["test"] = test_and_log(engine.eval_model(), cfg, engine.device, tracker, engine.teacher)
        reporter.message(f"[{cfg.name}] test: {_scores(summary['test'])}")
    elif "test" in previous:
        summary["test"] = previous["test"]
    if finishes or "cost" not in previous:
        summary["cost"] = cost.update()
        if tracker is not None and finishes:
            tracker.log_metrics(cost_metrics(summary["cost"]), step=total)
    else:
        summary["cost"] = previous["cost"]
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2), "run summary")
    if tracker is not None and finishes:
        assert example is not None  # finishing the run took at least one step
        tracker.log_text((run_dir / "summary.json").read_text(), "summary.json")
        tracker.log_student(engine.ema, example, cfg.tracking.registered_name(cfg.name), cfg.tracking.alias)


def _summary(cfg: ExperimentConfig, engine: Engine, val: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": cfg.name,
        "iteration": engine.iteration,
        "finished": engine.iteration >= cfg.train.iterations,
        "val": val,
        "vqgan_pretrained": engine.vqgan_pretrained,
        "precision": engine.precision.name,
        "notes": engine.notes,
        "mlflow_run_id": engine.extra.get("mlflow_run_id"),
        **({"nonfinite_skipped": engine.extra["nonfinite_skipped"]} if engine.extra.get("nonfinite_skipped") else {}),
        **({"config_changes": engine.extra["config_changes"]} if engine.extra.get("config_changes") else {}),
    }


def _read_summary(run_dir: Path) -> dict[str, Any]:
    """The summary a finished run wrote, so that resuming it again keeps its scores."""
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def window_record(window: list[dict[str, torch.Tensor]], engine: Engine, elapsed: float,
                  world_size: int = 1) -> dict[str, float]:
    """Mean of each loss term over the steps since the last log line, the lr and the throughput.

    A step's ``_images`` entry (its batch size: progressive schedules change it) counts images;
    without it every step counts ``train.batch_size``. Steps marked ``_skipped`` (their loss was not
    finite) are left out of the means; ``nonfinite_skipped`` counts them over the whole run.
    """
    stepped = [w for w in window if "_skipped" not in w]  # skipped steps (non-finite loss) are counted apart
    record = {k: float(torch.stack([w[k] for w in stepped]).mean()) for k in (stepped[0] if stepped else {})
              if not k.startswith("_")}
    record["lr"] = engine.lr(engine.iteration)
    if skipped := engine.extra.get("nonfinite_skipped"):
        record["nonfinite_skipped"] = float(skipped)
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

    Logs ``test/<set>/psnr|ssim`` and side-by-side samples of the first set under ``test_samples/``,
    and writes the per-image scores (per tile with ``eval.score_tiles``) as ``test_scores.csv`` in
    the run directory and the MLflow run, so that any comparison can be redone without retraining.
    """
    sets = benchmark_sets(cfg, "test")
    if not sets:
        return {}
    results = evaluate_sets(model, sets, protocol_for(cfg), device, per_image=True, tiles=cfg.eval.score_tiles)
    table = scores_csv(results)
    write_text(cfg.run_dir / SCORES_FILE, table, "per-image test scores")
    results = {name: {k: v for k, v in m.items() if k != "per_image"} for name, m in results.items()}
    if tracker is not None and tracker.enabled:
        t = cfg.train.iterations if step is None else step
        tracker.log_metrics({f"test/{k}": v for k, v in _flatten(results).items()}, step=t)
        tracker.log_text(table, SCORES_FILE)
        if cfg.tracking.samples:
            tracker.log_samples(t, *collect_samples(model, teacher, sets[0][1], cfg.tracking.samples, device,
                                                    cfg.scale), artifact_dir="test_samples")
    return results


def _flatten(val: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{name}/{k}": v for name, m in val.items() for k, v in m.items() if k in ("psnr", "ssim")}


def _scores(results: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{name} {m['psnr']:.2f} dB / {m['ssim']:.4f}" for name, m in results.items())
