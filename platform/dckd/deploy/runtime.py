"""An exported ONNX file behind the Restorer contract, so ``restore_image`` and the benchmarks use it
as they use the PyTorch network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dckd.deploy.export import META_KEY, ExportMeta, check_input
from dckd.errors import ExportError


def providers(device: str = "auto") -> list[str]:
    """ONNX Runtime execution providers for ``device`` (auto: CUDA when this onnxruntime has it)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ExportError("onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cuda = "CUDAExecutionProvider" in available and torch.cuda.is_available()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


class OnnxRestorer(nn.Module):
    """``forward(x)``: ``(B, C, H, W)`` floats in [0, 1] -> ``(B, C, H*scale, W*scale)``, via ONNX Runtime.

    The input contract stored in the file is checked first: a too-small image is an
    :class:`dckd.errors.InputContractError` naming its size, not an ONNX Runtime stack trace.

    ``low_memory`` turns off ONNX Runtime's CPU memory arena and memory-pattern planning: both keep
    buffers for the largest shapes seen, which for a large teacher (Restormer at 1280x720: 17.5 GB on
    the first forward, over 24 GB on the second on the CPU) can exceed the machine. Off, that teacher
    peaks at about 13.6 GB; each forward then allocates afresh, so it can be slower.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 low_memory: bool = False) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        if low_memory:
            opts.enable_cpu_mem_arena = False
            opts.enable_mem_pattern = False
        self.low_memory = low_memory
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers(device))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ExportError(f"{self.path}: ONNX Runtime cannot load it: {exc}") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise ExportError(f"{self.path}: not a dckd ONNX export (no '{META_KEY}' metadata)")
        self.meta = ExportMeta.from_json(props[META_KEY], str(self.path))
        self.scale = self.meta.scale
        self.backbone = self.meta.backbone
        self.input_name = self.session.get_inputs()[0].name

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        check_input(self.meta, tuple(x.shape), str(self.path))
        x = np.ascontiguousarray(x, dtype=np.float32)
        # The graph takes one image (see dckd.deploy.export.trace_input); a batch runs image by image.
        outs = [self.session.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(x.shape[0])]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def forward(self, x: Tensor) -> Tensor:
        y = self.run_numpy(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(y).to(x.device)
