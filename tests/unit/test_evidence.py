"""Per-image scores, the report's paired statistics over seeds, cost accounting and estimates."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata

from dckd.evaluation.benchmarks import read_scores_csv, scores_csv, tile_scores
from dckd.evaluation.metrics import Protocol
from dckd.reporting.evidence import SeedRun
from dckd.reporting.report import CellResult, TableInfo, write_report
from dckd.reporting.stats import compare
from dckd.training.calibrate import Calibration, estimate
from dckd.training.cost import CostMeter


def _noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float64) + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)


def test_tile_scores_are_the_protocols_scores_of_each_region() -> None:
    gt = skdata.astronaut()[:150, :203]
    pred = _noisy(gt, 6.0, 0)
    protocol = Protocol(crop_border=2)
    rows = tile_scores(pred, gt, protocol, 48, "astronaut")
    # 150 - 4 = 146 rows -> 3 tiles; 203 - 4 = 199 columns -> 4 tiles; the remainders are left out
    assert [r["name"] for r in rows[:5]] == ["astronaut@0,0", "astronaut@0,1", "astronaut@0,2", "astronaut@0,3",
                                              "astronaut@1,0"]
    assert len(rows) == 12
    inner = Protocol(crop_border=0)
    by_hand = inner.score(pred[2 + 48:2 + 96, 2 + 96:2 + 144], gt[2 + 48:2 + 96, 2 + 96:2 + 144])
    assert (rows[6]["psnr"], rows[6]["ssim"]) == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="score_tiles"):
        tile_scores(pred, gt, protocol, 4, "x")


def test_per_image_scores_round_trip_through_their_csv(tmp_path: Path) -> None:
    results = {"Set14": {"psnr": 30.0, "ssim": 0.9, "per_image": [{"name": "a", "psnr": 30.123456789012345,
                                                                   "ssim": 0.91}, {"name": "b", "psnr": 29.5,
                                                                                   "ssim": 0.89}]}}
    path = tmp_path / "test_scores.csv"
    path.write_text(scores_csv(results))
    assert read_scores_csv(path) == {"Set14": {"a": (30.123456789012345, 0.91), "b": (29.5, 0.89)}}
    path.write_text("bench,img\nx,y\n")
    with pytest.raises(Exception, match="test_scores.csv: not a per-image score file"):
        read_scores_csv(path)


def _runs(offset: float, seeds: tuple[int, ...], rng: np.random.Generator, base: np.ndarray) -> list[SeedRun]:
    runs = []
    for s in seeds:
        scores = base + offset + rng.normal(0, 0.05, base.size)
        per = {f"img{i}": float(v) for i, v in enumerate(scores)}
        runs.append(SeedRun(seed=s, run_id=f"run{offset}{s}", status="ok",
                            metrics={"photos": (float(scores.mean()), 0.9)}, per_image={"photos": per},
                            cost={"wall_s": 100.0, "train_s": 80.0, "device_s": 100.0, "images_per_s": 4.0,
                                  "peak_mem_mb": 500.0, "workers": 1.0, "devices_per_worker": 1.0}))
    return runs


def test_the_report_pairs_cells_with_the_references_over_seeds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(27, 33, 40)
    cells = {"scratch": 0.0, "logits": 0.02, "dckd": 0.3}
    results = []
    for cell, offset in cells.items():
        runs = _runs(offset, (0, 1), rng, base)
        results.append(CellResult(table="demo", cell=cell, label=cell, status="ok",
                                  metrics={"photos": (float(np.mean([r.metrics["photos"][0] for r in runs])), 0.9)},
                                  published={}, run_id=runs[0].run_id, runs=runs,
                                  estimate={"device_s": 150.0, "train_s": 150.0},
                                  best_seed=1 if cell == "dckd" else None))
    info = TableInfo(table="demo", benchmarks=["photos"], references=["scratch", "logits"])
    files = write_report([info], results, tmp_path)
    rows = list(csv.DictReader(files["paired_csv"].open()))
    assert [(r["cell"], r["reference"]) for r in rows] == [("logits", "scratch"), ("dckd", "scratch"),
                                                          ("dckd", "logits")]
    by = {(r["cell"], r["reference"]): r for r in rows}
    expected = compare([run.per_image["photos"] for run in results[2].runs],
                       [run.per_image["photos"] for run in results[0].runs])
    got = by[("dckd", "scratch")]
    assert float(got["delta_psnr"]) == pytest.approx(expected.mean) and got["images"] == "40"
    assert (float(got["ci_low"]), float(got["ci_high"])) == pytest.approx((expected.low, expected.high))
    assert got["resolved"] == "true" and float(got["ci_low"]) > 0.2
    assert by[("logits", "scratch")]["resolved"] == "false"  # 0.02 dB in noise of 0.05 per image and seed
    assert len(got["per_seed_delta"].split(";")) == 2
    md = files["md"].read_text()
    assert "resolved at 95%" in md and "yes, better" in md
    assert "dckd: the registered student is seed 1's" in md
    assert "| total | 6 |" in md  # the cost table's total row: 6 runs
    assert "10.0 min" in md  # 6 runs x 100 device-seconds
    assert {"plot:demo:forest", "plot:demo:psnr_seeds"} <= set(files)
    assert files["plot:demo:forest"].read_bytes()[:4] == b"\x89PNG"
    per_image = list(csv.DictReader(files["per_image_csv"].open()))
    assert len(per_image) == 3 * 2 * 40


def test_cost_accumulates_across_a_resume() -> None:
    extra: dict = {}
    meter = CostMeter(extra, torch.device("cpu"), world_size=2, per_worker=1.0)
    meter.add_step(1.5, 4)
    first = meter.update()
    assert first["train_s"] == 1.5 and first["images"] == 8 and first["device_s"] == pytest.approx(
        2 * first["wall_s"])
    resumed = CostMeter(dict(extra), torch.device("cpu"), world_size=2, per_worker=1.0)
    resumed.add_step(0.5, 4)
    second = resumed.update()
    assert second["train_s"] == 2.0 and second["images"] == 16 and second["wall_s"] >= first["wall_s"]
    assert second["images_per_s"] == pytest.approx(8.0) and second["peak_mem_mb"] > 0


def test_the_estimate_sums_the_stages_on_the_fitted_line(tmp_path: Path) -> None:
    from dckd.config import load_config

    # The demo's own data folders exist only after `make demo`; a clean clone points every set here.
    sets = f'[{{"name": "photos", "hr_dir": "{tmp_path}"}}]'
    local = [f"data.train.hr_dir={tmp_path}", f"data.val={sets}", f"data.test={sets}"]
    cfg = load_config("experiments/demo.yaml", [*local, "ray.num_workers=2", "train.iterations=100"])
    calib = Calibration(a=0.1, b=0.001, points=((1, 16, 0.356), (4, 16, 1.124)), device="cpu", calibrate_s=1.0)
    est = estimate(cfg, calib, use_gpu=False)
    step = 0.1 + 0.001 * 8 * 32 * 32
    assert est.step_s == pytest.approx(step) and est.train_s == pytest.approx(100 * step)
    assert est.device_s == pytest.approx(2 * 100 * step)  # two workers, one device each
    prog = load_config("experiments/demo.yaml", [
        *local, "ray.num_workers=2", "train.iterations=100",
        'data.train.progressive={"milestones": [40, 100], "lq_patches": [16, 32], "batch_sizes": [4, 2]}'])
    est = estimate(prog, calib, use_gpu=False)
    assert est.train_s == pytest.approx(40 * (0.1 + 0.001 * 4 * 256) + 60 * (0.1 + 0.001 * 2 * 1024))


def test_a_difference_the_seeds_disagree_on_is_not_resolved() -> None:
    from dckd.reporting.evidence import Comparison
    from dckd.reporting.stats import PairedDifference

    tight = PairedDifference(n=100, mean=-0.003, low=-0.0035, high=-0.0025, p_value=1e-9)
    assert tight.resolved
    split = Comparison("dcr", "dcr", "baseline", "baseline", "Set14", tight, 2, [-0.0058, 0.0012], 0.15)
    assert not split.seeds_agree and not split.resolved and split.verdict == "no: seeds disagree"
    agree = Comparison("dcr", "dcr", "baseline", "baseline", "Set14", tight, 2, [-0.004, -0.002], 0.15)
    assert agree.resolved and agree.verdict == "yes, worse"
    one = Comparison("dcr", "dcr", "baseline", "baseline", "Set14", tight, 1, [-0.003], 0.15)
    assert one.resolved
