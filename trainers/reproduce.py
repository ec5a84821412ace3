"""``dckd reproduce TABLE``: a paper table's cells as one Tune grid, then a report against the paper.

Every cell of the table file(s) (``experiments/tables/``) becomes one trial: a Train run of the
cell's experiment (or, for a ``teacher`` cell, the teacher's evaluation), a child MLflow run of
the reproduction's run. At the end the test-set scores are read back from MLflow and the report
(Markdown, HTML, CSV, plots, visual comparisons) sets them against the published numbers.

``--scale-down F`` shrinks the runs for smoke tests (see ``dckd.reporting.reproduction``); the report says so.
``--seeds K`` trains each cell K times (seeds ``seed .. seed + K - 1``); the report pairs the
per-image scores of every cell with its table's reference cells, and registers each cell's best
seed. Before the grid starts, each distinct network pair and method is timed for a few steps
(``dckd.training.calibrate``, on a worker's resources when ``ray.address`` names a cluster) and
the report sets that estimate against the device time the runs logged.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from dckd.config import ExperimentConfig
from dckd.errors import ConfigError
from dckd.reporting.reproduction import PlannedCell, plan
from dckd.reporting.tables import published_json
from dckd.training.calibrate import hours


# --------------------------------------------------------------------------- one trial
def _trial(params: dict[str, Any], plan: dict[str, Any]) -> None:
    """One cell: a Train run of its experiment, or the teacher's evaluation for a teacher cell.

    ``plan`` (every cell's full config, the tracking URI) comes through ``tune.with_parameters``, not
    the param space, which Tune writes to disk: configs and URIs may hold credentials."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from dckd.config import load_config
    from trainers.driver import build_trainer

    meta = plan
    entry = meta["cells"][params["cell"]]
    cfg = load_config(data=entry["config"])
    if entry["kind"] == "teacher":
        _evaluate_teacher(cfg, meta["tracking_uri"], meta["parent_run_id"])
        return
    build_trainer(cfg, tracking_uri=meta["tracking_uri"], parent_run_id=meta["parent_run_id"],
                  run_name=cfg.name, callbacks=[TuneReportCallback()]).fit()


def _evaluate_teacher(cfg: ExperimentConfig, tracking_uri: str | None, parent_run_id: str | None) -> None:
    """The teacher row of a table: its checkpoint scored on the test sets, as a child MLflow run."""
    import torch
    from ray import tune

    from dckd.tracking import RunTracker
    from dckd.training.cost import CostMeter, devices_per_worker
    from dckd.training.cost import metrics as cost_metrics
    from dckd.training.engine import build_network, resolve_device
    from dckd.training.loop import test_and_log

    if cfg.teacher is None:
        raise ConfigError(f"{cfg.name}: a teacher cell needs a 'teacher' section")
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    meter = CostMeter({}, device, 1, devices_per_worker(device, cfg.ray.gpus_per_worker if cfg.ray.use_gpu else None))
    teacher = build_network(cfg.teacher, cfg.scale).to(device).eval()
    tracker = RunTracker(cfg, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    tracker.start()
    tracker.log_params_once()
    if tracker.enabled and cfg.teacher.checkpoint is None:
        tracker.client.set_tag(tracker.run_id, "dckd.note", "teacher has no checkpoint: random weights")
    results = test_and_log(teacher, cfg, device, tracker, step=0)
    tracker.log_metrics(cost_metrics(meter.update()), step=0)
    tracker.end()
    first = next(iter(results.values()), {"psnr": float("nan")})
    tune.report({"iteration": 0, "test_psnr": first["psnr"]})


# --------------------------------------------------------------------------- the whole table
def run_reproduce(name: str, cells: list[str] | None = None, scale_down: float | None = None,
                  overrides: list[str] | None = None, out: str | Path | None = None,
                  tracking_uri: str | None = None, max_concurrent: int | None = None,
                  tables_dir: str | Path | None = None, seeds: int = 1, estimate: bool = True) -> dict[str, Any]:
    """Run the cells (x seeds) as one Tune grid, read the scores back from MLflow, write the report."""
    from ray import tune

    from dckd.reporting.report import TableInfo, write_report
    from dckd.tracking import RunTracker, resolve_tracking_uri
    from trainers.driver import ensure_ray
    from trainers.tune import close_stopped_runs, concurrency

    stem = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    tag = stem if scale_down is None else f"{stem}-x{scale_down:g}"
    out_dir = Path(out or Path("runs") / "reproduce" / tag).expanduser().resolve()
    planned = plan(name, cells, scale_down, overrides, out_dir, tables_dir, seeds)
    base = planned[0].cfg
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ensure_ray(base.ray.address)
    uri = tracking_uri or resolve_tracking_uri(base.model_copy(update={"output_dir": str(out_dir / "runs")}))
    estimates = estimate_plan(planned) if estimate else {}
    parent = RunTracker(base.model_copy(update={"name": f"reproduce-{tag}"}), tracking_uri=uri, enabled=True)
    parent_id = parent.start()
    parent.client.set_tag(parent_id, "dckd.reproduce", name)
    parent.client.set_tag(parent_id, "dckd.seeds", str(seeds))
    if scale_down is not None:
        parent.client.set_tag(parent_id, "dckd.scale_down", str(scale_down))
    tables = list({p.table.spec.table: p.table.spec for p in planned}.values())
    for spec in tables:
        parent.log_text(published_json(spec), f"published/{spec.table}.json")
    if estimates:
        parent.log_text(json.dumps(estimates, indent=2), "estimate.json")
        total = sum(e["estimate"]["device_s"] for e in estimates.values())
        parent.log_metrics({"estimate/device_s": total}, step=0)
        print(f"estimated training steps: {hours(total)} of device time "
              f"(calibrated on {next(iter(estimates.values()))['calibration']['device']})", file=sys.stderr)

    cells_meta = {p.key: {"config": p.cfg.model_dump(mode="json"), "kind": p.cell.kind} for p in planned}
    # Longest first: with fewer slots than cells, the expensive cells do not start last.
    order = sorted(planned, key=lambda p: estimates[p.key]["estimate"]["device_s"] if p.key in estimates
                   else _cost(p), reverse=True)
    space = {"cell": tune.grid_search([p.key for p in order])}
    trial_plan = {"cells": cells_meta, "tracking_uri": uri, "parent_run_id": parent_id}
    print(f"reproducing {len({p.cell_key for p in planned})} cells of {name}"
          + (f" x {seeds} seeds ({len(planned)} runs)" if seeds > 1 else "")
          + (f" scaled down x{scale_down:g}" if scale_down else "") + f"; MLflow: {uri}", file=sys.stderr)
    tuner = tune.Tuner(
        tune.with_parameters(_trial, plan=trial_plan), param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency(base, max_concurrent)),
        run_config=tune.RunConfig(name=f"reproduce-{tag}", storage_path=str(out_dir / "tune"),
                                  verbose=1),
    )
    grid = tuner.fit()
    close_stopped_runs(parent.client, parent.experiment_id, parent_id)
    errors = {r.config["cell"]: repr(r.error) for r in grid if r.error is not None and r.config}
    results = collect_results(parent, parent_id, planned, out_dir / "samples", errors, estimates)
    if seeds > 1:
        register_best_seeds(parent, results, planned)
    notes = sorted({n for p in planned for n in _notes(p)}) + _batch_notes(planned)
    files = write_report([TableInfo.from_spec(spec) for spec in tables], results, out_dir, scale_down=scale_down,
                         title=f"Reproduction of {name}" + (f", {seeds} seeds per cell" if seeds > 1 else ""),
                         extra_notes=notes)
    for f in files.values():
        if Path(f).is_file():
            parent.log_artifact(Path(f), "report")
    parent.end("FINISHED" if not errors else "FAILED")
    summary = {"table": name, "cells": len(results), "runs": len(planned), "seeds": seeds, "errors": errors,
               "report": {k: str(v) for k, v in files.items()},
               "mlflow_parent_run_id": parent_id, "tracking_uri": uri, "notes": notes,
               "estimate_device_s": sum(e["estimate"]["device_s"] for e in estimates.values()) if estimates else None,
               "results": [{"table": r.table, "cell": r.cell, "status": r.status, "run_id": r.run_id,
                            "metrics": {b: list(v) for b, v in r.metrics.items()},
                            "runs": [{"seed": run.seed, "run_id": run.run_id, "status": run.status,
                                      "metrics": {b: list(v) for b, v in run.metrics.items()}, "cost": run.cost}
                                     for run in r.runs],
                            "estimate": r.estimate, "best_seed": r.best_seed, "registered": r.registered}
                           for r in results]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def estimate_plan(planned: list[PlannedCell], progress=None) -> dict[str, dict[str, Any]]:
    """Each trained run's estimated training steps, from one calibration per distinct pair and method.

    Calibrates where the workers run: as a Ray task with one worker's resources when
    ``ray.address`` names a cluster, in this process otherwise (a local instance is this machine).
    """
    from dckd.training.calibrate import Calibration, calibrate_all, estimate

    cfgs = {p.key: p.cfg for p in planned if p.cell.kind != "teacher"}
    if not cfgs:
        return {}
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    base = next(iter(cfgs.values()))
    if base.ray.address is None:
        calibs = calibrate_all(cfgs, say)
    else:
        import ray

        from trainers.driver import ensure_ray

        ensure_ray(base.ray.address)
        task = ray.remote(num_cpus=base.ray.cpus_per_worker,
                          num_gpus=base.ray.gpus_per_worker if base.ray.use_gpu else 0)(_calibrate_remote)
        say(f"calibrating {len(cfgs)} runs on a worker of {base.ray.address}")
        raw = ray.get(task.remote({k: c.model_dump(mode="json") for k, c in cfgs.items()}))
        calibs = {k: Calibration.from_json(v) for k, v in raw.items()}
    return {k: {"calibration": calibs[k].to_json(), "estimate": estimate(cfgs[k], calibs[k]).to_json()}
            for k in cfgs}


def _calibrate_remote(cfgs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from dckd.config import load_config
    from dckd.training.calibrate import calibrate_all

    calibs = calibrate_all({k: load_config(data=v) for k, v in cfgs.items()})
    return {k: c.to_json() for k, c in calibs.items()}


def describe_estimate(planned: list[PlannedCell], estimates: dict[str, dict[str, Any]]) -> str:
    """The estimate as a table: per cell, seconds per step, iterations, device time; the total."""
    lines = ["", "estimated device time of the training steps (validation, test and start-up not included):",
             f"  {'cell':32s} {'s/step':>9s} {'iterations':>10s} {'workers':>8s} {'runs':>5s} {'device time':>12s}"]
    total = 0.0
    by_cell: dict[str, list[PlannedCell]] = {}
    for p in planned:
        by_cell.setdefault(p.cell_key, []).append(p)
    for key, runs in by_cell.items():
        ests = [estimates[p.key]["estimate"] for p in runs if p.key in estimates]
        if not ests:
            lines.append(f"  {key:32s} {'teacher evaluation (not estimated)':>48s}")
            continue
        device_s = sum(e["device_s"] for e in ests)
        total += device_s
        e = ests[0]
        lines.append(f"  {key:32s} {e['step_s']:9.3f} {runs[0].cfg.train.iterations:10d} "
                     f"{e['workers']:>5d} x{e['devices_per_worker']:g} {len(runs):5d} {hours(device_s):>12s}")
    calib = next(iter(estimates.values()))["calibration"] if estimates else None
    spent = sum({json.dumps(v["calibration"], sort_keys=True): v["calibration"]["calibrate_s"]
                 for v in estimates.values()}.values())
    lines.append(f"  {'total':32s} {'':>9s} {'':>10s} {'':>8s} {len(planned):5d} {hours(total):>12s}"
                 f"  = {total / 3600:.4g} device-hours")
    if calib is not None:
        lines.append(f"calibrated on {calib['device']} in {spent:.0f} s: each distinct pair and method timed at "
                     "small sizes and fitted as a + b x batch x patch^2 (dckd.training.calibrate)")
    return "\n".join(lines)


def _cost(p: PlannedCell) -> float:
    """A rough relative cost of a cell, to schedule the longest first (teacher evaluations are cheap)."""
    if p.cell.kind == "teacher":
        return 0.0
    m = p.cfg.method
    passes = 1 + len(m.enabled_terms) + (m.dcr.num_negatives if m.dcr.enabled else 0) + 2 * bool(m.needs_vqgan)
    return p.cfg.train.iterations * p.cfg.train.batch_size * passes


def _notes(p: PlannedCell) -> list[str]:
    cfg = p.cfg
    notes = []
    if p.cell.kind == "teacher" or cfg.method.needs_teacher:
        if cfg.teacher is not None and cfg.teacher.checkpoint is None:
            notes.append("teachers without a checkpoint have random weights")
    if cfg.method.needs_vqgan and cfg.vqgan.checkpoint is None:
        notes.append("the VQGAN encoder has random weights (no checkpoint given)")
    return notes


def _batch_notes(planned: list[PlannedCell]) -> list[str]:
    """One line per distinct batch difference, naming the cells it applies to."""
    by_note: dict[str, list[str]] = {}
    for p in planned:
        if (note := p.batch_note) is not None and p.cell_key not in by_note.setdefault(note, []):
            by_note[note].append(p.cell_key)
    trained = list(dict.fromkeys(p.cell_key for p in planned if p.cell.kind != "teacher"))
    return [f"{'every trained cell' if keys == trained else ', '.join(keys)}: {note}"
            for note, keys in by_note.items()]


def collect_results(parent, parent_id: str, planned: list[PlannedCell], samples_dir: Path,
                    errors: dict[str, str], estimates: dict[str, dict[str, Any]] | None = None) -> list:
    """Each cell's runs (one per seed) read from their child MLflow runs: test scores, per-image
    scores (``test_scores.csv``), cost metrics and the first test sample."""
    from dckd.reporting.evidence import SeedRun
    from dckd.reporting.report import CellResult

    client = parent.client
    runs = client.search_runs([parent.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=10_000)
    by_name: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        by_name[run.info.run_name] = run  # a rerun's newest run wins
    grouped: dict[str, list[PlannedCell]] = {}
    for p in planned:
        grouped.setdefault(p.cell_key, []).append(p)
    results = []
    for cell_runs in grouped.values():
        first = cell_runs[0]
        seed_runs: list[SeedRun] = []
        samples: list[Path] = []
        for p in cell_runs:
            run = by_name.get(p.cfg.name)
            status = "missing"
            metrics: dict[str, tuple[float, float]] = {}
            per_image: dict[str, dict[str, float]] = {}
            cost: dict[str, float] = {}
            if run is not None:
                m = run.data.metrics
                for bench in p.table.spec.benchmarks:
                    if f"test/{bench}/psnr" in m and f"test/{bench}/ssim" in m:
                        metrics[bench] = (m[f"test/{bench}/psnr"], m[f"test/{bench}/ssim"])
                cost = {k.removeprefix("cost/"): v for k, v in m.items() if k.startswith("cost/")}
                status = {"FINISHED": "ok", "KILLED": "stopped"}.get(run.info.status, "error")
                per_image = _download_scores(client, run.info.run_id)
                if not samples:
                    samples = _download_samples(client, run.info.run_id, samples_dir / p.table.spec.table / p.cell.id)
            if p.key in errors:
                status = "error"
            seed_runs.append(SeedRun(seed=p.seed if p.seed is not None else p.cfg.seed,
                                     run_id=run.info.run_id if run is not None else None, status=status,
                                     metrics=metrics, per_image=per_image, cost=cost))
        ok = [r for r in seed_runs if r.status == "ok"] or seed_runs
        benches = [b for b in first.table.spec.benchmarks if any(b in r.metrics for r in ok)]
        mean = {b: (sum(r.metrics[b][0] for r in ok if b in r.metrics) / sum(b in r.metrics for r in ok),
                    sum(r.metrics[b][1] for r in ok if b in r.metrics) / sum(b in r.metrics for r in ok))
                for b in benches}
        status = next((s for s in ("error", "stopped", "missing") if any(r.status == s for r in seed_runs)), "ok")
        ests = [estimates[p.key]["estimate"] for p in cell_runs if estimates and p.key in estimates]
        estimate = ({"device_s": sum(e["device_s"] for e in ests), "train_s": sum(e["train_s"] for e in ests)}
                    if ests else None)
        cell_errors = [errors[p.key] for p in cell_runs if p.key in errors]
        results.append(CellResult(table=first.table.spec.table, cell=first.cell.id, label=first.cell.title,
                                  status=status, metrics=mean, published=dict(first.cell.published),
                                  run_id=seed_runs[0].run_id, samples=samples,
                                  error="; ".join(cell_errors) or None, settings=first.settings, runs=seed_runs,
                                  estimate=estimate))
    return results


def _download_scores(client, run_id: str) -> dict[str, dict[str, float]]:
    """benchmark -> image -> PSNR from the run's ``test_scores.csv`` ({} when it logged none)."""
    from dckd.evaluation.benchmarks import SCORES_FILE, read_scores_csv

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, SCORES_FILE, tmp)
        except Exception:  # noqa: BLE001 - a run that failed before its test
            return {}
        return {b: {img: ps[0] for img, ps in images.items()} for b, images in read_scores_csv(local).items()}


def register_best_seeds(parent, results: list, planned: list[PlannedCell]) -> None:
    """With K seeds, each cell's registered student is its best finished seed's (mean test PSNR)."""
    names = {p.cell_key: p.registered_name for p in planned}
    alias = planned[0].cfg.tracking.alias
    for r in results:
        name = names.get(f"{r.table}:{r.cell}")
        scored = [run for run in r.runs if run.status == "ok" and run.metrics and run.run_id]
        if not scored:
            continue
        best = max(scored, key=lambda run: sum(p for p, _ in run.metrics.values()) / len(run.metrics))
        r.best_seed = best.seed
        parent.client.set_tag(best.run_id, "dckd.best_seed", "true")
        if name is None:
            continue
        model_id = parent.student_of(best.run_id)
        if model_id is None:
            continue
        version = parent.register_logged_model(model_id, best.run_id, name, alias)
        r.registered = f"models:/{name}@{alias} (version {version})"


def _download_samples(client, run_id: str, dest: Path) -> list[Path]:
    try:
        listed = client.list_artifacts(run_id, "test_samples")
    except Exception:  # noqa: BLE001 - no samples logged
        return []
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in sorted(listed, key=lambda a: a.path)[:1]:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(client.download_artifacts(run_id, item.path, tmp))
            target = dest / local.name
            target.write_bytes(local.read_bytes())
            paths.append(target)
    return paths


def run(name: str, cells: list[str] | None = None, scale_down: float | None = None,
        overrides: list[str] | None = None, out: str | None = None, tracking_uri: str | None = None,
        max_concurrent: int | None = None, tables_dir: str | None = None, seeds: int = 1,
        estimate: bool = True) -> dict[str, Any]:
    """The runner registered for ``dckd reproduce``."""
    return run_reproduce(name, cells, scale_down, overrides, out, tracking_uri, max_concurrent, tables_dir,
                         seeds, estimate)


def estimate_text(name: str, cells: list[str] | None, scale_down: float | None, overrides: list[str] | None,
                  tables_dir: str | None, seeds: int = 1) -> str:
    """The runner registered for ``dckd reproduce --check``: the plan's device-time estimate."""
    planned = plan(name, cells, scale_down, overrides, None, tables_dir, seeds)
    return describe_estimate(planned, estimate_plan(planned))


def main(argv: list[str] | None = None) -> int:
    """The same command as ``dckd reproduce`` (the ``ray job submit`` entrypoint)."""
    from dckd.cli import main as dckd_main

    return dckd_main(["reproduce", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
