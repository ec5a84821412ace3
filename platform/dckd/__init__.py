"""dckd: Dynamic Contrastive Knowledge Distillation for image restoration.

The library is pure torch: configuration, models, the VQGAN feature encoder, losses,
data, metrics and a single-process engine. The Ray layer lives in ``trainers/`` and
calls into this package, never the other way round.
"""

__version__ = "0.1.0"
