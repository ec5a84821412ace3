"""Errors that reach the user as one clear line (no traceback) from the ``dckd`` command."""


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
