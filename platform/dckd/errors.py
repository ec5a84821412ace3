"""Errors that reach the user as one clear line (no traceback) from the ``dckd`` command."""

from __future__ import annotations

import warnings
from collections.abc import Callable


class DckdError(Exception):
    """Base class: the message names the file, URI or config field at fault."""


class ConfigError(DckdError):
    """A configuration file or override is invalid; raised before any work starts."""


class DataError(DckdError):
    """An image or dataset folder cannot be used (unreadable, corrupt, mismatched sizes)."""


class CheckpointError(DckdError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""


class StorageError(DckdError):
    """A remote dataset (``s3://``) cannot be read or written: missing, unreachable, denied, corrupt."""


class TrackingError(DckdError):
    """The MLflow tracking server cannot be used (unreachable, refusing) or a pending journal cannot be sent;
    the message names the URI with its credentials masked."""


def note_random_weights(message: str, log: Callable[[str], None] | None = None) -> None:
    """Say that a frozen network runs with random weights: to the run's log, else as a warning."""
    if log is None:
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        log(message)


class NonFiniteLossError(DckdError):
    """A loss term became NaN or Inf (``train.on_nonfinite: stop``): the run stops before the bad update."""


class OutputError(DckdError):
    """A file of the run (checkpoint, weights, log) cannot be written: full disk, read-only folder, denied."""


class ResumeConfigError(ConfigError):
    """Resuming with a config that changes the training trajectory, without ``--allow-config-change``."""


class ExportError(DckdError):
    """A network cannot be written in a deployment format, or the written file does not reproduce it."""


class InputContractError(DataError):
    """An image breaks the input contract of an exported network (too small a side, wrong channels)."""
