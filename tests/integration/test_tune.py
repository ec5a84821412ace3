"""A Tune sweep of Train runs on the shared local Ray instance, tracked in MLflow."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pytest

from dckd.errors import ConfigError
from trainers.tune import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "experiments" / "sweeps" / "smoke_negatives.yaml"

pytestmark = pytest.mark.slow


def data_overrides(hr: Path, out: Path) -> list[str]:
    return [f"data.train.hr_dir={hr}", f"data.val.0.hr_dir={hr}", f"output_dir={out}"]


def test_sweep_of_four_trials_lands_in_mlflow_and_the_table(ray_local, tmp_path: Path, hr_folder: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [*data_overrides(hr_folder, tmp_path / "base"), "train.iterations=4", "train.val_every=2",
                 "train.ckpt_every=2"]
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(SWEEP.read_text().replace("../smoke.yaml", str(ROOT / "experiments" / "smoke.yaml"))
                          + f"output_dir: {tmp_path / 'sweep'}\n")
    summary = run_sweep(sweep_file, overrides, tracking_uri=uri)
    assert summary["trials"] == 4

    rows = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert sorted((r["method.dcr.num_negatives"], r["method.dcr.weight"]) for r in rows) == [
        ("1", "0.01"), ("1", "0.1"), ("3", "0.01"), ("3", "0.1")]
    assert all(float(r["val_psnr"]) > 0 for r in rows)
    assert (tmp_path / "sweep" / "results.md").read_text().count("\n") == 6
    assert (tmp_path / "sweep" / "plot_method_dcr_num_negatives.png").is_file()

    mlflow.set_tracking_uri(uri)
    parent = summary["mlflow_parent_run_id"]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(children) == 4
    assert all("val/photos/psnr" in r.data.metrics or "val/crops/psnr" in r.data.metrics for r in children)


def test_a_bad_axis_is_refused_before_any_trial(tmp_path: Path, hr_folder: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nbase: {ROOT / 'experiments' / 'smoke.yaml'}\n"
                   "search:\n  method.dcr.num_negatives: {grid: [0, 3]}\n")
    with pytest.raises(ConfigError, match="method.dcr.num_negatives"):
        load_sweep(bad, data_overrides(hr_folder, tmp_path / "o"))
