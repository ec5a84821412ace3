"""The MLflow run of one training run: where it is tracked, its start and end, params, metrics, files.

One training run is one MLflow run. The run id travels in the training checkpoint
(``engine.extra["mlflow_run_id"]``), so a resumed run, or a Ray worker group restarted from its
last checkpoint, continues the same MLflow run instead of starting a duplicate.

Everything goes through an explicit ``MlflowClient(tracking_uri)`` and explicit run ids, not
MLflow's process-global active run, so several trackers (or a tracker inside a process that uses
MLflow for something else) cannot log into each other's runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dckd.config import ExperimentConfig
from dckd.errors import ConfigError
from dckd.imageio import write_image
from dckd.reporting.describe import method_label, schedule_summary
from dckd.tracking import registry
from dckd.tracking.isolation import rng_untouched
from dckd.tracking.redaction import contains_secret, redact, scrub, secret_values
from dckd.tracking.samples import as_list, sample_panel

log = logging.getLogger("dckd")

PARAM_VALUE_LIMIT = 6000
"""MLflow's maximum param value length (the server refuses longer values)."""
_KEY_LIMIT = 250
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000
_KEY_BAD = re.compile(r"[^\w./\- ]")


# --------------------------------------------------------------------------- URIs, keys, params
def resolve_tracking_uri(cfg: ExperimentConfig, override: str | None = None) -> str:
    """``--tracking-uri`` > ``tracking.tracking_uri`` > ``$MLFLOW_TRACKING_URI`` > an embedded sqlite file.

    The embedded default sits in the run directory's parent, so the runs of one output folder
    share one database (MLflow's file store is deprecated; sqlite needs an absolute path).
    """
    for uri in (override, cfg.tracking.tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if uri:
            return uri
    return f"sqlite:///{(cfg.run_dir.parent.expanduser().resolve() / 'mlflow.db').as_posix()}"


def sanitize_key(key: str) -> str:
    """A metric/param key MLflow accepts: ``/`` kept (it groups charts), other odd characters -> ``_``."""
    key = _KEY_BAD.sub("_", key)
    key = re.sub(r"/{2,}", "/", key).strip("/")
    key = "/".join("_" if part in (".", "..") else part for part in key.split("/"))
    return (key or "_")[:_KEY_LIMIT]


def flatten_config(cfg: ExperimentConfig) -> dict[str, str]:
    """The validated config as MLflow params: dotted keys, lists and scalars as JSON, values truncated."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            text = node if isinstance(node, str) else json.dumps(node)
            out[prefix] = text[:PARAM_VALUE_LIMIT]

    walk("", cfg.model_dump(mode="json"))
    return out


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


# --------------------------------------------------------------------------- the tracker
class RunTracker:
    """One MLflow run for one training run; every method is a cheap no-op when tracking is off."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.enabled = cfg.tracking.enabled if enabled is None else bool(enabled)
        self.tracking_uri = resolve_tracking_uri(cfg, tracking_uri) if self.enabled else None
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.experiment_id: str | None = None
        self.resumed = False
        self.active = False
        self._client: Any = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _on(self) -> bool:
        if self.enabled and not self.active:
            raise RuntimeError("RunTracker.start() must be called before logging")
        return self.enabled

    def start(self, run_id: str | None = None) -> str | None:
        """Create the run, or resume it when ``run_id`` (else the one given at construction) names one;
        returns the run id (None when off). A training loop passes the id its checkpoint carries."""
        if not self.enabled:
            return None
        if self.active:
            return self.run_id
        self.run_id = run_id or self.run_id
        from mlflow.exceptions import MlflowException

        with rng_untouched():
            db = _sqlite_path(self.tracking_uri or "")
            if db is not None:
                db.expanduser().parent.mkdir(parents=True, exist_ok=True)
            if self.run_id:
                try:
                    run = self.client.get_run(self.run_id)
                except MlflowException:
                    log.warning("MLflow run %s is not in %s: starting a new run", self.run_id,
                                scrub(self.tracking_uri or ""))
                    run = None
                if run is not None:
                    self.client.update_run(self.run_id, status="RUNNING")
                    self.experiment_id = run.info.experiment_id
                    self.resumed = self.active = True
                    return self.run_id
            self.experiment_id = self._experiment_id()
            tags = {k: scrub(v) for k, v in self._tags().items()}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = self.client.create_run(self.experiment_id, run_name=scrub(self.cfg.name), tags=tags)
            self.run_id = run.info.run_id
            self.resumed, self.active = False, True
            return self.run_id

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED (an interrupted run; resuming sets it RUNNING again)."""
        if not self.enabled or not self.active:
            return
        with rng_untouched():
            self.client.set_terminated(self.run_id, status=status)
        self.active = False

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = scrub(self.cfg.tracking.experiment)
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            db = _sqlite_path(self.tracking_uri or "")
            # Without a server, MLflow would put artifacts in ./mlruns of whatever the cwd is.
            location = (db.expanduser().resolve().parent / "mlartifacts").as_uri() if db else None
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except MlflowException:  # created by another process in the meantime
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise ConfigError(f"tracking.experiment: MLflow experiment {name!r} was deleted; "
                              "restore it or choose another name")
        return exp.experiment_id

    def _tags(self) -> dict[str, str]:
        c = self.cfg

        def role(spec: Any) -> str:
            return "none" if spec is None else (spec.preset or spec.resolved_backbone)

        return {"dckd.task": c.task, "dckd.scale": str(c.scale), "dckd.method": c.method.preset,
                "dckd.method_label": method_label(c.method),
                "dckd.schedule": schedule_summary(c.schedule, c.optim.lr, c.train.iterations),
                "dckd.student": role(c.student), "dckd.teacher": role(c.teacher)}

    # ------------------------------------------------------------------ params, metrics, files
    def log_params_once(self) -> None:
        """The flattened config; a resumed run keeps the params it has (MLflow refuses changed values)."""
        if not self._on():
            return
        from mlflow.entities import Param

        secrets = secret_values()
        params = {sanitize_key(k): scrub(v, secrets) for k, v in flatten_config(self.cfg).items()}
        with rng_untouched():
            have = self.client.get_run(self.run_id).data.params if self.resumed else {}
            changed = sorted(k for k, v in params.items() if k in have and have[k] != v)
            if changed:
                log.warning("config differs from the resumed MLflow run's params in %d key(s) "
                            "(kept the original values): %s", len(changed), ", ".join(changed[:10]))
            todo = [Param(k, v) for k, v in params.items() if k not in have]
            for i in range(0, len(todo), _BATCH_PARAMS):
                self.client.log_batch(self.run_id, params=todo[i:i + _BATCH_PARAMS])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self._on() or not metrics:
            return
        from mlflow.entities import Metric

        secrets = secret_values()
        stamp = int(time.time() * 1000)
        rows = [Metric(sanitize_key(redact(k, secrets)), float(v), stamp, int(step)) for k, v in metrics.items()]
        with rng_untouched():
            for i in range(0, len(rows), _BATCH_METRICS):
                self.client.log_batch(self.run_id, metrics=rows[i:i + _BATCH_METRICS])

    def log_config(self) -> None:
        """The validated config as ``config.yaml``, credentials masked."""
        if not self._on():
            return
        self.log_text(self.cfg.to_yaml(), "config.yaml")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags on the run (e.g. ``dckd.config_changes``), credentials masked."""
        if not self._on():
            return
        with rng_untouched():
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, scrub(str(value)))

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text artifact (e.g. ``summary.json``), credentials masked: prefer it to log_artifact for text."""
        if not self._on():
            return
        with rng_untouched():
            self.client.log_text(self.run_id, redact(text), artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file as it is (binary artifacts: nothing is masked; text files go through log_text)."""
        if not self._on():
            return
        with rng_untouched():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_checkpoint(self, path: str | Path, artifact_path: str = "checkpoints", name: str | None = None) -> bool:
        """Upload a training checkpoint (as ``<artifact_path>/<name>``, by default the file's name) unless its
        stored config holds a credential (it cannot be masked inside the binary without breaking the
        config); returns whether it was uploaded."""
        if not self._on():
            return False
        path = Path(path)
        if contains_secret(self.cfg.to_yaml()):
            log.warning("checkpoint %s not uploaded to MLflow: its stored config contains the value of a "
                        "secret environment variable", name or path.name)
            return False
        if name is None or name == path.name:
            self.log_artifact(path, artifact_path)
            return True
        # MLflow names an artifact after its file: link (or copy) it under the wanted name.
        with tempfile.TemporaryDirectory(prefix="dckd-ckpt-", dir=path.parent) as tmp:
            renamed = Path(tmp) / name
            try:
                os.link(path, renamed)
            except OSError:
                shutil.copyfile(path, renamed)
            self.log_artifact(renamed, artifact_path)
        return True

    def log_samples(
        self,
        step: int,
        lq: torch.Tensor | Sequence[torch.Tensor],
        teacher_out: torch.Tensor | Sequence[torch.Tensor] | None,
        student_out: torch.Tensor | Sequence[torch.Tensor],
        gt: torch.Tensor | Sequence[torch.Tensor],
        artifact_dir: str = "samples",
    ) -> list[str]:
        """One side-by-side PNG per sample, ``<artifact_dir>/iter_XXXXXXX_k.png``; returns the artifact paths."""
        if not self._on():
            return []
        lqs, outs, gts = as_list(lq), as_list(student_out), as_list(gt)
        teach = as_list(teacher_out) if teacher_out is not None else [None] * len(lqs)
        if not (len(lqs) == len(outs) == len(gts) == len(teach)):
            raise ValueError("log_samples: lq, teacher_out, student_out and gt differ in length")
        names: list[str] = []
        with rng_untouched(), tempfile.TemporaryDirectory(prefix="dckd-samples-") as tmp:
            for k, (a, t, s, g) in enumerate(zip(lqs, teach, outs, gts)):
                name = f"iter_{int(step):07d}_{k}.png"
                write_image(Path(tmp) / name, sample_panel(a, t, s, g))
                names.append(f"{artifact_dir}/{name}")
            if names:
                self.client.log_artifacts(self.run_id, tmp, artifact_dir)
        return names

    # ------------------------------------------------------------------ the student
    def log_student(
        self,
        model: nn.Module,
        input_example: np.ndarray | torch.Tensor,
        register_as: str | None,
        alias: str,
    ) -> int | None:
        """Log the student (see :mod:`dckd.tracking.registry`), register it as ``register_as`` and point
        ``alias`` at the new version; returns the version (None when tracking is off or ``register_as``
        is None: logged, not registered, as for sweep trials)."""
        if not self._on():
            return None
        with rng_untouched():
            model_id = registry.log_student(self.client, self.tracking_uri, self.run_id, self.experiment_id,
                                            model, input_example)
            if register_as is None:
                return None
            return self.register_logged_model(model_id, self.run_id, register_as, alias)

    def register_logged_model(self, model_id: str, run_id: str, register_as: str, alias: str) -> int:
        """Register a logged student (``models:/<model_id>``, from ``run_id``) and point ``alias`` at it."""
        return registry.register_logged_model(self.client, self.tracking_uri, model_id, run_id, register_as, alias)

    def student_of(self, run_id: str) -> str | None:
        """The id of the student logged by ``run_id`` (the newest, if several), or None."""
        return registry.student_of(self.client, run_id)
