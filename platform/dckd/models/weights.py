"""Reading network weights from the checkpoint formats found in the wild.

Teachers come as BasicSR ``.pth`` files (``params_ema`` / ``params``), the EDSR-PyTorch / official
RCAN format (a plain state dict), Lightning ``.ckpt`` files (``state_dict`` with a ``model.``-style
prefix) or DDP saves (``module.`` prefix). All are read with ``weights_only=True``: a checkpoint is
data, and unpickling arbitrary objects would run code from whoever wrote the file.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import torch
from torch import Tensor

from dckd.errors import CheckpointError
from dckd.models.restorer import Restorer

# Containers that hold the state dict, tried in this order when no ``key`` is given.
# BasicSR saves the EMA weights (the ones it validates) as ``params_ema`` next to ``params``.
_CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net_g", "generator")
# Prefixes stripped when every key carries one: DDP, Lightning modules, GAN wrappers, Restorer.
_PREFIXES = ("module.", "model.", "net_g.", "generator.", "net.", "_orig_mod.")
# Buffers that are a function of the configuration, not learned: SwinIR's window bookkeeping.
# They depend on img_size/window_size only, so the model keeps its own and a checkpoint trained
# at another img_size (e.g. SwinIR's DF2K_s64w8 files) still loads.
_DERIVED = {"swinir": re.compile(r"(^|\.)(attn_mask|relative_position_index)$")}
_MAX_LISTED = 20


@dataclass
class LoadResult:
    """What a (possibly non-strict) load matched: key names of ``Restorer.net``."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint shape vs model shape"

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip wrapper prefixes shared by every key (repeatedly: ``model.module.`` etc.)."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def load_state_dict_file(path: str | PathLike[str], key: str | None = None) -> dict[str, Tensor]:
    """Read the network state dict stored in ``path``, whatever the container format.

    ``key`` picks the entry explicitly (e.g. ``"params"`` to skip BasicSR's EMA weights);
    otherwise ``params_ema``, ``params``, ``state_dict``... are tried, then the file itself as a
    plain state dict. Wrapper prefixes common to all keys are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused or unreadable: only tensors and plain containers are loaded "
            f"(weights_only=True) ({str(exc).splitlines()[0]})"
        ) from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors... for bad files
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"{path}: no entry {key!r}; top-level keys: {', '.join(map(str, obj))}")
        state = obj[key]
        if not _is_state_dict(state):
            raise CheckpointError(f"{path}: entry {key!r} is not a state dict of tensors")
    else:
        found = [k for k in _CONTAINER_KEYS if _is_state_dict(obj.get(k))]
        if found:
            state = obj[found[0]]
        elif _is_state_dict(obj):
            state = obj
        else:
            keys = ", ".join(map(str, list(obj)[:_MAX_LISTED]))
            raise CheckpointError(f"{path}: no state dict found (top-level keys: {keys})")
    return _strip_prefixes(dict(state))


def _convert_basicsr_rcan(state: dict[str, Tensor], model: Restorer) -> dict[str, Tensor]:
    """Rename BasicSR's RCAN keys to the EDSR-PyTorch names spandrel's RCAN uses.

    BasicSR (and DUKD/DCKD, which build on it) ships the official RCAN weights converted to its
    own naming and keeps the DIV2K mean as a constant instead of MeanShift convolutions; those
    constants are taken from the model.
    """
    if "conv_first.weight" not in state or not any(".residual_group." in k for k in state):
        return state
    groups = model.args.get("n_resgroups", 10)
    blocks = model.args.get("n_resblocks", 20)
    rules = [
        (r"^conv_first\.", "head.0."),
        (
            r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.",
            r"body.\1.body.\2.body.3.conv_du.0.",
        ),
        (
            r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.",
            r"body.\1.body.\2.body.3.conv_du.2.",
        ),
        (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.([02])\.", r"body.\1.body.\2.body.\3."),
        (r"^body\.(\d+)\.conv\.", rf"body.\1.body.{blocks}."),
        (r"^conv_after_body\.", f"body.{groups}."),
        (r"^upsample\.", "tail.0."),
        (r"^conv_last\.", "tail.1."),
    ]
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, k)
            if n:
                k = new
                break
        out[k] = v
    own = model.net.state_dict()
    for k in ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"):
        if k in own and k not in out:
            out[k] = own[k].clone()
    return out


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{title} ({len(keys)}): {shown}{more}"


def load_weights(
    model: Restorer, path: str | PathLike[str], key: str | None = None, strict: bool = True
) -> LoadResult:
    """Load the checkpoint at ``path`` into ``model.net``.

    ``strict``: any missing, unexpected or wrongly shaped key is a CheckpointError naming the file
    and listing them. Non-strict loads take every key whose name and shape match (e.g. an x2 model
    initialising an x4 one) and report the rest in the returned ``LoadResult``.
    """
    state = load_state_dict_file(path, key)
    if model.backbone == "rcan":
        state = _convert_basicsr_rcan(state, model)
    own = model.net.state_dict()
    derived = _DERIVED.get(model.backbone)
    if derived is not None:
        state = {k: v for k, v in state.items() if not derived.search(k)}
        own = {k: v for k, v in own.items() if not derived.search(k)}

    result = LoadResult()
    result.missing = sorted(k for k in own if k not in state)
    result.unexpected = sorted(k for k in state if k not in own)
    usable: dict[str, Tensor] = {}
    for k in sorted(set(own) & set(state)):
        if state[k].shape != own[k].shape:
            result.mismatched.append(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        else:
            usable[k] = state[k]
    result.loaded = sorted(usable)

    if strict and not result.clean:
        parts = [f"{path}: checkpoint does not fit {model.backbone} ({model.preset or 'custom'})"]
        if result.missing:
            parts.append(_listing("missing keys", result.missing))
        if result.unexpected:
            parts.append(_listing("unexpected keys", result.unexpected))
        if result.mismatched:
            parts.append(_listing("shape mismatches (checkpoint vs model)", result.mismatched))
        raise CheckpointError("; ".join(parts))
    if not usable:
        raise CheckpointError(f"{path}: no key of the checkpoint fits {model.backbone}")
    model.net.load_state_dict(usable, strict=False)
    return result
