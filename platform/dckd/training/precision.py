"""The arithmetic of a training step: fp32, or bf16 where the hardware runs it natively.

bf16 is used for the network passes only. The frozen networks (teacher, history model, the
frozen VQGAN pass) run under ``no_grad`` inside an autocast region, the student's forward and
the differentiable VQGAN pass inside one too; every result leaves the region cast to fp32
(``to_fp32``), so the losses, ratios, softmaxes and reductions of ``dckd.losses`` run in fp32
outside it. Parameters, the EMA, the history model and the optimizer state are never cast:
autocast casts a weight for the matmul or convolution that reads it and keeps the fp32 master.
bf16 has fp32's exponent range, so no loss scaling is needed (fp16 would need a grad scaler;
it is not offered, see ``PRECISIONS``).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

#: What ``train.precision`` accepts. fp16 is left out: it needs a grad scaler and an
#: overflow-skipping step, and every GPU of the clusters this targets (Ampere and newer) and
#: the CPUs with native 16-bit arithmetic (AMX, AVX-512 BF16) run bf16.
PRECISIONS = ("fp32", "bf16", "auto")

#: CPU flags (``/proc/cpuinfo``) that give bf16 matmuls and convolutions in hardware.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 flags this CPU reports (Linux; empty elsewhere or when none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return tuple(f for f in CPU_BF16_FLAGS if f in flags)
    return ()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


@dataclass(frozen=True)
class Precision:
    """The resolved precision of a run: what its passes compute in, on which device, and why."""

    name: Literal["fp32", "bf16"]
    device_type: str
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The region for network passes (a no-op in fp32)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)

    def describe(self) -> str:
        return f"precision {self.name}: {self.reason}"


FP32_CPU = Precision("fp32", "cpu", "fp32 requested")


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """``train.precision`` on this device; ``auto`` picks bf16 only where it runs natively."""
    kind = device.type
    if requested == "fp32":
        return Precision("fp32", kind, "train.precision=fp32")
    if requested not in ("bf16", "auto"):
        raise ValueError(f"train.precision: {requested!r} is not one of {', '.join(PRECISIONS)}")
    if kind == "cuda":
        ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        why = f"{name} {'supports' if ok else 'does not support'} bf16"
    elif kind == "cpu":
        flags = cpu_bf16_flags()
        ok = bool(flags)
        why = (f"{cpu_model()} has {' and '.join(flags)}" if ok else
               f"{cpu_model()} has neither {' nor '.join(CPU_BF16_FLAGS)}: bf16 would be emulated")
    else:
        ok, why = False, f"no bf16 support known for device type {kind!r}"
    if requested == "auto":
        return Precision("bf16" if ok else "fp32", kind, f"train.precision=auto: {why}")
    # bf16 asked for explicitly: honoured (it computes correctly everywhere), with the reason noted.
    return Precision("bf16", kind, f"train.precision=bf16 ({why})")


def to_fp32(x: Any) -> Any:
    """Tensors (and lists/tuples/dicts of them) cast to fp32 where they are in a 16-bit float type."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    if isinstance(x, list):
        return [to_fp32(v) for v in x]
    if isinstance(x, tuple):
        return tuple(to_fp32(v) for v in x)
    if isinstance(x, dict):
        return {k: to_fp32(v) for k, v in x.items()}
    return x
