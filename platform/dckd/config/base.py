"""What every config section shares: unknown keys are errors, paths are checked when read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _must_exist(value: str) -> str:
    """Local paths must exist when the config is read; remote URIs are checked when used."""
    if "://" not in value and not Path(value).expanduser().exists():
        raise ValueError(f"path does not exist: {value}")
    return value


ExistingPath = Annotated[str, AfterValidator(_must_exist)]
#: A weight or coefficient: finite and >= 0 (an ``inf`` weight would train the student to NaN).
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TermConfig(Strict):
    """A loss term: switched on or off and weighted. ``enabled`` defaults from the method preset."""

    enabled: bool | None = None
    weight: NonNegative = 1.0
