"""Optional ways to run the same step faster: channels-last layout and compiled frozen networks.

Neither changes a parameter value or a state dict; each is kept on a device only where
``dckd bench --layouts`` shows it pays there (README, "Speed"). A compile failure, at build
time or at the first call, falls back to the eager network with a note: never a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def apply_channels_last(nets: list[tuple[str, nn.Module]], note: Callable[[str], None]) -> None:
    """Convert these (convolutional) networks to the channels-last memory format, in place."""
    for _label, net in nets:
        net.to(memory_format=torch.channels_last)
    if nets:
        note("train.channels_last: " + ", ".join(label for label, _ in nets) + " in channels-last layout")
    else:
        note("train.channels_last: no convolutional network in this run; nothing converted")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def compile_frozen(net: nn.Module | None, label: str, note: Callable[[str], None]) -> nn.Module | None:
    """``torch.compile`` a frozen network in place (its module names, hooks and state dict unchanged).

    The compiled call replaces the module's ``__call__`` (``nn.Module.compile``'s mechanism);
    if compiling fails, now or at any call, the module goes back to eager for good and the run
    notes why.
    """
    if net is None:
        return None
    try:
        compiled = torch.compile(net._call_impl)
    except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
        note(f"train.compile: the {label} could not be compiled ({_first_line(exc)}); it runs eagerly")
        return net

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            net._compiled_call_impl = None
            note(f"train.compile: compiling the {label} failed ({_first_line(exc)}); it runs eagerly")
            return net._call_impl(*args, **kwargs)

    net._compiled_call_impl = call
    note(f"train.compile: the {label} is compiled (torch.compile, compiled at its first pass)")
    return net
