"""Sending a run's journal to its MLflow server: in a background thread while the run trains, and later.

Why not MLflow's own asynchronous logging (``log_batch(..., synchronous=False)``,
``MLFLOW_ENABLE_ASYNC_LOGGING``)? Measured with MLflow 3.17 and a killed server: the call returns
at once, but the queue sends each batch once; after MLflow's HTTP retries (about 250 s with the
defaults) the batch is dropped, an ERROR line carrying the URL (a password in it included) is
logged, and nothing is sent when the server comes back. It covers params, tags and metrics only,
keeps nothing on disk, and at exit waits for those retries. So dckd keeps its own journal
(:mod:`dckd.tracking.journal`) and retries as long as the run lasts:

- :class:`Sender`: one daemon thread sends the operations in order (consecutive metrics in one
  batch). On a failure that may pass (:func:`~dckd.tracking.server.is_transient`) it says once that
  the server is down, probes it every few seconds and goes on when it answers; the training
  thread never waits on it. An operation the server refuses (4xx), or keeps failing while it
  answers, is set aside: it stays in the journal for ``dckd track sync``, which reports it.
- :func:`execute`: one operation against MLflow; with ``replay`` (a journal left by an earlier
  process) it is idempotent: params only if absent, metrics with their own steps and timestamps
  (the server keeps one copy of identical points), a student only if none is logged yet.
- :func:`sync_run_dir`: ``dckd track sync RUN_DIR`` sends what a run left behind.

The sender thread draws no random numbers (the training's streams are process-global): MLflow's
backoff jitter is off inside :func:`~dckd.tracking.server.mlflow_limits`, and anything that runs
the network (the student's example) ran in the training thread before the operation was queued.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dckd.errors import TrackingError
from dckd.tracking import registry
from dckd.tracking.journal import Journal, JournalBusy, find_journals, summarize
from dckd.tracking.redaction import REDACTED, scrub
from dckd.tracking.server import (
    check_server,
    describe,
    is_transient,
    mlflow_limits,
    probe,
    user_env,
    view_run_lines,
)

log = logging.getLogger("dckd")

WAIT_ENV = "DCKD_TRACKING_WAIT_S"
DEFAULT_WAIT_S = 30.0
"""How long the end of a run waits for an unreachable server before it leaves the journal behind."""
_BATCH_METRICS = 1000
_BATCH_PARAMS = 100
_RETRY_MAX_S = 5.0
_ANSWERED_TRIES = 5
"""A failing operation is set aside after this many tries while the server answered its health probe."""


def wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


@dataclass
class Target:
    """Where the operations go: one MLflow run on one server."""

    client: Any
    uri: str
    run_id: str
    experiment_id: str
    run_name: str


@dataclass
class Op:
    """One queued tracking call: its journal record, what only this process has (the student in memory),
    and when it is done."""

    record: dict[str, Any]
    memory: dict[str, Any] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None

    @property
    def seq(self) -> int:
        return int(self.record["seq"])

    @property
    def kind(self) -> str:
        return str(self.record["kind"])


# --------------------------------------------------------------------------- one operation
def execute(target: Target, journal: Journal | None, record: Mapping[str, Any],
            memory: Mapping[str, Any] | None = None, replay: bool = False) -> Any:
    """Send one operation (or, for ``metrics``, several merged ones); returns the student's version.

    ``journal`` holds the files of file operations; params and metrics need none (a tracker without
    a server runs them here directly)."""
    from mlflow.entities import Metric, Param

    client, run_id, kind = target.client, target.run_id, record["kind"]
    if kind == "metrics":
        rows = [Metric(str(k), float(v), int(ts), int(step)) for k, v, ts, step in record["metrics"]]
        for i in range(0, len(rows), _BATCH_METRICS):
            client.log_batch(run_id, metrics=rows[i:i + _BATCH_METRICS])
    elif kind == "params":
        params: dict[str, str] = dict(record["params"])
        have = client.get_run(run_id).data.params if (record.get("check") or replay) else {}
        changed = sorted(k for k, v in params.items() if k in have and have[k] != v)
        if changed and not replay:
            log.warning("config differs from the resumed MLflow run's params in %d key(s) "
                        "(kept the original values): %s", len(changed), ", ".join(changed[:10]))
        todo = [Param(k, v) for k, v in params.items() if k not in have]
        for i in range(0, len(todo), _BATCH_PARAMS):
            client.log_batch(run_id, params=todo[i:i + _BATCH_PARAMS])
    elif kind == "end":
        client.set_terminated(run_id, status=record["status"], end_time=int(record["end_time"]))
        if (user_env("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT") or "").lower() != "true":
            for line in view_run_lines(target.uri, target.experiment_id, run_id, target.run_name):
                print(line, flush=True)
    elif journal is None:
        raise ValueError(f"a {kind!r} operation needs the journal that holds its files")
    elif kind == "file":
        client.log_artifact(run_id, str(journal.path / record["path"]), record.get("artifact_path"))
    elif kind == "dir":
        client.log_artifacts(run_id, str(journal.path / record["path"]), record.get("artifact_path"))
    elif kind == "student":
        return _send_student(target, journal, record, memory or {}, replay)
    else:
        raise ValueError(f"unknown tracking operation {kind!r}")
    return None


def _send_student(target: Target, journal: Journal, record: Mapping[str, Any], memory: Mapping[str, Any],
                  replay: bool) -> int | None:
    client, run_id = target.client, target.run_id
    model_id = registry.ready_student_of(client, run_id) if (replay or memory.get("retry")) else None
    if model_id is None:
        prepared = memory.get("prepared") or registry.load_prepared(journal.path / record["path"])
        model_id = registry.upload_student(client, target.uri, run_id, target.experiment_id, prepared)
    register_as = record.get("register_as")
    if register_as is None:
        return None
    version = registry.registered_version_of(client, register_as, model_id)
    if version is None:
        return registry.register_logged_model(client, target.uri, model_id, run_id, register_as, record["alias"])
    client.set_registered_model_alias(scrub(register_as), record["alias"], version)
    return version


def leading_metrics(records: list[Mapping[str, Any]]) -> int:
    """How many of the leading records are metrics that fit one batch together (0 if the first is not)."""
    count, rows = 0, 0
    for record in records:
        n = len(record["metrics"]) if record["kind"] == "metrics" else -1
        if n < 0 or (count and rows + n > _BATCH_METRICS):
            break
        count, rows = count + 1, rows + n
    return count


def merged(records: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    if len(records) == 1:
        return records[0]
    return {**records[0], "metrics": [row for r in records for row in r["metrics"]]}


# --------------------------------------------------------------------------- the sender thread
class Sender:
    """Sends queued operations in order from a daemon thread; never blocks the thread that queues."""

    def __init__(self, target: Target, journal: Journal) -> None:
        self.target = target
        self.journal = journal
        self._queue: collections.deque[Op] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self.down_since: float | None = None
        self.last_progress = time.monotonic()
        self.sent = 0
        self.set_aside = 0
        self.dead = False
        self._thread = threading.Thread(target=self._run, name="dckd-tracking-sender", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def submit(self, op: Op) -> Op:
        with self._cond:
            self._queue.append(op)
            self._cond.notify_all()
        return op

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    # ------------------------------------------------------------------ waiting for it
    def wait(self, done: Callable[[], bool], patience: float) -> bool:
        """Wait until ``done()``; give up once the server has not answered for ``patience`` seconds
        (counted from this call). While the server answers, wait as long as sending takes."""
        stalled_since: float | None = None
        last_probe, probe_ok = 0.0, True
        while True:
            with self._cond:
                if done():
                    return True
                if self.dead:
                    return False
                self._cond.wait(0.2)
            now = time.monotonic()
            healthy = not self.down
            if healthy and now - self.last_progress > 5.0:
                # Busy on one request for a while: is anyone still answering?
                if now - last_probe > 5.0:
                    probe_ok, last_probe = probe(self.target.uri) is None, now
                healthy = probe_ok
            if healthy:
                stalled_since = None
            elif stalled_since is None:
                stalled_since = now
            elif now - stalled_since >= patience:
                return False

    def drain(self, patience: float) -> bool:
        return self.wait(lambda: not self._queue, patience)

    def close(self) -> None:
        """Stop after the request in flight (if any); what is left stays in the journal."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug must not pass silently: what is left stays in the journal
            log.error("MLflow tracking stopped sending (%s); what was not sent stays in %s",
                      describe(exc), self.journal.path)
        finally:
            with self._cond:
                self.dead = True
                self._cond.notify_all()

    def _loop(self) -> None:
        failures = 0  # in a row, for the backoff
        answered = 0  # failures of the current operation while the server answered probes
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                ops = list(self._queue)
            group = ops[:max(1, leading_metrics([op.record for op in ops]))]
            memory = group[0].memory
            try:
                with mlflow_limits():
                    result = execute(self.target, self.journal, merged([op.record for op in group]), memory,
                                     replay=bool(memory.get("replay")))
            except Exception as exc:
                transient = is_transient(exc)
                reason = probe(self.target.uri) if transient else None
                answered += transient and reason is None
                if not transient or answered >= _ANSWERED_TRIES:
                    # A refusal, or a failure the server keeps repeating while it answers: set aside (still
                    # in the journal, for `dckd track sync` to send or report) so the rest goes on.
                    log.warning("MLflow did not take %s (%s); it stays in the run's journal, for "
                                "`dckd track sync %s`", summarize([op.record for op in group]), describe(exc),
                                self.journal.path.parent.parent)
                    self._finish(group, ok=None)
                    answered = 0
                    continue
                failures += 1
                if group[0].kind == "student":
                    memory["retry"] = True
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    problem = f"is unreachable ({reason})" if reason else f"fails ({describe(exc, 160)})"
                    log.warning("MLflow server %s %s: training goes on; what it logs is kept in %s and sent when "
                                "the server is back", scrub(self.target.uri), problem, self.journal.path)
                self._pause(min(_RETRY_MAX_S, 0.5 * 2 ** min(failures, 4)))
                continue
            failures = answered = 0
            if self.down_since is not None:
                log.warning("MLflow server %s is back after %.0f s: sending %d buffered operation(s)",
                            scrub(self.target.uri), time.monotonic() - self.down_since, self.pending())
                self.down_since = None
            group[0].result = result
            self._finish(group, ok=True)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, then until the server answers a probe (or the sender is stopped)."""
        deadline = time.monotonic() + seconds
        while True:
            with self._cond:
                if self._stop:
                    return
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
            if probe(self.target.uri) is None:
                return
            deadline = time.monotonic() + _RETRY_MAX_S

    def _finish(self, group: list[Op], ok: bool | None) -> None:
        """Sent (``ok``), or set aside (None: left pending in the journal)."""
        if ok:
            for op in group:
                self.journal.mark(op.seq)
        with self._cond:
            for op in group:
                self._queue.popleft()
                op.done.set()
            self.sent += len(group) if ok else 0
            self.set_aside += 0 if ok else len(group)
            self.last_progress = time.monotonic()
            self._cond.notify_all()


# --------------------------------------------------------------------------- later: dckd track sync
def _uri_for(meta: Mapping[str, Any], override: str | None) -> str:
    stored = str(meta.get("tracking_uri") or "")
    for uri in (override, stored if REDACTED not in stored else None, os.environ.get("MLFLOW_TRACKING_URI")):
        if uri:
            return uri
    raise TrackingError(f"the journal's tracking URI ({stored}) had credentials, which are not stored: "
                        "give it with --tracking-uri (or $MLFLOW_TRACKING_URI)")


def sync_journal(path: Path, tracking_uri: str | None = None, dry_run: bool = False,
                 out: Callable[[str], None] = print) -> tuple[int, int]:
    """Send what the journal at ``path`` holds; returns (operations sent, operations refused).

    The journal goes away once nothing is pending. A second call finds nothing to send.
    """
    import mlflow

    journal = Journal(path)
    meta = journal.meta
    run_id = str(meta["run_id"])
    try:
        journal.lock()
    except JournalBusy:
        raise TrackingError(f"{path} is in use by a running dckd process (the run is still being tracked); "
                            "run this once it has ended") from None
    try:
        pending = journal.pending()
        if not pending:
            out(f"MLflow run {run_id}: nothing left to send")
            journal.remove()
            return 0, 0
        uri = _uri_for(meta, tracking_uri)
        if dry_run:
            out(f"MLflow run {run_id} on {scrub(uri)}: would send {len(pending)} operation(s): {summarize(pending)}")
            return 0, 0
        check_server(uri)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        with mlflow_limits():
            try:
                run = client.get_run(run_id)
            except Exception as exc:
                raise TrackingError(f"MLflow run {run_id} cannot be read from {scrub(uri)}: {describe(exc)}") from None
        target = Target(client, uri, run_id, run.info.experiment_id, str(meta.get("run_name") or run.info.run_name))
        sent, refused, version, left = 0, 0, None, list(pending)
        while left:
            group = left[:max(1, leading_metrics(left))]
            left = left[len(group):]
            try:
                with mlflow_limits():
                    result = execute(target, journal, merged(group), replay=True)
            except Exception as exc:
                if is_transient(exc):
                    rest = journal.pending()
                    raise TrackingError(
                        f"sending to {scrub(uri)} failed ({describe(exc, 160)}); {len(rest)} operation(s) still "
                        f"pending ({summarize(rest)}): run `dckd track sync` again") from None
                out(f"refused by the server, not retried: {summarize(group)}: {describe(exc)}")
                for record in group:
                    journal.mark(int(record["seq"]), ok=False, error=describe(exc))
                refused += len(group)
                continue
            for record in group:
                journal.mark(int(record["seq"]))
            sent += len(group)
            version = result if group[0]["kind"] == "student" else version
        registered = ""
        if version is not None:
            student = next(r for r in pending if r["kind"] == "student")
            registered = f"; registered as {scrub(student['register_as'])} version {version} ({student['alias']})"
        out(f"MLflow run {run_id} on {scrub(uri)}: sent {summarize(pending)}{registered}")
        if not journal.pending():
            journal.remove()
        return sent, refused
    finally:
        journal.unlock()


def sync_run_dir(run_dir: Path, tracking_uri: str | None = None, dry_run: bool = False,
                 out: Callable[[str], None] = print) -> tuple[int, int]:
    """Send every journal a run directory holds (``dckd track sync RUN_DIR``)."""
    journals = find_journals(Path(run_dir))
    if not journals:
        out(f"{run_dir}: nothing to send (no tracking-pending journal)")
        return 0, 0
    sent = refused = 0
    for path in journals:
        s, r = sync_journal(path, tracking_uri, dry_run=dry_run, out=out)
        sent, refused = sent + s, refused + r
    return sent, refused


def not_sent_line(journal: Journal, uri: str, run_dir: Path, unreachable: bool = True) -> str:
    left = journal.pending()
    why = "unreachable" if unreachable else "did not take everything (see the warnings above)"
    return (f"dckd: MLflow server {scrub(uri)} {why}: not sent: {summarize(left)} "
            f"({len(left)} operation(s), kept in {journal.path}); send them once it is back with: "
            f"dckd track sync {run_dir}")


def print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
