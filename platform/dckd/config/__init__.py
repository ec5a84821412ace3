"""Experiment configuration: pydantic models, YAML loading and ``--set`` overrides.

Everything a run does is declared here, so a bad value is refused before any work starts,
with the file and the dotted field path in the message. The defaults are the authors'
released configuration (see ../shared/notes/reference-implementation.md); the paper-only
variants are named options. Importing this package loads neither torch nor taming nor ray:
configs, tables and sweeps validate on any machine. Each loss term's section lives with
the term (``dckd.terms.<name>``); ``method`` is built from the term registry.
"""

from dckd.config.base import ExistingPath, NonNegative, Strict, TermConfig
from dckd.config.data import BenchmarkConfig, DataConfig, ProgressiveConfig, TrainDataConfig
from dckd.config.experiment import ExperimentConfig
from dckd.config.loading import (
    ROOT_VARIABLES,
    apply_overrides,
    deep_merge,
    format_errors,
    load_config,
    load_model_file,
    parse_override,
    read_config_tree,
    read_yaml,
    root_path,
    substitute_roots,
    validate_model,
)
from dckd.config.method import (
    ENCODER_TERMS,
    METHOD_TERMS,
    TEACHER_TERMS,
    TERM_NAMES,
    MethodConfig,
    MethodPreset,
)
from dckd.config.models import ModelSpec
from dckd.config.training import (
    EvalConfig,
    OptimConfig,
    RayConfig,
    ScheduleConfig,
    TrackingConfig,
    TrainConfig,
)
from dckd.config.vqgan import VQGANSpec
from dckd.terms.dcr import DCRConfig, DegradationConfig, HistoryConfig
from dckd.terms.dmm import DMMConfig
from dckd.terms.dukd import DUKDConfig
from dckd.terms.fakd import FAKDConfig
from dckd.terms.lcr import LCRConfig
from dckd.terms.mclir import MCLIRConfig
from dckd.terms.mipkd import MiPKDConfig
from dckd.terms.registry import METHOD_PRESETS, PRESET_SWITCHES, RELEASE_SWITCHES

__all__ = [
    "ENCODER_TERMS", "METHOD_PRESETS", "METHOD_TERMS", "PRESET_SWITCHES", "RELEASE_SWITCHES", "ROOT_VARIABLES",
    "TEACHER_TERMS", "TERM_NAMES", "BenchmarkConfig", "DCRConfig", "DMMConfig", "DUKDConfig", "DataConfig",
    "DegradationConfig", "EvalConfig", "ExistingPath", "ExperimentConfig", "FAKDConfig", "HistoryConfig",
    "LCRConfig", "MCLIRConfig", "MethodConfig", "MethodPreset", "MiPKDConfig", "ModelSpec", "NonNegative",
    "OptimConfig", "ProgressiveConfig", "RayConfig", "ScheduleConfig", "Strict", "TermConfig",
    "TrackingConfig", "TrainConfig", "TrainDataConfig", "VQGANSpec", "apply_overrides", "deep_merge",
    "format_errors", "load_config", "load_model_file", "parse_override", "read_config_tree", "read_yaml",
    "root_path", "substitute_roots", "validate_model",
]
