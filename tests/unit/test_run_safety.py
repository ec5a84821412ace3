"""Nothing lost, nothing leaked (issue 11): non-finite losses, config changes on resume, corrupt
checkpoints, orphan files, full and read-only disks, credentials in stored configs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from dckd.cli import main
from dckd.config import load_config
from dckd.errors import OutputError
from dckd.training.checkpoint import safe_load
from dckd.training.engine import Engine
from dckd.training.loop import checkpoint_path, make_loader, train_local
from tests.conftest import tiny_config_dict


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'mlflow.db').resolve().as_posix()}"


def _write(tmp_path: Path, d: dict[str, Any], name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d))
    return path


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- non-finite losses
def test_a_diverging_run_stops_naming_term_and_iteration_and_registers_nothing(
        tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    """lr 1e3 is a valid config that diverges: Adam's first step moves every weight by ~1e3, and the
    loss of iteration 2 is NaN. The run stops there, exit 2, keeping the checkpoint of iteration 1."""
    d = tiny_config_dict(hr_folder, tmp_path / "run", method="scratch", iterations=6, ckpt_every=1, log_every=1)
    d["optim"]["lr"] = 1e3
    d["tracking"] = {"enabled": True, "tracking_uri": _sqlite(tmp_path), "samples": 0}
    assert main(["train", str(_write(tmp_path, d)), "--local", "--no-progress"]) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("dckd train: error:"))
    assert "iteration 2: the loss term 'rec' is not finite (rec = nan)" in line
    assert "iter_000000001.pt" in line and "nothing was registered" in line
    assert "Traceback" not in err
    run = tmp_path / "run"
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("iter_*.pt"))
    assert ckpts == ["iter_000000001.pt"]
    state = safe_load(run / "checkpoints" / ckpts[0])
    assert all(torch.isfinite(v).all() for v in state["student"].values())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] is False and "iteration 2" in summary["stopped"]
    assert not (run / "student.pth").exists()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=_sqlite(tmp_path), registry_uri=_sqlite(tmp_path))
    run_info = client.get_run(summary["mlflow_run_id"]).info
    assert run_info.status == "FAILED"
    assert client.search_registered_models() == []


def _nan_at(iteration: int):
    """Engine.compute, with the 'rec' term NaN at one iteration (a glitch, not a divergence)."""
    real = Engine.compute

    def compute(self: Engine, lq: torch.Tensor, gt: torch.Tensor, rng: Any):
        out = real(self, lq, gt, rng)
        if self.iteration + 1 == iteration:
            out.terms["rec"] = out.terms["rec"] * float("nan")
            out.total = out.total * float("nan")
        return out

    return compute


def test_skip_drops_the_update_of_a_non_finite_step_and_counts_it(
        tmp_path: Path, hr_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Engine, "compute", _nan_at(3))
    d = tiny_config_dict(hr_folder, tmp_path / "run", method="scratch", iterations=4, log_every=2,
                         on_nonfinite="skip")
    cfg = load_config(data=d)
    engine = Engine(cfg)
    batches = list(make_loader(cfg, 0, 4))
    for b in batches[:2]:
        engine.train_step(b["lq"], b["gt"])
    before = {k: v.clone() for k, v in engine.student.state_dict().items()}
    ema_before = {k: v.clone() for k, v in engine.ema.state_dict().items()}
    out = engine.train_step(batches[2]["lq"], batches[2]["gt"])
    assert "_skipped" in out and engine.iteration == 3
    for k, v in engine.student.state_dict().items():
        assert torch.equal(v, before[k]), k  # no update: not a single bit moved
    assert engine.extra["nonfinite_skipped"] == 1
    assert any(not torch.equal(v, ema_before[k]) for k, v in engine.ema.state_dict().items() if v.is_floating_point())

    summary = train_local(cfg, progress=False)
    assert summary["finished"] and summary["nonfinite_skipped"] == 1
    train_rows = [r for r in _rows(tmp_path / "run") if r["kind"] == "train"]
    assert [r["iter"] for r in train_rows] == [2, 4]
    assert "nonfinite_skipped" not in train_rows[0] and train_rows[1]["nonfinite_skipped"] == 1
    assert all(v == v for r in train_rows for v in r.values() if isinstance(v, float))  # the means leave it out


# --------------------------------------------------------------------------- config changes on resume
def test_resume_with_a_changed_config_is_refused_unless_allowed_and_then_recorded(
        tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    d = tiny_config_dict(hr_folder, tmp_path / "run", method="scratch", iterations=6, log_every=2)
    d["tracking"] = {"enabled": True, "tracking_uri": _sqlite(tmp_path), "samples": 0, "register_student": False}
    cfg_file = _write(tmp_path, d)
    train_local(load_config(cfg_file), stop_at=3, progress=False)
    run = tmp_path / "run"
    stored = (run / "config.yaml").read_text()
    capsys.readouterr()

    # seed and lr change the trajectory: refused before any step, config.yaml untouched
    argv = ["train", str(cfg_file), "--local", "--no-progress", "--set", "seed=4", "--set", "optim.lr=0.002"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the checkpoint of iteration 3 was trained with another config: optim.lr 0.001 -> 0.002, seed 3 -> 4" in err
    assert "--allow-config-change" in err and "Traceback" not in err
    assert (run / "config.yaml").read_text() == stored
    assert [p.name for p in (run / "checkpoints").glob("iter_*.pt")] == ["iter_000000003.pt"]

    # free fields pass without the flag (and are named)
    assert main(["train", str(cfg_file), "--local", "--no-progress", "--set", "train.log_every=1",
                 "--set", "train.iterations=4"]) == 0
    assert "do not change the training: train.iterations 6 -> 4, train.log_every 2 -> 1" in capsys.readouterr().err

    # allowed: continues, and the change is in metrics.jsonl, the summary, the MLflow tags
    assert main([*argv, "--set", "train.iterations=6", "--allow-config-change"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    change = {"iter": 4, "changes": [{"field": "optim.lr", "from": 0.001, "to": 0.002},
                                     {"field": "seed", "from": 3, "to": 4}]}
    assert summary["config_changes"] == [change] and summary["iteration"] == 6
    assert {"kind": "config_change", **change} in _rows(run)
    assert (run / "config.before-iter_000000004.yaml").read_text() != (run / "config.yaml").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 4

    from mlflow import MlflowClient

    tags = MlflowClient(tracking_uri=_sqlite(tmp_path)).get_run(summary["mlflow_run_id"]).data.tags
    assert json.loads(tags["dckd.config_changes"]) == [change]


# --------------------------------------------------------------------------- corrupt checkpoints, orphans
def test_a_corrupt_latest_checkpoint_is_skipped_and_the_resume_ends_where_a_straight_run_does(
        tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    common = {"iterations": 8, "ckpt_every": 2, "log_every": 1, "keep_checkpoints": 10}
    straight = train_local(load_config(data=tiny_config_dict(hr_folder, tmp_path / "straight", method="scratch",
                                                             **common)), progress=False)
    assert straight["finished"]
    cfg = load_config(data=tiny_config_dict(hr_folder, tmp_path / "run", method="scratch", **common))
    train_local(cfg, stop_at=6, progress=False)
    run = tmp_path / "run"
    latest = checkpoint_path(run, 6)
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a copy cut short
    orphan = run / "checkpoints" / ".iter_000000008.pt.k2j4x9ab.tmp"  # a write killed half-way
    orphan.write_bytes(b"\0" * 100)
    with (run / "metrics.jsonl").open("a") as fh:  # rows a killed run logged after its last checkpoint
        fh.write(json.dumps({"kind": "train", "iter": 7, "total": 1.0}) + "\n")
        fh.write('{"kind": "train", "it')  # and half a line
    capsys.readouterr()

    summary = train_local(cfg, progress=False)
    err = capsys.readouterr().err
    assert "skipped checkpoint iter_000000006.pt" in err and "kept as iter_000000006.pt.unreadable" in err
    assert f"resuming from {checkpoint_path(run, 4)} (iteration 4)" in err
    assert f"removed {orphan}" in err and not orphan.exists()
    assert "metrics.jsonl: dropped 4 line(s) past iteration 4" in err  # iterations 5, 6, 7 and the half line
    assert (run / "checkpoints" / "iter_000000006.pt.unreadable").is_file()
    assert summary["finished"]
    iters = [r["iter"] for r in _rows(run) if r["kind"] == "train"]
    assert iters == list(range(1, 9))  # each iteration once
    a, b = safe_load(tmp_path / "straight" / "student.pth"), safe_load(run / "student.pth")
    for key in ("params", "params_ema"):
        for name, value in a[key].items():
            assert torch.equal(b[key][name], value), f"{key}.{name}"


# --------------------------------------------------------------------------- full and read-only disks
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs): it can fill up and be remounted read-only."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> None:
    with (folder / "filler").open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 16))
        except OSError:
            pass


@pytest.mark.parametrize("failure", ["full", "read-only"])
def test_a_disk_that_fills_up_or_turns_read_only_mid_run_names_the_file_and_keeps_the_checkpoints(
        small_disk: Path, hr_folder: Path, failure: str) -> None:
    d = tiny_config_dict(hr_folder, small_disk / "run", method="scratch", iterations=8, ckpt_every=2,
                         log_every=1, keep_checkpoints=10)
    run = small_disk / "run"

    def on_log(record: dict[str, Any]) -> None:
        if record["iter"] == 3:  # after the checkpoint of iteration 2
            if failure == "full":
                _fill(small_disk)
            else:
                subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    with pytest.raises(OutputError) as info:
        train_local(load_config(data=d), progress=False, on_log=on_log)
    message = str(info.value)
    reason = "No space left on device" if failure == "full" else "Read-only file system"
    assert reason in message and "earlier files of the run are kept" in message
    assert str(run) in message  # names the file it could not write
    if failure == "full":
        assert "free on" in message
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["iter_000000002.pt"]  # no temporary file left behind
    assert safe_load(run / "checkpoints" / kept[0])["iteration"] == 2


def test_a_read_only_output_folder_fails_before_training_with_one_line(
        small_disk: Path, tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    d = tiny_config_dict(hr_folder, small_disk / "run", method="scratch", iterations=2)
    assert main(["train", str(_write(tmp_path, d)), "--local", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"dckd train: error: cannot write the run directory {small_disk / 'run'}: Read-only file system" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- credentials in stored configs
def test_url_passwords_are_masked_in_checkpoints_config_files_artifacts_and_stdout(
        tmp_path: Path, hr_folder: Path, capsys: pytest.CaptureFixture) -> None:
    secret = "Pw-7h1s-1s-s3cr3t"
    d = tiny_config_dict(hr_folder, tmp_path / "run", method="scratch", iterations=2, ckpt_every=1)
    d["ray"] = {"address": f"ray://admin:{secret}@head.example:10001", "storage_path": f"s3://ci:{secret}@bucket/x"}
    d["tracking"] = {"enabled": True, "tracking_uri": _sqlite(tmp_path), "samples": 0}
    cfg_file = _write(tmp_path, d)
    assert main(["train", str(cfg_file), "--check"]) == 0
    assert main(["train", str(cfg_file), "--local", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    assert "ray://admin:***@head.example:10001" in out.out
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "exp.yaml"]
    assert any(p.suffix == ".pt" for p in files) and any("mlartifacts" in p.parts for p in files)
    leaked = [p for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []
    state = safe_load(next((tmp_path / "run" / "checkpoints").glob("iter_*.pt")))
    assert state["config"]["ray"]["address"] == "ray://admin:***@head.example:10001"


def test_fresh_on_ray_sets_aside_the_run_directory_and_a_ray_storage_folder_elsewhere(
        tmp_path: Path, hr_folder: Path) -> None:
    from trainers.train import set_aside_ray_run

    d = tiny_config_dict(hr_folder, tmp_path / "run", method="scratch")
    d["ray"] = {"storage_path": str(tmp_path / "ray-storage")}
    cfg = load_config(data=d)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "ray-storage" / "tiny" / "checkpoint_000000").mkdir(parents=True)
    set_aside_ray_run(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "ray-storage" / "tiny").exists()
    assert [p.name.split(".before-")[0] for p in tmp_path.glob("run.before-*")] == ["run"]
    assert len(list((tmp_path / "ray-storage").glob("tiny.before-*/checkpoint_000000"))) == 1

    d["ray"] = {"storage_path": "s3://bucket/runs"}
    with pytest.raises(Exception, match="--fresh cannot set an earlier run aside on S3"):
        set_aside_ray_run(load_config(data=d))
