"""Sweep files with ``seeds: K``: validated, and the results give each configuration's mean ± std."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import yaml

from dckd.config.sweep import SweepConfig
from trainers.tune import write_results


def test_seeds_and_a_seed_axis_cannot_both_set_the_seed() -> None:
    base = {"name": "s", "base": "experiments/demo.yaml", "search": {"seed": {"grid": [1, 2]}}}
    assert SweepConfig.model_validate(base).seeds == 1
    with pytest.raises(ValueError, match="keep one"):
        SweepConfig.model_validate({**base, "seeds": 2})
    with pytest.raises(ValueError):
        SweepConfig.model_validate({**base, "search": {"optim.lr": {"grid": [1e-3]}}, "seeds": 0})


def test_results_by_configuration_are_mean_and_std_over_seeds(tmp_path: Path) -> None:
    rows = []
    values = {1: [30.0, 30.4, 30.2], 3: [30.5, 30.9, 30.7]}
    for neg, psnrs in values.items():
        for seed, v in zip((0, 1, 2), psnrs):
            rows.append({"trial": f"t{neg}{seed}", "method.dcr.num_negatives": neg, "seed": seed,
                         "val_psnr": v, "iteration": 10, "status": "ok"})
    rows[0]["status"] = "error"  # a failed seed is not averaged in
    files = write_results(rows, ["method.dcr.num_negatives"], tmp_path, "val_psnr", seeded=True)
    table = (tmp_path / "results_by_config.md").read_text().splitlines()
    assert tmp_path / "results_by_config.md" in files
    assert table[0].startswith("| method.dcr.num_negatives | seeds | val_psnr mean | std | per seed")
    best, other = (line.split(" | ") for line in table[2:4])
    assert best[0] == "| 3" and best[1] == "3/3"
    assert float(best[2]) == pytest.approx(statistics.fmean(values[3]), abs=1e-4)
    assert float(best[3]) == pytest.approx(statistics.stdev(values[3]), abs=1e-4)
    assert other[1] == "2/3" and float(other[2]) == pytest.approx(30.3, abs=1e-4)
    assert "0: 30.0000" in other[4]  # every seed is listed, the failed one too
    assert "seed" in (tmp_path / "results.csv").read_text().splitlines()[0].split(",")[:3]


def test_the_example_sweep_still_loads() -> None:
    doc = yaml.safe_load(Path("experiments/sweeps/smoke_negatives.yaml").read_text())
    SweepConfig.model_validate({**doc, "seeds": 2})
