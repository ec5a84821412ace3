"""The registered student served over HTTP: ``mlflow models serve -m models:/NAME@ALIAS`` restores a
posted photograph exactly as ``dckd restore --model`` does, and the model carries its ONNX file.

A real ``mlflow server`` (sqlite on loopback) holds the registry; a real ``mlflow models serve``
process (``--env-manager local``: no environment is built, nothing is downloaded) loads the
models-from-code pyfunc model, which rebuilds the student from weights-only files.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from dckd.cli import main
from dckd.deploy.serving import decode_image
from dckd.evaluation.restore import restore_image
from dckd.imageio import read_image, write_image
from dckd.tracking import load_student, registry
from tests.servers import wait_for_mlflow

NAME = "serving-student"
QUIET_MLFLOW = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no usage reports; the job runner slows start-up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def _student() -> torch.nn.Module:
    from dckd.models import build_preset

    torch.manual_seed(5)  # random weights: what matters is that both paths use the same ones
    return build_preset("rcan_tiny_x2_student")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # MLflow starts `uvicorn` by name: the venv's bin/ must come first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **QUIET_MLFLOW, **extra}


def _stop(proc: subprocess.Popen) -> None:
    """Both servers run workers as child processes: stop the whole group each leads."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# --------------------------------------------------------------------------- the model in a local folder
def test_pyfunc_model_restores_arrays_and_encoded_images(tmp_path: Path) -> None:
    """predict takes uint8 arrays, PNG/JPEG bytes and base64 text, tiles like restore_image, and names a bad input."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    prepared = registry.prepare_student(_student(), torch.rand(1, 3, 16, 16), tmp_path / "prep", onnx=False)
    folder = registry.save_student(prepared, tmp_path / "model")
    assert (folder / "artifacts" / "weights.pt").is_file() and (folder / "pyfunc_model.py").is_file()
    model = mlflow.pyfunc.load_model(str(folder))
    reference = load_student(str(folder))  # the same files, rebuilt without MLflow

    photo = np.ascontiguousarray(skdata.chelsea()[40:110, 150:240])  # 70x90: tiles of 48 overlap
    jpeg = _png(skdata.coffee()[100:140, 200:250], "JPEG")
    out = model.predict(pd.DataFrame({"image": [photo, _png(photo), base64.b64encode(_png(photo)).decode(), jpeg]}),
                        params={"tile": 48, "overlap": 8})
    assert list(out.columns) == ["image"] and len(out) == 4
    want = restore_image(reference, photo, 2, tile=48, overlap=8)
    assert want.shape == (140, 180, 3)
    for png in out["image"][:3]:  # same process, same kernels: exactly the same pixels
        assert isinstance(png, bytes) and np.array_equal(decode_image(png), want)
    (tmp_path / "coffee.jpg").write_bytes(jpeg)  # dckd's reader decodes it as the model does
    jpeg_want = restore_image(reference, read_image(tmp_path / "coffee.jpg"), 2, tile=48, overlap=8)
    assert np.array_equal(decode_image(out["image"][3]), jpeg_want)

    # A dict of lists, default tiling (the crop fits one 128 tile: no tiling at all).
    again = model.predict({"image": [_png(photo)]})
    assert np.array_equal(decode_image(again["image"][0]), restore_image(reference, photo, 2, tile=0))

    with pytest.raises(MlflowException, match=r"image 1 \(row 1 of 2\): 12 bytes that are neither a PNG or JPEG image nor base64"):
        model.predict(pd.DataFrame({"image": [_png(photo), b"not an image"]}))
    with pytest.raises(MlflowException, match=r"image 0 .*corrupt or truncated"):
        model.predict(pd.DataFrame({"image": [_png(photo)[:60]]}))
    with pytest.raises(MlflowException, match="overlap must be less than half of tile"):
        model.predict(pd.DataFrame({"image": [photo]}), params={"tile": 16, "overlap": 8})


def test_load_student_reads_the_new_and_the_old_layout(tmp_path: Path) -> None:
    """Downloaded model folders: the pyfunc model's artifacts/ and, for students logged before, extra_files/."""
    student = _student()
    prepared = registry.prepare_student(student, torch.rand(1, 3, 16, 16), tmp_path / "prep", onnx=False)
    registry.save_student(prepared, tmp_path / "new")
    old = tmp_path / "old" / "extra_files"
    old.mkdir(parents=True)
    for f in (prepared.weights, prepared.spec):
        shutil.copy(f, old / f.name)
    for folder in (tmp_path / "new", tmp_path / "old"):
        loaded = load_student(str(folder))
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in student.state_dict().items()), folder
    # What models:/ addresses choose between, by the model's top-level folders.
    assert registry._files_dir(str(tmp_path / "new"), None) == "artifacts"
    assert registry._files_dir(str(tmp_path / "old"), None) == "extra_files"


# --------------------------------------------------------------------------- registry and HTTP
@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` on loopback: sqlite backend and artifacts in tmp; yields its URI."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{(tmp_path / 'server.db').as_posix()}",
             "--artifacts-destination", str(tmp_path / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_mlflow(proc, uri, log)
        yield uri
    finally:
        _stop(proc)


def _wait_ping(proc: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow models serve did not answer /ping within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_registered_student_serves_images_over_http(tracking_server: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from dckd.deploy.runtime import OnnxRestorer

    uri = tracking_server
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    client = MlflowClient(uri)
    experiment = client.create_experiment("serving")
    run_id = client.create_run(experiment, run_name="serving").info.run_id
    student = _student()
    tic = time.perf_counter()
    model_id = registry.log_student(client, uri, run_id, experiment, student, torch.rand(1, 3, 16, 16))
    log_s = time.perf_counter() - tic
    client.set_terminated(run_id)
    assert registry.register_logged_model(client, uri, model_id, run_id, NAME, "champion") == 1

    # One logged model for the run; it carries the weights-only files and the verified ONNX file.
    assert [m.model_id for m in client.search_logged_models([experiment])] == [model_id]
    location = client.get_logged_model(model_id).artifact_location
    import mlflow.artifacts

    files = {f.path for f in mlflow.artifacts.list_artifacts(artifact_uri=f"{location}/artifacts", tracking_uri=uri)}
    assert files == {"artifacts/weights.pt", "artifacts/spec.json", "artifacts/model.onnx"}, (files, log_s)
    onnx = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/artifacts/model.onnx",
                                               dst_path=str(tmp_path / "onnx"), tracking_uri=uri)
    x = torch.rand(1, 3, 21, 26, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (OnnxRestorer(onnx)(x) - student.eval()(x)).abs().max() <= 1e-4

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    # One thread and the CPU in the server, as below for `dckd restore`: the same float32 kernels in
    # the same order, so the pixels must be identical. (With other thread counts oneDNN may split a
    # convolution's sums differently, ~1e-7 apart, which can move a rounded pixel by one grey level.)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            env=_env(MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1", DCKD_SERVING_DEVICE="cpu"),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ping(proc, url, log)
        photo = skdata.chelsea()  # 300x451: tiles of 128 with overlap 16 (the defaults)
        crop = np.ascontiguousarray(photo[50:130, 120:230])
        code, answer = _post(url, {"dataframe_split": {"columns": ["image"],
                                                       "data": [[base64.b64encode(_png(photo)).decode()]]}})
        assert code == 200, answer
        served = decode_image(answer["predictions"][0]["image"])
        code, answer = _post(url, {"inputs": {"image": [base64.b64encode(_png(crop)).decode()]},
                                   "params": {"tile": 48, "overlap": 8}})
        assert code == 200, answer
        served_crop = decode_image(answer["predictions"][0]["image"])
        code, answer = _post(url, {"dataframe_split": {"columns": ["image"], "data": [
            [base64.b64encode(_png(crop)).decode()], [base64.b64encode(b"GIF89a, not ours").decode()]]}})
        assert code == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "image 1 (row 1 of 2): 16 bytes that are not a PNG or JPEG image" in answer["message"]
    finally:
        _stop(proc)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_image(tmp_path / "chelsea.png", photo)
        assert main(["restore", "--model", f"models:/{NAME}@champion", "--tracking-uri", uri,
                     str(tmp_path / "chelsea.png"), str(tmp_path / "restored.png"), "--device", "cpu"]) == 0
        want_crop = restore_image(load_student(f"models:/{NAME}@champion", uri), crop, 2, tile=48, overlap=8)
    finally:
        torch.set_num_threads(threads)
    want = read_image(tmp_path / "restored.png")
    assert served.shape == want.shape == (600, 902, 3) and np.array_equal(served, want)
    assert served_crop.shape == (160, 220, 3) and np.array_equal(served_crop, want_crop)
