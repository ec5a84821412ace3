"""``python -m trainers.train CONFIG [--set a.b=v ...]``: the ``ray job submit`` entrypoint for training."""

from __future__ import annotations

import sys
from pathlib import Path

from dckd import errors
from dckd.config import ExperimentConfig, load_config
from dckd.errors import ConfigError
from dckd.training.rundir import set_aside


def run(config: str, overrides: list[str], tracking_uri: str | None = None, fresh: bool = False,
        allow_config_change: bool = False) -> dict:
    from trainers.driver import fit

    cfg = load_config(config, overrides)
    if cfg.tracking.enabled:  # a server that is down fails the run here, not in a worker Ray would retry
        from dckd.tracking import check_server, resolve_tracking_uri

        check_server(resolve_tracking_uri(cfg, tracking_uri))
    if fresh:
        set_aside_ray_run(cfg)
    result = fit(cfg, tracking_uri=tracking_uri, extra={"allow_config_change": allow_config_change})
    raise_run_error(result)
    return {"name": cfg.name, "metrics": result.metrics, "checkpoint": str(result.checkpoint.path)
            if result.checkpoint else None}


def set_aside_ray_run(cfg: ExperimentConfig) -> None:
    """``--fresh`` on Ray: the run directory and, when Ray keeps its checkpoints elsewhere on this
    machine, the Ray run folder are moved aside (``.before-<time>``), so that nothing resumes them."""
    from trainers.driver import storage_for

    storage, filesystem = storage_for(cfg)
    ray_run = Path(storage) / cfg.name
    if filesystem is not None or storage.startswith("s3://"):
        raise ConfigError(f"ray.storage_path {cfg.ray.storage_path}: --fresh cannot set an earlier run aside on "
                          "S3; start the new run under another name (--set name=...)")
    run_dir = cfg.run_dir.expanduser().resolve()
    for folder in (run_dir, ray_run):
        if folder.is_relative_to(run_dir) and folder != run_dir:
            continue  # inside the run directory: moved with it
        if (aside := set_aside(folder)) is not None:
            print(f"fresh run: the earlier run in {folder} was moved to {aside}", file=sys.stderr, flush=True)


def raise_run_error(result) -> None:
    """The run's own error as one line: a stop every worker agreed on (a non-finite loss, a refused
    config change) arrives in the last report; any other error of ours inside Ray's wrapper."""
    metrics = result.metrics or {}
    if "stopped" in metrics:
        cls = getattr(errors, str(metrics.get("error", "")), errors.DckdError)
        raise (cls if isinstance(cls, type) and issubclass(cls, errors.DckdError) else errors.DckdError)(
            metrics["stopped"])
    if result.error is None:
        return
    seen, todo = set(), [result.error]
    while todo:  # Ray wraps worker errors (TrainingFailedError -> WorkerGroupError -> per-rank errors)
        exc = todo.pop()
        if id(exc) in seen or exc is None:
            continue
        seen.add(id(exc))
        if isinstance(exc, errors.DckdError):
            raise exc
        todo += [exc.__cause__, exc.__context__, *getattr(exc, "worker_failures", {}).values()]
    raise result.error


def main(argv: list[str] | None = None) -> int:
    """The same command as ``dckd train`` (one parser, one error format), run on Ray."""
    from dckd.cli import main as dckd_main

    return dckd_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
