"""Restoration networks: named presets, a uniform wrapper, checkpoint loading.

Names are imported on first use, so ``dckd.models.presets`` (plain data: which architecture
with which arguments) can be read by the config layer without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "PRESETS": "presets", "Preset": "presets",
    "Restorer": "restorer", "backbone_names": "restorer", "build_model": "restorer", "build_preset": "restorer",
    "count_params": "restorer", "preset_param_count": "restorer",
    "LoadResult": "weights", "load_state_dict_file": "weights", "load_weights": "weights",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'dckd.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dckd.models.{_NAMES[name]}"), name)
    globals()[name] = value
    return value
