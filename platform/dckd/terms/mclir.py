"""L_mclir: MCLIR (Wu et al. 2024): push the output away from lagged copies of the student.

Distances are perceptual (VGG16 feature maps). The negative models are this term's own
frozen state: refreshed from the raw student on their own schedules, saved in checkpoints.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from dckd.config.base import ExistingPath, NonNegative, TermConfig
from dckd.errors import CheckpointError
from dckd.terms.base import Term, TermSetup


class MCLIRConfig(TermConfig):
    """MCLIR (Wu et al. 2024): push the output away from lagged copies of the student in VGG16 space.

    ``weight`` is lambda; negative k is refreshed every ``neg_iter[k]`` iterations as
    ``neg = neg_decay*neg + (1-neg_decay)*student``. Defaults: the official FFANet config.
    """

    weight: NonNegative = 0.001
    neg_iter: list[int] = Field(default_factory=lambda: [100, 200, 500, 1000], min_length=1)
    neg_decay: float = Field(default=0.1, ge=0.0, le=1.0)
    neg_start: float = Field(
        default=0.1, ge=0.0, le=1.0, description="share of a fresh random network in each initial negative"
    )
    vgg_layers: list[str] = Field(default_factory=lambda: ["relu1_2", "relu2_2", "relu3_3"], min_length=1)
    layer_weights: list[NonNegative] = Field(default_factory=lambda: [0.2, 0.3, 0.5], min_length=1)
    vgg_checkpoint: ExistingPath | None = Field(
        default=None, description="torchvision vgg16 state dict; without it VGG has random weights (noted)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> MCLIRConfig:
        if any(k < 1 for k in self.neg_iter):
            raise ValueError(f"neg_iter entries must be positive iteration counts, got {self.neg_iter}")
        if len(self.vgg_layers) != len(self.layer_weights):
            raise ValueError(
                f"layer_weights has {len(self.layer_weights)} entries for {len(self.vgg_layers)} vgg_layers"
            )
        return self


class MCLIR(Term):
    name = "mclir"
    config = MCLIRConfig
    v1_keys = {"mclir_negatives": "negatives"}

    def __init__(self, cfg: MCLIRConfig, negatives: list[Any], vgg: Any) -> None:
        super().__init__(cfg)
        self.negatives, self.vgg = negatives, vgg

    @classmethod
    def build(cls, cfg: MCLIRConfig, setup: TermSetup) -> MCLIR:
        import logging

        from dckd.losses.perceptual import VGGFeatures  # torchvision: only when used
        from dckd.training.averaging import blend_into, frozen_copy

        negatives = []
        for _ in cfg.neg_iter:  # a fresh network blended with the student: neg = a*fresh + (1-a)*student
            neg = frozen_copy(setup.build_student()).to(setup.device)
            blend_into(neg, setup.student, cfg.neg_start)
            negatives.append(neg)
        log = setup.note if cfg.vgg_checkpoint is None else logging.getLogger("dckd").info
        vgg = VGGFeatures(cfg.vgg_layers, cfg.vgg_checkpoint, log=log).to(setup.device)
        return cls(cfg, negatives, vgg)

    def loss(self, step: Any) -> Any:
        import torch

        from dckd.losses.perceptual import negative_perceptual_distance

        negs = torch.cat([step.frozen(neg, step.lq) for neg in self.negatives], dim=0)
        return -self.cfg.weight * negative_perceptual_distance(self.vgg, step.out, negs, self.cfg.layer_weights)

    def after_step(self, iteration: int, student: Any, ema: Any) -> None:
        from dckd.training.averaging import blend_into

        for neg, every in zip(self.negatives, self.cfg.neg_iter):
            if iteration % every == 0:  # MCLIR tracks the raw student, not the EMA
                blend_into(neg, student, self.cfg.neg_decay)

    def state_dict(self) -> dict[str, Any]:
        return {"negatives": [neg.state_dict() for neg in self.negatives]}

    def load_state_dict(self, state: dict[str, Any] | None, source: str) -> None:
        saved = (state or {}).get("negatives") or []
        if len(saved) != len(self.negatives):
            raise CheckpointError(
                f"{source}: has {len(saved)} MCLIR negative models, this run uses {len(self.negatives)}"
            )
        for neg, sd in zip(self.negatives, saved):
            neg.load_state_dict(sd)
