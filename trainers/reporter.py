"""The Ray Train side of the training loop: reports and checkpoints go through ``ray.train``.

:func:`dckd.training.loop.run_training` calls :meth:`RayReporter.report` at the same iterations on
every worker (``ray.train.report`` is a barrier); rank 0 attaches the checkpoint, which Ray keeps
in its storage path (``RunConfig.storage_path``, local or S3) and hands back through
``ray.train.get_checkpoint()`` after a worker failure or when a run of the same name is started again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray.train

from dckd.errors import CheckpointError, NonFiniteLossError
from dckd.training.checkpoint import safe_load
from dckd.training.engine import Engine
from dckd.training.reporters import Reporter

STATE_FILE = "state.pt"
"""The engine's state inside a Ray checkpoint folder."""
STOP_FILE = "stopped.json"
"""In the checkpoint of a run that stopped on an error every rank met: what and why."""


class RayReporter(Reporter):
    """Rank and world size from the Train context; ``fail_once`` (tests) kills one rank once."""

    on_ray = True

    def __init__(self, fail_once: Mapping[str, Any] | None = None) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.fail_once = fail_once
        self._resumed: ray.train.Checkpoint | None = None

    def resume(self, engine: Engine) -> None:
        """Load Ray's latest checkpoint of this run; one that does not read (truncated, corrupt) is
        skipped for the newest older one that does, with a line saying which and why."""
        latest = ray.train.get_checkpoint()
        if latest is None:
            return
        for checkpoint in (latest, *_older_checkpoints(latest)):
            try:
                with checkpoint.as_directory() as folder:
                    state = safe_load(Path(folder) / STATE_FILE)
            except CheckpointError as exc:
                if self.rank == 0:
                    self.message(f"skipped checkpoint {checkpoint.path}: {exc.__cause__ or exc}")
                continue
            engine.load_state_dict(state, source=checkpoint.path)
            self._resumed = checkpoint
            self.last_saved = checkpoint.path
            if self.rank == 0:
                self.message(f"resuming from iteration {engine.iteration} ({checkpoint.path})")
            return
        raise CheckpointError(f"{latest.path}: no checkpoint of this Ray run can be read (see the lines above)")

    def report(self, engine: Engine, metrics: Mapping[str, float], checkpoint: bool,
               on_saved: Callable[[Path], None] | None = None) -> None:
        if checkpoint:  # on every rank: the message of a stop names it
            self.last_saved = f"Ray's checkpoint of iteration {engine.iteration}"
        if not (checkpoint and self.rank == 0):
            ray.train.report(dict(metrics))
            return
        with tempfile.TemporaryDirectory(prefix="dckd-ray-ckpt-") as folder:
            path = engine.save(Path(folder) / STATE_FILE)
            ray.train.report(dict(metrics), checkpoint=ray.train.Checkpoint.from_directory(folder))
            if on_saved is not None:
                on_saved(path)

    def stop(self, error: Exception, engine: Engine) -> None:
        """Every rank stopped on the same error: say so in a last report rather than fail, which Ray
        would retry ``max_failures`` times from the last checkpoint, into the same error.

        Ray hands the driver the metrics of the latest checkpoint only (``Result.metrics``), so this
        report carries one: the last good state (after a non-finite loss: the engine's, whose update
        was not applied; after a refused config change: the resumed checkpoint's files, unchanged),
        plus ``stopped.json``. A rerun resumes from it as from any other; the driver raises the
        error (``trainers.train.raise_run_error``).
        """
        metrics = {"iteration": engine.iteration, "stopped": str(error), "error": type(error).__name__}
        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="dckd-ray-stop-") as folder:
            if self._resumed is not None and not isinstance(error, NonFiniteLossError):
                with self._resumed.as_directory() as src:
                    shutil.copytree(src, folder, dirs_exist_ok=True)
            else:
                engine.save(Path(folder) / STATE_FILE)
            (Path(folder) / STOP_FILE).write_text(json.dumps(metrics))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    def before_step(self, iteration: int) -> None:
        """Fault injection for tests: the planned rank's process dies once, before the planned step."""
        plan = self.fail_once
        if not plan or plan["rank"] != self.rank or plan["iteration"] != iteration:
            return
        marker = Path(plan["marker"])
        if marker.exists():
            return
        marker.write_text("failed once")
        sys.stderr.flush()
        os._exit(17)


def _older_checkpoints(latest: ray.train.Checkpoint) -> list[ray.train.Checkpoint]:
    """The run's other checkpoints older than ``latest``, newest first: Ray keeps them side by side
    (``<storage>/<run>/checkpoint_<time>``, names that sort by time) on its storage filesystem."""
    import posixpath

    import pyarrow.fs

    fs, parent = latest.filesystem, posixpath.dirname(latest.path.rstrip("/"))
    name = posixpath.basename(latest.path.rstrip("/"))
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(parent))
    except OSError:
        return []
    older = sorted((i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
    return [ray.train.Checkpoint(posixpath.join(parent, n), filesystem=fs) for n in older]
