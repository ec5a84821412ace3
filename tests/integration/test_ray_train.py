"""Ray Train on a real local Ray instance: 2 CPU workers, checkpoints, a killed worker, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dckd.config import load_config
from dckd.training.checkpoint import safe_load
from tests.conftest import tiny_config_dict
from trainers.driver import build_trainer
from trainers.worker import STATE_FILE

pytestmark = pytest.mark.slow


def two_worker_config(hr: Path, out: Path) -> dict:
    d = tiny_config_dict(hr, out, method="dckd", iterations=12, ckpt_every=4, val_every=6, log_every=3)
    d["ray"] = {"num_workers": 2, "max_failures": 2}
    d["tracking"] = {"tracking_uri": f"sqlite:///{out.parent / 'mlflow.db'}"}
    return d


def final_state(result) -> dict:
    """The parts of the final Ray checkpoint this test compares (checkpoint format v2)."""
    with result.checkpoint.as_directory() as folder:
        state = safe_load(Path(folder) / STATE_FILE)
    dcr = state["terms"]["dcr"]
    return {"iteration": state["iteration"], "student": state["student"], "ema": state["ema"],
            "history": dcr["history"], "history_state": dcr["schedule"], "extra": state["extra"]}


def test_two_workers_then_a_killed_worker_resumes_to_the_same_weights(
        ray_local, tmp_path: Path, hr_folder: Path) -> None:
    cfg = load_config(data=two_worker_config(hr_folder, tmp_path / "straight"))
    straight = build_trainer(cfg).fit()
    assert straight.error is None
    assert straight.metrics["iteration"] == 12
    assert {"total", "dcr", "dmm", "lr", "images_per_s", "val_psnr", "val/crops/psnr"} <= set(straight.metrics)
    a = final_state(straight)
    assert a["iteration"] == 12 and a["history_state"]["updates"] == 2  # at 4 and 8 (step 8 after 8)
    assert (cfg.run_dir / "student.pth").is_file()

    # Rank 1's process dies at iteration 7; the group restarts from the checkpoint of iteration 4.
    cfg_b = load_config(data=two_worker_config(hr_folder, tmp_path / "killed"))
    marker = tmp_path / "failed-once"
    killed = build_trainer(cfg_b, extra={"fail_once": {"rank": 1, "iteration": 7, "marker": str(marker)}}).fit()
    assert marker.exists(), "the fault was not injected"
    assert killed.error is None and killed.metrics["iteration"] == 12
    b = final_state(killed)
    for key in ("student", "ema", "history"):
        for name, value in a[key].items():
            # Same draws, same all-reduce order: equal up to float reassociation, if any.
            torch.testing.assert_close(b[key][name], value, rtol=0, atol=1e-6, msg=f"{key}.{name}")
    assert a["extra"]["mlflow_run_id"] and b["extra"]["mlflow_run_id"] != a["extra"]["mlflow_run_id"]


def test_rerun_with_the_same_name_resumes_from_the_latest_checkpoint(
        ray_local, tmp_path: Path, hr_folder: Path) -> None:
    d = two_worker_config(hr_folder, tmp_path / "again")
    d["ray"]["num_workers"] = 1
    d["train"]["iterations"] = 4
    d["train"]["ckpt_every"] = 2
    first = build_trainer(load_config(data=d)).fit()
    run_id = final_state(first)["extra"]["mlflow_run_id"]
    # The latest checkpoint (iteration 4) is cut short: the rerun falls back to the one of iteration 2.
    with first.checkpoint.as_directory() as folder:
        assert safe_load(Path(folder) / STATE_FILE)["iteration"] == 4
    latest = Path(first.checkpoint.path) / STATE_FILE
    latest.write_bytes(latest.read_bytes()[:1000])
    d["train"]["iterations"] = 8
    second = build_trainer(load_config(data=d)).fit()
    assert second.error is None
    state = final_state(second)
    assert state["iteration"] == 8 and state["extra"]["mlflow_run_id"] == run_id
    rows = [json.loads(x) for x in (Path(d["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    # the first run logged 3 and 4 (its end); past the resumed iteration 2 they were dropped
    assert [r["iter"] for r in rows if r["kind"] == "train"] == [3, 6, 8]


def test_workers_stop_together_on_a_refused_config_change_and_a_nonfinite_loss(
        ray_local, tmp_path: Path, hr_folder: Path) -> None:
    """Errors every rank meets alike end the run through the last report, not as a failure that Ray
    would retry (``max_failures``) from the last checkpoint into the same error."""
    from dckd.errors import NonFiniteLossError, ResumeConfigError
    from trainers.train import raise_run_error

    d = tiny_config_dict(hr_folder, tmp_path / "run", method="scratch", iterations=2, ckpt_every=2, log_every=2)
    d["ray"] = {"num_workers": 2, "max_failures": 2}
    first = build_trainer(load_config(data=d)).fit()
    assert first.error is None and first.metrics["iteration"] == 2

    d["seed"], d["train"]["iterations"] = 4, 6
    refused = build_trainer(load_config(data=d)).fit()
    assert refused.error is None, "a refused change must not be a worker failure (Ray would retry it)"
    assert "seed 3 -> 4" in refused.metrics["stopped"]
    with pytest.raises(ResumeConfigError, match="iteration 2 was trained with another config"):
        raise_run_error(refused)

    d["optim"]["lr"] = 1e3  # diverges: the next loss is NaN on both ranks
    diverged = build_trainer(load_config(data=d), extra={"allow_config_change": True}).fit()
    assert diverged.error is None
    with pytest.raises(NonFiniteLossError, match=r"iteration [3-6]: the loss term 'rec' is not finite"):
        raise_run_error(diverged)
    assert "nothing was registered" in diverged.metrics["stopped"]
    assert "the last good checkpoint is" in diverged.metrics["stopped"]
