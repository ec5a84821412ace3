"""The run directory's files, written so that nothing is lost: atomically, with errors that say why.

Everything a run writes outside its checkpoints goes through here: ``config.yaml`` and
``summary.json`` (atomic replace), ``metrics.jsonl`` (appended, trimmed on resume to the
resumed iteration), orphan temporary files from a killed write (removed on the next start), and an
earlier run set aside by ``--fresh``. A write that fails (full disk, read-only folder, permission)
raises :class:`~dckd.errors.OutputError` naming the file and the reason; what was written before
stays as it was.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from dckd.errors import OutputError

_ORPHAN = re.compile(r"^\..+\.tmp$")  # atomic writes: tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")


def _free_space(folder: Path) -> str:
    for candidate in (folder, *folder.parents):
        try:
            free = shutil.disk_usage(candidate).free
        except OSError:
            continue
        units = ("B", "KiB", "MiB", "GiB", "TiB")
        size, unit = float(free), 0
        while size >= 1024 and unit < len(units) - 1:
            size, unit = size / 1024, unit + 1
        return f"{size:.1f} {units[unit]} free on {candidate}"
    return "free space unknown"


def output_error(path: Path, exc: BaseException, what: str = "file") -> OutputError:
    """An :class:`OutputError` for a failed write of ``path``: the OS reason, or, for torch's own
    writer (which hides it), the free space left, which tells a full disk from the rest."""
    if isinstance(exc, OSError) and exc.errno is not None:
        reason = exc.strerror or os.strerror(exc.errno)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            reason += f" ({_free_space(path.parent)})"
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            reason += " (the output folder is not writable: choose another output_dir)"
    else:  # torch's writer: "[enforce fail at inline_container.cc:...] ... file write failed"
        text = str(exc).strip()
        reason = f"{text.splitlines()[-1] if text else type(exc).__name__} ({_free_space(path.parent)})"
    return OutputError(f"cannot write the {what} {path}: {reason}; earlier files of the run are kept")


def make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(folder, exc, "run directory") from exc


def write_text(path: Path, text: str, what: str = "file") -> None:
    """Replace ``path`` with ``text`` atomically (a reader sees the old or the new file, whole)."""
    make_dir(path.parent)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise output_error(path, exc, what) from exc


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON line at the end of ``path`` (``metrics.jsonl``)."""
    try:
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise output_error(path, exc, "metrics log") from exc


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete temporary files that a killed atomic write left in the run directory or its
    ``checkpoints/`` (they are never a complete file: the rename is what completes one)."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _ORPHAN.match(p.name) and p.is_file():
                try:
                    p.unlink()
                except OSError:
                    continue
                removed.append(p)
    return removed


def trim_metrics(path: Path, iteration: int) -> int:
    """Drop the rows of ``metrics.jsonl`` past ``iteration`` (and a half-written last line): a
    resumed run logs those iterations again. Returns how many rows were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("iter"), int) and row["iter"] > iteration:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        write_text(path, "".join(f"{line}\n" for line in kept), "metrics log")
    return dropped


def set_aside(run_dir: Path) -> Path | None:
    """Move an earlier run's directory, whole, to ``<dir>.before-<time>``; returns where (None if
    there was nothing). A fresh run never mixes its files with an earlier one's."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.before-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.before-{stamp}-{n}")
    try:
        run_dir.rename(aside)
    except OSError as exc:
        raise output_error(aside, exc, "set-aside copy of the earlier run") from exc
    return aside
