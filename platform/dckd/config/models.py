"""A network in a config: a named preset and/or explicit architecture arguments."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from dckd.config.base import ExistingPath, Strict


class ModelSpec(Strict):
    """A network: a preset name from ``dckd models`` and/or explicit architecture arguments."""

    preset: str | None = None
    backbone: Literal["swinir", "rcan", "nafnet", "restormer"] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    checkpoint: ExistingPath | None = None
    checkpoint_key: str | None = Field(
        default=None, description="state-dict key inside the file; default params_ema, then params"
    )

    @model_validator(mode="after")
    def _preset_or_backbone(self) -> ModelSpec:
        if self.preset is None and self.backbone is None:
            raise ValueError("give either 'preset' (see `dckd models`) or 'backbone' with 'args'")
        if self.preset is not None:
            from dckd.models.presets import PRESETS

            if self.preset not in PRESETS:
                names = ", ".join(sorted(PRESETS))
                raise ValueError(f"unknown preset {self.preset!r}; known presets: {names}")
            if self.backbone is not None and self.backbone != PRESETS[self.preset].backbone:
                raise ValueError(
                    f"backbone {self.backbone!r} contradicts preset {self.preset!r} "
                    f"({PRESETS[self.preset].backbone})"
                )
        return self

    @property
    def resolved_backbone(self) -> str:
        if self.backbone is not None:
            return self.backbone
        from dckd.models.presets import PRESETS

        return PRESETS[self.preset].backbone  # type: ignore[index]

    @property
    def preset_scale(self) -> int | None:
        if self.preset is None:
            return None
        from dckd.models.presets import PRESETS

        return PRESETS[self.preset].scale
