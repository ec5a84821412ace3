"""Loss terms, each one idea in one place; ``dckd.methods`` composes them from the config."""

from dckd.losses.contrastive import dynamic_contrastive_loss
from dckd.losses.distribution import distribution_loss
from dckd.losses.label_consistency import LabelConsistencyOps, augment, revert

__all__ = [
    "LabelConsistencyOps",
    "augment",
    "distribution_loss",
    "dynamic_contrastive_loss",
    "revert",
]
