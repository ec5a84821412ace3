"""A Tune sweep of Train runs on the shared local Ray instance, tracked in MLflow."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import mlflow
import pytest

from dckd.errors import ConfigError
from dckd.tracking import load_student
from trainers.tune import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "experiments" / "sweeps" / "smoke_negatives.yaml"

pytestmark = pytest.mark.slow


def data_overrides(hr: Path, out: Path) -> list[str]:
    return [f"data.train.hr_dir={hr}", f"data.val.0.hr_dir={hr}", f"output_dir={out}"]


def smoke_sweep(tmp_path: Path) -> Path:
    """The shipped smoke sweep, pointed at the smoke experiment and a folder of this test."""
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.read_text().replace("../smoke.yaml", str(ROOT / "experiments" / "smoke.yaml"))
                    + f"output_dir: {tmp_path / 'sweep'}\n")
    return path


def sweep_on_smoke(tmp_path: Path, body: str) -> Path:
    """A sweep file named ``bad`` over the smoke experiment with the given search/scheduler text."""
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nbase: {ROOT / 'experiments' / 'smoke.yaml'}\n{body}")
    return path


def test_sweep_of_four_trials_lands_in_mlflow_and_the_table(ray_local, tmp_path: Path, hr_folder: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [*data_overrides(hr_folder, tmp_path / "base"), "train.iterations=4", "train.val_every=2",
                 "train.ckpt_every=2"]
    sweep_file = smoke_sweep(tmp_path)
    summary = run_sweep(sweep_file, overrides, tracking_uri=uri)
    assert summary["trials"] == 4

    rows = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
    assert len(rows) == 4
    assert all(r["status"] in ("ok", "stopped") and r["iteration"] in ("2", "4") for r in rows), rows
    assert all(r["iteration"] == "4" for r in rows if r["status"] == "ok"), rows
    assert sorted((r["method.dcr.num_negatives"], r["method.dcr.weight"]) for r in rows) == [
        ("1", "0.01"), ("1", "0.1"), ("3", "0.01"), ("3", "0.1")]
    assert all(float(r["val_psnr"]) > 0 for r in rows)
    assert (tmp_path / "sweep" / "results.md").read_text().count("\n") == 6
    assert (tmp_path / "sweep" / "plot_method_dcr_num_negatives.png").is_file()
    # The tracking URI (it may hold a password) reaches trials through the object store, not through
    # the param space that Tune writes to disk.
    tune_files = [p for p in (tmp_path / "sweep" / "tune").rglob("*") if p.is_file()]
    assert tune_files and not [p for p in tune_files if b"mlflow.db" in p.read_bytes()]

    mlflow.set_tracking_uri(uri)
    parent = summary["mlflow_parent_run_id"]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(children) == 4
    stopped = {r["trial"] for r in rows if r["status"] == "stopped"}
    assert all(r.info.status == ("KILLED" if r.data.tags.get("dckd.stopped_early") else "FINISHED")
               for r in children)
    assert sum(r.info.status == "KILLED" for r in children) == len(stopped)
    # ASHA ended trials early: Ray Train must have given back their workers' resources, or the
    # later trials would have waited forever (the hang of a local Ray without its State API).
    assert all("val/photos/psnr" in r.data.metrics or "val/crops/psnr" in r.data.metrics for r in children)
    assert_no_reserved_placement_groups(ray_local)

    # Trials only log their students; the best finished one is the sweep's registered student.
    client = mlflow.MlflowClient(uri)
    assert [m.name for m in client.search_registered_models()] == ["sweep-smoke-negatives-student"]
    version = client.get_model_version_by_alias("sweep-smoke-negatives-student", "champion")
    run_name = client.get_run(version.run_id).info.run_name
    winner = next(r for r in rows if f"smoke-negatives-{r['trial']}" == run_name)
    # PSNR of uint8 outputs can tie between trials: any trial with the best value will do.
    assert winner["status"] == "ok"
    assert float(winner["val_psnr"]) == max(float(r["val_psnr"]) for r in rows if r["status"] == "ok")
    assert summary["registered"].startswith("models:/sweep-smoke-negatives-student@champion")
    restorer = load_student("models:/sweep-smoke-negatives-student@champion", tracking_uri=uri)
    assert restorer.spec()["scale"] == 2


def assert_no_reserved_placement_groups(ray_module, timeout_s: float = 30.0) -> None:
    from ray.util import placement_group_table

    deadline = time.monotonic() + timeout_s
    while True:
        left = [k for k, v in placement_group_table().items() if v["state"] != "REMOVED"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, f"placement groups still reserved after the sweep: {left}"


def test_a_bad_axis_is_refused_before_any_trial(tmp_path: Path, hr_folder: Path) -> None:
    bad = sweep_on_smoke(tmp_path, "search:\n  method.dcr.num_negatives: {grid: [0, 3]}\n")
    with pytest.raises(ConfigError, match="method.dcr.num_negatives"):
        load_sweep(bad, data_overrides(hr_folder, tmp_path / "o"))


def test_asha_is_refused_without_the_state_api(ray_local, tmp_path: Path, hr_folder: Path, monkeypatch) -> None:
    import trainers.driver

    monkeypatch.setattr(trainers.driver, "state_api_available", lambda timeout=10.0: False)
    sweep_file = smoke_sweep(tmp_path)
    with pytest.raises(ConfigError, match="asha needs the Ray cluster's State API"):
        run_sweep(sweep_file, data_overrides(hr_folder, tmp_path / "o"), tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert not (tmp_path / "m.db").exists()


def test_a_grace_period_past_the_end_is_refused(tmp_path: Path, hr_folder: Path) -> None:
    bad = sweep_on_smoke(tmp_path, "search:\n  method.dcr.num_negatives: {grid: [1, 3]}\n"
                               "scheduler: {name: asha, grace_period: 8}\n")
    with pytest.raises(ConfigError, match="scheduler.grace_period = 8"):
        load_sweep(bad, data_overrides(hr_folder, tmp_path / "o"))


def test_a_train_run_whose_owner_dies_gives_back_its_workers(ray_local, tmp_path: Path, hr_folder: Path) -> None:
    """What ASHA does to a trial, deterministically: the actor running ``fit()`` is killed mid-run.

    Ray Train frees the run's worker placement group only once the State API reports the
    controller dead; a local Ray without it kept those CPUs forever and the next trials hung.
    """
    from ray.util import placement_group_table

    from dckd.config import load_config
    from tests.conftest import tiny_config_dict
    from trainers.driver import build_trainer

    cfg = load_config(data=tiny_config_dict(hr_folder, tmp_path / "owned", iterations=100_000, ckpt_every=2))

    @ray_local.remote(num_cpus=0)
    class Owner:
        def fit(self, data: dict) -> None:
            build_trainer(load_config(data=data), run_name="owned").fit()

    owner = Owner.remote()
    owner.fit.remote(cfg.model_dump(mode="json"))
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("owned/**/checkpoint_*")):  # the workers run and report
        assert time.monotonic() < deadline, "the Train run never reported a checkpoint"
        time.sleep(0.5)
    assert any(v["state"] == "CREATED" for v in placement_group_table().values())
    ray_local.kill(owner)
    assert_no_reserved_placement_groups(ray_local, timeout_s=60)
