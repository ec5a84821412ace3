"""MLflow tracking of a training run: params, metrics, sample restorations, the student in the registry.

- :mod:`~dckd.tracking.run`: the MLflow run's lifecycle and what it logs (:class:`RunTracker`);
  the in-process loop and the Ray layer (rank 0 only) both drive one.
- :mod:`~dckd.tracking.registry`: the student logged, registered under an alias and loaded back
  without unpickling (:func:`load_student`).
- :mod:`~dckd.tracking.samples`: side-by-side sample restorations.
- :mod:`~dckd.tracking.redaction`: credentials masked before anything reaches the tracking store.
- :mod:`~dckd.tracking.isolation`: tracking leaves the RNG streams and MLflow's global URI as it found them.
- :mod:`~dckd.tracking.server`: the server checked once before a run (:func:`check_server`), MLflow's
  HTTP retries cut short for dckd's calls, failures sorted into passing and final, URLs masked in messages.
- :mod:`~dckd.tracking.journal`: what a run logs to a server, on disk in ``<run_dir>/tracking-pending/``
  until the server has it.
- :mod:`~dckd.tracking.sender`: the background thread that sends the journal (training never waits on
  it) and :func:`sync_run_dir` (``dckd track sync RUN_DIR``) for what a run left behind.
"""

from dckd.tracking.redaction import REDACTED, contains_secret, redact, scrub, secret_values
from dckd.tracking.registry import (
    MODEL_NAME,
    RUN_WEIGHTS_DIR,
    SPEC_FILE,
    WEIGHTS_FILE,
    load_student,
    register_logged_model,
    student_of,
)
from dckd.tracking.run import (
    PARAM_VALUE_LIMIT,
    RunTracker,
    flatten_config,
    resolve_tracking_uri,
    sanitize_key,
)
from dckd.tracking.samples import collect_samples, sample_panel
from dckd.tracking.sender import sync_run_dir
from dckd.tracking.server import check_server

__all__ = [
    "MODEL_NAME", "PARAM_VALUE_LIMIT", "REDACTED", "RUN_WEIGHTS_DIR", "SPEC_FILE", "WEIGHTS_FILE",
    "RunTracker", "check_server", "collect_samples", "contains_secret", "flatten_config", "load_student", "redact",
    "register_logged_model", "resolve_tracking_uri", "sample_panel", "sanitize_key", "scrub",
    "secret_values", "student_of", "sync_run_dir",
]
