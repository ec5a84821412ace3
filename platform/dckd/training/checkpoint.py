"""Checkpoints written atomically and read without unpickling arbitrary objects."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dckd.errors import CheckpointError
from dckd.training.rundir import make_dir, output_error


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash mid-write leaves the previous checkpoint intact: a reader never sees half a file. A
    write that fails (full disk, read-only folder) raises :class:`OutputError` naming the file.
    """
    path = Path(path)
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc, "checkpoint") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)):  # torch's writer reports a full disk as RuntimeError
            raise output_error(path, exc, "checkpoint") from exc
        raise
    return path


def safe_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch checkpoint: {exc}") from exc


def capture_rng() -> dict[str, Any]:
    """Every RNG state, as tensors and plain lists so that a weights-only load can read it back."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [list(random.getstate()[1]), random.getstate()[0]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    internal, version = state["python"]
    random.setstate((version, tuple(internal), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- formats
#: Training checkpoints: v2 keeps each loss term's own state under ``terms[<name>]``.
CHECKPOINT_FORMAT = "dckd-checkpoint-v2"
#: v1 (until December 2026) kept the state of DCR, MiPKD and MCLIR at the top level.
CHECKPOINT_FORMAT_V1 = "dckd-checkpoint-v1"


def upgrade(state: dict[str, Any], terms: dict[str, Any], source: str) -> dict[str, Any]:
    """A training checkpoint in the current format; v1 files are converted, nothing else is accepted.

    ``terms`` maps term names to their classes; each class names the v1 keys that held its
    state (``Term.v1_keys``), so the conversion knows no term itself.
    """
    fmt = state.get("format")
    if fmt == CHECKPOINT_FORMAT:
        return state
    if fmt != CHECKPOINT_FORMAT_V1:
        raise CheckpointError(f"{source}: not a dckd training checkpoint (format {fmt!r})")
    moved = {key for cls in terms.values() for key in cls.v1_keys}
    out = {k: v for k, v in state.items() if k not in moved}
    out["format"] = CHECKPOINT_FORMAT
    out["terms"] = {}
    for name, cls in terms.items():
        # v1 wrote every key; the first one a term names is None when the term was off
        if cls.v1_keys and state.get(next(iter(cls.v1_keys))) is not None:
            out["terms"][name] = {new: state.get(old) for old, new in cls.v1_keys.items()}
    return out
