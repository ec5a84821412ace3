"""Where a training run's progress and checkpoints go: the one thing that differs between runs.

:func:`dckd.training.loop.run_training` is the only training loop. It asks a :class:`Reporter` to
resume the engine, to show progress and to persist checkpoints; everything else (validation,
``metrics.jsonl``, ``summary.json``, ``student.pth``, MLflow) the loop does itself on rank 0.

- :class:`LocalReporter` (``dckd train --local``): a tqdm bar, and checkpoints written atomically
  to ``run_dir/checkpoints/iter_*.pt``, keeping the newest ``train.keep_checkpoints``.
- The Ray layer's reporter (``trainers/reporter.py``) calls ``ray.train.report`` on every rank,
  with the checkpoint from rank 0 only, and resumes from ``ray.train.get_checkpoint()``. It lives
  there because the library never imports ray.
"""

from __future__ import annotations

import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dckd.errors import CheckpointError
from dckd.training.checkpoint import safe_load
from dckd.training.rundir import set_aside

if TYPE_CHECKING:
    from dckd.config import ExperimentConfig
    from dckd.training.engine import Engine

_CKPT = re.compile(r"^iter_(\d+)\.pt$")


def checkpoint_name(iteration: int) -> str:
    """``iter_000000040.pt``: the name of a checkpoint file, and of its MLflow artifact on every path."""
    return f"iter_{iteration:09d}.pt"


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / checkpoint_name(iteration)


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints_newest_first(run_dir)
    return found[0] if found else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of the run directory."""
    folder = run_dir / "checkpoints"
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name)))
    for _, p in found[:-keep]:
        p.unlink(missing_ok=True)


class Reporter(ABC):
    """The loop's view of where it runs: its rank, resuming, progress, persisting checkpoints.

    ``report`` is called at the same iterations on every rank (Ray's report is a barrier); the
    other hooks are optional (no-ops here).
    """

    rank: int = 0
    world_size: int = 1
    #: Whether this is a Ray Train worker (whose CPUs are ``ray.cpus_per_worker``, not the machine's).
    on_ray: bool = False
    #: The newest checkpoint this run resumed from or wrote (named when a run stops on an error).
    last_saved: Path | str | None = None

    @abstractmethod
    def resume(self, engine: Engine) -> None:
        """Load the latest checkpoint of this run into ``engine``, if there is one."""

    @abstractmethod
    def report(self, engine: Engine, metrics: Mapping[str, float], checkpoint: bool,
               on_saved: Callable[[Path], None] | None = None) -> None:
        """Pass on ``metrics`` (iteration, last train record, validation); with ``checkpoint``, persist
        the engine's state (rank 0) and call ``on_saved`` with the file while it exists."""

    def begin(self, start: int, end: int) -> None:  # noqa: B027 - optional hook
        """Training is about to run iterations ``start + 1 .. end``."""

    def before_step(self, iteration: int) -> None:  # noqa: B027 - optional hook
        """The step of ``iteration`` (1-based) is next."""

    def after_step(self, iteration: int, record: Mapping[str, float] | None) -> None:  # noqa: B027 - optional hook
        """The step of ``iteration`` is done; ``record`` is its log line's record, if it had one."""

    def message(self, text: str) -> None:
        """A line for the person watching (validation and test scores)."""
        print(text, file=sys.stderr, flush=True)

    def stop(self, error: Exception, engine: Engine) -> None:
        """Every rank hit the same :class:`~dckd.errors.DckdError` (a non-finite loss, a refused config
        change): the run ends here. Locally it is raised; the Ray reporter passes it to the driver
        in its last report instead, so that Ray does not restart a run that would fail the same way."""
        raise error

    def close(self) -> None:  # noqa: B027 - optional hook
        """Training is over (or failed)."""


class LocalReporter(Reporter):
    """The in-process run: tqdm progress, checkpoints in ``run_dir/checkpoints`` (atomic, pruned)."""

    def __init__(self, cfg: ExperimentConfig, resume: bool = True, progress: bool = True) -> None:
        self.run_dir = cfg.run_dir
        self.name = cfg.name
        self.keep = cfg.train.keep_checkpoints
        self.resume_enabled = resume
        self.progress = progress
        self._bar: Any = None

    def resume(self, engine: Engine) -> None:
        if not self.resume_enabled:
            aside = set_aside(self.run_dir)
            if aside is not None:
                self.message(f"fresh run: the earlier run in {self.run_dir} was moved to {aside}")
            return
        for path in checkpoints_newest_first(self.run_dir):
            try:
                state = safe_load(path)
            except CheckpointError as exc:
                # Truncated or corrupt (a disk error, a copy cut short): fall back to the one before,
                # keeping this file aside (renamed, so it is neither resumed nor pruned).
                aside = path.with_name(path.name + ".unreadable")
                try:
                    path.rename(aside)
                    kept = f"; kept as {aside.name}"
                except OSError:
                    kept = ""
                self.message(f"skipped checkpoint {path.name}: {exc.__cause__ or exc}{kept}")
                continue
            engine.load_state_dict(state, source=str(path))
            self.last_saved = path
            self.message(f"resuming from {path} (iteration {engine.iteration})")
            return

    def report(self, engine: Engine, metrics: Mapping[str, float], checkpoint: bool,
               on_saved: Callable[[Path], None] | None = None) -> None:
        if not checkpoint:
            return  # the loop writes the metrics to metrics.jsonl itself
        path = engine.save(checkpoint_path(self.run_dir, engine.iteration))
        self.last_saved = path
        prune_checkpoints(self.run_dir, self.keep)
        if on_saved is not None:
            on_saved(path)

    def begin(self, start: int, end: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=end, initial=start, desc=self.name, unit="it", disable=not self.progress,
                         dynamic_ncols=True, file=sys.stderr, mininterval=1.0)

    def after_step(self, iteration: int, record: Mapping[str, float] | None) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if record is not None and "total" in record:
            self._bar.set_postfix(loss=f"{record['total']:.4f}")

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)  # above the bar, which stays at the bottom

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
