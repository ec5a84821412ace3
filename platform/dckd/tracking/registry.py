"""The student in MLflow: logging it with a run, registering it under an alias, loading it back.

The logged student (one MLflow model per run, named ``student``) is a pyfunc model written from
code (:mod:`dckd.deploy.pyfunc_model`) whose artifacts are a weights-only state dict
(``weights.pt``), the architecture spec (``spec.json``) and, when exported, the verified ONNX file
(``model.onnx``). ``mlflow models serve -m models:/NAME@ALIAS`` restores images posted over HTTP
(:mod:`dckd.deploy.serving`); :func:`load_student` rebuilds the network with
``torch.load(weights_only=True)``. Neither unpickles anything from the artifact store. Students
logged before (MLflow's pickled PyTorch model, weights under ``extra_files/``) still load.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dckd.errors import CheckpointError, DckdError
from dckd.tracking.isolation import global_tracking_uri, rng_untouched
from dckd.tracking.redaction import redact, scrub

if TYPE_CHECKING:
    from dckd.models import Restorer

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "spec.json"
ONNX_FILE = "model.onnx"
RUN_WEIGHTS_DIR = "student_weights"
"""Run-artifact folder holding the weights-only student (what ``runs:/RUN_ID`` loads)."""
MODEL_NAME = "student"
MODEL_FILES_DIR = "artifacts"
"""Where a logged student keeps its files inside the MLflow model (pyfunc's ``artifacts/``)."""
LEGACY_FILES_DIR = "extra_files"
"""The same, for students logged as MLflow's pickled PyTorch model (before serving)."""
EXAMPLE_SIDE = 32
PYFUNC_CODE = Path(__file__).resolve().parent.parent / "deploy" / "pyfunc_model.py"
"""The models-from-code file each logged student carries (:mod:`dckd.deploy.pyfunc_model`)."""


# --------------------------------------------------------------------------- logging and registering
def example_array(example: np.ndarray | torch.Tensor) -> np.ndarray:
    """One image, centre-cropped to ``EXAMPLE_SIDE``: enough to check that the student runs."""
    x = example.detach().float().cpu().numpy() if isinstance(example, torch.Tensor) else np.asarray(example)
    x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"input example must be CHW or 1CHW, got shape {x.shape}")
    h, w = x.shape[-2:]
    top, left = max(0, (h - EXAMPLE_SIDE) // 2), max(0, (w - EXAMPLE_SIDE) // 2)
    return np.ascontiguousarray(x[:1, :, top:top + EXAMPLE_SIDE, left:left + EXAMPLE_SIDE])


def _requirements() -> list[str]:
    """What the served model imports besides dckd (which is not on PyPI: serve with ``--env-manager local``)."""
    out = []
    for dist in ("torch", "numpy", "pillow", "pandas"):
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            out.append(dist)
    return out


@dataclass
class PreparedStudent:
    """The student's files on disk, ready to upload: ``onnx`` is None when not exported."""

    weights: Path
    spec: Path
    onnx: Path | None = None


def prepare_student(model: nn.Module, input_example: np.ndarray | torch.Tensor, folder: Path,
                    onnx: bool = True) -> PreparedStudent:
    """Everything of :func:`log_student` that runs the network, in the calling thread (RNG streams kept):
    ``weights.pt``, ``spec.json`` and (``onnx``) the verified ``model.onnx`` in ``folder``. Nothing is sent.

    The student is run once on (a crop of) ``input_example`` so a broken one fails here, not when served.
    An architecture that cannot be exported is logged without ONNX (with a warning): losing the
    student at the end of a training run over a deployment format would cost more.
    """
    spec_fn = getattr(model, "spec", None)
    if spec_fn is None:
        raise TypeError("log_student needs a dckd Restorer (its spec() rebuilds the architecture)")
    folder.mkdir(parents=True, exist_ok=True)
    with rng_untouched():
        net = copy.deepcopy(model).cpu().eval()
        x = torch.from_numpy(example_array(input_example))
        with torch.no_grad():
            y = net(x)
        scale = int(getattr(net, "scale", 1))
        if tuple(y.shape[-2:]) != (x.shape[-2] * scale, x.shape[-1] * scale):
            raise ValueError(f"the student returned {tuple(y.shape)} for a {tuple(x.shape)} input at scale {scale}")
        weights, spec = folder / WEIGHTS_FILE, folder / SPEC_FILE
        torch.save({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, weights)
        spec.write_text(json.dumps(spec_fn(), indent=2, sort_keys=True))
        onnx_path = _export_onnx(net, folder / ONNX_FILE) if onnx else None
    return PreparedStudent(weights, spec, onnx_path)


def _export_onnx(net: nn.Module, dst: Path) -> Path | None:
    from dckd.deploy.export import export

    tic = time.perf_counter()
    try:
        report = export(net, dst, "onnx")
    except DckdError as exc:  # ExportError, InputContractError
        log.warning("the student is logged without ONNX: %s", exc)
        return None
    log.info("student exported to ONNX in %.1f s (|ONNX - PyTorch| <= %.1e)", time.perf_counter() - tic,
             report.max_abs)
    return dst


def load_prepared(folder: Path) -> PreparedStudent:
    """A student :func:`prepare_student` left in ``folder`` (a journal), checked without building the network:
    this may run in the sender's thread, where drawing initial weights would shift training's RNG."""
    try:
        json.loads((folder / SPEC_FILE).read_text())
        torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{folder}: the pending student cannot be read: {exc}") from exc
    onnx = folder / ONNX_FILE
    return PreparedStudent(folder / WEIGHTS_FILE, folder / SPEC_FILE, onnx if onnx.is_file() else None)


def _model_kwargs(prepared: PreparedStudent) -> dict[str, Any]:
    """What makes the MLflow model: the models-from-code file, its artifacts, signature and requirements."""
    from dckd.deploy.serving import ONNX_ARTIFACT, SPEC_ARTIFACT, WEIGHTS_ARTIFACT, signature

    artifacts = {WEIGHTS_ARTIFACT: str(prepared.weights), SPEC_ARTIFACT: str(prepared.spec)}
    if prepared.onnx is not None:
        artifacts[ONNX_ARTIFACT] = str(prepared.onnx)
    return {"python_model": str(PYFUNC_CODE), "artifacts": artifacts, "signature": signature(),
            "pip_requirements": _requirements()}


def save_student(prepared: PreparedStudent, path: Path) -> Path:
    """The served model in a local folder, as it is logged (``mlflow.pyfunc.load_model(path)``,
    ``mlflow models serve -m PATH``, :func:`load_student`); ``path`` must not exist yet."""
    import mlflow.pyfunc

    _quiet_missing_example()
    mlflow.pyfunc.save_model(str(path), **_model_kwargs(prepared))
    return path


def upload_student(client: Any, tracking_uri: str | None, run_id: str, experiment_id: str,
                   prepared: PreparedStudent) -> str:
    """The network part of :func:`log_student`: weights-only files with the run, the pyfunc model; returns its id.

    Runs no random draw of its own (the model is not loaded while logging: no input example), so it
    may run in the tracking sender's thread.
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    for f in (prepared.weights, prepared.spec):
        client.log_artifact(run_id, str(f), RUN_WEIGHTS_DIR)
    # Created here (not by log_model) so the model lands in this run's experiment.
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
    _quiet_missing_example()
    # Model.log and the sqlite registry resolve models:/m-<id> through the global URI.
    with global_tracking_uri(tracking_uri or ""):
        info = Model.log(artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id,
                         model_id=logged.model_id, **_model_kwargs(prepared))
        if str(client.get_logged_model(logged.model_id).status).endswith("PENDING"):
            client.finalize_logged_model(logged.model_id, "READY")
    return info.model_id


_EXAMPLE_WARNING = r".*An input example was not provided when logging the model"


def _quiet_missing_example() -> None:
    """No input example on purpose: MLflow would load the model to check it (drawing initial weights
    from the process's RNG, maybe in the sender's thread); the signature and dckd.deploy.serving say
    what the model takes. One filter for the process (``catch_warnings`` is not thread-safe)."""
    if not any(f[1] is not None and f[1].pattern == _EXAMPLE_WARNING for f in warnings.filters):
        warnings.filterwarnings("ignore", message=_EXAMPLE_WARNING, category=UserWarning)


def log_student(
    client: Any,
    tracking_uri: str | None,
    run_id: str,
    experiment_id: str,
    model: nn.Module,
    input_example: np.ndarray | torch.Tensor,
    onnx: bool = True,
) -> str:
    """Log ``model`` with run ``run_id`` (the serving pyfunc model: weights-only state dict, spec and,
    with ``onnx``, the ONNX file); returns the logged model's id (``models:/<id>``)."""
    with rng_untouched(), tempfile.TemporaryDirectory(prefix="dckd-student-") as tmp:
        prepared = prepare_student(model, input_example, Path(tmp), onnx=onnx)
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
def rebuild_student(spec: Path, weights: Path, source: str) -> Restorer:
    """A Restorer from ``spec.json`` and a weights-only state dict (``torch.load(weights_only=True)``),
    on the CPU in eval mode; :class:`CheckpointError` naming ``source`` if they do not fit."""
    from dckd.models import build_model

    try:
        arch = json.loads(Path(spec).read_text())
        model = build_model(**arch)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{source}: the logged student cannot be rebuilt: {exc}") from exc
    return model.eval()


def load_student(model_uri: str, tracking_uri: str | None = None) -> Restorer:
    """Rebuild a logged student from its weights-only state dict and ``spec.json``: nothing is unpickled.

    ``model_uri``: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/m-<id>`` (a logged
    model), ``runs:/RUN_ID`` or a local folder holding ``weights.pt`` and ``spec.json`` (or a
    downloaded model folder). Students logged before serving (a pickled PyTorch model with the
    files under ``extra_files/``) load the same way. Returns a :class:`dckd.models.Restorer` on
    the CPU in eval mode.
    """
    with tempfile.TemporaryDirectory(prefix="dckd-load-") as tmp:
        weights, spec = _fetch_student_files(model_uri, tracking_uri, Path(tmp))
        return rebuild_student(spec, weights, model_uri)


def _fetch_student_files(model_uri: str, tracking_uri: str | None, dst: Path) -> tuple[Path, Path]:
    local = Path(model_uri).expanduser()
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", model_uri) and local.is_dir():
        for folder in (local, local / MODEL_FILES_DIR, local / LEGACY_FILES_DIR, local / RUN_WEIGHTS_DIR):
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
            location = _model_location(client, model_uri[len("models:/"):].strip("/"))
            base = f"{location}/{_files_dir(location, tracking_uri)}"
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


def _files_dir(location: str, tracking_uri: str | None) -> str:
    """``artifacts`` (the serving pyfunc model) or ``extra_files`` (a student logged before it)."""
    import mlflow

    names = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=location,
                                                                       tracking_uri=tracking_uri)}
    return LEGACY_FILES_DIR if LEGACY_FILES_DIR in names and MODEL_FILES_DIR not in names else MODEL_FILES_DIR


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
