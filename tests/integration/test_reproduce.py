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


def test_table5_scaled_down_fills_every_cell_of_the_report(ray_local, photos_data: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Four cells (two waves of two trials on two cores): three of the table's and the optional
    # dckd_paper beside them. The dmm cell's config is validated by the unit tests.
    summary = run_reproduce("table5", cells=["baseline", "dcr", "dcr_dmm", "+dckd_paper"], scale_down=SCALE_DOWN,
                            overrides=CPU_RUN, out=tmp_path / "report", tracking_uri=uri, max_concurrent=2)
    assert not summary["errors"]
    assert [r["cell"] for r in summary["results"]] == ["baseline", "dcr", "dcr_dmm", "dckd_paper"]
    for r in summary["results"]:
        assert r["status"] == "ok", r
        assert set(r["metrics"]) == {"Set14", "Urban100"}
        assert all(10 < psnr < 60 and 0 < ssim <= 1 for psnr, ssim in r["metrics"].values())

    md = Path(summary["report"]["md"]).read_text()
    html = Path(summary["report"]["html"]).read_text()
    assert "SCALED-DOWN SMOKE RUN" in md and "SCALED-DOWN SMOKE RUN" in html
    rows = list(csv.DictReader(Path(summary["report"]["csv"]).open()))
    assert len(rows) == 8  # 4 cells x 2 benchmarks, every one reproduced and published
    assert all(row["reproduced_psnr"] and row["published_psnr"] and row["delta_psnr"] for row in rows), rows
    assert {row["published_psnr"] for row in rows if row["cell"] in ("dcr_dmm", "dckd_paper")} == {"34.01", "32.92"}

    # Every cell names its preset, schedule and batch: 250k x 1.2e-5 = 3 iterations, the release's
    # milestone [250000] -> [3] (never applies), the paper's [100k, 200k] -> [1, 2]; batch 2 on 1 worker.
    release = "lr 0.0001, no decay within 3 its (milestones [3])"
    expected = {"baseline": ("dckd_release (dcr off, dmm off)", release),
                "dcr": ("dckd_release (dmm off)", release),
                "dcr_dmm": ("dckd_release", release), "dckd_paper": ("dckd", "lr 0.0001, x0.1 at 1, 2 (of 3 its)")}
    assert {row["cell"]: (row["method"], row["schedule"]) for row in rows} == expected
    assert {row["batch"] for row in rows} == {"2 per worker x 1 worker = 2; paper 64"}
    plain_md = md.replace("\\", "")  # Markdown escapes _ and [ ]
    assert all(method in plain_md and schedule in plain_md for method, schedule in expected.values())
    assert "every trained cell: effective batch 2 (2 per worker x 1 worker) differs from the paper's 64" in plain_md

    # Each cell is a child run of the reproduction's run; the ablation switches reached the runs.
    client = mlflow.MlflowClient(uri)
    children = client.search_runs([client.get_run(summary["mlflow_parent_run_id"]).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'")
    params = {r.info.run_name: r.data.params for r in children}
    assert params["table5-baseline"]["method.dcr.enabled"] == "false"
    assert params["table5-dcr"]["method.dmm.enabled"] == "false"
    assert params["table5-dcr_dmm"]["train.iterations"] == "3"
    assert params["table5-dcr_dmm"]["method.dmm.released_double_softmax"] == "true"
    assert params["table5-dckd_paper"]["method.dmm.released_double_softmax"] == "false"
    assert params["table5-dckd_paper"]["method.lcr.enabled"] == "false"


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
