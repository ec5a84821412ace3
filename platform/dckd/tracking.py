"""MLflow tracking of a training run: params, metrics, sample restorations, the student in the registry.

One training run is one MLflow run. The run id travels in the training checkpoint
(``engine.extra["mlflow_run_id"]``), so a resumed run, or a Ray worker group restarted from its
last checkpoint, continues the same MLflow run instead of starting a duplicate. The in-process
loop and the Ray layer (rank 0 only) both drive a :class:`RunTracker`.

Everything goes through an explicit ``MlflowClient(tracking_uri)`` and explicit run ids, not
MLflow's process-global active run, so several trackers (or a tracker inside a process that uses
MLflow for something else) cannot log into each other's runs.

The registered student carries two forms: MLflow's pickled PyTorch model (``mlflow.pytorch.load_model``
works, but unpickling runs code from the artifact store) and a weights-only state dict plus the
architecture spec, which :func:`load_student` rebuilds with ``torch.load(weights_only=True)``:
loading a model by alias never unpickles.

Credentials never reach the tracking store: any param, tag, metric key or text artifact that
contains the value of a secret-looking environment variable is masked (:func:`scrub`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import json
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dckd.config import ExperimentConfig
from dckd.errors import CheckpointError, ConfigError
from dckd.imageio import to_uint8, write_image
from dckd.reporting.describe import method_label, schedule_summary

if TYPE_CHECKING:
    from dckd.models import Restorer

log = logging.getLogger("dckd")

REDACTED = "***"
PARAM_VALUE_LIMIT = 6000
"""MLflow's maximum param value length (the server refuses longer values)."""
_KEY_LIMIT = 250
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "spec.json"
RUN_WEIGHTS_DIR = "student_weights"
"""Run-artifact folder holding the weights-only student (what ``runs:/RUN_ID`` loads)."""
MODEL_NAME = "student"

_SECRET_NAMES = frozenset({
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
})
_SECRET_NAME_PATTERN = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
_MIN_SECRET_LENGTH = 6
"""Shorter values are not treated as secrets: masking every value containing e.g. ``1`` or
``true`` would destroy the params while protecting nothing a real credential looks like."""
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@")
_KEY_BAD = re.compile(r"[^\w./\- ]")


# --------------------------------------------------------------------------- URIs and secrets
def resolve_tracking_uri(cfg: ExperimentConfig, override: str | None = None) -> str:
    """``--tracking-uri`` > ``tracking.tracking_uri`` > ``$MLFLOW_TRACKING_URI`` > an embedded sqlite file.

    The embedded default sits in the run directory's parent, so the runs of one output folder
    share one database (MLflow's file store is deprecated; sqlite needs an absolute path).
    """
    for uri in (override, cfg.tracking.tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if uri:
            return uri
    return f"sqlite:///{(cfg.run_dir.parent.expanduser().resolve() / 'mlflow.db').as_posix()}"


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables, longest first (so a longer one is masked whole)."""
    env = os.environ if environ is None else environ
    found = {
        value for name, value in env.items()
        if (name.upper() in _SECRET_NAMES or _SECRET_NAME_PATTERN.search(name))
        and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


def scrub(value: str, secrets: Sequence[str] | None = None) -> str:
    """A value containing a credential becomes ``***`` whole: a partly masked value could still leak it.

    A password in a URL's user info is masked in place (``https://user:***@host``).
    """
    found = secret_values() if secrets is None else secrets
    if any(s and s in value for s in found):
        return REDACTED
    return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", value)


def redact(text: str, secrets: Sequence[str] | None = None) -> str:
    """For text artifacts: each occurrence of a credential is masked, the rest of the text is kept."""
    for s in secret_values() if secrets is None else secrets:
        if s:
            text = text.replace(s, REDACTED)
    return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)


def contains_secret(text: str, secrets: Sequence[str] | None = None) -> bool:
    return any(s and s in text for s in (secret_values() if secrets is None else secrets))


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


# --------------------------------------------------------------------------- samples
def _as_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        return list(images) if images.dim() == 4 else [images]
    return list(images)


def sample_panel(lq: torch.Tensor, teacher_out: torch.Tensor | None, student_out: torch.Tensor,
                 gt: torch.Tensor, gap: int = 2) -> np.ndarray:
    """input (nearest-upscaled to the GT size) | teacher | student | ground truth, as one uint8 image.

    Nearest upscaling shows the input's real pixels; a white ``gap`` keeps look-alike panels apart.
    """
    h, w = gt.shape[-2:]
    up = F.interpolate(lq.detach().float().cpu()[None], size=(h, w), mode="nearest")[0]
    panels = [up, *([teacher_out] if teacher_out is not None else []), student_out, gt]
    arrays = [to_uint8(p.detach().float().cpu()) for p in panels]
    hh, ww = min(a.shape[0] for a in arrays), min(a.shape[1] for a in arrays)
    sep = np.full((hh, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, a in enumerate(arrays):
        parts += [sep] if i else []
        parts.append(a[:hh, :ww])
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


@torch.no_grad()
def collect_samples(
    student: nn.Module,
    teacher: nn.Module | None,
    dataset: Any,
    count: int,
    device: torch.device | str,
    scale: int,
    max_lq_side: int = 96,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, list[torch.Tensor], list[torch.Tensor]]:
    """Restorations of the first ``count`` items of a benchmark set, centre-cropped to ``max_lq_side``.

    Cropping bounds the cost of a large teacher on full benchmark images at every validation.
    Returns ``(lq, teacher_out or None, student_out, gt)`` lists of CHW tensors for :meth:`RunTracker.log_samples`.
    """
    lqs: list[torch.Tensor] = []
    gts: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    teach: list[torch.Tensor] = []
    models = [m for m in (student, teacher) if m is not None]
    modes = [m.training for m in models]
    with _rng_untouched():
        try:
            for m in models:
                m.eval()
            for i in range(min(count, len(dataset))):
                item = dataset[i]
                lq, gt = item["lq"], item["gt"]
                h, w = lq.shape[-2:]
                ch, cw = min(h, max_lq_side), min(w, max_lq_side)
                top, left = (h - ch) // 2, (w - cw) // 2
                lq = lq[:, top:top + ch, left:left + cw]
                gt = gt[:, top * scale:(top + ch) * scale, left * scale:(left + cw) * scale]
                x = lq[None].to(device)
                outs.append(student(x)[0].float().cpu())
                if teacher is not None:
                    teach.append(teacher(x)[0].float().cpu())
                lqs.append(lq)
                gts.append(gt)
        finally:
            for m, mode in zip(models, modes):
                m.train(mode)
    return lqs, (teach if teacher is not None else None), outs, gts


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _rng_untouched() -> Iterator[None]:
    """Tracking must not shift the training's random streams (resume is exact to the bit)."""
    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """``mlflow.pytorch.log_model`` only reads the global URI: set it for the call, then put it back."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


_EXAMPLE_SIDE = 32


def _example_array(example: np.ndarray | torch.Tensor) -> np.ndarray:
    """One image, centre-cropped to ``_EXAMPLE_SIDE``: MLflow stores the example as JSON in the model
    and runs it through the network twice, so a whole benchmark image would cost minutes and megabytes."""
    x = example.detach().float().cpu().numpy() if isinstance(example, torch.Tensor) else np.asarray(example)
    x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"input example must be CHW or 1CHW, got shape {x.shape}")
    h, w = x.shape[-2:]
    top, left = max(0, (h - _EXAMPLE_SIDE) // 2), max(0, (w - _EXAMPLE_SIDE) // 2)
    return np.ascontiguousarray(x[:1, :, top:top + _EXAMPLE_SIDE, left:left + _EXAMPLE_SIDE])


def _torch_requirement() -> str:
    try:
        return f"torch=={importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "torch"


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

    def start(self) -> str | None:
        """Create the run, or resume it when ``run_id`` names one; returns the run id (None when off)."""
        if not self.enabled:
            return None
        if self.active:
            return self.run_id
        from mlflow.exceptions import MlflowException

        with _rng_untouched():
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
        with _rng_untouched():
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
        with _rng_untouched():
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
        with _rng_untouched():
            for i in range(0, len(rows), _BATCH_METRICS):
                self.client.log_batch(self.run_id, metrics=rows[i:i + _BATCH_METRICS])

    def log_config(self) -> None:
        """The validated config as ``config.yaml``, credentials masked."""
        if not self._on():
            return
        self.log_text(self.cfg.to_yaml(), "config.yaml")

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text artifact (e.g. ``summary.json``), credentials masked: prefer it to log_artifact for text."""
        if not self._on():
            return
        with _rng_untouched():
            self.client.log_text(self.run_id, redact(text), artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file as it is (binary artifacts: nothing is masked; text files go through log_text)."""
        if not self._on():
            return
        with _rng_untouched():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_checkpoint(self, path: str | Path, artifact_path: str = "checkpoints") -> bool:
        """Upload a training checkpoint unless its stored config holds a credential (it cannot be masked
        inside the binary without breaking the config); returns whether it was uploaded."""
        if not self._on():
            return False
        if contains_secret(self.cfg.to_yaml()):
            log.warning("checkpoint %s not uploaded to MLflow: its stored config contains the value of a "
                        "secret environment variable", Path(path).name)
            return False
        self.log_artifact(path, artifact_path)
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
        lqs, outs, gts = _as_list(lq), _as_list(student_out), _as_list(gt)
        teach = _as_list(teacher_out) if teacher_out is not None else [None] * len(lqs)
        if not (len(lqs) == len(outs) == len(gts) == len(teach)):
            raise ValueError("log_samples: lq, teacher_out, student_out and gt differ in length")
        names: list[str] = []
        with _rng_untouched(), tempfile.TemporaryDirectory(prefix="dckd-samples-") as tmp:
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
        """Log the student (pickled MLflow model + weights-only state dict + spec), register it as
        ``register_as`` and point ``alias`` at the new version; returns the version (None when
        tracking is off or ``register_as`` is None: logged, not registered, as for sweep trials)."""
        if not self._on():
            return None
        import mlflow.pytorch
        from mlflow.models import ModelSignature, infer_signature
        from mlflow.types import Schema, TensorSpec

        spec_fn = getattr(model, "spec", None)
        if spec_fn is None:
            raise TypeError("log_student needs a dckd Restorer (its spec() rebuilds the architecture)")
        with _rng_untouched(), tempfile.TemporaryDirectory(prefix="dckd-student-") as tmp:
            net = copy.deepcopy(model).cpu().eval()
            x = _example_array(input_example)
            with torch.no_grad():
                y = net(torch.from_numpy(x)).numpy()
            # Inferred from the example, then spatial sizes freed: the restorers take any image size.
            inferred = infer_signature(x, y)
            signature = ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, x.shape[1], -1, -1))]),
                outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, y.shape[1], -1, -1))]),
            ) if inferred.inputs is not None else inferred
            weights, spec = Path(tmp) / WEIGHTS_FILE, Path(tmp) / SPEC_FILE
            torch.save({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, weights)
            spec.write_text(json.dumps(spec_fn(), indent=2, sort_keys=True))
            for f in (weights, spec):
                self.client.log_artifact(self.run_id, str(f), RUN_WEIGHTS_DIR)
            # Created here (not by log_model) so the model lands in this run's experiment.
            logged = self.client.create_logged_model(self.experiment_id, name=MODEL_NAME,
                                                     source_run_id=self.run_id)
            # log_model and the sqlite registry resolve models:/m-<id> through the global URI.
            with _global_tracking_uri(self.tracking_uri or ""):
                info = mlflow.pytorch.log_model(
                    net, name=MODEL_NAME, input_example=x, signature=signature,
                    serialization_format="pickle", run_id=self.run_id, model_id=logged.model_id,
                    extra_files=[str(weights), str(spec)], pip_requirements=[_torch_requirement()],
                )
                if str(self.client.get_logged_model(logged.model_id).status).endswith("PENDING"):
                    self.client.finalize_logged_model(logged.model_id, "READY")
            if register_as is None:
                return None
            return self.register_logged_model(info.model_id, self.run_id, register_as, alias)

    def register_logged_model(self, model_id: str, run_id: str, register_as: str, alias: str) -> int:
        """Register a logged student (``models:/<model_id>``, from ``run_id``) and point ``alias`` at it."""
        return register_logged_model(self.client, self.tracking_uri, model_id, run_id, register_as, alias)

    def student_of(self, run_id: str) -> str | None:
        """The id of the student logged by ``run_id`` (the newest, if several), or None."""
        return student_of(self.client, run_id)


def register_logged_model(client: Any, tracking_uri: str | None, model_id: str, run_id: str, register_as: str,
                          alias: str) -> int:
    """Register a logged student (``models:/<model_id>``, from ``run_id``); ``alias`` points at the version."""
    from mlflow.exceptions import MlflowException

    name = scrub(register_as)
    with _global_tracking_uri(tracking_uri or ""):  # the sqlite registry resolves models:/m-<id>
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id)
    client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


def student_of(client: Any, run_id: str) -> str | None:
    """The id of the student model logged by ``run_id`` (the newest, if several), or None."""
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                         order_by=[{"field_name": "creation_timestamp", "ascending": False}])
    return models[0].model_id if models else None


# --------------------------------------------------------------------------- loading back
def load_student(model_uri: str, tracking_uri: str | None = None) -> Restorer:
    """Rebuild a logged student from its weights-only state dict and ``spec.json``: nothing is unpickled.

    ``model_uri``: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/m-<id>`` (a logged
    model), ``runs:/RUN_ID`` or a local folder holding ``weights.pt`` and ``spec.json`` (or a
    downloaded model folder). ``mlflow.pytorch.load_model(model_uri)`` also works for registered
    students, but it unpickles the model (code from the artifact store) and needs dckd importable.
    Returns a :class:`dckd.models.Restorer` on the CPU in eval mode.
    """
    from dckd.models import build_model

    with tempfile.TemporaryDirectory(prefix="dckd-load-") as tmp:
        weights, spec = _fetch_student_files(model_uri, tracking_uri, Path(tmp))
        try:
            arch = json.loads(spec.read_text())
            model = build_model(**arch)
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (OSError, ValueError, TypeError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{model_uri}: the logged student cannot be rebuilt: {exc}") from exc
    return model.eval()


def _fetch_student_files(model_uri: str, tracking_uri: str | None, dst: Path) -> tuple[Path, Path]:
    local = Path(model_uri).expanduser()
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", model_uri) and local.is_dir():
        for folder in (local, local / "extra_files", local / RUN_WEIGHTS_DIR):
            if (folder / WEIGHTS_FILE).is_file() and (folder / SPEC_FILE).is_file():
                return folder / WEIGHTS_FILE, folder / SPEC_FILE
        raise CheckpointError(f"{model_uri}: no {WEIGHTS_FILE} and {SPEC_FILE} in this folder")

    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if model_uri.startswith("runs:/"):
            run_id = model_uri[len("runs:/"):].strip("/").split("/")[0]
            base = f"runs:/{run_id}/{RUN_WEIGHTS_DIR}"
        elif model_uri.startswith("models:/"):
            # Resolved here with an explicit client: MLflow's models:/ repository asks the global registry.
            base = f"{_model_location(client, model_uri[len('models:/'):].strip('/'))}/extra_files"
        else:
            raise CheckpointError(f"{model_uri}: expected models:/NAME@ALIAS, models:/NAME/VERSION, "
                                  "runs:/RUN_ID or a local folder")
    except MlflowException as exc:
        raise CheckpointError(f"{model_uri}: {exc.message}") from exc
    files = []
    for name in (WEIGHTS_FILE, SPEC_FILE):
        try:
            files.append(Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"{base}/{name}", dst_path=str(dst / name.split(".")[0]),
                tracking_uri=tracking_uri, registry_uri=tracking_uri)))
        except MlflowException as exc:
            raise CheckpointError(f"{model_uri}: cannot fetch the weights-only student ({name}): "
                                  f"{exc.message}") from exc
    return files[0], files[1]


def _model_location(client: Any, ref: str) -> str:
    """Artifact location of ``NAME@ALIAS``, ``NAME/VERSION`` or a logged model id ``m-<id>``."""
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in ref:
        name, number = ref.rsplit("/", 1)
        version = client.get_model_version(name, number)
    elif ref.startswith("m-"):
        return client.get_logged_model(ref).artifact_location.rstrip("/")
    else:
        raise CheckpointError(f"models:/{ref}: give an alias (NAME@ALIAS) or a version (NAME/VERSION)")
    if getattr(version, "model_id", None):
        return client.get_logged_model(version.model_id).artifact_location.rstrip("/")
    return client.get_model_version_download_uri(version.name, version.version).rstrip("/")
