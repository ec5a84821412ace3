"""MLflow tracking of a training run: params, metrics, sample restorations, the student in the registry.

- :mod:`~dckd.tracking.run`: the MLflow run's lifecycle and what it logs (:class:`RunTracker`);
  the in-process loop and the Ray layer (rank 0 only) both drive one.
- :mod:`~dckd.tracking.registry`: the student logged, registered under an alias and loaded back
  without unpickling (:func:`load_student`).
- :mod:`~dckd.tracking.samples`: side-by-side sample restorations.
- :mod:`~dckd.tracking.redaction`: credentials masked before anything reaches the tracking store.
- :mod:`~dckd.tracking.isolation`: tracking leaves the RNG streams and MLflow's global URI as it found them.
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

__all__ = [
    "MODEL_NAME", "PARAM_VALUE_LIMIT", "REDACTED", "RUN_WEIGHTS_DIR", "SPEC_FILE", "WEIGHTS_FILE",
    "RunTracker", "collect_samples", "contains_secret", "flatten_config", "load_student", "redact",
    "register_logged_model", "resolve_tracking_uri", "sample_panel", "sanitize_key", "scrub",
    "secret_values", "student_of",
]
