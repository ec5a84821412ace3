"""Restoration networks: named presets, a uniform wrapper, checkpoint loading."""

from dckd.models.presets import PRESETS, Preset
from dckd.models.restorer import (
    Restorer,
    backbone_names,
    build_model,
    build_preset,
    count_params,
    preset_param_count,
)
from dckd.models.weights import LoadResult, load_state_dict_file, load_weights

__all__ = [
    "PRESETS",
    "LoadResult",
    "Preset",
    "Restorer",
    "backbone_names",
    "build_model",
    "build_preset",
    "count_params",
    "load_state_dict_file",
    "load_weights",
    "preset_param_count",
]
