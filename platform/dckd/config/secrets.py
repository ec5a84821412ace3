"""Credentials in URLs (``scheme://user:PASSWORD@host``): masked wherever a config is stored or printed.

A run needs the real URL (its workers connect with it), so the config in memory keeps it; what
goes to disk, to MLflow, to S3 or to a terminal is :meth:`ExperimentConfig.stored` /
:meth:`ExperimentConfig.to_yaml`, which pass every string through :func:`mask_url_credentials`.
Torch-free, so configs and the tracking layer share this one definition.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@")
"""The password of a URL's user info (``https://user:pw@host`` -> group 1 is ``https://user``)."""


def mask_url_credentials(text: str) -> str:
    """``https://user:pw@host/x`` -> ``https://user:***@host/x``; the rest of the text is kept."""
    return URL_PASSWORD.sub(rf"\1:{MASK}@", text)


def masked(obj: Any) -> Any:
    """``obj`` (JSON-like data) with every URL password masked, as a new object."""
    if isinstance(obj, str):
        return mask_url_credentials(obj)
    if isinstance(obj, dict):
        return {k: masked(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [masked(v) for v in obj]
    return obj
