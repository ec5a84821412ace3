"""A uniform wrapper around the restoration architectures of spandrel / spandrel-extra-arches.

Why a wrapper rather than the classes themselves: the distillation loop feeds one input batch
to a teacher, a student and a history model, so every network must leave the caller's tensor
untouched, take any input size, and return exactly ``(H*scale, W*scale)``. The upstream classes
differ on all three (RCAN multiplies its input in place; Restormer needs sides divisible by 8;
SwinIR and NAFNet pad themselves). ``Restorer`` irons that out; the architecture itself is kept
unmodified as ``Restorer.net`` so its state dict stays compatible with the official checkpoints.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dckd.errors import ConfigError
from dckd.models.presets import PRESETS


def _import_quietly(load: Callable[[], type[nn.Module]]) -> type[nn.Module]:
    """spandrel's import warns about torch.jit.script deprecation; that is not the user's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return load()


def _swinir() -> type[nn.Module]:
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR


def _rcan() -> type[nn.Module]:
    from spandrel.architectures.RCAN import RCAN

    return RCAN


def _nafnet() -> type[nn.Module]:
    from spandrel.architectures.NAFNet import NAFNet

    return NAFNet


def _restormer() -> type[nn.Module]:
    from spandrel_extra_arches.architectures.Restormer import Restormer

    return Restormer


@dataclass(frozen=True)
class _Backbone:
    """How one architecture class is built and called.

    ``scale_arg``: the constructor argument holding the SR factor (None: same-size output).
    ``pad_multiple``: the side multiple the wrapper pads to (1: the class copes by itself; 0: read
    ``window_size`` from the built network).
    ``clone_input``: the class writes into its input tensor, so the wrapper hands it a copy.
    """

    load: Callable[[], type[nn.Module]]
    scale_arg: str | None
    pad_multiple: int
    clone_input: bool


# Checked in tests/unit/test_models.py against the raw classes:
# - RCAN: ``x *= rgb_range`` in forward mutates the caller's tensor (spandrel 0.4.2).
# - SwinIR: reflect-pads to ``window_size`` and crops in its own forward. The wrapper pads first
#   the same way, so inputs smaller than the padding (where reflect fails) fall back to replicate.
# - NAFNet: zero-pads to 2**len(encoders) and crops in its own forward (as the official test code).
# - Restormer: three 2x pixel-unshuffle downsamplings and no padding of its own, so sides must be
#   multiples of 8; the official test script reflect-pads bottom/right and crops, as done here.
_BACKBONES: dict[str, _Backbone] = {
    "swinir": _Backbone(_swinir, "upscale", 0, False),
    "rcan": _Backbone(_rcan, "scale", 1, True),
    "nafnet": _Backbone(_nafnet, None, 1, False),
    "restormer": _Backbone(_restormer, None, 8, False),
}


def backbone_names() -> tuple[str, ...]:
    """The backbone names ``build_model`` accepts."""
    return tuple(_BACKBONES)


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right to a multiple: reflect as the official test scripts, replicate if too small."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class Restorer(nn.Module):
    """One restoration network with a uniform contract.

    ``forward(x)`` takes ``(B, C, H, W)`` floats in [0, 1] of any size, never writes into ``x``,
    and returns ``(B, C, H*scale, W*scale)`` (``scale`` is 1 for deblurring/deraining models).
    The wrapped architecture is ``net``; its state dict is the checkpoint format.
    """

    def __init__(
        self, net: nn.Module, backbone: str, scale: int, args: Mapping[str, Any], preset: str | None = None
    ) -> None:
        super().__init__()
        if backbone not in _BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}; known backbones: {', '.join(_BACKBONES)}")
        self.net = net
        self.backbone = backbone
        self.scale = scale
        self.preset = preset
        self.args: dict[str, Any] = copy.deepcopy(dict(args))
        spec = _BACKBONES[backbone]
        self.pad_multiple = spec.pad_multiple or int(getattr(net, "window_size", 1))
        self.clone_input = spec.clone_input
        _fix_constants(net, backbone)

    def spec(self) -> dict[str, Any]:
        """What rebuilds this network: ``build_model(**restorer.spec())``."""
        return {"backbone": self.backbone, "args": copy.deepcopy(self.args), "scale": self.scale}

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"{self.backbone} expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.clone_input:
            x = x.clone()
        if self.pad_multiple > 1:
            x = _pad_to_multiple(x, self.pad_multiple)
        y = self.net(x)
        return y[..., : h * self.scale, : w * self.scale]

    def extra_repr(self) -> str:
        name = f", preset={self.preset}" if self.preset else ""
        return f"backbone={self.backbone}, scale={self.scale}{name}"


def _fix_constants(net: nn.Module, backbone: str) -> None:
    """Make fixed normalisation constants behave as constants (state dicts are unchanged).

    SwinIR keeps its RGB mean as a plain tensor attribute: ``.to(device)`` leaves it behind and
    every forward copies it over. As a non-persistent buffer it moves with the module and stays
    out of the state dict (official checkpoints have no such key). RCAN's MeanShift convolutions
    try to freeze themselves with ``self.requires_grad = False``, which sets a plain attribute and
    freezes nothing; BasicSR's RCAN (which the DCKD code builds on) uses a fixed mean, so they are
    frozen here. They stay in the state dict, as in the official RCAN checkpoints.
    """
    if backbone == "swinir":
        mean = net.__dict__.pop("mean", None)
        if isinstance(mean, Tensor):
            net.register_buffer("mean", mean, persistent=False)
    elif backbone == "rcan":
        for name in ("sub_mean", "add_mean"):
            module = getattr(net, name, None)
            if module is not None:
                for p in module.parameters():
                    p.requires_grad_(False)


def _constructor_args(cls: type[nn.Module]) -> list[str]:
    return [n for n in inspect.signature(cls.__init__).parameters if n != "self"]


def build_model(backbone: str, args: Mapping[str, Any] | None = None, scale: int | None = None) -> Restorer:
    """Build ``backbone`` with constructor ``args`` (spandrel's keyword names) at SR ``scale``.

    ``scale`` may be left None when ``args`` already gives the factor (``upscale`` for SwinIR,
    ``scale`` for RCAN); it must be None or 1 for NAFNet/Restormer, which keep the input size.
    Unset arguments take spandrel's defaults; notably SwinIR's ``drop_path_rate`` is 0.1 there,
    which is also BasicSR's default when training SwinIR (the DCKD configs do not change it).
    """
    if backbone not in _BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; known backbones: {', '.join(_BACKBONES)}")
    spec = _BACKBONES[backbone]
    kwargs = copy.deepcopy(dict(args or {}))
    if spec.scale_arg is None:
        if scale not in (None, 1):
            raise ConfigError(f"{backbone} restores at the input size; scale must be 1 or unset, got {scale}")
        scale = 1
    else:
        given = kwargs.get(spec.scale_arg)
        if scale is None:
            if given is None:
                raise ConfigError(f"{backbone} needs a scale (or args.{spec.scale_arg})")
            scale = int(given)
        elif given is not None and int(given) != scale:
            raise ConfigError(f"scale {scale} contradicts args.{spec.scale_arg}={given} for {backbone}")
        if scale not in (1, 2, 3, 4, 8):
            raise ConfigError(f"{backbone}: unsupported scale {scale} (1, 2, 3, 4 or 8)")
        kwargs[spec.scale_arg] = scale
    cls = _import_quietly(spec.load)
    accepted = _constructor_args(cls)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{backbone}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    with warnings.catch_warnings():
        # SwinIR's relative-position code calls torch.meshgrid without ``indexing``.
        warnings.filterwarnings("ignore", message=".*torch.meshgrid.*", category=UserWarning)
        try:
            net = cls(**kwargs)
        except (TypeError, ValueError, AssertionError, NotImplementedError, KeyError) as exc:
            raise ConfigError(f"{backbone}: cannot build with {kwargs}: {exc}") from exc
    stored = {k: v for k, v in kwargs.items() if k != spec.scale_arg}
    return Restorer(net, backbone, scale, stored)


def build_preset(name: str, **overrides: Any) -> Restorer:
    """Build the preset ``name``; ``overrides`` replace or add constructor arguments.

    ``scale=`` among the overrides changes the SR factor (e.g. an x2 preset built at x4).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    scale = overrides.pop("scale", preset.scale)
    spec = _BACKBONES[preset.backbone]
    if spec.scale_arg is not None and spec.scale_arg in overrides:
        scale = overrides.pop(spec.scale_arg)
    model = build_model(preset.backbone, {**preset.args, **overrides}, scale)
    model.preset = name
    return model


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them by default: the paper's counts include RCAN's mean shifts)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def preset_param_count(name: str) -> int:
    """Exact parameter count of a preset, from building it (no estimate to drift from the code).

    Built on the meta device where the class allows; SwinIR (``Tensor.item()`` in its constructor)
    and RCAN (``weight.data = ...``) cannot be, and are built on the CPU with one intra-op thread:
    construction is thousands of tiny ops, which on a busy 2-core machine run ~6x slower with two
    threads (OpenMP barriers) than with one. The thread count is restored afterwards.
    """
    try:
        with torch.device("meta"):
            return count_params(build_preset(name))
    except (RuntimeError, NotImplementedError):
        pass
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return count_params(build_preset(name))
    finally:
        torch.set_num_threads(threads)
