"""Ray Tune sweeps over Train runs: ``dckd tune SWEEP.yaml`` and ``python -m trainers.tune SWEEP.yaml``.

The pattern Ray documents for Train V2: a ``Tuner`` over a driver function, each trial
building a ``TorchTrainer`` named after its trial id, with ``TuneReportCallback`` passing
the workers' reports to Tune (and to ASHA). A sweep file names a base experiment, the axes
(any dotted config field) and the search:

    name: negatives
    base: experiments/demo.yaml
    set: ["train.iterations=200"]          # overrides of the base for every trial
    search:
      method.dcr.num_negatives: {grid: [1, 3, 5]}
      method.dcr.weight: {grid: [0.01, 0.1, 1.0]}
      method.dcr.history.update_every: {choice: [500, 1000, 2000]}
      optim.lr: {loguniform: [1.0e-5, 1.0e-3]}
    num_samples: 1                          # repeats of the grid / random draws
    seeds: 3                                # every configuration with seeds seed, seed+1, seed+2
    scheduler: {name: asha, grace_period: 100}

Every bad axis is refused before any trial starts. At the end: ``results.csv``,
``results.md`` and one plot per swept axis (validation PSNR against the axis, as the
paper's Fig. 8 and Table 7), in the sweep's output folder and on the sweep's MLflow run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from dckd.config import ExperimentConfig, load_config
from dckd.config.sweep import SweepConfig, load_sweep
from dckd.errors import ConfigError

Spec = dict[str, list[Any]]


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    for key, spec in sweep.search.items():
        kind, values = next(iter(spec.items()))
        space[key] = {
            "grid": lambda v: tune.grid_search(v),
            "choice": lambda v: tune.choice(v),
            "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v),
            "randint": lambda v: tune.randint(*v),
        }[kind](values)
    return space


def trial_overrides(sweep: SweepConfig, params: dict[str, Any], trial_id: str) -> list[str]:
    # Trials log their students; only the sweep's best one goes to the registry (run_sweep).
    return [*sweep.set, *(f"{k}={json.dumps(v)}" for k, v in params.items()),
            f"name={trial_run_name(sweep, trial_id)}", f"output_dir={sweep.out / 'trials' / trial_id}",
            "tracking.register_student=false"]


def trial_run_name(sweep: SweepConfig, trial_id: str) -> str:
    return f"{sweep.name}-{trial_id}"


def _trial(params: dict[str, Any], meta: dict[str, Any]) -> None:
    """One Tune trial: a Train run of the base experiment with this trial's values.

    ``meta`` (the sweep, tracking URI, parent run) comes through ``tune.with_parameters``, i.e. the
    object store: Tune writes a trial's ``params`` to disk (``params.json``, results, experiment
    state), and a tracking URI may hold a password."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainers.driver import build_trainer

    sweep = SweepConfig.model_validate(meta["sweep"])
    trial_id = tune.get_context().get_trial_id()
    cfg = load_config(sweep.base, trial_overrides(sweep, params, trial_id))
    trainer = build_trainer(cfg, tracking_uri=meta["tracking_uri"], parent_run_id=meta["parent_run_id"],
                            run_name=trial_id, callbacks=[TuneReportCallback()])
    trainer.fit()


def concurrency(base: ExperimentConfig, max_concurrent: int | None = None) -> int:
    """Trials that fit at once: each takes a CPU for its driver plus its workers' resources."""
    import ray

    if max_concurrent:
        return max_concurrent
    res = ray.cluster_resources()
    per_trial_cpu = 1 + base.ray.num_workers * base.ray.cpus_per_worker
    fits = int(res.get("CPU", 1) // per_trial_cpu)
    if base.ray.use_gpu:
        fits = min(fits, int(res.get("GPU", 0) // (base.ray.num_workers * base.ray.gpus_per_worker)))
    return max(1, fits)


def run_sweep(path: str | Path, overrides: list[str] | None = None, tracking_uri: str | None = None) -> dict:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from dckd.tracking import RunTracker, resolve_tracking_uri, scrub
    from trainers.driver import ensure_ray, state_api_available

    sweep, base = load_sweep(path, overrides)
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials read paths relative to the launch folder
    ensure_ray(base.ray.address)
    if sweep.scheduler.name == "asha" and not state_api_available():
        raise ConfigError(
            f"{path}: scheduler.name = asha needs the Ray cluster's State API (its dashboard), which does not "
            "answer here. A trial that ASHA stops ends its Train controller abruptly, and Ray Train frees that "
            "run's worker resources only after the State API reports the controller dead; without it the "
            "following trials wait forever. Start Ray with its dashboard (`ray start --head` includes it; "
            "ray.init(include_dashboard=True)) or use scheduler: {name: fifo}.")
    uri = tracking_uri or sweep.tracking_uri or resolve_tracking_uri(base)
    parent = RunTracker(base.model_copy(update={"name": f"sweep-{sweep.name}"}), tracking_uri=uri)
    parent_id = parent.start()
    parent.log_params_once()
    if parent_id is not None:
        parent.client.set_tag(parent_id, "dckd.sweep", sweep.name)
        for key, spec in sweep.search.items():
            parent.client.log_param(parent_id, f"sweep.search.{key}", scrub(json.dumps(spec)))
    s = sweep.scheduler
    # stop_last_trials=False: a trial that reaches the last iteration finishes its Train run
    # (final weights, model registry, MLflow run end) instead of being stopped at its last report.
    scheduler = (ASHAScheduler(time_attr="iteration", max_t=base.train.iterations, grace_period=s.grace_period,
                               reduction_factor=s.reduction_factor, stop_last_trials=False)
                 if s.name == "asha" else FIFOScheduler())
    space = param_space(sweep)
    axes = list(sweep.search)
    if sweep.seeds > 1:  # an axis of its own: every configuration once per seed
        space["seed"] = tune.grid_search(list(range(base.seed, base.seed + sweep.seeds)))
    meta = {"sweep": sweep.model_dump(mode="json"), "tracking_uri": uri, "parent_run_id": parent_id}
    sweep.out.mkdir(parents=True, exist_ok=True)
    tuner = tune.Tuner(
        tune.with_parameters(_trial, meta=meta),
        param_space=space,
        tune_config=tune.TuneConfig(metric=s.metric, mode=s.mode, scheduler=scheduler,
                                    num_samples=sweep.num_samples,
                                    max_concurrent_trials=concurrency(base, sweep.max_concurrent)),
        run_config=tune.RunConfig(name=sweep.name, storage_path=str(sweep.out / "tune")),
    )
    grid = tuner.fit()
    stopped = close_stopped_runs(parent.client, parent.experiment_id, parent_id) if parent_id is not None else []
    rows = results_rows(grid, axes + (["seed"] if sweep.seeds > 1 else []), s.metric, base.train.iterations,
                        {n.removeprefix(f"{sweep.name}-") for n in stopped})
    files = write_results(rows, axes, sweep.out, s.metric, seeded=sweep.seeds > 1)
    for f in files:
        parent.log_artifact(f)
    # The best finished trial: a stopped one's PSNR is from fewer iterations and it has no final student.
    scored = [r for r in rows if r.get(s.metric) is not None and r["status"] != "error"]
    best = max([r for r in scored if r["status"] == "ok"] or scored,
               key=lambda r: r[s.metric] * (1 if s.mode == "max" else -1), default=None)
    registered = None
    if best is not None:
        parent.log_metrics({f"best_{s.metric}": best[s.metric]}, step=0)
        if parent_id is not None:
            registered = register_best(parent, parent_id, trial_run_name(sweep, best["trial"]), base, sweep.name)
    parent.end()
    return {"sweep": sweep.name, "trials": len(rows), "best": best, "files": [str(f) for f in files],
            "mlflow_parent_run_id": parent_id, "registered": registered}


def register_best(parent, parent_id: str, run_name: str, base: ExperimentConfig, sweep_name: str) -> str | None:
    """Register the best trial's logged student as ``<sweep>-student`` (or ``tracking.register_as``)."""
    if not base.tracking.register_student:
        return None
    runs = parent.client.search_runs([parent.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parent_id}' and attributes.run_name = '{run_name}'"))
    model_id = parent.student_of(runs[0].info.run_id) if runs else None
    if model_id is None:  # stopped early or failed before its final student: nothing to register
        return None
    name = base.tracking.register_as or f"sweep-{sweep_name}-student"
    version = parent.register_logged_model(model_id, runs[0].info.run_id, name, base.tracking.alias)
    parent.client.set_tag(parent_id, "dckd.best_trial", run_name)
    return f"models:/{name}@{base.tracking.alias} (version {version})"


def close_stopped_runs(client, experiment_id: str, parent_id: str) -> list[str]:
    """End the MLflow runs of trials the scheduler stopped; returns their run names.

    A stopped trial's Train run ends without its closing steps (final student, run end), so
    its run would stay RUNNING; after the sweep no trial runs, so every child still RUNNING
    was stopped.
    """
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}' "
                              "and attributes.status = 'RUNNING'", max_results=10_000)
    for run in runs:
        client.set_tag(run.info.run_id, "dckd.stopped_early", "true")
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_name for run in runs]


def results_rows(grid, axes: list[str], metric: str, iterations: int | None = None,
                 stopped: set[str] | None = None) -> list[dict[str, Any]]:
    """One row per trial; ``status`` is ok, stopped (by the scheduler: ``stopped`` trial ids, or
    short of ``iterations``) or error."""
    rows = []
    for result in grid:
        cfg = dict(result.config or {})
        m = result.metrics or {}
        done = m.get("iteration")
        short = iterations is not None and done is not None and done < iterations
        status = ("error" if result.error or "stopped" in m else  # "stopped": its own error (e.g. a NaN loss)
                  "stopped" if short or m.get("trial_id") in (stopped or set()) else "ok")
        row = {"trial": m.get("trial_id", ""), **{a: cfg.get(a) for a in axes},
               metric: m.get(metric), "iteration": done, "status": status}
        row.update({k: v for k, v in m.items() if k.startswith("val/")})
        rows.append(row)
    return rows


def write_results(rows: list[dict[str, Any]], axes: list[str], out: Path, metric: str,
                  seeded: bool = False) -> list[Path]:
    """CSV, Markdown and a plot of ``metric`` against each swept axis; with seeds, also each
    configuration's mean ± std over its seeds (``results_by_config.md``)."""
    columns = sorted({k for r in rows for k in r},
                     key=lambda k: (k not in ("trial", *axes, "seed"), k.startswith("val/"), k))
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    md_path = out / "results.md"
    ordered = sorted(rows, key=lambda r: -(r.get(metric) or -math.inf))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in ordered:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    extra = [by_config(rows, axes, out / "results_by_config.md", metric)] if seeded else []
    return [csv_path, md_path, *extra, *plot_axes(rows, axes, out, metric)]


def by_config(rows: list[dict[str, Any]], axes: list[str], path: Path, metric: str) -> Path:
    """One row per configuration: ``metric`` as mean ± std over its finished seeds, best first."""
    import statistics

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(json.dumps(r.get(a)) for a in axes), []).append(r)
    table = []
    for key, members in groups.items():
        values = [r[metric] for r in members if r.get(metric) is not None and r["status"] == "ok"]
        mean = statistics.fmean(values) if values else None
        std = statistics.stdev(values) if len(values) > 1 else None
        table.append((key, members, values, mean, std))
    table.sort(key=lambda t: -(t[3] if t[3] is not None else -math.inf))
    lines = ["| " + " | ".join([*axes, "seeds", f"{metric} mean", "std", "per seed"]) + " |",
             "|" + "---|" * (len(axes) + 4)]
    for key, members, values, mean, std in table:
        per_seed = ", ".join(f"{r.get('seed')}: {_cell(r.get(metric))}" for r in sorted(
            members, key=lambda r: r.get("seed") or 0))
        lines.append("| " + " | ".join([*(json.loads(k) if isinstance(json.loads(k), str) else k for k in key),
                                        f"{len(values)}/{len(members)}", _cell(mean), _cell(std), per_seed]) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.2f}"
    return "" if value is None else str(value)


def plot_axes(rows: list[dict[str, Any]], axes: list[str], out: Path, metric: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis in axes:
        points = [(r[axis], r[metric]) for r in rows if r.get(metric) is not None and r.get(axis) is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x, _ in points)
        groups: dict[Any, list[float]] = {}
        for x, y in points:
            groups.setdefault(x, []).append(y)
        keys = sorted(groups) if numeric else list(groups)
        means = [sum(groups[k]) / len(groups[k]) for k in keys]
        if numeric:
            ax.scatter([x for x, _ in points], [y for _, y in points], s=12, alpha=0.5, color="tab:gray")
            ax.plot(keys, means, marker="o", color="tab:blue")
            if len(keys) > 2 and min(keys) > 0 and max(keys) / min(keys) >= 100:
                ax.set_xscale("log")
        else:
            ax.bar([str(k) for k in keys], means, color="tab:blue")
        ax.set_xlabel(axis)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"plot_{axis.replace('.', '_')}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def run(sweep_path: str, overrides: list[str] | None = None, tracking_uri: str | None = None) -> dict:
    """The runner registered for ``dckd tune``."""
    return run_sweep(sweep_path, overrides, tracking_uri)


def main(argv: list[str] | None = None) -> int:
    """The same command as ``dckd tune`` (one parser, one error format)."""
    from dckd.cli import main as dckd_main

    return dckd_main(["tune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
