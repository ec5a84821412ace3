"""The run's tracking journal: what a run logs to an MLflow server, on disk until the server has it.

A run tracked on a server writes each tracking call as one operation to
``<run_dir>/tracking-pending/<mlflow run id>/`` before it is sent::

    run.json      the MLflow run (id, experiment, name) and the tracking URI, credentials masked
    ops.jsonl     one operation per line: seq, kind (params, metrics, file, dir, student, end) and its data
    done.jsonl    one line per operation sent (or refused by the server), by seq
    files/<seq>/  the files of an operation (a checkpoint is hard-linked: pruning it cannot lose it)
    lock          held (flock) by the process that tracks the run, so two senders never replay one journal

When every operation is sent the folder goes away; a run that ends with the server down leaves it,
and ``dckd track sync RUN_DIR`` sends the rest later (:func:`dckd.tracking.sender.sync_run_dir`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

JOURNAL_DIR = "tracking-pending"
FORMAT = "dckd-tracking-journal-v1"


def journal_path(run_dir: Path, run_id: str) -> Path:
    return Path(run_dir) / JOURNAL_DIR / run_id


def find_journals(path: Path) -> list[Path]:
    """The journals of a run directory (or ``path`` itself when it is one), oldest first."""
    path = Path(path)
    if (path / "run.json").is_file():
        return [path]
    root = path / JOURNAL_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "run.json").is_file()]
    return sorted(found, key=lambda p: (p / "run.json").stat().st_mtime)


class JournalBusy(RuntimeError):
    """Another process holds the journal's lock (it is tracking or syncing that run)."""


class Journal:
    """Append-only operations and their completions; thread-safe (the run's thread appends, the sender marks)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._lock_fh: Any = None
        self._next = 1 + max((int(op["seq"]) for op in self._read("ops.jsonl")), default=0)
        self.created_dirs: list[Path] = []

    # ------------------------------------------------------------------ creating, locking, removing
    @classmethod
    def create(cls, path: Path, meta: Mapping[str, Any]) -> Journal:
        """Open the journal at ``path``, writing ``run.json`` if it is new (an existing one is adopted)."""
        path = Path(path)
        created = [p for p in (path.parent.parent, path.parent, path) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        if not (path / "run.json").is_file():
            tmp = path / "run.json.tmp"
            tmp.write_text(json.dumps({"format": FORMAT, **meta}, indent=2))
            os.replace(tmp, path / "run.json")
        journal = cls(path)
        journal.created_dirs = created
        return journal

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "run.json").read_text())

    def lock(self) -> None:
        """Take the journal for this process; :class:`JournalBusy` if another one has it."""
        if self._lock_fh is not None:
            return
        fh = (self.path / "lock").open("a")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            raise JournalBusy(f"{self.path} is in use by another process") from exc
        self._lock_fh = fh

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def remove(self) -> None:
        """Delete the journal (everything was sent), and the folders it created if they are now empty."""
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)
        for folder in (self.path.parent, *[p for p in self.created_dirs if p != self.path]):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass

    # ------------------------------------------------------------------ operations
    def reserve(self) -> tuple[int, Path]:
        """A sequence number and the (not yet created) folder for its files."""
        with self._lock:
            seq, self._next = self._next, self._next + 1
        return seq, self.path / "files" / f"{seq:07d}"

    def append(self, seq: int, kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
        op = {"seq": seq, "kind": kind, **data}
        line = json.dumps(op, allow_nan=True)
        with self._lock, (self.path / "ops.jsonl").open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
        return op

    def mark(self, seq: int, ok: bool = True, error: str | None = None) -> None:
        """Operation ``seq`` is done: sent (``ok``) or refused by the server (``error``); its files are freed."""
        line = json.dumps({"seq": seq, "ok": ok, **({"error": error} if error else {})})
        with self._lock, (self.path / "done.jsonl").open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
        shutil.rmtree(self.path / "files" / f"{seq:07d}", ignore_errors=True)

    def _read(self, name: str) -> list[dict[str, Any]]:
        try:
            lines = (self.path / name).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short when the process died while writing it
                continue
        return out

    def pending(self) -> list[dict[str, Any]]:
        """Operations not yet done, in the order they were logged."""
        with self._lock:
            done = {int(d["seq"]) for d in self._read("done.jsonl")}
            return [op for op in self._read("ops.jsonl") if int(op["seq"]) not in done]

    def refused(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d for d in self._read("done.jsonl") if not d.get("ok", True)]


def summarize(ops: list[Mapping[str, Any]]) -> str:
    """What a list of operations holds, in words: ``12 metric values, 2 files, the final status FINISHED``."""
    values = sum(len(op.get("metrics", ())) for op in ops if op["kind"] == "metrics")
    files = sum(1 for op in ops if op["kind"] in ("file", "dir"))
    params = sum(len(op.get("params", {})) for op in ops if op["kind"] == "params")
    parts = []
    if values:
        parts.append(f"{values} metric value{'s' * (values != 1)}")
    if params:
        parts.append(f"{params} param{'s' * (params != 1)}")
    if files:
        parts.append(f"{files} artifact upload{'s' * (files != 1)}")
    for op in ops:
        if op["kind"] == "student":
            name = op.get("register_as")
            parts.append(f"the student ({name}@{op.get('alias')})" if name else "the student")
    ends = [op for op in ops if op["kind"] == "end"]
    if ends:
        parts.append(f"the run's status {ends[-1]['status']}")
    return ", ".join(parts) or "nothing"
