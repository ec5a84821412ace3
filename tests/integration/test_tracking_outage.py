"""A real ``mlflow server`` killed while a run trains: the run never waits on it and nothing is lost.

One server (sqlite backend and an artifact folder in tmp, a fixed loopback port) serves the module;
tests kill it with SIGKILL (a crash, not a shutdown) and start it again on the same port and
backend. The tracking URI carries a password, which must appear nowhere in the output.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dckd.cli import main
from dckd.config import load_config
from dckd.tracking.journal import JOURNAL_DIR
from dckd.training.loop import latest_checkpoint, train_local
from tests.conftest import tiny_config_dict
from tests.servers import wait_for_mlflow

pytestmark = pytest.mark.slow

PASSWORD = "pw-" + secrets.token_hex(8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on one port and one backend, which a test can kill and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.plain = f"http://127.0.0.1:{self.port}"
        self.uri = f"http://dckd:{PASSWORD}@127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = folder / "server.log"

    def start(self, wait: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # the job runner doubles the start-up time
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--backend-store-uri", f"sqlite:///{(self.folder / 'server.db').as_posix()}",
                 "--artifacts-destination", str(self.folder / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_up()

    def wait_up(self, timeout: float = 120) -> None:
        assert self.proc is not None
        wait_for_mlflow(self.proc, self.plain, self.log, timeout)

    def kill(self) -> None:
        """SIGKILL to the server's process group (it runs its web worker as a child): a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        monkeypatch.delenv(var, raising=False)


def _config(hr: Path, out: Path, experiment: str) -> dict:
    data = tiny_config_dict(hr, out, method="logits", iterations=12, log_every=1, val_every=4, ckpt_every=4)
    data["tracking"] = {"enabled": True, "experiment": experiment, "samples": 1, "register_as": f"{experiment}-student"}
    return data


def _logged_steps(run_dir: Path) -> dict[str, list[int]]:
    """Every metric step the run wrote to metrics.jsonl, by MLflow key."""
    steps: dict[str, list[int]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        prefix = "val/" if record["kind"] == "val" else ""
        for key in record:
            if key not in ("kind", "iter"):
                steps.setdefault(prefix + key, []).append(record["iter"])
    return steps


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for a in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def _check_run_complete(server: Server, run_dir: Path, run_id: str, experiment: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(server.plain, registry_uri=server.plain)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    expected = _logged_steps(run_dir)
    assert {"rec", "kd", "total", "lr", "images_per_s", "val/crops/psnr"} <= set(expected)
    for key, steps in expected.items():
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == sorted(steps), key  # each step once: none lost, none twice
    assert run.data.params["train.iterations"] == "12"
    files = _artifacts(client, run_id)
    assert {"config.yaml", "summary.json", "checkpoints/iter_000000012.pt", "samples/iter_0000004_0.png",
            "samples/iter_0000008_0.png", "samples/iter_0000012_0.png", "student_weights/weights.pt"} <= files
    version = client.get_model_version_by_alias(f"{experiment}-student", "champion")
    assert version.run_id == run_id
    assert not (run_dir / JOURNAL_DIR).exists()


def test_server_killed_and_restarted_mid_run(server: Server, clean_env: None, hr_folder: Path, tmp_path: Path,
                                             capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    """Killed at iteration 3, started again at 5 (up by 10): training never waits, every step arrives,
    and the weights are those of an untracked run (the sender touches no random stream)."""
    run_dir = tmp_path / "runs" / "tiny"
    gaps: list[float] = []
    last = [time.monotonic()]

    def on_log(record: dict) -> None:
        now = time.monotonic()
        if 3 < record["iter"] <= 10:
            gaps.append(now - last[0])  # one training step plus what logging cost it, while the server is down
        if record["iter"] == 3:
            server.kill()
        elif record["iter"] == 5:
            server.start(wait=False)
        elif record["iter"] == 10:
            server.wait_up()  # the test holds training until the server is back (it boots in ~10 s)
        last[0] = time.monotonic()

    summary = train_local(load_config(data=_config(hr_folder, run_dir, "outage-restart")),
                          progress=False, on_log=on_log, tracking_uri=server.uri)
    assert summary["finished"]
    assert max(gaps) < 5.0, gaps  # MLflow alone stalled ~250 s per call here
    _check_run_complete(server, run_dir, summary["mlflow_run_id"], "outage-restart")

    out = capfd.readouterr()
    assert PASSWORD not in out.out + out.err + caplog.text
    assert f"MLflow server http://dckd:***@127.0.0.1:{server.port} is unreachable" in caplog.text
    assert "is back after" in caplog.text
    assert f"View run tiny at: http://dckd:***@127.0.0.1:{server.port}/#/experiments/" in out.out

    untracked = _config(hr_folder, tmp_path / "plain", "unused")
    untracked["tracking"] = {"enabled": False}
    train_local(load_config(data=untracked), progress=False)
    a = torch.load(latest_checkpoint(run_dir), weights_only=True)["ema"]
    b = torch.load(latest_checkpoint(tmp_path / "plain"), weights_only=True)["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_ending_while_server_is_down_is_sent_by_track_sync(
    server: Server, clean_env: None, hr_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    """Killed at iteration 3 and not back before the end: the run finishes, leaves its journal and says how
    to send it; `dckd track sync` sends everything after the restart, and a second sync sends nothing."""
    monkeypatch.setenv("DCKD_TRACKING_WAIT_S", "1")
    run_dir = tmp_path / "runs" / "tiny"

    def on_log(record: dict) -> None:
        if record["iter"] == 3:
            server.kill()

    tic = time.monotonic()
    summary = train_local(load_config(data=_config(hr_folder, run_dir, "outage-sync")),
                          progress=False, on_log=on_log, tracking_uri=server.uri)
    elapsed = time.monotonic() - tic
    assert summary["finished"] and elapsed < 60, elapsed
    run_id = summary["mlflow_run_id"]
    journal = run_dir / JOURNAL_DIR / run_id
    assert (journal / "ops.jsonl").is_file()
    assert latest_checkpoint(run_dir).name == "iter_000000012.pt"
    err = capfd.readouterr().err
    assert f"dckd track sync {run_dir}" in err and "the student (outage-sync-student@champion)" in err
    assert "the run's status FINISHED" in err and PASSWORD not in err

    server.start()
    # The journal keeps the URI without its password: sync asks for it rather than guessing.
    assert main(["track", "sync", str(run_dir)]) == 2
    assert "--tracking-uri" in capfd.readouterr().err
    assert main(["track", "sync", str(run_dir), "--tracking-uri", server.uri]) == 0
    out = capfd.readouterr()
    assert f"MLflow run {run_id} on http://dckd:***@127.0.0.1:{server.port}: sent" in out.out
    assert "registered as outage-sync-student version 1 (champion)" in out.out
    _check_run_complete(server, run_dir, run_id, "outage-sync")

    assert main(["track", "sync", str(run_dir), "--tracking-uri", server.uri]) == 0
    out = capfd.readouterr()
    assert "nothing to send" in out.out
    assert PASSWORD not in out.out + out.err
    _check_run_complete(server, run_dir, run_id, "outage-sync")


def _rng_states() -> tuple:
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_sender_thread_leaves_random_streams_alone(server: Server, clean_env: None, hr_folder: Path,
                                                   tmp_path: Path) -> None:
    """What the sender thread does (metrics, files, samples, the student's upload and registration) draws
    from none of the process-global generators the training uses."""
    from dckd.models import build_preset
    from dckd.tracking import RunTracker

    cfg = load_config(data=_config(hr_folder, tmp_path / "runs" / "tiny", "outage-rng"))
    student = build_preset("rcan_tiny_x2_student")
    lq, out, gt, example = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 8)
    blob = tmp_path / "blob.pt"
    blob.write_bytes(b"checkpoint bytes")
    tracker = RunTracker(cfg, tracking_uri=server.uri)
    run_id = tracker.start()
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    before = _rng_states()
    tracker.log_params_once()
    tracker.log_config()
    tracker.log_metrics({"rec": 0.5}, step=1)
    tracker.log_samples(1, lq, None, out, gt)
    tracker.log_checkpoint(blob, name="iter_000000001.pt")
    assert tracker.log_student(student, example, "outage-rng-student", "champion") == 1  # waited for it
    assert tracker.flush()
    assert _same(_rng_states(), before)
    tracker.end()
    assert _same(_rng_states(), before)

    from mlflow import MlflowClient

    client = MlflowClient(server.plain)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert {"checkpoints/iter_000000001.pt", "config.yaml", "samples/iter_0000001_0.png"} <= _artifacts(client, run_id)
    assert not (cfg.run_dir / JOURNAL_DIR).exists()


def test_resumed_run_first_sends_what_an_earlier_process_left(server: Server, clean_env: None, hr_folder: Path,
                                                             tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A process that died with the server away left its journal; the run resumed from its checkpoint sends
    it first, except its end (the run goes on)."""
    from mlflow import MlflowClient

    from dckd.tracking import RunTracker
    from dckd.tracking.journal import Journal, journal_path

    client = MlflowClient(server.plain)
    experiment = client.create_experiment("outage-adopt")
    run_id = client.create_run(experiment, run_name="tiny").info.run_id
    cfg = load_config(data=_config(hr_folder, tmp_path / "tiny", "outage-adopt"))
    journal = Journal.create(journal_path(cfg.run_dir, run_id), {
        "run_id": run_id, "experiment_id": experiment, "run_name": "tiny", "tracking_uri": server.plain})
    for kind, data in (("metrics", {"metrics": [["rec", 0.25, 1000, 7]]}),
                       ("end", {"status": "KILLED", "end_time": 2000})):
        journal.append(journal.reserve()[0], kind, data)

    tracker = RunTracker(cfg, tracking_uri=server.uri, run_id=run_id)
    assert tracker.start() == run_id and tracker.resumed
    tracker.log_metrics({"rec": 0.125}, step=8)
    tracker.end()
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "rec"))
    assert history == [(7, 0.25), (8, 0.125)]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert "sending what an earlier process of this run did not send to MLflow (1 metric value)" in caplog.text
    assert not (cfg.run_dir / JOURNAL_DIR).exists()
