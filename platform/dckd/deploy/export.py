"""ONNX and TorchScript export of a :class:`dckd.models.Restorer`, verified on a photograph.

The exported graph keeps the Restorer's contract: it takes ``(B, 3, H, W)`` floats in [0, 1] of
any height and width, pads inside the graph to what the architecture needs (SwinIR's window,
Restormer's three downsamplings, NAFNet's own padding) and crops the output to ``(H*s, W*s)``.
One thing the graph cannot do is choose the padding mode per input: the eager Restorer falls
back from reflect to replicate padding for sides smaller than the pad, and an exported graph
fixes reflect. So the exported file has an **input contract**, written into its metadata and
checked by :class:`dckd.deploy.runtime.OnnxRestorer` and :func:`check_input`: every side at least
``min_side`` (the pad multiple; 1 when the architecture needs none).

Every export is verified before it is kept: the file is loaded back (ONNX Runtime, or
``torch.jit.load``) and run on a crop of a real photograph whose sides are multiples of neither
the window nor the downsampling factor, and on an input at the contract's minimum; the largest
absolute difference from PyTorch must stay within ``tolerance`` (default 1e-4 on the [0, 1] scale,
a fortieth of one 8-bit grey level), else the export fails and nothing is written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from dckd.errors import ExportError, InputContractError

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
DEFAULT_TOLERANCE = 1e-4
META_KEY = "dckd"
"""ONNX metadata key (and TorchScript extra file ``dckd.json``) holding :class:`ExportMeta`."""
VERIFY_PHOTO = "chelsea"
VERIFY_SIZE = (61, 83)
"""Crop (H, W) of the verification photograph: both sides prime, so no window or factor divides them."""


@dataclass(frozen=True)
class ExportMeta:
    """What a deployed file needs to be used correctly, stored inside it."""

    backbone: str
    scale: int
    min_side: int
    channels: int
    spec: dict[str, Any]
    preset: str | None = None
    format: str = "onnx"
    dckd_version: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ExportMeta:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as exc:
            raise ExportError(f"{source}: its dckd metadata cannot be read: {exc}") from exc


def meta_of(model: nn.Module, fmt: str = "onnx") -> ExportMeta:
    """The contract of ``model`` (a Restorer): sides at least its pad multiple."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ExportError(f"{type(model).__name__}: only dckd Restorers export (their spec() rebuilds them)")
    arch = spec()
    channels = int(arch["args"].get("in_chans", arch["args"].get("img_channel", 3)))
    return ExportMeta(backbone=model.backbone, scale=int(model.scale), min_side=max(1, int(model.pad_multiple)),
                      channels=channels, spec=arch, preset=model.preset, format=fmt)


def check_input(meta: ExportMeta, shape: tuple[int, ...], source: str = "input") -> None:
    """Raise :class:`InputContractError` naming the size if ``shape`` (B, C, H, W) breaks the contract."""
    if len(shape) != 4 or shape[0] < 1:
        raise InputContractError(f"{source}: expected a (B, C, H, W) batch, got shape {tuple(shape)}")
    _, c, h, w = shape
    if c != meta.channels:
        raise InputContractError(f"{source}: {meta.backbone} takes {meta.channels} channels, got {c}")
    if min(h, w) < meta.min_side:
        raise InputContractError(
            f"{source}: a {w}x{h} image breaks the input contract of this exported {meta.backbone}: every side "
            f"must be at least {meta.min_side} pixels (the graph reflect-pads to a multiple of {meta.min_side})")


# --------------------------------------------------------------------------- making a network exportable
class _LayerNorm2d(nn.Module):
    """NAFNet's LayerNorm2d as plain tensor ops: the same arithmetic in the same order (so results are
    bit-identical), without the custom autograd Function that TorchScript cannot save."""

    def __init__(self, weight: Tensor, bias: Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, c, 1, 1) * y + self.bias.view(1, c, 1, 1)


def exportable(model: nn.Module) -> nn.Module:
    """A CPU eval copy of ``model`` with modules the formats cannot hold replaced by equivalents."""
    net = copy.deepcopy(model).cpu().eval()
    for name, module in list(net.named_modules()):
        if type(module).__name__ == "LayerNorm2d" and hasattr(module, "eps"):
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, _LayerNorm2d(module.weight, module.bias, float(module.eps)))
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def trace_input(meta: ExportMeta, batch: int = 1) -> Tensor:
    """The example the exporters trace with: sides unlike the verification crop and not multiples of
    the pad. One image: a graph traced with a dynamic batch (example batch 2) ran SwinIR x4 in ONNX
    Runtime 1.9e-4 away from float64 where the batch-1 graph is 1.5e-7 away, so the ONNX file takes
    one image per call and :class:`dckd.deploy.runtime.OnnxRestorer` loops over a batch."""
    m = meta.min_side
    h, w = 2 * m + 5, 2 * m + 3
    g = torch.Generator().manual_seed(0)
    return torch.rand((batch, meta.channels, h, w), generator=g)


# --------------------------------------------------------------------------- verification input
def verification_image(path: str | Path | None = None, size: tuple[int, int] | None = VERIFY_SIZE) -> np.ndarray:
    """uint8 HWC RGB: a crop of scikit-image's photograph (or the file at ``path``, whole)."""
    if path is not None:
        from dckd.imageio import read_image

        return read_image(path)
    from skimage import data

    img = getattr(data, VERIFY_PHOTO)()
    if size is None:
        return img
    h, w = size
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return np.ascontiguousarray(img[top:top + h, left:left + w])


@dataclass
class Check:
    """One verified input: its size and the largest/mean absolute difference from PyTorch."""

    height: int
    width: int
    max_abs: float
    mean_abs: float


@dataclass
class ExportReport:
    """What ``export`` wrote and how well the file reproduces PyTorch."""

    path: Path
    format: str
    meta: ExportMeta
    tolerance: float
    checks: list[Check] = field(default_factory=list)
    export_s: float = 0.0
    size_bytes: int = 0

    @property
    def max_abs(self) -> float:
        return max(c.max_abs for c in self.checks)

    def summary(self) -> str:
        sizes = ", ".join(f"{c.width}x{c.height}: max {c.max_abs:.2e}" for c in self.checks)
        return (f"{self.path} ({self.format}, {self.size_bytes / 1e6:.2f} MB, exported in {self.export_s:.1f} s): "
                f"{self.meta.backbone} x{self.meta.scale}, sides >= {self.meta.min_side}; "
                f"|{self.format} - PyTorch| {sizes} (tolerance {self.tolerance:g})")


# --------------------------------------------------------------------------- writing the formats
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(exc: BaseException) -> str:
    """The exporter's own first line and that of the innermost cause (which names the operator)."""
    lines = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = _ANSI.sub("", str(exc)).strip()
        first = text.splitlines()[0].strip().removesuffix("Next steps:").strip() if text else ""
        lines.append(f"{type(exc).__name__}: {first}"[:240])
        exc = exc.__cause__ or exc.__context__
    return lines[0] if len(lines) == 1 else f"{lines[0]} (cause: {lines[-1]})"


def _write_onnx(net: nn.Module, meta: ExportMeta, dst: Path) -> None:
    import onnx
    from torch.export import Dim

    dyn = {"x": {2: Dim.DYNAMIC, 3: Dim.DYNAMIC}}
    # The exporter prints its progress and, on failure, whole graphs: the user gets one line instead.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (trace_input(meta),), dynamo=True, dynamic_shapes=dyn,
                                    input_names=["x"], output_names=["y"], external_data=False,
                                    verbose=False, optimize=True)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()
    onnx.save_model(proto, str(dst))


def _write_torchscript(net: nn.Module, meta: ExportMeta, dst: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, (trace_input(meta),), check_trace=False)
        traced.save(str(dst), _extra_files={"dckd.json": meta.to_json()})


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, ExportMeta]:
    """A TorchScript file written by :func:`export` and its metadata."""
    extra = {"dckd.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra["dckd.json"]:
        raise ExportError(f"{path}: not a dckd TorchScript export (no dckd.json inside)")
    return module, ExportMeta.from_json(extra["dckd.json"], str(path))


def _runner(path: Path, fmt: str):  # -> callable Tensor -> Tensor
    if fmt == "onnx":
        from dckd.deploy.runtime import OnnxRestorer

        return OnnxRestorer(path)
    module, _ = load_torchscript(path)
    return module


def _verify(model: nn.Module, path: Path, fmt: str, meta: ExportMeta, image: np.ndarray,
            tolerance: float) -> list[Check]:
    from dckd.imageio import to_tensor

    run = _runner(path, fmt)
    photo = to_tensor(image[..., :meta.channels] if image.ndim == 3 else image)[None]
    m = meta.min_side
    g = torch.Generator().manual_seed(1)
    smallest = torch.rand((1, meta.channels, m, m + 1), generator=g)
    checks = []
    for x in (photo, smallest):
        with torch.no_grad():
            ref = model(x)
            got = run(x)
        if tuple(got.shape) != tuple(ref.shape):
            raise ExportError(f"{path}: the {fmt} file returns shape {tuple(got.shape)} for a "
                              f"{x.shape[-1]}x{x.shape[-2]} input; PyTorch returns {tuple(ref.shape)}")
        diff = (got.float() - ref.float()).abs()
        checks.append(Check(int(x.shape[-2]), int(x.shape[-1]), float(diff.max()), float(diff.mean())))
    worst = max(checks, key=lambda c: c.max_abs)
    if not worst.max_abs <= tolerance:
        raise ExportError(f"{path}: the {fmt} file differs from PyTorch by up to {worst.max_abs:.3g} on a "
                          f"{worst.width}x{worst.height} input (tolerance {tolerance:g}); not written")
    return checks


def export(model: nn.Module, out: str | Path, fmt: str = "onnx", image: np.ndarray | None = None,
           tolerance: float = DEFAULT_TOLERANCE) -> ExportReport:
    """Write ``model`` to ``out`` as ``fmt``, verified against PyTorch on ``image`` (default: a crop of
    a scikit-image photograph). The file appears only once verified (written beside, then renamed)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    out = Path(out)
    meta = meta_of(model, fmt)
    net = exportable(model)
    image = verification_image() if image is None else image
    if min(image.shape[:2]) < meta.min_side:
        raise InputContractError(f"verification image {image.shape[1]}x{image.shape[0]} is smaller than the "
                                 f"contract's {meta.min_side} pixels per side")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=SUFFIX[fmt], dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    t0 = time.perf_counter()
    try:
        try:
            (_write_onnx if fmt == "onnx" else _write_torchscript)(net, meta, tmp)
        except Exception as exc:  # the exporters raise many types; the user needs one line
            raise ExportError(f"{meta.backbone} ({meta.preset or 'custom'}) cannot be expressed as {fmt}: "
                              f"{_reason(exc)}") from exc
        export_s = time.perf_counter() - t0
        checks = _verify(model.cpu().eval(), tmp, fmt, meta, image, tolerance)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(out, fmt, meta, tolerance, checks, export_s, out.stat().st_size)
