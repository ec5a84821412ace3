"""The driver: a ``TorchTrainer`` built from an experiment config, run on local Ray or a cluster."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import ray
import ray.train
from ray.train.torch import TorchTrainer

from dckd.config import ExperimentConfig
from trainers.worker import train_loop_per_worker

RAY_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def dashboard_port(preferred: int = 8265) -> int:
    """Ray's usual dashboard port when it is free here, else any free loopback port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free loopback port for the Ray dashboard")


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or $RAY_ADDRESS), else start a local instance; reuse one already up.

    A local instance runs the dashboard on loopback: Ray Train's placement-group cleaner asks the
    State API (served by the dashboard) whether a Train controller has died, and without it the
    workers' resources of every Tune trial that a scheduler such as ASHA stops stay reserved
    forever, so the next trials wait for workers that never start.
    """
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Each Train run needs a CPU for its controller besides its workers (see ray-mlflow-s3 notes).
        ray.init(address="local", num_cpus=num_cpus or max(4, (os.cpu_count() or 2) + 2),
                 include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=dashboard_port(),
                 log_to_driver=True)


def state_api_available(timeout: float = 10.0) -> bool:
    """Whether the connected cluster answers Ray's State API (needs its dashboard)."""
    from ray.util.state import list_actors

    try:
        list_actors(limit=1, timeout=timeout, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - any failure means the API cannot be relied on
        return False
    return True


def storage_for(cfg: ExperimentConfig) -> tuple[str, Any]:
    """Ray's storage path and filesystem: a local folder, or S3 (endpoint from DCKD_S3_ENDPOINT_URL)."""
    path = cfg.ray.storage_path or str((cfg.run_dir / "ray").resolve())
    if not path.startswith("s3://"):
        return str(Path(path).expanduser().resolve()), None
    endpoint = os.environ.get("DCKD_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if not endpoint or "?" in path:
        return path, None
    import pyarrow.fs

    parsed = urlparse(endpoint)
    fs = pyarrow.fs.S3FileSystem(endpoint_override=parsed.netloc or endpoint, scheme=parsed.scheme or "https",
                                 region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    return path.removeprefix("s3://"), fs


def build_trainer(cfg: ExperimentConfig, tracking_uri: str | None = None, parent_run_id: str | None = None,
                  run_name: str | None = None, callbacks: list | None = None,
                  extra: dict[str, Any] | None = None) -> TorchTrainer:
    """A TorchTrainer whose workers run ``train_loop_per_worker`` on this config.

    The run name is deterministic (the experiment name unless given): running the same config
    again resumes from its latest checkpoint, and ``FailureConfig`` restarts a failed worker
    group from it.
    """
    r = cfg.ray
    resources = {"CPU": r.cpus_per_worker}
    if r.use_gpu:
        resources["GPU"] = r.gpus_per_worker
    storage_path, filesystem = storage_for(cfg)
    run_config = ray.train.RunConfig(
        name=run_name or cfg.name,
        storage_path=storage_path,
        storage_filesystem=filesystem,
        failure_config=ray.train.FailureConfig(max_failures=r.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        callbacks=callbacks,
    )
    loop_config = {"experiment": cfg.model_dump(mode="json"), "tracking_uri": tracking_uri,
                   "parent_run_id": parent_run_id, **(extra or {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                                               resources_per_worker=resources),
        run_config=run_config,
    )


def fit(cfg: ExperimentConfig, tracking_uri: str | None = None, **kwargs: Any) -> ray.train.Result:
    ensure_ray(cfg.ray.address)
    return build_trainer(cfg, tracking_uri=tracking_uri, **kwargs).fit()
