"""MLflow tracking against an embedded sqlite store, and tiled restoration."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dckd.cli import main
from dckd.config import load_config
from dckd.evaluation.restore import restore_image
from dckd.imageio import read_image
from dckd.tracking import (
    PARAM_VALUE_LIMIT,
    RunTracker,
    flatten_config,
    load_student,
    redact,
    resolve_tracking_uri,
    sample_panel,
    scrub,
    secret_values,
)
from dckd.tracking.journal import Journal, JournalBusy, summarize
from dckd.tracking.server import MLFLOW_LIMITS, describe, is_transient, mlflow_limits, view_run_lines
from dckd.training.loop import latest_checkpoint, train_local
from tests.conftest import tiny_config_dict


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'mlflow.db').resolve().as_posix()}"


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, a.path) if a.is_dir else [a.path]
    return out


# --------------------------------------------------------------------------- pure functions
def test_tracking_uri_precedence(tmp_path: Path, hr_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tiny_config_dict(hr_folder, tmp_path / "runs" / "tiny")
    cfg = load_config(data=data)
    assert resolve_tracking_uri(cfg) == f"sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db"
    assert resolve_tracking_uri(cfg).startswith("sqlite:////")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(cfg) == "http://env:5000"
    data["tracking"] = {"tracking_uri": "http://cfg:5000"}
    cfg = load_config(data=data)
    assert resolve_tracking_uri(cfg) == "http://cfg:5000"
    assert resolve_tracking_uri(cfg, "http://cli:5000") == "http://cli:5000"


def test_flatten_config_dotted_json_truncated(tmp_path: Path, hr_folder: Path) -> None:
    data = tiny_config_dict(hr_folder, tmp_path / "run")
    data["tracking"] = {"register_as": "x" * (PARAM_VALUE_LIMIT + 50)}
    flat = flatten_config(load_config(data=data))
    assert flat["name"] == "tiny" and flat["train.iterations"] == "10"
    assert flat["student.preset"] == "rcan_tiny_x2_student"
    assert json.loads(flat["method.dcr.level_weights"]) == pytest.approx([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0])
    assert flat["method.dcr.history.growth_milestones"] == "[8]"
    assert flat["student.args"] == "{}" and flat["teacher.checkpoint"] == "null"
    assert flat["data.train.hflip"] == "true"
    assert len(flat["tracking.register_as"]) == PARAM_VALUE_LIMIT
    assert all(isinstance(v, str) for v in flat.values()) and not any(k.startswith(".") for k in flat)


def test_scrub_masks_secret_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(12)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-" + secret[:8])
    monkeypatch.setenv("SOME_PASSWORD", "1")  # too short to be a credential: must not mask every "1"
    assert secret in secret_values() and "1" not in secret_values()
    assert scrub(secret) == "***" and scrub(f"s3://b/{secret}/x") == "***"
    assert scrub("tok-" + secret[:8]) == "***" and scrub("lr 1e-4") == "lr 1e-4"
    assert scrub("https://bob:hunter22@host/x") == "https://bob:***@host/x"
    assert redact(f"a: {secret}\nb: 1\n") == "a: ***\nb: 1\n"


def test_sample_panel_without_teacher() -> None:
    lq, out, gt = torch.rand(3, 5, 6), torch.rand(3, 10, 12), torch.rand(3, 10, 12)
    panel = sample_panel(lq, None, out, gt)
    assert panel.dtype == np.uint8 and panel.shape == (10, 3 * 12 + 2 * 2, 3)
    assert np.array_equal(panel[:, -12:], (gt.permute(1, 2, 0) * 255).round().byte().numpy())
    assert np.array_equal(panel[::2, :12:2], (lq.permute(1, 2, 0) * 255).round().byte().numpy())
    assert sample_panel(lq, out, out, gt).shape == (10, 4 * 12 + 3 * 2, 3)


def test_disabled_tracker_is_a_noop(tmp_path: Path, hr_folder: Path) -> None:
    data = tiny_config_dict(hr_folder, tmp_path / "runs" / "tiny")
    data["tracking"] = {"enabled": False, "tracking_uri": _sqlite(tmp_path)}
    t = RunTracker(load_config(data=data))
    assert t.start() is None
    t.log_params_once()
    t.log_config()
    t.log_metrics({"rec": 1.0}, step=1)
    assert t.log_samples(1, torch.rand(1, 3, 4, 4), None, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)) == []
    assert t.log_student(nn.Identity(), np.zeros((1, 3, 4, 4), np.float32), "x", "champion") is None
    t.end()
    assert not list(tmp_path.rglob("*.db"))


# --------------------------------------------------------------------------- against sqlite
def test_secret_never_reaches_params_tags_or_config_artifact(
    tmp_path: Path, hr_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from mlflow import MlflowClient

    secret = secrets.token_hex(16)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    data = tiny_config_dict(hr_folder, tmp_path / "runs" / "tiny")
    data["name"] = f"run-{secret}"
    data["tracking"] = {"tracking_uri": _sqlite(tmp_path), "experiment": f"exp-{secret}"}
    cfg = load_config(data=data)
    tracker = RunTracker(cfg)
    run_id = tracker.start()
    tracker.log_params_once()
    tracker.log_config()
    tracker.log_metrics({f"val/{secret}/psnr": 20.0, "rec": 0.5}, step=1)
    tracker.log_text(json.dumps({"name": cfg.name}), "summary.json")
    blob = tmp_path / "iter_000000001.pt"
    blob.write_bytes(b"a checkpoint whose stored config holds the secret")
    assert not tracker.log_checkpoint(blob)  # binary: cannot be masked, so it is not uploaded
    tracker.end()

    client = MlflowClient(_sqlite(tmp_path))
    run = client.get_run(run_id)
    assert run.data.params["name"] == "***" and run.data.params["train.iterations"] == "10"
    texts = [*run.data.params.items(), *run.data.tags.items(), *((k, "") for k in run.data.metrics)]
    assert not [kv for kv in texts if secret in kv[0] or secret in kv[1]]
    assert set(run.data.metrics) == {"val/___/psnr", "rec"}
    config_yaml = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path))).read_text()
    assert secret not in config_yaml and "name: run-***" in config_yaml
    summary = Path(client.download_artifacts(run_id, "summary.json", str(tmp_path))).read_text()
    assert json.loads(summary) == {"name": "run-***"}
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["config.yaml", "summary.json"]
    assert all(secret not in e.name for e in client.search_experiments())
    out = capsys.readouterr()
    assert secret not in out.out + out.err


def test_child_run_and_resume_by_id(tmp_path: Path, hr_folder: Path) -> None:
    """A tracker given a run id continues that run (params kept); a parent id makes a nested run."""
    from mlflow import MlflowClient

    data = tiny_config_dict(hr_folder, tmp_path / "runs" / "tiny")
    data["tracking"] = {"tracking_uri": _sqlite(tmp_path), "experiment": "nest"}
    parent = RunTracker(load_config(data=data))
    parent_id = parent.start()
    parent.log_params_once()
    parent.end("KILLED")
    data["train"]["iterations"] = 20  # a changed value is not re-logged (MLflow forbids it)
    again = RunTracker(load_config(data=data), run_id=parent_id)
    assert again.start() == parent_id and again.resumed
    again.log_params_once()
    child = RunTracker(load_config(data=data), parent_run_id=parent_id)
    child_id = child.start()
    child.end()
    again.end()
    client = MlflowClient(_sqlite(tmp_path))
    assert client.get_run(parent_id).data.params["train.iterations"] == "10"
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert client.get_run(child_id).data.tags["mlflow.parentRunId"] == parent_id
    assert len(client.search_runs([client.get_experiment_by_name("nest").experiment_id])) == 2


def test_tiny_run_is_tracked_resumed_and_registered(
    tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    """stop at 2, resume to 4: one MLflow run with everything, and the registered student loads back."""
    from mlflow import MlflowClient

    uri = _sqlite(tmp_path)
    data = tiny_config_dict(hr_folder, tmp_path / "runs" / "tiny", method="logits",
                            iterations=4, val_every=2, log_every=2)
    data["tracking"] = {"tracking_uri": uri}
    first = train_local(load_config(data=data), stop_at=2, progress=False)
    client = MlflowClient(uri)
    run_id = first["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "KILLED"  # interrupted, not finished
    extra = torch.load(latest_checkpoint(tmp_path / "runs" / "tiny"), weights_only=True)["extra"]
    assert set(extra) == {"mlflow_run_id", "cost"} and extra["mlflow_run_id"] == run_id
    assert extra["cost"]["images"] == 2 * data["train"]["batch_size"]  # the cost so far travels with it

    second = train_local(load_config(data=data), progress=False)
    assert second["finished"] and second["mlflow_run_id"] == run_id
    assert second["cost"]["images"] == 4 * data["train"]["batch_size"]  # resumed: added to, not restarted
    exp = client.get_experiment_by_name("dckd")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.runName"] == "tiny"
    assert run.data.params["method.preset"] == "logits" and run.data.params["scale"] == "2"
    for key in ("rec", "kd", "total", "lr", "images_per_s", "val/crops/psnr", "val/crops/ssim"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [2, 4], key
    psnr = client.get_metric_history(run_id, "val/crops/psnr")[-1].value
    assert psnr == pytest.approx(second["val"]["crops"]["psnr"])

    files = _artifacts(client, run_id)
    assert {"config.yaml", "summary.json", "checkpoints/iter_000000004.pt", "student_weights/weights.pt",
            "student_weights/spec.json", "samples/iter_0000002_0.png", "samples/iter_0000002_1.png",
            "samples/iter_0000004_0.png", "samples/iter_0000004_1.png"} <= set(files)
    sample = read_image(client.download_artifacts(run_id, "samples/iter_0000004_0.png", str(tmp_path)))
    assert sample.shape == (64, 4 * 64 + 3 * 2, 3)  # input | teacher | student | GT, 64x64 GT crops

    version = client.get_model_version_by_alias("tiny-student", "champion")
    assert int(version.version) == 1 and version.run_id == run_id
    final = torch.load(latest_checkpoint(tmp_path / "runs" / "tiny"), weights_only=True)
    for model_uri in ("models:/tiny-student@champion", "models:/tiny-student/1", f"runs:/{run_id}"):
        student = load_student(model_uri, tracking_uri=uri)
        assert not student.training and student.scale == 2
        for name, value in final["ema"].items():
            assert torch.equal(student.state_dict()[name], value), (model_uri, name)

    # dckd restore: registry alias and training checkpoint give the same pixels (tiles with blending).
    out_m, out_c = tmp_path / "by_model", tmp_path / "by_ckpt"
    assert main(["restore", "--model", "models:/tiny-student@champion", "--tracking-uri", uri,
                 str(hr_folder), str(out_m), "--tile", "24", "--overlap", "6", "--device", "cpu"]) == 0
    assert main(["restore", "--checkpoint", str(latest_checkpoint(tmp_path / "runs" / "tiny")),
                 str(hr_folder), str(out_c), "--tile", "24", "--overlap", "6", "--device", "cpu"]) == 0
    names = sorted(p.name for p in out_m.iterdir())
    assert names == sorted(p.name for p in out_c.iterdir()) == [f"img{i}.png" for i in range(4)]
    for name in names:
        a, b = read_image(out_m / name), read_image(out_c / name)
        assert a.shape == (128, 128, 3) and np.array_equal(a, b)
    capsys.readouterr()


# --------------------------------------------------------------------------- the tracking server away
def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on return: nothing listens there


def test_unreachable_server_fails_fast_naming_the_uri_before_training(
    tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server at the URI: `dckd train` says so in one line within seconds (not MLflow's 250 s of
    retries and a traceback), the password masked, and trains nothing."""
    import yaml

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    password = "pw-" + secrets.token_hex(8)
    run_dir = tmp_path / "runs" / "tiny"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(hr_folder, run_dir, method="logits", iterations=4)))
    uri = f"http://bob:{password}@127.0.0.1:{_dead_port()}"
    tic = time.monotonic()
    code = main(["train", str(config), "--local", "--no-progress", "--set", "tracking.enabled=true",
                 "--tracking-uri", uri])
    elapsed = time.monotonic() - tic
    out = capsys.readouterr()
    assert code == 2 and elapsed < 10, elapsed
    errors = [line for line in out.err.splitlines() if line.startswith("dckd train: error:")]
    assert len(errors) == 1, out.err
    assert errors[0].startswith(f"dckd train: error: MLflow tracking server {uri.replace(password, '***')} "
                                "does not answer (connection refused)")
    assert password not in out.out + out.err and "Traceback" not in out.err
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()


def test_printed_tracking_lines_and_errors_mask_url_passwords() -> None:
    """The "View run ... at" lines dckd prints in place of MLflow's, and the one-line descriptions of
    MLflow's errors (which quote the request URL), keep the user name and mask the password."""
    import requests
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    password = "pw-" + secrets.token_hex(8)
    uri = f"https://alice:{password}@mlflow.example.org:8443/"
    lines = view_run_lines(uri, "7", "abc123", "tiny")
    assert lines == ["View run tiny at: https://alice:***@mlflow.example.org:8443/#/experiments/7/runs/abc123",
                     "View experiment at: https://alice:***@mlflow.example.org:8443/#/experiments/7"]
    exc = MlflowException(f"API request to {uri}api/2.0/mlflow/runs/log-batch failed with exception "
                          "HTTPConnectionPool(host='mlflow.example.org', port=8443): Max retries exceeded")
    text = describe(exc)
    assert password not in text and "https://alice:***@mlflow.example.org:8443/api/2.0" in text
    assert password not in describe(OSError(f"cannot reach {uri}"))
    # Which failures the sender retries (no answer, or a server error) and which it sets aside (a refusal,
    # or an error MLflow raised without asking the server).
    try:
        try:
            raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
        except requests.exceptions.ConnectionError as e:
            raise MlflowException(f"API request to {uri} failed with exception {e}") from None
    except MlflowException as wrapped:  # as MLflow's http_request raises it: the cause in __context__
        assert is_transient(wrapped)
    assert is_transient(ConnectionRefusedError()) and is_transient(requests.exceptions.ReadTimeout())
    assert is_transient(MlflowException("API request to endpoint /x failed with error code 503 != 200",
                                        error_code=TEMPORARILY_UNAVAILABLE))
    assert is_transient(RestException({"error_code": "INTERNAL_ERROR", "message": "database is locked"}))
    assert not is_transient(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}))
    assert not is_transient(MlflowException("the model cannot be saved"))
    assert not is_transient(FileNotFoundError("gone")) and not is_transient(ValueError("bug"))


def test_mlflow_limits_are_scoped_and_keep_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MLFLOW_LIMITS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    with mlflow_limits():
        with mlflow_limits():
            assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"  # still inside the outer one
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"


def test_journal_pending_done_and_lock(tmp_path: Path) -> None:
    path = tmp_path / "run" / "tracking-pending" / "r1"
    journal = Journal.create(path, {"run_id": "r1", "tracking_uri": "http://h:1"})
    seq1, _ = journal.reserve()
    journal.append(seq1, "metrics", {"metrics": [["rec", 0.5, 1, 1], ["lr", float("nan"), 1, 1]]})
    seq2, folder = journal.reserve()
    folder.mkdir(parents=True)
    (folder / "iter_1.pt").write_bytes(b"x")
    journal.append(seq2, "file", {"path": f"files/{seq2:07d}/iter_1.pt", "artifact_path": "checkpoints"})
    seq3, _ = journal.reserve()
    journal.append(seq3, "end", {"status": "FINISHED", "end_time": 5})
    with (path / "ops.jsonl").open("a") as fh:
        fh.write('{"seq": 4, "kind": "metr')  # the process died while writing this line
    journal.mark(seq2)
    assert not folder.exists()  # sent: its files are freed
    again = Journal(path)  # another process reading it
    assert [op["seq"] for op in again.pending()] == [seq1, seq3]
    assert summarize(again.pending()) == "2 metric values, the run's status FINISHED"
    assert again.reserve()[0] == 4
    journal.lock()
    with pytest.raises(JournalBusy):
        again.lock()
    journal.remove()
    assert not (tmp_path / "run").exists()  # the folders the journal created go with it


def test_sender_sets_aside_what_the_server_refuses_and_goes_on(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A refused upload stays in the journal (for `dckd track sync`) and does not hold up what follows."""
    from mlflow.exceptions import RestException

    from dckd.tracking.sender import Op, Sender, Target

    class Client:
        def __init__(self) -> None:
            self.steps: list[int] = []

        def log_batch(self, run_id: str, metrics=(), params=()) -> None:
            self.steps += [m.step for m in metrics]

        def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
            raise RestException({"error_code": "PERMISSION_DENIED", "message": "not yours"})

    client = Client()
    journal = Journal.create(tmp_path / "run" / "tracking-pending" / "r1", {"run_id": "r1"})
    sender = Sender(Target(client, "http://127.0.0.1:9", "r1", "0", "tiny"), journal).start()
    for kind, data in (("metrics", {"metrics": [["rec", 1.0, 5, 1]]}),
                       ("file", {"path": "files/0000002/a.txt", "artifact_path": None}),
                       ("metrics", {"metrics": [["rec", 2.0, 6, 2], ["lr", 0.1, 6, 2]]}),
                       ("metrics", {"metrics": [["rec", 3.0, 7, 3]]})):
        sender.submit(Op(journal.append(journal.reserve()[0], kind, data)))
    assert sender.drain(5.0)
    sender.close()
    assert client.steps == [1, 2, 2, 3] and sender.sent == 3 and sender.set_aside == 1
    assert [op["kind"] for op in Journal(journal.path).pending()] == ["file"]
    assert ("MLflow did not take 1 artifact upload (PERMISSION_DENIED: not yours); it stays in the run's journal, "
            f"for `dckd track sync {tmp_path / 'run'}`") in caplog.text


def test_track_sync_without_journal_sends_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["track", "sync", str(tmp_path)]) == 0
    assert "nothing to send" in capsys.readouterr().out
    assert main(["track", "sync", str(tmp_path / "missing")]) == 2


# --------------------------------------------------------------------------- tiled restoration
class _Local(nn.Module):
    """Fully convolutional x``scale``: two 3x3 convolutions (receptive radius 2 LR pixels)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_tiled_restoration_matches_whole_image(scale: int) -> None:
    rng = np.random.default_rng(scale)
    img = rng.integers(0, 256, size=(45, 37, 3), dtype=np.uint8)
    model = _Local(scale).train()
    whole = restore_image(model, img, scale, tile=0)
    assert whole.shape == (45 * scale, 37 * scale, 3) and model.training  # mode put back
    assert np.array_equal(restore_image(model, img, scale, tile=64, overlap=16), whole)
    assert np.array_equal(restore_image(model, img, scale, tile=45, overlap=8), whole)
    tiled = restore_image(model, img, scale, tile=20, overlap=8)  # margin 8 // 4 = receptive radius
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    with pytest.raises(ValueError, match="overlap"):
        restore_image(model, img, scale, tile=20, overlap=10)
