"""L_dcr: dynamic contrastive regularization (paper Eq. 4-6), with its history model.

The anchor is the student's output, the positive the teacher's, and the negatives the
history model's outputs on the clean LR input and N-1 degraded copies. The history model is a
lagging average of the (EMA) student, updated at growing steps (Eq. 6). Distances are L1
between VQGAN encoder features, level by level; the encoder passes are the step's shared ones.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dckd.config.base import NonNegative, Strict, TermConfig
from dckd.errors import CheckpointError
from dckd.terms.base import Term, TermSetup


class DegradationConfig(Strict):
    """The DCR degradation module; probabilities are per degraded copy (noise-only as released)."""

    type: Literal["noise", "blur", "resize", "mix", "custom"] = "noise"
    blur_prob: float = Field(default=0.0, ge=0.0, le=1.0)
    resize_prob: float = Field(default=0.0, ge=0.0, le=1.0)
    noise_prob: float = Field(default=1.0, ge=0.0, le=1.0)
    blur_kernel_sizes: list[int] = Field(default_factory=lambda: [3, 5, 7, 9, 11], min_length=1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    resize_up_prob: float = Field(default=0.25, ge=0.0, le=1.0)
    resize_up_range: tuple[float, float] = (1.0, 1.5)
    resize_down_range: tuple[float, float] = (0.5, 1.0)
    resize_modes: list[Literal["area", "bilinear", "bicubic"]] = Field(
        default_factory=lambda: ["area", "bilinear", "bicubic"], min_length=1
    )
    noise_sigma: tuple[float, float] = Field(default=(1.0, 30.0), description="on the 0-255 scale")
    gray_noise_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    released_shared_gray_noise: bool = Field(
        default=False,
        description="one grey noise field for the whole batch, scaled by each image's sigma, as BasicSR's "
        "noise helper in the release draws it; default: an independent field per image",
    )
    released_unclamped_resize: bool = Field(
        default=False,
        description="no clamp after the degradation, as released: bicubic overshoot of the resize back "
        "stays outside [0, 1] (the noise step is clipped either way); default: clamped to [0, 1]",
    )

    @model_validator(mode="before")
    @classmethod
    def _type_sets_probabilities(cls, data: Any) -> Any:
        """``type`` is the Table 6 switch: it fills the three probabilities unless given."""
        if isinstance(data, dict):
            kind = data.get("type", "noise")
            probs = {
                "noise": (0.0, 0.0, 1.0),
                "blur": (1.0, 0.0, 0.0),
                "resize": (0.0, 1.0, 0.0),
                "mix": (1.0, 1.0, 1.0),
            }.get(kind)
            if probs is not None:
                data = dict(data)
                for key, p in zip(("blur_prob", "resize_prob", "noise_prob"), probs):
                    data.setdefault(key, p)
        return data

    @field_validator("blur_kernel_sizes")
    @classmethod
    def _odd_kernels(cls, sizes: list[int]) -> list[int]:
        if any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(f"blur kernel sizes must be odd and positive, got {sizes}")
        return sizes


class HistoryConfig(Strict):
    """History model (Eq. 6): ``his = alpha*his + (1-alpha)*ema_student`` at growing steps."""

    alpha: float = Field(default=0.1, ge=0.0, le=1.0, description="attenuation rate")
    update_every: int = Field(default=1000, ge=1, description="initial update step s (Fig. 8b)")
    growth_milestones: list[int] = Field(
        default_factory=lambda: [100_000, 200_000],
        description="after each milestone the step grows by update_every (1000, 2000, 3000 as released)",
    )
    track: Literal["ema", "student"] = Field(
        default="ema", description="DCKD tracks the EMA student; MCLIR tracks the raw student"
    )


class DCRConfig(TermConfig):
    """Dynamic contrastive regularization (Eq. 4-6)."""

    weight: NonNegative = 0.1
    num_negatives: int = Field(default=5, ge=1, le=64, description="N, the clean LR included")
    level_weights: list[NonNegative] = Field(
        default_factory=lambda: [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0], min_length=1
    )
    eps: float = Field(default=1e-7, gt=0.0)
    degradation: DegradationConfig = Field(default_factory=DegradationConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)


class HistorySchedule:
    """When the history model is updated: ``t % s(t) == 0`` with a step that grows.

    ``s(t) = update_every * (1 + number of growth milestones below t)``: with the released
    values that is 1000 for iterations 1-100k, 2000 up to 200k and 3000 after.
    """

    def __init__(self, cfg: HistoryConfig) -> None:
        self.update_every = cfg.update_every
        self.milestones = sorted(cfg.growth_milestones)

    def step_at(self, iteration: int) -> int:
        return self.update_every * (1 + sum(1 for m in self.milestones if iteration > m))

    def due(self, iteration: int) -> bool:
        return iteration > 0 and iteration % self.step_at(iteration) == 0

    def update_iterations(self, start: int, end: int) -> list[int]:
        """Iterations in (start, end] at which an update happens (for logs and tests)."""
        return [t for t in range(start + 1, end + 1) if self.due(t)]


class DCR(Term):
    name = "dcr"
    config = DCRConfig
    needs_teacher = True
    needs_encoder = True
    v1_keys = {"history": "history", "history_state": "schedule"}

    def __init__(self, cfg: DCRConfig, history: Any) -> None:
        super().__init__(cfg)
        self.history = history
        self.schedule = HistorySchedule(cfg.history)
        self.updates = 0  # how many history updates so far, and the iteration of the last one
        self.last_update = 0

    @classmethod
    def build(cls, cfg: DCRConfig, setup: TermSetup) -> DCR:
        from dckd.training.averaging import frozen_copy

        return cls(cfg, frozen_copy(setup.student))

    @classmethod
    def check(cls, cfg: DCRConfig, experiment: Any) -> list[str]:
        levels = len(experiment.vqgan.ch_mult)
        if len(cfg.level_weights) != levels:
            return [f"method.dcr.level_weights: {len(cfg.level_weights)} entries but the VQGAN encoder "
                    f"has {levels} levels (vqgan.ch_mult)"]
        return []

    def gather(self, step: Any) -> None:
        import torch

        from dckd.losses.degradations import negative_inputs

        with torch.no_grad():  # one history pass for all N negatives
            neg_in = negative_inputs(step.lq, self.cfg.num_negatives, self.cfg.degradation, step.rng)
            self._negs = step.encoder.request(features=True, frozen_rows=step.frozen(self.history, neg_in))

    def loss(self, step: Any) -> Any:
        from dckd.losses import dynamic_contrastive_loss

        enc = step.encoder
        dcl = dynamic_contrastive_loss(enc.anchor_features(), enc.positive_features(),
                                       enc.frozen_features(self._negs), self.cfg.level_weights, self.cfg.eps)
        return self.cfg.weight * dcl

    def after_step(self, iteration: int, student: Any, ema: Any) -> None:
        from dckd.training.averaging import blend_into

        if self.schedule.due(iteration):
            blend_into(self.history, ema if self.cfg.history.track == "ema" else student, self.cfg.history.alpha)
            self.updates, self.last_update = self.updates + 1, iteration

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history.state_dict(),
                "schedule": {"updates": self.updates, "last_update": self.last_update}}

    def load_state_dict(self, state: dict[str, Any] | None, source: str) -> None:
        if state is None or state.get("history") is None:
            raise CheckpointError(f"{source}: has no history model but this run uses DCR")
        self.history.load_state_dict(state["history"])
        self.updates = int(state["schedule"]["updates"])
        self.last_update = int(state["schedule"]["last_update"])
