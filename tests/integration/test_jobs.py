"""``ray start --head`` on loopback, then ``ray job submit ... -- python -m trainers.train``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import RAY_TEST_ENV

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_head(temp_dir: str) -> None:
    """Stop only the processes of the head node this test started (another Ray may be running)."""
    def ours() -> list[int]:
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if temp_dir.encode() in (proc / "cmdline").read_bytes():
                        pids.append(int(proc.name))
                except OSError:
                    continue
        return pids

    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in ours():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)


def test_job_submit_runs_a_tiny_training(tmp_path: Path, hr_folder: Path) -> None:
    env = {**os.environ, **RAY_TEST_ENV}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")  # unix socket paths must stay short
    gcs, dash = free_port(), free_port()
    # The session's shared Ray instance (other tests) holds the default agent ports: a second node on
    # this machine needs its own, or its dashboard agent cannot start and no job can be submitted.
    agent_ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                   f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                   f"--ray-client-server-port={free_port()}"]
    try:
        subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
                        "--num-cpus=3", "--disable-usage-stats", f"--temp-dir={temp_dir}", *agent_ports],
                       env=env, check=True, capture_output=True, timeout=180)
        overrides = [f"data.train.hr_dir={hr_folder}", f"data.val.0.hr_dir={hr_folder}",
                     f"output_dir={tmp_path / 'run'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                     "train.iterations=4"]
        cmd = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
               sys.executable, "-m", "trainers.train", str(ROOT / "experiments" / "smoke.yaml")]
        for o in overrides:
            cmd += ["--set", o]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420, cwd=ROOT)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "succeeded" in (out.stdout + out.stderr).lower()
        assert (tmp_path / "run" / "student.pth").is_file()
        assert '"iteration": 4' in out.stdout
    finally:
        stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
