"""The student in MLflow: logging it with a run, registering it under an alias, loading it back.

The logged student carries two forms: MLflow's pickled PyTorch model (``mlflow.pytorch.load_model``
works, but unpickling runs code from the artifact store) and a weights-only state dict plus the
architecture spec, which :func:`load_student` rebuilds with ``torch.load(weights_only=True)``:
loading a model by alias never unpickles.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dckd.errors import CheckpointError
from dckd.tracking.isolation import global_tracking_uri, rng_untouched
from dckd.tracking.redaction import redact, scrub

if TYPE_CHECKING:
    from dckd.models import Restorer

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "spec.json"
EXAMPLE_FILE = "example.npy"
RUN_WEIGHTS_DIR = "student_weights"
"""Run-artifact folder holding the weights-only student (what ``runs:/RUN_ID`` loads)."""
MODEL_NAME = "student"
EXAMPLE_SIDE = 32


# --------------------------------------------------------------------------- logging and registering
def example_array(example: np.ndarray | torch.Tensor) -> np.ndarray:
    """One image, centre-cropped to ``EXAMPLE_SIDE``: MLflow stores the example as JSON in the model
    and runs it through the network twice, so a whole benchmark image would cost minutes and megabytes."""
    x = example.detach().float().cpu().numpy() if isinstance(example, torch.Tensor) else np.asarray(example)
    x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"input example must be CHW or 1CHW, got shape {x.shape}")
    h, w = x.shape[-2:]
    top, left = max(0, (h - EXAMPLE_SIDE) // 2), max(0, (w - EXAMPLE_SIDE) // 2)
    return np.ascontiguousarray(x[:1, :, top:top + EXAMPLE_SIDE, left:left + EXAMPLE_SIDE])


def _torch_requirement() -> str:
    try:
        return f"torch=={importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "torch"


@dataclass
class PreparedStudent:
    """The student ready to upload: a CPU copy in eval mode, its example, signature and files on disk."""

    net: nn.Module
    example: np.ndarray
    signature: Any
    weights: Path
    spec: Path


def prepare_student(model: nn.Module, input_example: np.ndarray | torch.Tensor, folder: Path) -> PreparedStudent:
    """Everything of :func:`log_student` that runs the network, in the calling thread (RNG streams kept):
    ``weights.pt``, ``spec.json`` and ``example.npy`` in ``folder``. Nothing is sent."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    spec_fn = getattr(model, "spec", None)
    if spec_fn is None:
        raise TypeError("log_student needs a dckd Restorer (its spec() rebuilds the architecture)")
    folder.mkdir(parents=True, exist_ok=True)
    with rng_untouched():
        net = copy.deepcopy(model).cpu().eval()
        x = example_array(input_example)
        with torch.no_grad():
            y = net(torch.from_numpy(x)).numpy()
        # Inferred from the example, then spatial sizes freed: the restorers take any image size.
        inferred = infer_signature(x, y)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, x.shape[1], -1, -1))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, y.shape[1], -1, -1))]),
        ) if inferred.inputs is not None else inferred
        weights, spec = folder / WEIGHTS_FILE, folder / SPEC_FILE
        torch.save({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, weights)
        spec.write_text(json.dumps(spec_fn(), indent=2, sort_keys=True))
        np.save(folder / EXAMPLE_FILE, x, allow_pickle=False)
    return PreparedStudent(net, x, signature, weights, spec)


def load_prepared(folder: Path) -> PreparedStudent:
    """A student :func:`prepare_student` left in ``folder``, rebuilt in this process (weights-only load)."""
    from dckd.models import build_model

    try:
        arch = json.loads((folder / SPEC_FILE).read_text())
        with rng_untouched():
            model = build_model(**arch)
            model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        x = np.load(folder / EXAMPLE_FILE, allow_pickle=False)
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{folder}: the pending student cannot be rebuilt: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="dckd-student-") as tmp:
        prepared = prepare_student(model, x, Path(tmp))
    return PreparedStudent(prepared.net, prepared.example, prepared.signature, folder / WEIGHTS_FILE,
                           folder / SPEC_FILE)


def upload_student(client: Any, tracking_uri: str | None, run_id: str, experiment_id: str,
                   prepared: PreparedStudent) -> str:
    """The network part of :func:`log_student`: weights-only files, the logged model; returns its id.

    Runs no random draw of its own, so it may run in the tracking sender's thread.
    """
    import mlflow.pytorch

    for f in (prepared.weights, prepared.spec):
        client.log_artifact(run_id, str(f), RUN_WEIGHTS_DIR)
    # Created here (not by log_model) so the model lands in this run's experiment.
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
    # log_model and the sqlite registry resolve models:/m-<id> through the global URI.
    with global_tracking_uri(tracking_uri or ""):
        info = mlflow.pytorch.log_model(
            prepared.net, name=MODEL_NAME, input_example=prepared.example, signature=prepared.signature,
            serialization_format="pickle", run_id=run_id, model_id=logged.model_id,
            extra_files=[str(prepared.weights), str(prepared.spec)], pip_requirements=[_torch_requirement()],
        )
        if str(client.get_logged_model(logged.model_id).status).endswith("PENDING"):
            client.finalize_logged_model(logged.model_id, "READY")
    return info.model_id


def log_student(
    client: Any,
    tracking_uri: str | None,
    run_id: str,
    experiment_id: str,
    model: nn.Module,
    input_example: np.ndarray | torch.Tensor,
) -> str:
    """Log ``model`` with run ``run_id`` (pickled MLflow model + weights-only state dict + spec);
    returns the logged model's id (``models:/<id>``)."""
    with rng_untouched(), tempfile.TemporaryDirectory(prefix="dckd-student-") as tmp:
        prepared = prepare_student(model, input_example, Path(tmp))
        return upload_student(client, tracking_uri, run_id, experiment_id, prepared)


def ready_student_of(client: Any, run_id: str) -> str | None:
    """The id of a student ``run_id`` logged completely (READY), or None: a replay does not log it twice."""
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                         order_by=[{"field_name": "creation_timestamp", "ascending": False}])
    for m in models:
        if m.name == MODEL_NAME and str(m.status).endswith("READY"):
            return m.model_id
    return None


def registered_version_of(client: Any, register_as: str, model_id: str) -> int | None:
    """The version of ``register_as`` that already points at ``model_id``, or None."""
    from mlflow.exceptions import MlflowException

    name = scrub(register_as).replace("'", "\\'")
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for v in versions:
        if getattr(v, "model_id", None) == model_id or v.source == f"models:/{model_id}":
            return int(v.version)
    return None


def register_logged_model(client: Any, tracking_uri: str | None, model_id: str, run_id: str, register_as: str,
                          alias: str) -> int:
    """Register a logged student (``models:/<model_id>``, from ``run_id``); ``alias`` points at the version."""
    from mlflow.exceptions import MlflowException

    name = scrub(register_as)
    with global_tracking_uri(tracking_uri or ""):  # the sqlite registry resolves models:/m-<id>
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
        raise CheckpointError(f"{model_uri}: {redact(str(exc.message))}") from exc
    files = []
    for name in (WEIGHTS_FILE, SPEC_FILE):
        try:
            files.append(Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"{base}/{name}", dst_path=str(dst / name.split(".")[0]),
                tracking_uri=tracking_uri, registry_uri=tracking_uri)))
        except MlflowException as exc:
            raise CheckpointError(f"{model_uri}: cannot fetch the weights-only student ({name}): "
                                  f"{redact(str(exc.message))}") from exc
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
