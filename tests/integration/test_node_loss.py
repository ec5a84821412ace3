"""Node loss on a real two-node Ray cluster: a second node's raylet is killed mid-run.

Two raylets on this machine (``ray start --head`` and ``ray start --address``, each with its own
ports and temp dir, so the session's shared local instance is not touched). Each node has one
CPU and each worker asks for one, so the 2-worker run spans both nodes, and once the second node
is gone the head alone cannot hold the group: the run waits until the node rejoins (a fresh
``ray start --address``), then Ray Train restarts the worker group from the last registered
checkpoint. The driver is a subprocess (``python -m trainers.train``, as ``ray job submit``
runs it): this process is connected to the session's shared instance and can join no other.
The final student (``student.pth``: params and params_ema) must equal, bit for bit, that of an
uninterrupted run of the same config on the same cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from dckd.training.checkpoint import safe_load
from tests.conftest import RAY_TEST_ENV, tiny_config_dict
from trainers.worker import STATE_FILE

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ITERATIONS, CKPT_EVERY = 40, 8

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process this user can see."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(proc.name)] = (ppid, cmdline)
    return out


class TwoNodeCluster:
    """A head node and worker nodes started with ``ray start``, each node in its own temp dir."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.base = Path(tempfile.mkdtemp(prefix="raynl", dir="/tmp"))  # unix socket paths must stay short
        self.gcs_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.temp_dirs: list[Path] = []

    def _start(self, name: str, *args: str) -> Path:
        temp_dir = self.base / name
        self.temp_dirs.append(temp_dir)
        # Every port of its own: the session's shared instance holds Ray's default agent ports.
        ports = [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        out = subprocess.run([str(BIN / "ray"), "start", *args, "--node-ip-address=127.0.0.1", "--num-cpus=1",
                              "--object-store-memory=100000000", "--disable-usage-stats",
                              f"--temp-dir={temp_dir}", *ports],
                             env=self.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return temp_dir

    def start_head(self) -> Path:
        return self._start("head", "--head", f"--port={self.gcs_port}", "--include-dashboard=true",
                           "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}",
                           f"--ray-client-server-port={free_port()}")

    def start_node(self, name: str) -> Path:
        return self._start(name, f"--address={self.address}")

    @staticmethod
    def raylet_pid(temp_dir: Path) -> int:
        marker = f"--raylet_socket_name={temp_dir}/".encode()
        pids = [pid for pid, (_, cmd) in _procs().items()
                if cmd.split(b"\0", 1)[0].endswith(b"/raylet") and marker in cmd]
        assert len(pids) == 1, f"raylets of {temp_dir}: {pids}"
        return pids[0]

    def _ours(self) -> set[int]:
        """This cluster's processes (named after its temp dirs or GCS port) and their descendants."""
        procs = _procs()
        marks = [str(d).encode() for d in self.temp_dirs] + [f":{self.gcs_port}".encode()]
        pids = {pid for pid, (_, cmd) in procs.items() if pid != os.getpid() and any(m in cmd for m in marks)}
        while kids := {pid for pid, (ppid, _) in procs.items() if ppid in pids} - pids:
            pids |= kids
        return pids

    def stop(self) -> None:
        """Stop only this cluster's processes (``ray stop`` would stop every Ray on the machine)."""
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for pid in self._ours():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self._ours() and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.base, ignore_errors=True)


def write_config(hr: Path, out: Path) -> Path:
    d = tiny_config_dict(hr, out, method="dckd", iterations=ITERATIONS, ckpt_every=CKPT_EVERY,
                         val_every=1000, log_every=CKPT_EVERY)
    d["ray"] = {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 1}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def train(cfg: Path, cluster: TwoNodeCluster, log: Path) -> subprocess.Popen:
    """``python -m trainers.train`` (the ``ray job submit`` entrypoint) as the cluster's driver."""
    return subprocess.Popen([sys.executable, "-m", "trainers.train", str(cfg), "--set", f"ray.address={cluster.address}"],
                            cwd=ROOT, env=cluster.env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(what: str, predicate, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.1)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text[-6000:]
    return text


def student(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(run_dir / "student.pth", map_location="cpu", weights_only=True)


def final_state(run_dir: Path) -> dict:
    """The engine state in the run's last registered Ray checkpoint, less ``extra`` (run ids)."""
    storage = run_dir / "ray" / "tiny"
    name = json.loads((storage / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
    state = safe_load(storage / name["checkpoint_dir_name"] / STATE_FILE)
    state.pop("extra", None)
    return state


def leaves(value, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def test_losing_a_node_mid_run_resumes_to_the_same_weights(tmp_path: Path, hr_folder: Path) -> None:
    env = {**os.environ, **RAY_TEST_ENV, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cluster = TwoNodeCluster(env)
    procs: list[subprocess.Popen] = []
    try:
        cluster.start_head()
        # The uninterrupted run, one worker on each node (its driver starts while node b joins).
        straight_log = tmp_path / "straight.log"
        procs.append(train(write_config(hr_folder, tmp_path / "straight"), cluster, straight_log))
        node_b = cluster.start_node("node-b")
        finish(procs[-1], straight_log, timeout=240)

        # The same run; node b's raylet is SIGKILLed once Ray has registered a checkpoint.
        killed_log = tmp_path / "killed.log"
        snapshot = tmp_path / "killed" / "ray" / "tiny" / "checkpoint_manager_snapshot.json"
        proc = train(write_config(hr_folder, tmp_path / "killed"), cluster, killed_log)
        procs.append(proc)
        wait_for("registered checkpoint", snapshot.is_file, proc, killed_log, timeout=180)
        registered = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["iteration"]
        os.kill(cluster.raylet_pid(node_b), signal.SIGKILL)
        t_kill = time.monotonic()
        wait_for("retry", lambda: "[FailurePolicy] RETRY" in killed_log.read_text(), proc, killed_log, timeout=120)
        t_retry = time.monotonic()
        # The head's one CPU cannot hold both workers: the run waits for a node to (re)join.
        cluster.start_node("node-b-again")
        t_rejoined = time.monotonic()
        wait_for("resume", lambda: "resuming from iteration" in killed_log.read_text(), proc, killed_log, timeout=180)
        t_resumed = time.monotonic()
        text = finish(proc, killed_log, timeout=240)
        print(f"node loss: retry after {t_retry - t_kill:.1f} s, node rejoined after {t_rejoined - t_kill:.1f} s, "
              f"resumed after {t_resumed - t_kill:.1f} s, run ended after {time.monotonic() - t_kill:.1f} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        cluster.stop()

    # What the user sees: one worker-group failure charged to max_failures, then a resume from the
    # last checkpoint Ray had registered (a later one rank 0 was still writing is not used).
    assert "Source: worker group" in text and "Error count: 1 (max allowed: 1)" in text, text[-6000:]
    resumed = {int(m) for m in re.findall(r"resuming from iteration (\d+)", text)}  # rank 0's lines show twice
    assert len(resumed) == 1, resumed
    (resumed_at,) = resumed
    assert registered <= resumed_at < ITERATIONS and resumed_at % CKPT_EVERY == 0, (registered, resumed_at)
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["iteration"] == ITERATIONS and summary["finished"]

    # Bit for bit: the exported student, then every leaf of the final engine state (student, EMA,
    # DCR history models and schedule, optimizer moments, scheduler, torch RNG), less the states of
    # Python's and NumPy's global RNGs: nothing seeds them and no step draws from them (all step
    # randomness derives from seed, rank and iteration), so they hold each process's own
    # entropy-seeded start, which a resume carries over from the first attempt.
    a, b = student(tmp_path / "straight"), student(tmp_path / "killed")
    for part in ("params", "params_ema"):
        assert a[part].keys() == b[part].keys()
        differ = {name: float((b[part][name] - value).abs().max()) for name, value in a[part].items()
                  if not torch.equal(b[part][name], value)}
        assert not differ, f"student.pth {part} differ from the uninterrupted run (max abs diff): {differ}"
    skip = (".rng.numpy", ".rng.python", ".config.output_dir")  # the two runs' own folders
    sa, sb = ({k: v for k, v in leaves(final_state(tmp_path / run)) if not k.startswith(skip)}
              for run in ("straight", "killed"))
    assert sa.keys() == sb.keys() and any(k.startswith(".rng.torch") for k in sa)
    differ = [path for path, value in sa.items()
              if not (torch.equal(value, sb[path]) if isinstance(value, torch.Tensor) else value == sb[path])]
    assert not differ, f"final state differs from the uninterrupted run at {differ}"
