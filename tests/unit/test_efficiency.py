"""``dckd efficiency``: FLOPs against hand counts, the speed-up as a median of per-round ratios, the
report's structure, and one real run (spawned workers, ONNX Runtime) on a tiny pair. No timing is asserted."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dckd.cli import main
from dckd.deploy import efficiency as eff
from dckd.errors import ConfigError
from dckd.models import build_preset, count_params

TINY = ("rcan_tiny_x4_teacher", "rcan_tiny_x4_student")


def _conv_flops_by_hooks(model: nn.Module, shape: tuple[int, ...]) -> int:
    """An independent count: 2 x multiply-adds of every Conv2d, from its output shape and its kernel."""
    total = 0

    def hook(module: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += 2 * out.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.rand(shape))
    finally:
        for h in handles:
            h.remove()
    return total


def test_flops_of_one_convolution_are_the_hand_count() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    flops, method = eff.count_flops(conv, (1, 3, 10, 12))
    assert method == "meta"  # counted without compute
    assert flops == 2 * (8 * 10 * 12) * (3 * 3 * 3) == 51840  # 2 x (outputs x multiply-adds per output)
    assert conv.weight.device.type == "cpu"  # the caller's network is left where it was


def test_flops_of_a_tiny_rcan_are_the_sum_over_its_convolutions() -> None:
    """RCAN is convolutions only (its channel attention too), so the count is an independent sum over them."""
    model = build_preset(TINY[0]).eval()
    shape = (1, 3, 12, 16)
    flops, method = eff.count_flops(model, shape)
    assert method == "meta"
    assert flops == _conv_flops_by_hooks(model, shape) > 0


@pytest.mark.parametrize("name", ["swinir_tiny_x4_student", "nafnet_tiny_student", "restormer_tiny_student"])
def test_flops_on_meta_equal_flops_with_real_compute(name: str) -> None:
    model = build_preset(name).eval()
    shape = (1, 3, 20, 28)  # not a multiple of the window or of the downsampling: padding is counted too
    meta, method = eff.count_flops(model, shape)
    assert method == "meta"
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        copy.deepcopy(model)(torch.rand(shape))
    assert meta == counter.get_total_flops() > 0


def test_flops_fall_back_to_real_compute_where_meta_cannot_run() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * float(x.sum().item() >= 0)  # .item() has no value on meta

    flops, method = eff.count_flops(DataDependent(), (1, 1, 4, 5))
    assert (flops, method) == (2 * 2 * 4 * 5 * 1, "cpu")


def test_speedup_is_the_median_of_per_round_ratios() -> None:
    teacher, student = [10.0, 30.0, 20.0], [5.0, 10.0, 4.0]
    s = eff.speedup_stats(teacher, student)
    assert s["rounds"] == [2.0, 3.0, 5.0]
    assert (s["median"], s["min"], s["max"]) == (3.0, 2.0, 5.0)  # not 20 / 5 = 4, the ratio of medians
    lat = eff.latency_stats(teacher)
    assert (lat["median"], lat["min"], lat["max"], lat["runs"]) == (20.0, 10.0, 30.0, teacher)
    with pytest.raises(ValueError):
        eff.speedup_stats([1.0], [1.0, 2.0])


def test_sizes_and_sources_are_parsed() -> None:
    assert eff.parse_size("1280x720") == (1280, 720)
    assert eff.input_size((1280, 720), 4) == (320, 180)
    assert eff.input_size((1280, 720), 1) == (1280, 720)
    with pytest.raises(ConfigError, match="multiple of the SR scale"):
        eff.input_size((1281, 720), 4)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        eff.parse_size("1280")
    assert eff.split_source("rcan_x4_teacher=w/RCAN.pth") == ("w/RCAN.pth", "rcan_x4_teacher")
    assert eff.split_source("models:/student@champion") == ("models:/student@champion", None)
    assert set(eff.TABLE1_PAIRS) == {"swinir_x4", "rcan_x4", "nafnet", "restormer"}


class FakeRunner:
    """Times from a script instead of a clock: each job's n-th step returns its n-th time."""

    script = {"student": [2.0, 4.0, 1.0], "teacher": [10.0, 12.0, 9.0]}

    def __init__(self, job: eff.WorkerJob) -> None:
        self.role = "teacher" if "teacher" in Path(job.path).name else "student"
        self.times = iter(self.script[self.role])
        self.job = job

    def step(self) -> float:
        return next(self.times)

    def info(self) -> dict:
        return {"peak_rss_mb": 100.0, "loaded_rss_mb": 90.0, "inference_rss_mb": 10.0, "torch_threads": 1}

    def close(self) -> None:
        pass


def _fake_report(tmp_path: Path, lines: list[str]) -> dict:
    settings = eff.EfficiencySettings(output_size=(32, 24), repeats=3, warmup=0, runtimes=("pytorch-cpu",))
    pair = eff.PairSpec("tiny", "tiny RCAN", *TINY, "x4 SR")
    return eff.run_efficiency([pair], settings, out=tmp_path, progress=lines.append, make_runner=FakeRunner)


def test_report_structure_with_a_scripted_timer(tmp_path: Path) -> None:
    lines: list[str] = []
    report = _fake_report(tmp_path, lines)
    (p,) = report["pairs"]
    assert (p["input"], p["output"], p["scale"]) == ([8, 6], [32, 24], 4)
    for role, name in zip(("teacher", "student"), TINY):
        model = build_preset(name)
        assert p[role]["params"] == count_params(model)
        assert p[role]["flops"] == _conv_flops_by_hooks(model.eval(), (1, 3, 6, 8))
        assert p[role]["flops_method"] == "meta"
    assert p["flop_ratio"] == p["teacher"]["flops"] / p["student"]["flops"]
    (row,) = p["runtimes"]
    assert row["runtime"] == "pytorch-cpu"
    assert row["speedup"]["rounds"] == [5.0, 3.0, 9.0] and row["speedup"]["median"] == 5.0
    assert row["teacher"]["latency_ms"]["median"] == 10.0 and row["student"]["latency_ms"]["median"] == 2.0
    # one progress line per measurement, student before teacher in every round
    rounds = [m for m in lines if " round " in m]
    assert len(rounds) == 6 and all(("student" in m) == (i % 2 == 0) for i, m in enumerate(rounds))
    # the files: the same report as JSON, the table, the plot
    assert json.loads((tmp_path / "efficiency.json").read_text())["pairs"][0]["runtimes"][0]["speedup"]["median"] == 5.0
    md = (tmp_path / "efficiency.md").read_text()
    assert "**5.00×** (3.00–9.00)" in md and "FlopCounterMode" in md and "2 × multiply-adds" in md
    assert (tmp_path / "efficiency.png").stat().st_size > 1000


def test_low_memory_reaches_the_workers_and_the_footnote(tmp_path: Path) -> None:
    jobs: list[eff.WorkerJob] = []

    def runner(job: eff.WorkerJob) -> FakeRunner:
        jobs.append(job)
        return FakeRunner(job)

    settings = eff.EfficiencySettings(output_size=(32, 24), repeats=3, warmup=0, runtimes=("pytorch-cpu",),
                                      onnx_low_memory=True)
    pair = eff.PairSpec("tiny", "tiny RCAN", *TINY, "x4 SR")
    report = eff.run_efficiency([pair], settings, out=tmp_path, progress=lambda _: None, make_runner=runner)
    assert [j.low_memory for j in jobs] == [True, True]
    assert "memory-pattern planning off (`--onnx-low-memory`)" in eff.format_table(report)
    assert "--onnx-low-memory" not in eff.format_table(_fake_report(tmp_path / "default", []))


def test_cuda_rows_and_footnote(tmp_path: Path) -> None:
    report = _fake_report(tmp_path, [])
    report["machine"]["cuda"] = False
    assert "No CUDA device here" in eff.format_table(report)
    gpu = copy.deepcopy(report)
    gpu["machine"].update(cuda=True, gpu="a GPU")
    row = copy.deepcopy(gpu["pairs"][0]["runtimes"][0])
    row["runtime"] = "pytorch-cuda"
    for role in ("teacher", "student"):
        row[role].update(peak_cuda_mb=300.0, inference_cuda_mb=50.0)
    gpu["pairs"][0]["runtimes"].append(row)
    gpu["runtimes"] = ["pytorch-cpu", "pytorch-cuda"]
    table = eff.format_table(gpu)
    assert "No CUDA device here" not in table and "| pytorch-cuda |" in table and "300 (+50)" in table
    assert "max_memory_allocated" in table


def test_onnx_exports_are_cached(tmp_path: Path) -> None:
    lines: list[str] = []
    net = eff.resolve(TINY[1])
    first = eff.onnx_file(net, tmp_path, lines.append)
    stamp = first.stat().st_mtime_ns
    again = eff.onnx_file(eff.resolve(TINY[1]), tmp_path, lines.append)  # seeded: the same weights
    assert again == first and again.stat().st_mtime_ns == stamp and "cached" in lines[-1]


def test_bad_pairs_and_options_are_one_line_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["efficiency", "--table1", "vgg"]) == 2
    assert "unknown pair(s) vgg" in capsys.readouterr().err
    assert main(["efficiency", "--table1", "none", "--pair", TINY[0], "rcan_tiny_x2_student"]) == 2
    assert "share its scale" in capsys.readouterr().err
    assert main(["efficiency", "--table1", "none", "--pair", *TINY, "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert main(["efficiency", "--table1", "none"]) == 2
    assert "nothing to measure" in capsys.readouterr().err


def test_real_run_on_a_tiny_pair(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Spawned workers, PyTorch and ONNX Runtime, files written; values are structure-checked, not timed."""
    out = tmp_path / "eff"
    assert main(["efficiency", "--table1", "none", "--pair", *TINY, "--output-size", "32x24",
                 "--repeats", "2", "--warmup", "1", "--threads", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == (out / "efficiency.md").read_text()
    report = json.loads((out / "efficiency.json").read_text())
    (p,) = report["pairs"]
    runtimes = [r["runtime"] for r in p["runtimes"]]
    assert runtimes[:2] == ["pytorch-cpu", "onnxruntime-cpu"]
    assert ("pytorch-cuda" in runtimes) == torch.cuda.is_available()
    for r in p["runtimes"]:
        assert "error" not in r, r
        for role in ("teacher", "student"):
            lat = r[role]["latency_ms"]
            assert len(lat["runs"]) == 2 and lat["min"] <= lat["median"] <= lat["max"]
            assert r[role]["peak_rss_mb"] >= r[role]["loaded_rss_mb"] > 0
            assert r[role]["inference_rss_mb"] is not None and r[role]["inference_rss_mb"] >= 0
        ratios = [t / s for t, s in zip(r["teacher"]["latency_ms"]["runs"], r["student"]["latency_ms"]["runs"])]
        assert r["speedup"]["rounds"] == pytest.approx(ratios)
    ort = next(r for r in p["runtimes"] if r["runtime"] == "onnxruntime-cpu")
    assert ort["teacher"]["providers"] == ["CPUExecutionProvider"]
    assert "| onnxruntime-cpu |" in captured.out and "| pytorch-cpu |" in captured.out
    if not torch.cuda.is_available():
        assert "No CUDA device here" in captured.out
    assert sorted(f.name for f in (out / "onnx").iterdir()) == sorted(
        f"{n}-{eff.resolve(n).digest}.onnx" for n in TINY)
    assert (out / "efficiency.png").is_file()
    assert captured.err.count(" round ") == 2 * 2 * len(runtimes)
