"""FAKD (He et al., ICIP 2020): distil the spatial affinity of intermediate feature maps.

Also home of the forward-hook taps that feature-level methods (FAKD, MiPKD) read intermediate
features with: the networks run their ordinary forward (so the teacher's taps come from the
very no_grad pass that gives the kd target), and the hooks keep the named modules' outputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn

from dckd.errors import ConfigError


def spatial_affinity(feat: Tensor, eps: float = 1e-8) -> Tensor:
    """``A = F_hat^T F_hat`` (B, HW, HW): cosine similarity between every pair of positions.

    ``feat`` (B, C, H, W) is reshaped to (B, C, HW) and each position's column divided by its
    channel-wise L2 norm plus ``eps`` (official ``spatial_similarity``). Independent of C, so
    teacher and student of different widths compare directly.
    """
    f = feat.flatten(2)
    f = f / (f.norm(p=2, dim=1, keepdim=True) + eps)
    return f.transpose(1, 2) @ f


def fakd_loss(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], eps: float = 1e-8) -> Tensor:
    """``sum over taps of mean|A_S - A_T|`` (the official ``10*SA`` term without its weight).

    Teacher maps carry no gradient. Unlike DUKD's re-implementation (which sums through
    ``torch.tensor([...])`` and so loses the graph), the sum here back-propagates.
    """
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"{len(student_feats)} student and {len(teacher_feats)} teacher taps: they must pair up")
    total = student_feats[0].new_zeros(())
    for i, (fs, ft) in enumerate(zip(student_feats, teacher_feats)):
        if fs.shape[0] != ft.shape[0] or fs.shape[-2:] != ft.shape[-2:]:
            raise ValueError(
                f"tap {i}: student {tuple(fs.shape)} and teacher {tuple(ft.shape)} differ in batch or spatial size"
            )
        a_t = spatial_affinity(ft.detach(), eps)
        total = total + F.l1_loss(spatial_affinity(fs, eps), a_t)
    return total


# --------------------------------------------------------------------------- taps
def architecture(net: nn.Module) -> nn.Module:
    """The module that layer names are relative to: DDP's ``module``, then a Restorer's ``net``."""
    net = getattr(net, "module", net)
    return getattr(net, "net", net)


def resolve_layer(net: nn.Module, name: str, field: str) -> nn.Module:
    """The submodule ``name`` (e.g. ``body.2``; a leading ``net.`` is accepted) or a ConfigError."""
    root = architecture(net)
    key = name.removeprefix("net.") if name.startswith("net.") and not hasattr(root, "net") else name
    try:
        return root.get_submodule(key)
    except AttributeError:
        raise ConfigError(f"{field}: no module {name!r} in {type(root).__name__}") from None


def _as_image(output: object, inputs: tuple) -> Tensor:
    """A (B, C, H, W) map: token outputs (B, HW, C) of SwinIR blocks use their ``x_size`` input."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(f"tapped module returned {type(output).__name__}, not a tensor")
    if output.dim() == 4:
        return output
    if output.dim() == 3 and len(inputs) > 1 and isinstance(inputs[1], (tuple, list)) and len(inputs[1]) == 2:
        h, w = (int(v) for v in inputs[1])
        b, n, c = output.shape
        if n == h * w:
            return output.transpose(1, 2).reshape(b, c, h, w)
    raise ValueError(f"tapped module output of shape {tuple(output.shape)} is not a feature map")


@contextmanager
def tap_outputs(net: nn.Module, names: Sequence[str], field: str = "layers") -> Iterator[dict[str, Tensor]]:
    """Within the block, every forward of ``net`` records the outputs of the modules ``names``.

    The outputs are kept as they are, not copied: a later in-place op of the network shows in
    them (RCAN's ``res += x`` after its body adds the global skip to the body-end tap, as in the
    official FAKD code). The hooks are removed on exit, so copies of ``net`` never inherit them.
    """
    feats: dict[str, Tensor] = {}
    handles = []
    try:
        for name in dict.fromkeys(names):
            module = resolve_layer(net, name, field)

            def hook(_m: nn.Module, inputs: tuple, output: object, name: str = name) -> None:
                feats[name] = _as_image(output, inputs)

            handles.append(module.register_forward_hook(hook))
        yield feats
    finally:
        for h in handles:
            h.remove()


def _depth(net: nn.Module, attr: str) -> int:
    return len(getattr(architecture(net), attr))


def auto_layers(student: nn.Module, teacher: nn.Module) -> tuple[list[str], list[str]]:
    """Default FAKD taps for a student/teacher pair of the same backbone.

    RCAN: head conv, the residual groups at 3/10 and 7/10 of the depth (groups 2 and 6 of 10,
    as the official code and DUKD), the body-end conv. SwinIR (unverified: no official choice):
    every student RSTB output, each paired with the teacher RSTB at the same relative depth.
    """
    bs = getattr(getattr(student, "module", student), "backbone", None)
    bt = getattr(getattr(teacher, "module", teacher), "backbone", None)
    field = "method.fakd.student_layers"
    if bs != bt:
        raise ConfigError(f"{field}: 'auto' needs one backbone for both networks, got {bs} and {bt}; list layers")
    if bs == "rcan":
        out = []
        for net in (student, teacher):
            n = _depth(net, "body") - 1  # the body's last module is the body-end conv
            g1, g2 = max(0, (3 * n + 9) // 10 - 1), max(0, (7 * n + 9) // 10 - 1)
            out.append(["head", f"body.{g1}", f"body.{g2}", f"body.{n}"])
        return out[0], out[1]
    if bs == "swinir":
        ns, nt = _depth(student, "layers"), _depth(teacher, "layers")
        s_layers = [f"layers.{i}" for i in range(ns)]
        t_layers = [f"layers.{(2 * (i + 1) * nt + ns) // (2 * ns) - 1}" for i in range(ns)]
        return s_layers, t_layers
    raise ConfigError(f"{field}: no automatic taps for backbone {bs!r} (rcan, swinir); list module names")


def fakd_layers(student_layers: str | list[str], teacher_layers: str | list[str], student: nn.Module,
                teacher: nn.Module) -> tuple[list[str], list[str]]:
    """The configured taps, ``auto`` resolved, each checked to exist (ConfigError naming the field)."""
    if student_layers == "auto" or teacher_layers == "auto":
        s, t = auto_layers(student, teacher)
    else:
        s, t = list(student_layers), list(teacher_layers)
    for name in s:
        resolve_layer(student, name, "method.fakd.student_layers")
    for name in t:
        resolve_layer(teacher, name, "method.fakd.teacher_layers")
    return s, t
