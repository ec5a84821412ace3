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

from dckd.errors import NonFiniteLossError
from dckd.training.engine import Engine
from dckd.training.reporters import Reporter

STATE_FILE = "state.pt"
"""The engine's state inside a Ray checkpoint folder."""
STOP_FILE = "stopped.json"
"""In the checkpoint of a run that stopped on an error every rank met: what and why."""


class RayReporter(Reporter):
    """Rank and world size from the Train context; ``fail_once`` (tests) kills one rank once."""

    def __init__(self, fail_once: Mapping[str, Any] | None = None) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.fail_once = fail_once
        self._resumed: ray.train.Checkpoint | None = None

    def resume(self, engine: Engine) -> None:
        checkpoint = self._resumed = ray.train.get_checkpoint()
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            engine.load(Path(folder) / STATE_FILE)
        if self.rank == 0:
            self.message(f"resuming from iteration {engine.iteration}")

    def report(self, engine: Engine, metrics: Mapping[str, float], checkpoint: bool,
               on_saved: Callable[[Path], None] | None = None) -> None:
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
