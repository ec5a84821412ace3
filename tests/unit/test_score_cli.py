"""``dckd score`` end to end on folders of real PNGs, through the command dispatcher."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from dckd.cli import main
from dckd.imageio import write_image


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """GT photos clipped to <= 245 and predictions exactly +10 everywhere: MSE = 100 in RGB."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for name, img in (("baby", data.astronaut()[:64, :80]), ("bird", data.coffee()[50:114, 60:140])):
        gt = np.minimum(img, 245).astype(np.uint8)
        write_image(gt_dir / f"{name}.png", gt)
        write_image(pred_dir / f"{name}.png", gt + 10)
    return gt_dir, pred_dir


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["score", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object on one line
    return json.loads(out)


def test_constant_offset_gives_the_known_psnr(folders, capsys) -> None:
    gt_dir, pred_dir = folders
    res = run_json(capsys, "--gt", str(gt_dir), "--pred", str(pred_dir), "--crop-border", "2")
    assert {"psnr", "ssim", "per_image", "count", "protocol"} <= set(res)
    assert res["count"] == 2 and [r["name"] for r in res["per_image"]] == ["baby", "bird"]
    assert res["psnr"] == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-9)
    assert res["protocol"] == {"crop_border": 2, "y_channel": False, "round_y": False}
    assert 0 < res["ssim"] < 1
    # On Y the offset is 10 * 219 / 255 for every pixel.
    res_y = run_json(capsys, "--gt", str(gt_dir), "--pred", str(pred_dir), "--y-channel")
    assert res_y["psnr"] == pytest.approx(20 * math.log10(255 / (2190 / 255)), abs=1e-9)
    # Rounded Y: each pixel's Y difference is 8 or 9 after rounding, so PSNR lies between.
    res_r = run_json(capsys, "--gt", str(gt_dir), "--pred", str(pred_dir), "--y-channel", "--round-y")
    assert 20 * math.log10(255 / 9) <= res_r["psnr"] <= 20 * math.log10(255 / 8)


def test_identical_folders_report_null_psnr_with_a_note(folders, capsys) -> None:
    gt_dir, _ = folders
    res = run_json(capsys, "--gt", str(gt_dir), "--pred", str(gt_dir), "--y-channel")
    assert res["psnr"] is None
    assert all(r["psnr"] is None for r in res["per_image"])
    assert res["ssim"] == pytest.approx(1.0)
    assert "infinite" in res["notes"][0]


def test_table_output(folders, capsys) -> None:
    gt_dir, pred_dir = folders
    assert main(["score", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("baby") for line in lines)
    mean = next(line for line in lines if line.startswith("mean"))
    assert f"{10 * math.log10(650.25):.4f}" in mean
    rows = [line for line in lines if line.startswith(("image", "baby", "bird", "mean"))]
    assert len({len(r) for r in rows}) == 1  # aligned columns


def test_errors_are_one_line(folders, capsys) -> None:
    gt_dir, pred_dir = folders
    (pred_dir / "bird.png").unlink()
    assert main(["score", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json"]) == 2
    err = capsys.readouterr().err
    assert "bird.png" in err and err.count("\n") == 1
    assert main(["score", "--gt", str(gt_dir), "--pred", str(gt_dir), "--round-y"]) == 2
    assert "round_y" in capsys.readouterr().err
