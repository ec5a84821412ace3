"""A training run tracked by a real ``mlflow server`` whose artifacts live in S3 (a moto server).

Proves the path production uses: params/metrics over HTTP, artifacts proxied by the server into
S3, the student registered under an alias and loaded back from the registry without unpickling,
and ``dckd restore --model models:/...@champion`` giving the same pixels as the training checkpoint.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from skimage import data as skdata

from dckd.cli import main
from dckd.config import load_config
from dckd.imageio import read_image, write_image
from dckd.tracking import load_student
from dckd.training.loop import latest_checkpoint, train_local
from tests.conftest import tiny_config_dict
from tests.servers import wait_for_mlflow

pytestmark = pytest.mark.slow

_AWS_VARS_TO_CLEAR = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                      "AWS_ENDPOINT_URL_S3", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_s3_server(s3_server: str) -> str:
    """The session's moto S3 endpoint (tests/integration/conftest.py); this module uses its own bucket."""
    return s3_server


@pytest.fixture
def mlflow_s3_env(mlflow_s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Random credentials (the secret is what must never be logged) and the S3 endpoint, per test."""
    for var in _AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(var, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "MLFLOW_S3_ENDPOINT_URL": mlflow_s3_server,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def mlflow_http_server(mlflow_s3_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``mlflow server``: sqlite backend in tmp, artifacts proxied to s3://<bucket>/mlflow; yields (uri, bucket)."""
    bucket = f"mlflow-{secrets.token_hex(6)}"
    boto3.client("s3", endpoint_url=mlflow_s3_env["MLFLOW_S3_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log_file = (tmp_path / "mlflow-server.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k not in _AWS_VARS_TO_CLEAR}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{(tmp_path / 'server.db').as_posix()}",
         "--artifacts-destination", f"s3://{bucket}/mlflow",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_mlflow(proc, uri, tmp_path / "mlflow-server.log")
        yield uri, bucket
    finally:
        # The server runs its web workers as child processes: stop the whole group it leads.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log_file.close()


def test_tracked_run_on_server_with_s3_artifacts_restores_from_registry(
    mlflow_http_server: tuple[str, str], mlflow_s3_env: dict[str, str], hr_folder: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    from mlflow import MlflowClient

    uri, bucket = mlflow_http_server
    secret = mlflow_s3_env["AWS_SECRET_ACCESS_KEY"]
    data = tiny_config_dict(hr_folder, tmp_path / "runs" / "tiny", method="logits",
                            iterations=4, val_every=2, log_every=2)
    data["tracking"] = {"enabled": True}
    summary = train_local(load_config(data=data), progress=False, tracking_uri=uri)
    run_id = summary["mlflow_run_id"]
    assert summary["finished"] and run_id

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"rec", "kd", "total", "lr", "images_per_s", "val/crops/psnr", "val/crops/ssim"} <= set(run.data.metrics)
    texts = [*run.data.params.items(), *run.data.tags.items(), *((k, "") for k in run.data.metrics)]
    assert run.data.params and not [kv for kv in texts if secret in kv[0] or secret in kv[1]]

    # The artifacts went through the server into the bucket.
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=mlflow_s3_env["MLFLOW_S3_ENDPOINT_URL"])
            .list_objects_v2(Bucket=bucket, Prefix="mlflow/")["Contents"]]
    for suffix in ("config.yaml", "student_weights/weights.pt", "artifacts/weights.pt", "artifacts/spec.json",
                   "artifacts/model.onnx", "samples/iter_0000004_0.png", "checkpoints/iter_000000004.pt"):
        assert any(k.endswith(suffix) for k in keys), suffix

    ckpt = latest_checkpoint(tmp_path / "runs" / "tiny")
    ema = torch.load(ckpt, weights_only=True)["ema"]
    student = load_student("models:/tiny-student@champion", tracking_uri=uri)
    assert student.state_dict().keys() == ema.keys()
    assert all(torch.equal(student.state_dict()[k], v) for k, v in ema.items())

    # A real photograph, tiled (with blending): registry alias and training checkpoint agree exactly.
    photo = tmp_path / "chelsea.png"
    write_image(photo, np.ascontiguousarray(skdata.chelsea()[60:150, 100:220]))
    by_model, by_ckpt = tmp_path / "by_model.png", tmp_path / "by_ckpt.png"
    assert main(["restore", "--model", "models:/tiny-student@champion", "--tracking-uri", uri,
                 str(photo), str(by_model), "--tile", "48", "--overlap", "8", "--device", "cpu"]) == 0
    assert main(["restore", "--checkpoint", str(ckpt), str(photo), str(by_ckpt),
                 "--tile", "48", "--overlap", "8", "--device", "cpu"]) == 0
    a, b = read_image(by_model), read_image(by_ckpt)
    assert a.shape == (180, 240, 3) and np.array_equal(a, b)
    out = capsys.readouterr()
    assert secret not in out.out + out.err
