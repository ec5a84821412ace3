"""Helpers for tests that start real servers (an ``mlflow server`` on loopback)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def wait_for_mlflow(proc: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    """Until the ``mlflow server`` process answers ``<url>/health``; fails with its log if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not answer /health within {timeout:.0f} s")
        time.sleep(0.2)
