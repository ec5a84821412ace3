"""Sweep files: the Ray Tune search over experiment fields, checked before anything runs.

Configuration only (no Ray, no torch): ``trainers/tune.py`` runs what this validates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dckd.config.experiment import ExperimentConfig
from dckd.config.loading import load_config, load_model_file
from dckd.errors import ConfigError


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["asha", "fifo"] = "fifo"
    metric: str = "val_psnr"
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(default=1, ge=1, description="iterations before a trial may be stopped")
    reduction_factor: int = Field(default=2, ge=2)


class SweepConfig(BaseModel):
    """A sweep file; ``search`` maps dotted config fields to one of grid/choice/uniform/loguniform."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    base: str
    set: list[str] = Field(default_factory=list)
    search: dict[str, dict[Literal["grid", "choice", "uniform", "loguniform", "randint"], list[Any]]]
    num_samples: int = Field(default=1, ge=1)
    seeds: int = Field(default=1, ge=1, description="train every configuration K times, seeds seed..seed+K-1; "
                                                    "the results give each configuration's mean ± std")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    max_concurrent: int | None = Field(default=None, ge=1)
    output_dir: str = "runs/sweeps/${name}"
    tracking_uri: str | None = None

    @model_validator(mode="after")
    def _one_kind_per_axis(self) -> SweepConfig:
        for key, spec in self.search.items():
            if len(spec) != 1:
                raise ValueError(f"search.{key}: give exactly one of grid, choice, uniform, loguniform, randint")
            kind, values = next(iter(spec.items()))
            if not values or (kind in ("uniform", "loguniform", "randint") and len(values) != 2):
                raise ValueError(f"search.{key}.{kind}: needs {'[low, high]' if kind != 'grid' else 'values'}")
        return self

    @model_validator(mode="after")
    def _seeds_not_an_axis(self) -> SweepConfig:
        if self.seeds > 1 and "seed" in self.search:
            raise ValueError("seeds: K and a search over 'seed' both set the seed: keep one")
        return self

    @property
    def out(self) -> Path:
        return Path(self.output_dir.replace("${name}", self.name)).expanduser().resolve()


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> tuple[SweepConfig, ExperimentConfig]:
    """Read the sweep and check every axis against the base config before anything runs."""
    path = Path(path)
    sweep = load_model_file(path, SweepConfig, kind="sweep")
    base_path = Path(sweep.base)
    if not base_path.is_absolute() and not base_path.exists():
        base_path = path.parent / sweep.base
    sweep = sweep.model_copy(update={"base": str(base_path), "set": sweep.set + list(overrides or [])})
    base = load_config(base_path, sweep.set)
    if sweep.scheduler.name == "asha" and sweep.scheduler.grace_period >= base.train.iterations:
        raise ConfigError(f"{path}: scheduler.grace_period = {sweep.scheduler.grace_period} is not below "
                          f"train.iterations = {base.train.iterations}: ASHA would never stop a trial")
    for key, spec in sweep.search.items():
        kind, values = next(iter(spec.items()))
        probes = values if kind in ("grid", "choice") else values[:1]
        for value in probes:
            try:
                load_config(base_path, [*sweep.set, f"{key}={json.dumps(value)}"])
            except ConfigError as exc:
                raise ConfigError(f"{path}: search.{key} = {value!r} makes an invalid experiment:\n{exc}") from None
    return sweep, base
