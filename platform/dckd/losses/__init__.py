"""The math of the loss terms, each one idea in one place; the terms (``dckd.terms``) call it."""

from dckd.losses.contrastive import dynamic_contrastive_loss
from dckd.losses.distribution import distribution_loss
from dckd.losses.fakd import fakd_layers, fakd_loss, spatial_affinity, tap_outputs
from dckd.losses.label_consistency import LabelConsistencyOps, augment, revert
from dckd.losses.mipkd import MiPKDMixer, build_mixer

__all__ = [
    "LabelConsistencyOps",
    "MiPKDMixer",
    "augment",
    "build_mixer",
    "distribution_loss",
    "dynamic_contrastive_loss",
    "fakd_layers",
    "fakd_loss",
    "revert",
    "spatial_affinity",
    "tap_outputs",
]
