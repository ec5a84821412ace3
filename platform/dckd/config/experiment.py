"""The experiment: every section together, and the checks that need more than one section.

Each term's own cross-section checks (``Term.check``) run here too, so a constraint such as
DUKD's tiles against the scale fails when the file is read, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from dckd.config.base import Strict
from dckd.config.data import DataConfig
from dckd.config.method import MethodConfig
from dckd.config.models import ModelSpec
from dckd.config.secrets import masked
from dckd.config.training import (
    EvalConfig,
    OptimConfig,
    RayConfig,
    ScheduleConfig,
    TrackingConfig,
    TrainConfig,
)
from dckd.config.vqgan import VQGANSpec
from dckd.terms.registry import TERMS


class ExperimentConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    task: Literal["sr", "deblur", "derain"] = "sr"
    scale: int = 4
    seed: int = Field(default=0, ge=0)
    output_dir: str = "runs/${name}"
    teacher: ModelSpec | None = None
    student: ModelSpec
    data: DataConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    vqgan: VQGANSpec = Field(default_factory=VQGANSpec)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.task == "sr" and self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4 for super-resolution, got {self.scale}")
        if self.task != "sr" and self.scale != 1:
            raise ValueError(f"scale must be 1 for {self.task}, got {self.scale}")
        if self.method.needs_teacher and self.teacher is None:
            raise ValueError(
                f"method terms {self.method.enabled_terms} need a teacher: add a 'teacher' section"
            )
        for role in ("teacher", "student"):
            spec: ModelSpec | None = getattr(self, role)
            if spec is not None and spec.preset_scale is not None and spec.preset_scale != self.scale:
                raise ValueError(
                    f"{role}.preset {spec.preset!r} is for x{spec.preset_scale}, "
                    f"but the experiment's scale is {self.scale}"
                )
        problems = [msg for name in self.method.enabled_terms
                    for msg in TERMS[name].check(self.method.term(name), self)]
        if problems:
            raise ValueError("\n".join(problems))
        sets = [("data.train", self.data.train)] + [
            (f"data.{split}[{i}]", b) for split in ("val", "test") for i, b in enumerate(getattr(self.data, split))
        ]
        for where, d in sets:
            if self.task == "sr" and d.hr_dir is None:
                raise ValueError(f"{where}.hr_dir is required for super-resolution")
            if self.task != "sr" and (d.input_dir is None or d.target_dir is None):
                raise ValueError(f"{where}.input_dir and {where}.target_dir are required for {self.task}")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.replace("${name}", self.name)).expanduser()

    def stored(self) -> dict:
        """The config as JSON data for what is kept or shown (checkpoints, config.yaml, MLflow, stdout):
        URL passwords masked (``dckd.config.secrets``). Workers get ``model_dump``, which keeps them."""
        return masked(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        """The stored config as YAML (URL passwords masked)."""
        return yaml.safe_dump(self.stored(), sort_keys=False)


