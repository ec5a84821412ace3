"""The demo's data split and a quick end-to-end run on a shrunken config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dckd.demo import TEST_PHOTOS, TRAIN_PHOTOS, default_config_path, prepare_photos, run_demo
from dckd.imageio import read_image


def test_split_is_disjoint_and_written_as_rgb(tmp_path: Path) -> None:
    train, test = prepare_photos(tmp_path)
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    assert sorted(p.stem for p in train.iterdir()) == sorted(TRAIN_PHOTOS)
    assert sorted(p.stem for p in test.iterdir()) == sorted(TEST_PHOTOS)
    assert all(read_image(p).shape[2] == 3 for p in test.iterdir())


@pytest.mark.slow
def test_quick_demo_fills_every_row(ray_local, tmp_path: Path) -> None:
    """Teacher in-process, then the four students as one Tune grid on the shared local Ray."""
    base = yaml.safe_load(default_config_path().read_text())
    small = {"backbone": "rcan", "args": {"scale": 2, "n_feats": 8, "n_resgroups": 1, "n_resblocks": 1,
                                          "reduction": 4}}
    base["teacher"], base["student"] = dict(small), dict(small)
    base["data"]["train"]["lq_patch"] = 12
    base["train"].update(batch_size=2, threads=1)
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(base))
    result = run_demo(tmp_path / "out", cfg, quick=True, progress=False)
    methods = [r["method"] for r in result["rows"]]
    assert methods == ["-", "teacher (scratch)", "scratch", "logits", "dckd", "dckd_star"]
    assert all(r["psnr"] > 10 and 0 < r["ssim"] <= 1 for r in result["rows"])
    assert not result["errors"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| dckd |" in table and "| dckd_star |" in table and "random weights" in table
    # Each student against scratch and logits, paired over the held-out photographs' tiles, and a
    # sentence drawn from those intervals.
    students = {r["method"]: r for r in result["rows"] if r.get("run_id")}
    assert set(students["dckd"]["vs"]) == {"scratch", "logits"} and set(students["logits"]["vs"]) == {"scratch"}
    assert not students["scratch"]["vs"]
    d = students["dckd"]["vs"]["scratch"]
    assert d["low"] <= d["delta"] <= d["high"] and d["n"] > 50  # tiles of the two held-out photographs
    assert "Δ vs scratch [95% CI]" in table and f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" in table
    assert "the 95% interval of the paired PSNR difference excludes zero for:" in table
    assert "It includes zero" in table
    assert result["registered"].startswith("models:/demo-student@champion")
    assert Path(result["report"]["html"]).is_file() and Path(result["report"]["md"]).is_file()

    import mlflow

    client = mlflow.MlflowClient(result["mlflow"])
    version = client.get_model_version_by_alias("demo-student", "champion")
    best = max((r for r in result["rows"] if r.get("run_id")), key=lambda r: r["psnr"])
    assert client.get_run(version.run_id).data.metrics["test/photos/psnr"] == pytest.approx(best["psnr"])
