"""Tracking must not disturb the process it runs in: the RNG streams and MLflow's global URI."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def rng_untouched() -> Iterator[None]:
    """Tracking must not shift the training's random streams (resume is exact to the bit)."""
    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """``mlflow.pytorch.log_model`` only reads the global URI: set it for the call, then put it back."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
