"""``dckd reproduce table5 --scale-down``: the paper's RCAN x2 ablation, end to end on the photographs."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pytest

from dckd.data import prepare
from trainers.reproduce import run_reproduce

pytestmark = pytest.mark.slow

# 250k iterations x 1.2e-5 = 3 iterations; patches 48 -> 8, batch 16 -> 2, one image per set.
SCALE_DOWN = 1.2e-5
# No weights can be downloaded here: the Table 1 networks and the VQGAN start from random weights.
CPU_RUN = ["teacher.checkpoint=null", "vqgan.checkpoint=null", "ray.use_gpu=false", "ray.num_workers=1",
           "data.train.num_workers=0", "train.device=cpu", "train.threads=1",
           "tracking.samples=0"]  # sample panels (a teacher pass on whole images) are tested elsewhere


@pytest.fixture(scope="module")
def photos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dckd data prepare photos`: the stand-in for every dataset the paper configs name (once)."""
    root = tmp_path_factory.mktemp("photos")
    prepare.prepare(["photos"], root, opts=prepare.Options(progress=False))
    return root


@pytest.fixture
def photos_data(photos_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DCKD_DATA_ROOT", str(photos_root))
    return photos_root


def test_table5_scaled_down_with_two_seeds_fills_every_cell_of_the_report(ray_local, photos_data: Path,
                                                                          tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Three cells x two seeds (three waves of two trials on two cores): two of the table's and the
    # optional dckd_paper beside them; the other cells' configs are validated by the unit tests.
    # The one stand-in test image per set is scored per 24x24 tile, for paired statistics.
    summary = run_reproduce("table5", cells=["baseline", "dcr_dmm", "+dckd_paper"], scale_down=SCALE_DOWN,
                            overrides=[*CPU_RUN, "eval.score_tiles=24"], out=tmp_path / "report", tracking_uri=uri,
                            max_concurrent=2, seeds=2)
    assert not summary["errors"]
    assert [r["cell"] for r in summary["results"]] == ["baseline", "dcr_dmm", "dckd_paper"]
    assert summary["runs"] == 6 and summary["estimate_device_s"] > 0
    for r in summary["results"]:
        assert r["status"] == "ok", r
        assert set(r["metrics"]) == {"Set14", "Urban100"}
        assert all(10 < psnr < 60 and 0 < ssim <= 1 for psnr, ssim in r["metrics"].values())
        assert [run["seed"] for run in r["runs"]] == [10, 11] and all(run["status"] == "ok" for run in r["runs"])
        for run in r["runs"]:  # every run logged its cost
            assert run["cost"]["device_s"] >= run["cost"]["train_s"] > 0 and run["cost"]["peak_mem_mb"] > 0
            assert run["cost"]["images"] == 3 * 2  # 3 iterations x batch 2 x 1 worker
        assert r["best_seed"] in (10, 11) and r["estimate"]["device_s"] > 0
        # the cell's registered student is its best seed's
        assert r["registered"].startswith(f"models:/table5-{r['cell']}-student@champion")
        # the cell's score is the mean of its seeds'
        for bench, (psnr, _) in r["metrics"].items():
            assert psnr == pytest.approx(sum(run["metrics"][bench][0] for run in r["runs"]) / 2)

    md = Path(summary["report"]["md"]).read_text()
    html = Path(summary["report"]["html"]).read_text()
    assert "SCALED-DOWN SMOKE RUN" in md and "SCALED-DOWN SMOKE RUN" in html
    rows = list(csv.DictReader(Path(summary["report"]["csv"]).open()))
    assert len(rows) == 6  # 3 cells x 2 benchmarks, every one reproduced and published
    assert all(row["reproduced_psnr"] and row["published_psnr"] and row["delta_psnr"] for row in rows), rows
    assert {row["published_psnr"] for row in rows if row["cell"] in ("dcr_dmm", "dckd_paper")} == {"34.01", "32.92"}

    # Paired statistics against the reference cell (baseline), per benchmark, with the published Δ.
    paired = list(csv.DictReader(Path(summary["report"]["paired_csv"]).open()))
    assert {(p["cell"], p["reference"], p["benchmark"]) for p in paired} == {
        (c, "baseline", b) for c in ("dcr_dmm", "dckd_paper") for b in ("Set14", "Urban100")}
    for p in paired:
        assert int(p["images"]) > 20 and p["seeds"] == "2" and len(p["per_seed_delta"].split(";")) == 2
        assert float(p["ci_low"]) <= float(p["delta_psnr"]) <= float(p["ci_high"])
    assert {round(float(p["published_delta"]), 2) for p in paired} == {0.18, 0.25}  # 34.01-33.83, 32.92-32.67
    plain_md = md.replace("\\", "")  # Markdown escapes _ and [ ]
    assert "Wilcoxon p" in plain_md and "resolved at 95%" in plain_md and "per-seed Δ (mean ± std)" in plain_md
    assert "device time" in plain_md and "| total | 6 |" in plain_md and "estimate (steps)" in plain_md
    assert "the registered student is seed" in plain_md
    for kind in ("forest", "psnr_seeds"):
        assert Path(summary["report"][f"plot:table5:{kind}"]).read_bytes()[:4] == b"\x89PNG"
    per_image = list(csv.DictReader(Path(summary["report"]["per_image_csv"]).open()))
    assert {(r["cell"], r["seed"]) for r in per_image} == {(c, s) for c in ("baseline", "dcr_dmm", "dckd_paper")
                                                           for s in ("10", "11")}

    # Every cell names its preset, schedule and batch: 250k x 1.2e-5 = 3 iterations, the release's
    # milestone [250000] -> [3] (never applies), the paper's [100k, 200k] -> [1, 2]; batch 2 on 1 worker.
    release = "lr 0.0001, no decay within 3 its (milestones [3])"
    expected = {"baseline": ("dckd_release (dcr off, dmm off)", release),
                "dcr_dmm": ("dckd_release", release), "dckd_paper": ("dckd", "lr 0.0001, x0.1 at 1, 2 (of 3 its)")}
    assert {row["cell"]: (row["method"], row["schedule"]) for row in rows} == expected
    assert {row["batch"] for row in rows} == {"2 per worker x 1 worker = 2; paper 64"}
    assert all(method in plain_md and schedule in plain_md for method, schedule in expected.values())
    assert "every trained cell: effective batch 2 (2 per worker x 1 worker) differs from the paper's 64" in plain_md

    # Each seed is a child run of the reproduction's run; the seeds and ablation switches reached the runs.
    client = mlflow.MlflowClient(uri)
    children = client.search_runs([client.get_run(summary["mlflow_parent_run_id"]).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'")
    params = {r.info.run_name: r.data.params for r in children}
    assert sorted(params) == sorted(f"table5-{c}-s{s}" for c in ("baseline", "dcr_dmm", "dckd_paper")
                                    for s in (10, 11))
    assert params["table5-baseline-s11"]["seed"] == "11"
    assert params["table5-baseline-s10"]["method.dcr.enabled"] == "false"
    assert params["table5-dcr_dmm-s10"]["train.iterations"] == "3"
    assert params["table5-dcr_dmm-s11"]["method.dmm.released_double_softmax"] == "true"
    assert params["table5-dckd_paper-s10"]["method.dmm.released_double_softmax"] == "false"
    assert params["table5-dckd_paper-s10"]["method.lcr.enabled"] == "false"
    metrics = {r.info.run_name: r.data.metrics for r in children}
    assert all("cost/device_s" in m and "cost/images_per_s" in m for m in metrics.values())


def test_a_teacher_cell_scores_the_teacher_without_training(ray_local, photos_data: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_reproduce("table2_rcan_x2", cells=["teacher"], scale_down=SCALE_DOWN, overrides=CPU_RUN,
                            out=tmp_path / "report", tracking_uri=uri)
    assert not summary["errors"]
    (result,) = summary["results"]
    assert result["status"] == "ok" and set(result["metrics"]) == {"Set5", "Set14", "B100", "Urban100"}
    run = mlflow.MlflowClient(uri).get_run(result["run_id"])
    assert run.data.tags["dckd.note"] == "teacher has no checkpoint: random weights"
    assert "train.iterations" in run.data.params and not any(k.startswith("total") for k in run.data.metrics)
    md = Path(summary["report"]["md"]).read_text()
    assert "38.27 / 0.9614" in md  # the published RCAN x2 teacher on Set5
