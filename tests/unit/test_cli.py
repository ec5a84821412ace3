"""The ``dckd`` command end to end on the tiny preset: train, eval, bad input, bench report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dckd import bench
from dckd.cli import main
from dckd.config import load_config
from dckd.imageio import read_image
from dckd.training.loop import latest_checkpoint, train_local
from tests.conftest import tiny_config_dict


def write_config(tmp_path: Path, hr: Path, **kw: object) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(hr, tmp_path / "run", **kw)))
    return path


def test_train_local_then_eval(tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, hr_folder, iterations=4, val_every=2, ckpt_every=2, log_every=2)
    assert main(["train", str(cfg), "--local", "--no-progress", "--set", "method.preset=dckd_star"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["finished"] and summary["iteration"] == 4
    assert summary["vqgan_pretrained"] is False and any("RANDOMLY" in n for n in summary["notes"])
    run = tmp_path / "run"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["iter"] for r in train] == [2, 4]
    assert {"rec", "kd", "dcr", "dmm", "lcr", "total", "lr", "images_per_s"} <= set(train[0])
    assert [r["iter"] for r in records if r["kind"] == "val"] == [2, 4]
    assert "crops/psnr" in records[-1]
    assert (run / "student.pth").is_file() and (run / "config.yaml").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["preset"] == "dckd_star"

    ckpt = run / "checkpoints" / "iter_000000004.pt"
    out_dir = tmp_path / "restored"
    assert main(["eval", str(ckpt), "--json", "--save-dir", str(out_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    val = result["results"]["crops"]
    assert val["count"] == 4 and val["psnr"] == pytest.approx(summary["val"]["crops"]["psnr"])
    assert len(list((out_dir / "crops").glob("*.png"))) == 4


def test_bad_config_fails_before_work(tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, hr_folder)
    assert main(["train", str(cfg), "--local", "--set", "method.dcr.num_negatives=0"]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "method.dcr.num_negatives" in err
    assert not (tmp_path / "run").exists()


def test_check_prints_the_validated_config(tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path, hr_folder)
    assert main(["train", str(cfg), "--check", "--set", "train.iterations=77"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["iterations"] == 77


def test_check_prints_the_resolved_release_method(tmp_path: Path, hr_folder: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """``--check --set method.preset=dckd_release``: LCR on, the release's DMM and degradation switches on."""
    cfg = write_config(tmp_path, hr_folder, total_batch=8)
    assert main(["train", str(cfg), "--check", "--set", "method.preset=dckd_release"]) == 0
    out = capsys.readouterr().out
    head = [line for line in out.splitlines() if line.startswith("# ")]
    assert head == [
        "# method: dckd_release = rec 1 + kd 1 + dcr 0.1 (N 3, noise) + dmm 0.001 + lcr 1 (p 0.5)",
        "# release switches: dmm.released_double_softmax on, dcr.degradation.released_shared_gray_noise on, "
        "dcr.degradation.released_unclamped_resize on",
        "# schedule: lr 0.001, no decay within 10 its (milestones [100000, 200000])",
        "# batch: 2 per worker x 1 worker = 2; paper 8",
        "# note: effective batch 2 (2 per worker x 1 worker) differs from the paper's 8 (train.total_batch): "
        "-6 images per step, x0.25",
    ]
    method = yaml.safe_load(out)["method"]  # the comments keep the output valid YAML
    assert method["preset"] == "dckd_release" and method["lcr"]["enabled"] is True
    assert method["dmm"]["released_double_softmax"] is True
    assert method["dcr"]["degradation"]["released_shared_gray_noise"] is True
    assert method["dcr"]["degradation"]["released_unclamped_resize"] is True


def test_without_local_train_goes_to_the_ray_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    """``dckd train`` (no --local) hands the config to the runner the Ray layer registers."""
    from dckd.cli import train as train_cli

    calls = []
    monkeypatch.setattr(train_cli, "load_runner",
                        lambda name: lambda *a, **kw: calls.append((name, *a, kw)) or {"ok": 1})
    cfg = write_config(tmp_path, hr_folder)
    assert main(["train", str(cfg), "--set", "train.iterations=3"]) == 0
    assert calls == [("train", str(cfg), ["train.iterations=3"], None, {"fresh": False, "allow_config_change": False})]
    assert main(["train", str(cfg), "--fresh", "--allow-config-change"]) == 0
    assert calls[-1][-1] == {"fresh": True, "allow_config_change": True}
    import trainers.train

    assert train_cli.__dict__["entry_points"](group="dckd.runners")["train"].load() is trainers.train.run


def test_bench_report_on_tiny_pair(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The whole report, with each case run in this process instead of a spawned one."""
    monkeypatch.setattr(bench, "make_runner", bench.CaseRunner)
    real = bench.matmul_flops_per_s
    monkeypatch.setattr(bench, "matmul_flops_per_s", lambda dtype, device: real(dtype, device, n=256, reps=1))
    assert main(["bench", "--json", "--pair", "rcan_tiny_x2", "--vqgan", "reduced", "--batch", "1",
                 "--patch", "8", "--steps", "2", "--warmup", "0", "--threads", "1", "--no-ray",
                 "--precision", "bf16"]) == 0
    report = json.loads(capsys.readouterr().out)
    # interleaved rounds: every method timed once per round; ratios as median (min, max) of rounds
    assert all(len(v) == 2 for v in report["step_ms_rounds"].values())
    r = report["released_over_dckd_bf16_rounds"]
    assert r["min"] <= r["median"] <= r["max"] and report["dckd_bf16_step_ms"] > 0
    # FLOPs of one step (forward and backward) and the matmul peak they are set against
    assert report["released_structure_step_flops"] > report["dckd_step_flops"] > report["scratch_step_flops"] > 0
    assert report["dckd_achieved_flops_per_s"] > 0 and report["matmul_peak_bf16_flops_per_s"] > 0
    assert 0 < report["dckd_fraction_of_fp32_peak"] < 1
    assert set(report["bf16_loss_relative_difference"]) == {"total", "rec", "kd", "dcr", "dmm", "lcr"} - (
        set() if "lcr" in report["fp32_loss_terms"] else {"lcr"})
    for key in ("scratch_step_ms", "logits_step_ms", "dckd_step_ms", "released_structure_step_ms",
                "dckd_peak_mem_mb", "dckd_n1_step_ms", "dckd_n3_step_ms", "dckd_n5_step_ms"):
        assert report[key] > 0 or key.endswith("mem_mb"), key
    assert report["dckd_loss_matches_released"] is True
    assert report["loss_relative_difference"] <= 1e-5
    assert report["dckd_step_ms"] == report["dckd_n5_step_ms"]
    assert "released structure" in bench.format_table(report)


def test_restore_refuses_to_overwrite_its_inputs(tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    """``restore IMG IMG`` and ``restore DIR DIR`` would replace the inputs: refused unless --overwrite."""
    cfg = load_config(data=tiny_config_dict(hr_folder, tmp_path / "run", method="scratch", iterations=1))
    train_local(cfg, progress=False)
    ckpt = str(latest_checkpoint(cfg.run_dir))
    before = {p.name: p.read_bytes() for p in hr_folder.iterdir()}
    image = hr_folder / "img0.png"
    for args in ([str(image), str(image)], [str(hr_folder), str(hr_folder)], [str(image), str(hr_folder)]):
        assert main(["restore", "--checkpoint", ckpt, *args, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "img0.png: the output would overwrite an input image" in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in hr_folder.iterdir()} == before  # nothing was written
    assert main(["restore", "--checkpoint", ckpt, str(image), str(image), "--device", "cpu", "--overwrite"]) == 0
    assert read_image(image).shape == (128, 128, 3)  # x2: the input was replaced by its restoration


def test_fresh_run_sets_the_earlier_run_aside(tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    """``--fresh`` in a run directory with a longer earlier run: the two are never mixed."""
    cfg = write_config(tmp_path, hr_folder, iterations=4, val_every=100, ckpt_every=2, log_every=2)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--local", "--no-progress"]) == 0
    old = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    assert sorted(old) == ["iter_000000002.pt", "iter_000000004.pt"]
    capsys.readouterr()

    assert main(["train", str(cfg), "--local", "--no-progress", "--fresh", "--set", "train.iterations=2"]) == 0
    out = capsys.readouterr()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.before-")]
    assert len(aside) == 1 and f"moved to {aside[0]}" in out.err
    assert {p.name: p.read_bytes() for p in (aside[0] / "checkpoints").iterdir()} == old  # kept whole
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000000002.pt"]  # not pruned
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if r["kind"] == "train"] == [2]  # no rows of the earlier run
    # A plain rerun now continues the fresh run (finished at 2), not the earlier one.
    assert main(["train", str(cfg), "--local", "--no-progress", "--set", "train.iterations=2"]) == 0
    assert json.loads(capsys.readouterr().out)["iteration"] == 2
