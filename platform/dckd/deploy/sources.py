"""What ``dckd export``, ``dckd efficiency`` and ``dckd restore`` accept as a network.

One resolver so that every command takes the same addresses and fails the same way on a bad one:
the error names the source and says which kinds were tried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dckd.errors import CheckpointError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
KINDS = "models:/NAME@ALIAS, runs:/RUN_ID, a dckd run checkpoint (.pt), a weights file with --preset, or a preset name"


@dataclass
class Resolved:
    """A network and how it was found (``kind``: registry, checkpoint, weights or preset)."""

    model: object  # dckd.models.Restorer
    kind: str
    label: str


def from_checkpoint(path: str | Path, weights: str = "ema"):  # -> Restorer
    """The student of a dckd training checkpoint; only its architecture section of the stored config
    is validated, so the training data folders it names need not exist where the student is used."""
    from dckd.training.checkpoint import safe_load

    return _student_of(safe_load(path), path, weights)


def _is_training_checkpoint(state: object) -> bool:
    return isinstance(state, dict) and "config" in state and ("ema" in state or "student" in state)


def _student_of(state: object, path: str | Path, weights: str):  # -> Restorer
    from dckd.config import ModelSpec
    from dckd.training.engine import build_network

    if not isinstance(state, dict) or "config" not in state or weights not in state:
        raise CheckpointError(f"{path}: not a dckd training checkpoint (no config and {weights} weights)")
    stored = state["config"]
    try:
        spec = ModelSpec.model_validate({**stored["student"], "checkpoint": None})
        scale = int(stored.get("scale", 1))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the stored config has no usable student section: {exc}") from exc
    model = build_network(spec, scale)
    try:
        model.load_state_dict(state[weights])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: {weights} weights do not fit the stored student: {exc}") from exc
    return model.eval()


def resolve_source(source: str, preset: str | None = None, tracking_uri: str | None = None,
                   weights: str = "ema") -> Resolved:
    """``source`` as a Restorer in eval mode on the CPU.

    - ``models:/...`` or ``runs:/...``: a logged student, rebuilt weights-only (nothing unpickled);
    - a file: a dckd training checkpoint (its ``weights``: ema or student), or with ``preset`` a
      BasicSR/official weights file loaded strictly into that preset;
    - a local model folder (``weights.pt`` + ``spec.json``);
    - a preset name: that architecture with fresh random weights (for timing and export checks).
    """
    from dckd.models import PRESETS, build_preset, load_weights

    if _URI.match(source):
        from dckd.tracking import load_student

        return Resolved(load_student(source, tracking_uri=tracking_uri), "registry", source)
    path = Path(source).expanduser()
    if path.is_dir():
        from dckd.tracking import load_student

        return Resolved(load_student(str(path)), "registry", source)
    if path.is_file():
        if preset is not None:
            model = build_preset(preset)
            load_weights(model, path)
            return Resolved(model.eval(), "weights", f"{source} ({preset})")
        from dckd.training.checkpoint import safe_load

        try:
            state = safe_load(path)  # read once: the check and the rebuild share it
        except CheckpointError:
            state = None
        if _is_training_checkpoint(state):
            return Resolved(_student_of(state, path, weights), "checkpoint", source)
        raise CheckpointError(f"{source}: not a dckd run checkpoint; a BasicSR-format weights file needs "
                              "--preset NAME to say which architecture it holds")
    if source in PRESETS:
        if preset is not None:
            raise CheckpointError(f"{source}: a preset name needs no --preset")
        return Resolved(build_preset(source).eval(), "preset", f"{source} (random weights)")
    raise CheckpointError(f"{source}: no such file, folder, registry address or preset (expected {KINDS})")
