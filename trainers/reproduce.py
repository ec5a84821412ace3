"""``dckd reproduce TABLE``: a paper table's cells as one Tune grid, then a report against the paper.

Every cell of the table file(s) (``experiments/tables/``) becomes one trial: a Train run of the
cell's experiment (or, for a ``teacher`` cell, the teacher's evaluation), a child MLflow run of
the reproduction's run. At the end the test-set scores are read back from MLflow and the report
(Markdown, HTML, CSV, plots, visual comparisons) sets them against the published numbers.

``--scale-down F`` shrinks the runs for smoke tests (see ``dckd.reporting.reproduction``); the report says so.
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
    from dckd.training.engine import build_network, resolve_device
    from dckd.training.loop import test_and_log

    if cfg.teacher is None:
        raise ConfigError(f"{cfg.name}: a teacher cell needs a 'teacher' section")
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    teacher = build_network(cfg.teacher, cfg.scale).to(device).eval()
    tracker = RunTracker(cfg, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    tracker.start()
    tracker.log_params_once()
    if tracker.enabled and cfg.teacher.checkpoint is None:
        tracker.client.set_tag(tracker.run_id, "dckd.note", "teacher has no checkpoint: random weights")
    results = test_and_log(teacher, cfg, device, tracker, step=0)
    tracker.end()
    first = next(iter(results.values()), {"psnr": float("nan")})
    tune.report({"iteration": 0, "test_psnr": first["psnr"]})


# --------------------------------------------------------------------------- the whole table
def run_reproduce(name: str, cells: list[str] | None = None, scale_down: float | None = None,
                  overrides: list[str] | None = None, out: str | Path | None = None,
                  tracking_uri: str | None = None, max_concurrent: int | None = None,
                  tables_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the cells as one Tune grid, read the scores back from MLflow, write the report."""
    from ray import tune

    from dckd.reporting.report import TableInfo, write_report
    from dckd.tracking import RunTracker, resolve_tracking_uri
    from trainers.driver import ensure_ray
    from trainers.tune import close_stopped_runs, concurrency

    stem = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    tag = stem if scale_down is None else f"{stem}-x{scale_down:g}"
    out_dir = Path(out or Path("runs") / "reproduce" / tag).expanduser().resolve()
    planned = plan(name, cells, scale_down, overrides, out_dir, tables_dir)
    base = planned[0].cfg
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ensure_ray(base.ray.address)
    uri = tracking_uri or resolve_tracking_uri(base.model_copy(update={"output_dir": str(out_dir / "runs")}))
    parent = RunTracker(base.model_copy(update={"name": f"reproduce-{tag}"}), tracking_uri=uri, enabled=True)
    parent_id = parent.start()
    parent.client.set_tag(parent_id, "dckd.reproduce", name)
    if scale_down is not None:
        parent.client.set_tag(parent_id, "dckd.scale_down", str(scale_down))
    tables = list({p.table.spec.table: p.table.spec for p in planned}.values())
    for spec in tables:
        parent.log_text(published_json(spec), f"published/{spec.table}.json")

    cells_meta = {p.key: {"config": p.cfg.model_dump(mode="json"), "kind": p.cell.kind} for p in planned}
    # Longest first: with fewer slots than cells, the expensive cells do not start last.
    order = sorted(planned, key=_cost, reverse=True)
    space = {"cell": tune.grid_search([p.key for p in order])}
    trial_plan = {"cells": cells_meta, "tracking_uri": uri, "parent_run_id": parent_id}
    print(f"reproducing {len(planned)} cells of {name}"
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
    results = collect_results(parent, parent_id, planned, out_dir / "samples", errors)
    notes = sorted({n for p in planned for n in _notes(p)}) + _batch_notes(planned)
    files = write_report([TableInfo.from_spec(spec) for spec in tables], results, out_dir, scale_down=scale_down,
                         title=f"Reproduction of {name}", extra_notes=notes)
    for f in files.values():
        if Path(f).is_file():
            parent.log_artifact(Path(f), "report")
    parent.end("FINISHED" if not errors else "FAILED")
    summary = {"table": name, "cells": len(planned), "errors": errors, "report": {k: str(v) for k, v in files.items()},
               "mlflow_parent_run_id": parent_id, "tracking_uri": uri, "notes": notes,
               "results": [{"table": r.table, "cell": r.cell, "status": r.status, "run_id": r.run_id,
                            "metrics": {b: list(v) for b, v in r.metrics.items()}} for r in results]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


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
        if (note := p.batch_note) is not None:
            by_note.setdefault(note, []).append(p.key)
    trained = [p.key for p in planned if p.cell.kind != "teacher"]
    return [f"{'every trained cell' if keys == trained else ', '.join(keys)}: {note}"
            for note, keys in by_note.items()]


def collect_results(parent, parent_id: str, planned: list[PlannedCell], samples_dir: Path,
                    errors: dict[str, str]) -> list:
    """Each cell's test scores and first test sample, read from its child MLflow run."""
    from dckd.reporting.report import CellResult

    client = parent.client
    runs = client.search_runs([parent.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=10_000)
    by_name: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        by_name[run.info.run_name] = run  # a rerun's newest run wins
    results = []
    for p in planned:
        run = by_name.get(p.cfg.name)
        metrics: dict[str, tuple[float, float]] = {}
        samples: list[Path] = []
        status = "missing"
        if run is not None:
            m = run.data.metrics
            for bench in p.table.spec.benchmarks:
                if f"test/{bench}/psnr" in m and f"test/{bench}/ssim" in m:
                    metrics[bench] = (m[f"test/{bench}/psnr"], m[f"test/{bench}/ssim"])
            status = {"FINISHED": "ok", "KILLED": "stopped"}.get(run.info.status, "error")
            samples = _download_samples(client, run.info.run_id, samples_dir / p.table.spec.table / p.cell.id)
        if p.key in errors:
            status = "error"
        results.append(CellResult(table=p.table.spec.table, cell=p.cell.id, label=p.cell.title, status=status,
                                  metrics=metrics, published=dict(p.cell.published),
                                  run_id=run.info.run_id if run is not None else None, samples=samples,
                                  error=errors.get(p.key), settings=p.settings))
    return results


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
        max_concurrent: int | None = None, tables_dir: str | None = None) -> dict[str, Any]:
    """The runner registered for ``dckd reproduce``."""
    return run_reproduce(name, cells, scale_down, overrides, out, tracking_uri, max_concurrent, tables_dir)


def main(argv: list[str] | None = None) -> int:
    """The same command as ``dckd reproduce`` (the ``ray job submit`` entrypoint)."""
    from dckd.cli import main as dckd_main

    return dckd_main(["reproduce", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
