"""The VQGAN encoder's architecture and weights file: configuration only (no torch, no taming).

``dckd.models.vqgan`` builds the encoder from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class VQGANSpec(BaseModel):
    """Architecture of the taming VQGAN encoder and where its weights come from.

    The defaults are the official ``vqgan_imagenet_f16_1024`` configuration the authors use.
    ``resolution`` only decides which levels get attention (taming places an AttnBlock at the
    levels whose nominal size ``resolution / 2**level`` is in ``attn_resolutions``); inputs
    of any size divisible by ``2**(len(ch_mult)-1)`` work.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ch: int = Field(default=128, ge=1)
    ch_mult: tuple[int, ...] = Field(default=(1, 1, 2, 2, 4), min_length=1)
    num_res_blocks: int = Field(default=2, ge=1)
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = Field(default=256, ge=1)
    embed_dim: int = Field(default=256, ge=1)
    n_embed: int = Field(default=1024, ge=2)
    resolution: int = Field(default=256, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    checkpoint: Path | None = Field(
        default=None, description="taming .ckpt (Lightning dict with state_dict) or a plain state dict"
    )
    input_range: Literal["unit", "symmetric"] = Field(
        default="unit",
        description="'unit': feed [0,1] images as they are (released DCKD code); "
        "'symmetric': map to [-1,1] as taming was trained",
    )
    feature_block: int = Field(
        default=0, ge=0, description="which ResnetBlock of each down level is tapped (released: 0)"
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if not value.is_file():
            raise ValueError(f"VQGAN checkpoint not found: {value}")
        return value

    @field_validator("ch_mult")
    @classmethod
    def _positive_mults(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in value):
            raise ValueError(f"ch_mult entries must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> VQGANSpec:
        # taming normalises with GroupNorm(32 groups): every level's width must divide by 32.
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % 32]
        if bad:
            raise ValueError(
                f"ch * ch_mult must be multiples of 32 (taming uses GroupNorm with 32 groups); got {bad}"
            )
        if self.feature_block >= self.num_res_blocks:
            raise ValueError(
                f"feature_block {self.feature_block} does not exist: num_res_blocks is {self.num_res_blocks}"
            )
        return self

    @classmethod
    def reduced(cls, **overrides: Any) -> VQGANSpec:
        """The CPU-demo encoder (ch 32, one block per level, 1.5M parameters), else as released.

        The full encoder makes a CPU DCKD step ~10x slower; the demo trades feature quality
        for speed, and is never paired with an official checkpoint (shapes differ).
        """
        return cls(**{"ch": 32, "num_res_blocks": 1, **overrides})

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of the tapped feature of each level (128/128/256/256/512 as released)."""
        return tuple(self.ch * m for m in self.ch_mult)

    @property
    def downsample_factor(self) -> int:
        """Spatial reduction from the input to the codebook grid (16 for f16)."""
        return 2 ** (len(self.ch_mult) - 1)
