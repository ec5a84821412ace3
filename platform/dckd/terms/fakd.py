"""L_fakd: FAKD's spatial-affinity distillation (He et al. 2020) on tapped intermediate maps.

The maps come from forward hooks on the step's one teacher pass and one student pass.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from dckd.config.base import NonNegative, TermConfig
from dckd.terms.base import Term, TermSetup


class FAKDConfig(TermConfig):
    """FAKD spatial-affinity distillation (He et al. 2020), weighted as DUKD's BasicSR re-implementation.

    Layers are module names inside the architecture (its checkpoint keys without the parameter,
    e.g. ``body.2``), paired in order; ``auto`` picks per backbone (see docs/baselines.md).
    """

    weight: NonNegative = 10.0
    student_layers: Literal["auto"] | list[str] = "auto"
    teacher_layers: Literal["auto"] | list[str] = "auto"
    eps: float = Field(default=1e-8, gt=0.0, description="added to each position's channel L2 norm")

    @model_validator(mode="after")
    def _paired(self) -> FAKDConfig:
        s, t = self.student_layers, self.teacher_layers
        if (s == "auto") != (t == "auto"):
            raise ValueError("student_layers and teacher_layers must both be 'auto' or both be lists")
        if isinstance(s, list) and isinstance(t, list) and (len(s) != len(t) or not s):
            raise ValueError(f"student_layers ({len(s)}) and teacher_layers ({len(t)}) must pair up, one to one")
        return self


class FAKD(Term):
    name = "fakd"
    config = FAKDConfig
    needs_teacher = True

    def __init__(self, cfg: FAKDConfig, student_layers: list[str], teacher_layers: list[str]) -> None:
        super().__init__(cfg)
        self.student_layers, self.teacher_layers = student_layers, teacher_layers

    @classmethod
    def build(cls, cfg: FAKDConfig, setup: TermSetup) -> FAKD:
        from dckd.losses import fakd_layers

        return cls(cfg, *fakd_layers(cfg.student_layers, cfg.teacher_layers, setup.student, setup.teacher))

    @classmethod
    def check(cls, cfg: FAKDConfig, experiment: Any) -> list[str]:
        s, t = _backbones(experiment)
        if cfg.student_layers == "auto" and t is not None and s != t:
            return [f"method.fakd.student_layers: 'auto' needs one backbone for both networks, got {s} and {t}; "
                    "list layers"]
        if cfg.student_layers == "auto" and s not in ("rcan", "swinir"):
            return [f"method.fakd.student_layers: no automatic taps for backbone {s!r} (rcan, swinir); "
                    "list module names"]
        return []

    def plan(self, step: Any) -> None:
        step.tap(student=self.student_layers, teacher=self.teacher_layers)

    def loss(self, step: Any) -> Any:
        from dckd.losses import fakd_loss

        b = step.b
        return self.cfg.weight * fakd_loss([step.s_taps[n][:b] for n in self.student_layers],
                                           [step.t_taps[n][:b] for n in self.teacher_layers], self.cfg.eps)


def _backbones(experiment: Any) -> tuple[str | None, str | None]:
    s, t = experiment.student, experiment.teacher
    return s.resolved_backbone, (t.resolved_backbone if t is not None else None)
