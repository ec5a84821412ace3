"""L_mipkd: MiPKD's feature and block prior mixers (Li et al. 2024), trained with the student.

The mixer's encoders and decoders are this term's own trainable state: optimised in an
optimizer group of their own, saved in checkpoints under ``mipkd``, never exported.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from dckd.config.base import NonNegative, TermConfig
from dckd.errors import CheckpointError
from dckd.terms.base import Term, TermSetup


class MiPKDConfig(TermConfig):
    """MiPKD (Li et al. 2024): feature and block prior mixers. ``weight`` is lambda_feat.

    No official code exists; the widths, mask and switch probabilities are this platform's
    choices (docs/baselines.md).
    """

    weight: NonNegative = 1.0
    block_weight: NonNegative = Field(default=0.1, description="lambda_block; 0 skips the block prior mixer")
    stages: Literal["auto"] | int = Field(
        default="auto", description="stages the networks are cut into; auto: min(4, student depth, teacher depth)"
    )
    latent_channels: int | None = Field(default=None, ge=1, description="shared latent width; default: teacher's")
    mask_prob: float = Field(default=0.5, ge=0.0, le=1.0, description="share of latent elements from the teacher")
    switch_prob: float = Field(default=0.5, ge=0.0, le=1.0, description="chance a mixed stage is the student's")
    ae_weight: NonNegative = Field(default=1.0, description="auto-encoder reconstruction loss inside L_feat")

    @field_validator("stages")
    @classmethod
    def _positive_stages(cls, value: Literal["auto"] | int) -> Literal["auto"] | int:
        if value != "auto" and value < 1:
            raise ValueError(f"stages must be 'auto' or a positive integer, got {value}")
        return value


class MiPKD(Term):
    name = "mipkd"
    config = MiPKDConfig
    needs_teacher = True
    v1_keys = {"mipkd": "mixer"}

    def __init__(self, cfg: MiPKDConfig, mixer: Any) -> None:
        super().__init__(cfg)
        self.mixer = mixer

    @classmethod
    def build(cls, cfg: MiPKDConfig, setup: TermSetup) -> MiPKD:
        from dckd.losses.mipkd import build_mixer

        mixer = build_mixer(setup.student, setup.teacher, cfg.stages, cfg.latent_channels, cfg.mask_prob,
                            cfg.switch_prob, cfg.ae_weight, block=cfg.block_weight > 0).to(setup.device)
        if cfg.block_weight > 0 and not mixer.block:
            setup.note("MiPKD: one stage only (a network has a single block), so the block prior mixer is off")
        return cls(cfg, mixer)

    @classmethod
    def check(cls, cfg: MiPKDConfig, experiment: Any) -> list[str]:
        s, t = _backbones(experiment)
        if t is not None and s != t:
            return [f"method.mipkd: student ({s}) and teacher ({t}) must share a backbone"]
        if s not in ("rcan", "swinir"):  # the stage definitions of losses/mipkd.py
            return [f"method.mipkd: no stage definitions for backbone {s!r} (supported: rcan, swinir)"]
        return []

    def plan(self, step: Any) -> None:
        step.tap(student=self.mixer.student_plan.taps, teacher=self.mixer.teacher_plan.taps)

    def loss(self, step: Any) -> Any:
        l_feat, l_block = self.mixer.losses(step.student, step.teacher, step.s_taps, step.t_taps,
                                            step.teacher_out, step.rng.cpu, step.rng.device)
        term = self.cfg.weight * l_feat
        if l_block is not None and self.cfg.block_weight:
            term = term + self.cfg.block_weight * l_block
        return term

    def train(self, mode: bool = True) -> None:
        self.mixer.train(mode)

    def trainables(self) -> list[Any]:
        return list(self.mixer.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {"mixer": self.mixer.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None, source: str) -> None:
        if state is None or state.get("mixer") is None:
            raise CheckpointError(f"{source}: has no MiPKD mixer but this run uses MiPKD")
        self.mixer.load_state_dict(state["mixer"])


def _backbones(experiment: Any) -> tuple[str | None, str | None]:
    s, t = experiment.student, experiment.teacher
    return s.resolved_backbone, (t.resolved_backbone if t is not None else None)
