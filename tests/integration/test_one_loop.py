"""One training loop: the same tiny run, locally and as a 1-worker Ray Train run, leaves the same traces.

Both run directories hold the same files (less the local ``checkpoints/`` and Ray's storage
folder), with the same log lines; both MLflow runs have the same params, metrics and artifacts.
Run again, a finished run neither trains nor tests nor logs a student again, on either path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from dckd.cli import main
from dckd.config import load_config
from dckd.evaluation.benchmarks import read_scores_csv
from dckd.tracking import student_of
from dckd.training.loop import train_local
from tests.conftest import tiny_config_dict

pytestmark = pytest.mark.slow

RAY_STORAGE = "ray"  # Ray's default storage folder inside the run directory (trainers.driver.storage_for)


def _config(hr: Path, out: Path, uri: str, experiment: str) -> dict:
    d = tiny_config_dict(hr, out, method="dckd", iterations=4, val_every=2, log_every=2, ckpt_every=2)
    d["data"]["test"] = [{"name": "crops", "hr_dir": str(hr)}]
    d["tracking"] = {"tracking_uri": uri, "experiment": experiment, "samples": 1}
    d["ray"] = {"num_workers": 1, "max_failures": 0}
    return d


def _files(run_dir: Path, skip: set[str]) -> set[str]:
    return {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
            if p.is_file() and p.relative_to(run_dir).parts[0] not in skip}


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for a in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def _lines(run_dir: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["iter"], tuple(sorted(r))) for r in rows]


def _logged_weights(client, uri: str, model_id: str, dst: Path) -> dict:
    """The weights-only state dict a logged student (the serving pyfunc model) carries."""
    import mlflow

    location = client.get_logged_model(model_id).artifact_location
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/artifacts/weights.pt",
                                               dst_path=str(dst), tracking_uri=uri)
    return torch.load(path, map_location="cpu", weights_only=True)


def _ray_train(cfg_file: Path, uri: str, capsys: pytest.CaptureFixture) -> dict:
    """``dckd train CONFIG`` without ``--local``: the Ray layer's runner, as the CLI calls it."""
    capsys.readouterr()
    assert main(["train", str(cfg_file), "--tracking-uri", uri, "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_local_and_ray_runs_leave_the_same_run_directory_and_mlflow_run(
        ray_local, tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    local_dir, ray_dir = tmp_path / "local" / "tiny", tmp_path / "ray" / "tiny"
    local_cfg = load_config(data=_config(hr_folder, local_dir, uri, "one-loop-local"))
    ray_file = tmp_path / "ray.yaml"
    ray_file.write_text(yaml.safe_dump(_config(hr_folder, ray_dir, uri, "one-loop-ray")))

    local = train_local(local_cfg, progress=False)
    _ray_train(ray_file, uri, capsys)

    # The run directories: the same files, the same log lines, the same summary fields.
    assert (local_dir / "checkpoints").is_dir() and (ray_dir / RAY_STORAGE).is_dir()
    expected = {"config.yaml", "metrics.jsonl", "summary.json", "student.pth", "test_scores.csv"}
    assert _files(local_dir, {"checkpoints"}) == _files(ray_dir, {RAY_STORAGE}) == expected
    # the same per-image scores: one worker trains what the local run trains
    scores = [read_scores_csv(d / "test_scores.csv") for d in (local_dir, ray_dir)]
    assert scores[0].keys() == {"crops"} and scores[0]["crops"].keys() == scores[1]["crops"].keys()
    assert all(scores[0]["crops"][k] == pytest.approx(scores[1]["crops"][k]) for k in scores[0]["crops"])
    assert _lines(local_dir) == _lines(ray_dir)
    assert [(k, i) for k, i, _ in _lines(ray_dir)] == [("train", 2), ("val", 2), ("train", 4), ("val", 4)]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (local_dir, ray_dir)]
    assert summaries[0].keys() == summaries[1].keys() and summaries[0]["test"].keys() == {"crops"}
    assert summaries[1]["finished"] and summaries[1]["iteration"] == 4 and summaries[1]["mlflow_run_id"]

    # The MLflow runs: the same params (values too, but for the folder and experiment), metrics, artifacts.
    client = MlflowClient(uri)
    run_ids = [local["mlflow_run_id"], summaries[1]["mlflow_run_id"]]
    runs = [client.get_run(r) for r in run_ids]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    differ = {"output_dir", "tracking.experiment"}
    params = [{k: v for k, v in r.data.params.items() if k not in differ} for r in runs]
    assert params[0] == params[1] and len(params[0]) > 50
    assert set(runs[0].data.metrics) == set(runs[1].data.metrics)
    assert {"total", "dcr", "dmm", "lr", "images_per_s", "val/crops/psnr", "test/crops/psnr"} <= set(
        runs[1].data.metrics)
    artifacts = [_artifacts(client, r) for r in run_ids]
    assert artifacts[0] == artifacts[1]
    assert {"config.yaml", "summary.json", "test_scores.csv", "checkpoints/iter_000000004.pt",
            "student_weights/weights.pt",
            "samples/iter_0000002_0.png", "test_samples/iter_0000004_0.png"} <= artifacts[1]
    logged = [json.loads(Path(client.download_artifacts(r, "summary.json", str(tmp_path / f"s{i}"))).read_text())
              for i, r in enumerate(run_ids)]
    assert logged == summaries
    # One worker draws rank 0's stream, as the local run does: the same training, the same logged student.
    assert summaries[0]["val"]["crops"] == pytest.approx(summaries[1]["val"]["crops"])
    assert sorted(v.run_id for v in client.search_model_versions("name = 'tiny-student'")) == sorted(run_ids)
    weights = [_logged_weights(client, uri, student_of(client, r), tmp_path / f"m{i}") for i, r in enumerate(run_ids)]
    assert weights[0].keys() == weights[1].keys() and weights[0]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    # Run again: both runs had finished, so nothing trains, tests or registers again.
    again = train_local(local_cfg, progress=False)
    _ray_train(ray_file, uri, capsys)
    assert again["mlflow_run_id"] == run_ids[0] and again["test"] == summaries[0]["test"]
    assert json.loads((ray_dir / "summary.json").read_text())["test"] == summaries[1]["test"]
    for run_id in run_ids:
        assert len(client.get_metric_history(run_id, "test/crops/psnr")) == 1
        assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_model_versions("name = 'tiny-student'")) == 2
    assert _lines(local_dir) == _lines(ray_dir)  # no new log lines either
