"""The source-root layout: Python's own ``platform`` module still works from the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_platform_module_is_not_shadowed_from_repo_root() -> None:
    out = subprocess.run([sys.executable, "-c", "import platform; print(platform.system())"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_python_dash_m_dckd_runs_from_repo_root() -> None:
    out = subprocess.run([sys.executable, "-m", "dckd", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert "train" in out.stdout and "bench" in out.stdout
