"""The MLflow run of one training run: where it is tracked, its start and end, params, metrics, files.

One training run is one MLflow run. The run id travels in the training checkpoint
(``engine.extra["mlflow_run_id"]``), so a resumed run, or a Ray worker group restarted from its
last checkpoint, continues the same MLflow run instead of starting a duplicate.

Everything goes through an explicit ``MlflowClient(tracking_uri)`` and explicit run ids, not
MLflow's process-global active run, so several trackers (or a tracker inside a process that uses
MLflow for something else) cannot log into each other's runs.

On an http(s) server, :meth:`RunTracker.start` first checks that the server answers (seconds, a
:class:`~dckd.errors.TrackingError` naming the URI otherwise); after that nothing the run logs
waits on the server: each call is written to the run's journal (:mod:`dckd.tracking.journal`) and
sent by a background thread (:mod:`dckd.tracking.sender`), which keeps it while the server is down
and sends it when it is back. :meth:`RunTracker.end` waits a bounded time for the rest
(``$DCKD_TRACKING_WAIT_S``, 30 s, of the server not answering) and otherwise leaves the journal in
the run directory with the command that sends it later (``dckd track sync RUN_DIR``). A sqlite or
file store is written directly, as it cannot be down.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import posixpath
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
from dckd.errors import ConfigError, TrackingError
from dckd.imageio import write_image
from dckd.reporting.describe import method_label, schedule_summary
from dckd.tracking import registry
from dckd.tracking.isolation import rng_untouched
from dckd.tracking.journal import Journal, JournalBusy, find_journals, journal_path, summarize
from dckd.tracking.redaction import contains_secret, redact, scrub, secret_values
from dckd.tracking.samples import as_list, sample_panel
from dckd.tracking.sender import Op, Sender, Target, execute, not_sent_line, print_err, wait_seconds
from dckd.tracking.server import check_server, describe, is_remote, is_transient, mlflow_limits

log = logging.getLogger("dckd")

PARAM_VALUE_LIMIT = 6000
"""MLflow's maximum param value length (the server refuses longer values)."""
_KEY_LIMIT = 250
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


def _orphaned(path: Path) -> bool:
    """A journal no running process holds (another run's, left behind)."""
    journal = Journal(path)
    try:
        journal.lock()
    except (JournalBusy, OSError):
        return False
    journal.unlock()
    return bool(journal.pending())


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
        self.remote = is_remote(self.tracking_uri)
        self._journal: Journal | None = None
        self._sender: Sender | None = None

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
        returns the run id (None when off). A training loop passes the id its checkpoint carries.

        A server that does not answer fails here, within seconds, with a :class:`TrackingError`."""
        if not self.enabled:
            return None
        if self.active:
            return self.run_id
        self.run_id = run_id or self.run_id
        check_server(self.tracking_uri)  # before importing mlflow: seconds matter when it fails
        from mlflow.exceptions import MlflowException

        try:
            with rng_untouched(), mlflow_limits() if self.remote else contextlib.nullcontext():
                self._start_run()
        except MlflowException as exc:
            raise TrackingError(f"MLflow tracking store {scrub(self.tracking_uri or '')}: {describe(exc)}") from None
        if self.remote:
            self._open_journal()
        return self.run_id

    def _start_run(self) -> None:
        from mlflow.exceptions import MlflowException

        db = _sqlite_path(self.tracking_uri or "")
        if db is not None:
            db.expanduser().parent.mkdir(parents=True, exist_ok=True)
        if self.run_id:
            try:
                run = self.client.get_run(self.run_id)
            except MlflowException as exc:
                if is_transient(exc):
                    raise
                log.warning("MLflow run %s is not in %s: starting a new run", self.run_id,
                            scrub(self.tracking_uri or ""))
                run = None
            if run is not None:
                self.client.update_run(self.run_id, status="RUNNING")
                self.experiment_id = run.info.experiment_id
                self.resumed = self.active = True
                return
        self.experiment_id = self._experiment_id()
        tags = {k: scrub(v) for k, v in self._tags().items()}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=scrub(self.cfg.name), tags=tags)
        self.run_id = run.info.run_id
        self.resumed, self.active = False, True

    def _open_journal(self) -> None:
        """The run's journal and its sender; operations an earlier process of this run left are sent first."""
        from mlflow import MlflowClient

        assert self.run_id and self.experiment_id and self.tracking_uri
        run_dir = self.cfg.run_dir
        path = journal_path(run_dir, self.run_id)
        journal = Journal.create(path, {
            "run_id": self.run_id, "experiment_id": self.experiment_id, "run_name": scrub(self.cfg.name),
            "tracking_uri": scrub(self.tracking_uri), "created": _dt.datetime.now().isoformat(timespec="seconds")})
        try:
            journal.lock()
        except JournalBusy:
            raise TrackingError(f"{path} is in use by another process: is this run being trained twice?") from None
        target = Target(MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri),
                        self.tracking_uri, self.run_id, self.experiment_id, scrub(self.cfg.name))
        sender = Sender(target, journal)
        left = journal.pending()
        for record in left:
            if record["kind"] == "end":  # the run goes on: its earlier end is superseded
                journal.mark(int(record["seq"]))
            else:
                sender.submit(Op(record, {"replay": True}))
        if left:
            log.warning("sending what an earlier process of this run did not send to MLflow (%s), from %s",
                        summarize([r for r in left if r["kind"] != "end"]), path)
        for other in find_journals(run_dir):
            if other != path and _orphaned(other):
                log.warning("%s holds tracking operations of another MLflow run, not sent yet: "
                            "dckd track sync %s", other, run_dir)
        self._journal, self._sender = journal, sender.start()

    def _queue(self, kind: str, data: dict[str, Any], seq: int | None = None,
               memory: dict[str, Any] | None = None) -> Op:
        """Journal one operation and hand it to the sender (returns at once)."""
        assert self._journal is not None and self._sender is not None
        if seq is None:
            seq, _ = self._journal.reserve()
        return self._sender.submit(Op(self._journal.append(seq, kind, data), memory or {}))

    def _stage(self, folder: Path) -> str:
        """A journal folder for an operation's files, relative to the journal."""
        assert self._journal is not None
        folder.mkdir(parents=True, exist_ok=True)
        return folder.relative_to(self._journal.path).as_posix()

    def flush(self) -> bool:
        """Wait until everything logged so far is sent (bounded as :meth:`end`); True if it was."""
        if self._sender is None:
            return True
        return self._sender.drain(wait_seconds())

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED (an interrupted run; resuming sets it RUNNING again).

        On a server: wait for what is still buffered while the server answers; if it has not
        answered for ``$DCKD_TRACKING_WAIT_S`` seconds (30), leave the rest in the run directory
        and print the command that sends it later."""
        if not self.enabled or not self.active:
            return
        if self._sender is not None:
            self._queue("end", {"status": status, "end_time": int(time.time() * 1000)})
            self._close_sender()
        else:
            with rng_untouched():
                self.client.set_terminated(self.run_id, status=status)
        self.active = False

    def _close_sender(self) -> None:
        sender, journal = self._sender, self._journal
        assert sender is not None and journal is not None
        patience = wait_seconds()
        if sender.down:
            log.warning("MLflow server %s is unreachable: waiting up to %.0f s for it to take %d buffered "
                        "operation(s)", scrub(self.tracking_uri or ""), patience, sender.pending())
        drained = sender.drain(patience)
        sender.close()
        self._sender = self._journal = None
        if not journal.pending():
            journal.remove()
        else:
            journal.unlock()
            print_err(not_sent_line(journal, self.tracking_uri or "", self.cfg.run_dir, unreachable=not drained))

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
        secrets = secret_values()
        params = {sanitize_key(k): scrub(v, secrets) for k, v in flatten_config(self.cfg).items()}
        self._send("params", {"params": params, "check": self.resumed})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self._on() or not metrics:
            return
        secrets = secret_values()
        stamp = int(time.time() * 1000)
        self._send("metrics", {"metrics": [[sanitize_key(redact(k, secrets)), float(v), stamp, int(step)]
                                           for k, v in metrics.items()]})

    def _send(self, kind: str, data: dict[str, Any]) -> None:
        """An operation without files: to the sender on a server, else done here (the same ``execute``)."""
        if self._sender is not None:
            self._queue(kind, data)
            return
        assert self.run_id and self.tracking_uri
        target = Target(self.client, self.tracking_uri, self.run_id, self.experiment_id or "", scrub(self.cfg.name))
        with rng_untouched():
            execute(target, None, {"kind": kind, **data})

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
        if self._sender is not None:
            assert self._journal is not None
            seq, folder = self._journal.reserve()
            parent, name = posixpath.split(artifact_file)
            rel = self._stage(folder)
            (folder / name).write_text(redact(text))
            self._queue("file", {"path": f"{rel}/{name}", "artifact_path": parent or None}, seq=seq)
            return
        with rng_untouched():
            self.client.log_text(self.run_id, redact(text), artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file as it is (binary artifacts: nothing is masked; text files go through log_text)."""
        if not self._on():
            return
        if self._sender is not None:
            self._queue_file(Path(path), Path(path).name, artifact_path)
            return
        with rng_untouched():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def _queue_file(self, path: Path, name: str, artifact_path: str | None) -> None:
        """A copy of ``path`` in the journal (a hard link when possible: the caller may delete or prune
        its file as soon as this returns), then queued."""
        assert self._journal is not None
        seq, folder = self._journal.reserve()
        rel = self._stage(folder)
        if path.is_dir():
            shutil.copytree(path, folder / name)
        else:
            try:
                os.link(path, folder / name)
            except OSError:
                shutil.copyfile(path, folder / name)
        self._queue("file", {"path": f"{rel}/{name}", "artifact_path": artifact_path}, seq=seq)

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
        if self._sender is not None:
            self._queue_file(path, name or path.name, artifact_path)
            return True
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
        def panels(folder: Path) -> list[str]:
            names = []
            for k, (a, t, s, g) in enumerate(zip(lqs, teach, outs, gts)):
                name = f"iter_{int(step):07d}_{k}.png"
                write_image(folder / name, sample_panel(a, t, s, g))
                names.append(f"{artifact_dir}/{name}")
            return names

        if self._sender is not None:
            assert self._journal is not None
            seq, folder = self._journal.reserve()
            rel = self._stage(folder)
            with rng_untouched():
                names = panels(folder)
            if names:
                self._queue("dir", {"path": rel, "artifact_path": artifact_dir}, seq=seq)
            return names
        with rng_untouched(), tempfile.TemporaryDirectory(prefix="dckd-samples-") as tmp:
            names = panels(Path(tmp))
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
        if self._sender is not None:
            assert self._journal is not None
            seq, folder = self._journal.reserve()
            rel = self._stage(folder)
            prepared = registry.prepare_student(model, input_example, folder,  # runs the network here
                                                onnx=self.cfg.tracking.log_onnx)
            op = self._queue("student", {"path": rel, "register_as": None if register_as is None else scrub(register_as),
                                         "alias": alias}, seq=seq, memory={"prepared": prepared})
            # While the server answers, wait for the version; while it is away, end() does the waiting.
            self._sender.wait(op.done.is_set, 0.0 if self._sender.down else wait_seconds())
            return op.result
        with rng_untouched():
            model_id = registry.log_student(self.client, self.tracking_uri, self.run_id, self.experiment_id,
                                            model, input_example, onnx=self.cfg.tracking.log_onnx)
            if register_as is None:
                return None
            return self.register_logged_model(model_id, self.run_id, register_as, alias)

    def register_logged_model(self, model_id: str, run_id: str, register_as: str, alias: str) -> int:
        """Register a logged student (``models:/<model_id>``, from ``run_id``) and point ``alias`` at it."""
        return registry.register_logged_model(self.client, self.tracking_uri, model_id, run_id, register_as, alias)

    def student_of(self, run_id: str) -> str | None:
        """The id of the student logged by ``run_id`` (the newest, if several), or None."""
        return registry.student_of(self.client, run_id)
