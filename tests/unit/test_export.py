"""ONNX and TorchScript export: every backbone, checked against PyTorch on real photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata

from dckd.cli import main
from dckd.deploy.export import export, load_torchscript
from dckd.deploy.runtime import OnnxRestorer
from dckd.errors import CheckpointError, ExportError, InputContractError
from dckd.imageio import read_image, to_tensor, write_image
from dckd.models import build_preset

STUDENTS = ["rcan_tiny_x2_student", "swinir_tiny_x4_student", "nafnet_tiny_student", "restormer_tiny_student"]
# 53 x 71: prime sides, a multiple of neither SwinIR's window (8), Restormer's and NAFNet's
# downsampling (8, 4) nor the SR factor; a crop of another photograph than the export verifies on.
CROP = (53, 71)


def _photo() -> torch.Tensor:
    img = skdata.astronaut()[100:100 + CROP[0], 180:180 + CROP[1]]
    return to_tensor(np.ascontiguousarray(img))[None]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_preset(name).eval()


@pytest.fixture(scope="module")
def onnx_exports(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each tiny student exported once (the dynamo exporter takes 3 to 20 s a network here)."""
    folder = tmp_path_factory.mktemp("onnx")
    return {name: (_model(name), export(_model(name), folder / f"{name}.onnx", "onnx")) for name in STUDENTS}


@pytest.mark.parametrize("name", STUDENTS)
def test_each_backbone_exports_to_onnx_and_runs_in_onnx_runtime_like_pytorch(name: str, onnx_exports: dict) -> None:
    model, report = onnx_exports[name]
    assert report.max_abs <= 1e-4 and [(c.height, c.width) for c in report.checks][0] == (61, 83)
    ort = OnnxRestorer(report.path)
    x = _photo()
    with torch.no_grad():
        ref = model(x)
    got = ort(x)
    assert got.shape == ref.shape == (1, 3, CROP[0] * model.scale, CROP[1] * model.scale)
    # fp32 kernels of two libraries: measured 1e-7 to 3e-7 here; 1e-5 is 1/400 of one 8-bit level.
    assert float((got - ref).abs().max()) < 1e-5
    assert ort.meta.preset == name and ort.meta.min_side == model.pad_multiple


@pytest.mark.parametrize("name", STUDENTS)
def test_each_backbone_exports_to_torchscript_bit_for_bit(name: str, tmp_path: Path) -> None:
    model = _model(name)
    export(model, tmp_path / "m.pt", "torchscript")
    traced, meta = load_torchscript(tmp_path / "m.pt")
    x = _photo()  # another size than the trace's example: the size arithmetic was recorded, not frozen
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
    assert meta.backbone == model.backbone and meta.scale == model.scale


def test_an_input_below_the_contract_is_named(onnx_exports: dict) -> None:
    ort = OnnxRestorer(onnx_exports["swinir_tiny_x4_student"][1].path)
    with pytest.raises(InputContractError, match=r"a 5x7 image breaks the input contract .* at least 8 pixels"):
        ort(torch.rand(1, 3, 7, 5))
    assert ort(torch.rand(2, 3, 8, 9)).shape == (2, 3, 32, 36)  # a batch runs image by image


def test_a_low_memory_session_computes_the_same_pixels(onnx_exports: dict) -> None:
    """Without the CPU arena and memory patterns ONNX Runtime only allocates differently."""
    path = onnx_exports["restormer_tiny_student"][1].path
    fast, low = OnnxRestorer(path), OnnxRestorer(path, low_memory=True)
    opts = low.session.get_session_options()
    assert not opts.enable_cpu_mem_arena and not opts.enable_mem_pattern
    assert fast.session.get_session_options().enable_cpu_mem_arena
    x = _photo()
    assert torch.equal(low(x), fast(x)) and torch.equal(low(x), fast(x))  # a second call reuses no stale buffer


def test_an_export_that_does_not_reproduce_pytorch_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"differs from PyTorch by up to .* not written"):
        export(_model("rcan_tiny_x2_student"), tmp_path / "m.onnx", "onnx", tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_an_architecture_the_format_cannot_express_is_named(tmp_path: Path) -> None:
    model = _model("rcan_tiny_x2_student")
    inner = model.net.forward
    # An eigendecomposition inside the network: ONNX has no such operator.
    model.net.forward = lambda x: inner(x + 0 * torch.linalg.eigh(x[0, 0, :4, :4] @ x[0, 0, :4, :4].T)[0].sum())
    with pytest.raises(ExportError, match=r"rcan \(rcan_tiny_x2_student\) cannot be expressed as onnx: .*eigh"):
        export(model, tmp_path / "m.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_command_from_a_weights_file_then_restore_with_the_onnx_file(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    model = _model("rcan_tiny_x2_student")
    weights = tmp_path / "rcan.pth"
    torch.save({"params": model.net.state_dict()}, weights)  # BasicSR's layout
    onnx_file = tmp_path / "rcan.onnx"
    assert main(["export", str(weights), str(onnx_file), "--preset", "rcan_tiny_x2_student"]) == 0
    assert "|onnx - PyTorch|" in capsys.readouterr().out
    img = np.ascontiguousarray(skdata.chelsea()[:45, :67])
    write_image(tmp_path / "in.png", img)
    assert main(["restore", "--model", str(onnx_file), str(tmp_path / "in.png"), str(tmp_path / "out.png"),
                 "--tile", "32", "--overlap", "8"]) == 0
    from dckd.evaluation.restore import restore_image

    ref = restore_image(model, img, 2, tile=32, overlap=8)
    got = read_image(tmp_path / "out.png")
    assert got.shape == ref.shape == (90, 134, 3)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1  # rounding of a 1e-7 difference at most


def test_export_of_a_run_checkpoint(tmp_path: Path) -> None:
    model = _model("nafnet_tiny_student")
    ckpt = tmp_path / "iter_10.pt"
    torch.save({"config": {"scale": 1, "student": {"preset": "nafnet_tiny_student"}},
                "ema": model.state_dict(), "student": model.state_dict()}, ckpt)
    assert main(["export", str(ckpt), str(tmp_path / "n.pt")]) == 0
    traced, _ = load_torchscript(tmp_path / "n.pt")
    x = _photo()
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


def test_bad_sources_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(tmp_path / "missing.pth"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dckd export: error: ") and "missing.pth: no such file" in err and "\n" not in err
    plain = tmp_path / "plain.pth"
    torch.save({"params": _model("rcan_tiny_x2_student").net.state_dict()}, plain)
    with pytest.raises(CheckpointError, match="needs --preset NAME"):
        from dckd.deploy.sources import resolve_source

        resolve_source(str(plain))
    assert main(["export", "rcan_tiny_x2_student", str(tmp_path / "m.bin")]) == 2
    assert "give --format onnx|torchscript" in capsys.readouterr().err
