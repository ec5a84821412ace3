"""Credentials never reach the tracking store: masking the values of secret-looking environment variables.

Any param, tag, metric key or text artifact that contains such a value is masked (:func:`scrub`
for single values, :func:`redact` for text). Binary artifacts cannot be masked, so callers use
:func:`contains_secret` to decide not to upload them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from dckd.config.secrets import MASK as REDACTED
from dckd.config.secrets import mask_url_credentials

_SECRET_NAMES = frozenset({
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
})
_SECRET_NAME_PATTERN = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
_MIN_SECRET_LENGTH = 6
"""Shorter values are not treated as secrets: masking every value containing e.g. ``1`` or
``true`` would destroy the params while protecting nothing a real credential looks like."""


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables, longest first (so a longer one is masked whole)."""
    env = os.environ if environ is None else environ
    found = {
        value for name, value in env.items()
        if (name.upper() in _SECRET_NAMES or _SECRET_NAME_PATTERN.search(name))
        and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


def scrub(value: str, secrets: Sequence[str] | None = None) -> str:
    """A value containing a credential becomes ``***`` whole: a partly masked value could still leak it.

    A password in a URL's user info is masked in place (``https://user:***@host``).
    """
    found = secret_values() if secrets is None else secrets
    if any(s and s in value for s in found):
        return REDACTED
    return mask_url_credentials(value)


def redact(text: str, secrets: Sequence[str] | None = None) -> str:
    """For text artifacts: each occurrence of a credential is masked, the rest of the text is kept."""
    for s in secret_values() if secrets is None else secrets:
        if s:
            text = text.replace(s, REDACTED)
    return mask_url_credentials(text)


def contains_secret(text: str, secrets: Sequence[str] | None = None) -> bool:
    return any(s and s in text for s in (secret_values() if secrets is None else secrets))
