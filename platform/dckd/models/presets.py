"""Named architecture presets: the paper's teacher/student pairs and tiny ones for tests.

One preset is one idea in one place: configs refer to a network by name (``rcan_x4_student``)
instead of repeating constructor arguments. ``args`` are keyword arguments of the spandrel /
spandrel-extra-arches class for ``backbone``; the SR scale is kept apart (``scale``) and passed
by ``build_model`` so the x2/x3/x4 variants share their settings.

The full-size settings are paper Table 1 (checked against its parameter counts in
tests/unit/test_models.py); ``swinir_light_x4_student`` is the SwinIR-light of Table 8. The
``*_tiny_*`` presets exist so unit tests and the CPU demo run in seconds; they are not from
the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Backbone = Literal["swinir", "rcan", "nafnet", "restormer"]
Role = Literal["teacher", "student"]
Task = Literal["sr", "deblur", "derain"]


@dataclass(frozen=True)
class Preset:
    """A named network: backbone, constructor arguments, and what it is for."""

    name: str
    backbone: Backbone
    role: Role
    scale: int | None
    tasks: tuple[Task, ...]
    args: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def tiny(self) -> bool:
        """True for the test/demo presets that are not paper settings."""
        return "_tiny_" in self.name


# Settings shared by the SwinIR classical-SR models (SwinIR-M, BasicSR/DCKD configs).
_SWINIR_COMMON: dict[str, Any] = {
    "img_size": 48,
    "window_size": 8,
    "mlp_ratio": 2.0,
    "upsampler": "pixelshuffle",
    "resi_connection": "1conv",
    "img_range": 1.0,
}
_SWINIR = {
    "teacher": {**_SWINIR_COMMON, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6},
    "student": {**_SWINIR_COMMON, "embed_dim": 60, "depths": [6] * 4, "num_heads": [6] * 4},
}
# Window-8 SwinIRs with one (student) or two (teacher) shallow stages of two blocks. Their size is
# dominated by SwinIR's fixed 64-channel pixel-shuffle upsampler, kept so the code paths match.
_SWINIR_TINY = {
    "teacher": {**_SWINIR_COMMON, "embed_dim": 24, "depths": [2, 2], "num_heads": [2, 2]},
    "student": {**_SWINIR_COMMON, "embed_dim": 12, "depths": [2], "num_heads": [2]},
}

# RCAN as released (EDSR-PyTorch / BasicSR): inputs scaled to [0, 255] inside, DIV2K mean.
_RCAN_COMMON: dict[str, Any] = {"n_feats": 64, "n_resgroups": 10, "reduction": 16, "rgb_range": 255}
_RCAN = {
    "teacher": {**_RCAN_COMMON, "n_resblocks": 20},
    "student": {**_RCAN_COMMON, "n_resblocks": 6},
}
# The sizes the CPU cost of a DCKD step was measured with (design notes): 0.39M / 0.036M at x2,
# a ~10x teacher/student gap as in the paper. LR 48 batch 8, one thread: 0.23 s / 0.03 s forward.
_RCAN_TINY = {
    "teacher": {"n_feats": 32, "n_resgroups": 4, "n_resblocks": 4, "reduction": 8, "rgb_range": 255},
    "student": {"n_feats": 16, "n_resgroups": 2, "n_resblocks": 2, "reduction": 4, "rgb_range": 255},
}

_NAFNET = {
    "teacher": {
        "width": 32,
        "enc_blk_nums": [1, 1, 1, 28],
        "middle_blk_num": 1,
        "dec_blk_nums": [1, 1, 1, 1],
    },
    "student": {
        "width": 16,
        "enc_blk_nums": [1, 1, 1, 14],
        "middle_blk_num": 1,
        "dec_blk_nums": [1, 1, 1, 1],
    },
}
_NAFNET_TINY = {
    "teacher": {"width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]},
    "student": {"width": 4, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]},
}

_RESTORMER = {
    "teacher": {"dim": 48, "num_blocks": [4, 6, 6, 8], "num_refinement_blocks": 4, "heads": [1, 2, 4, 8]},
    "student": {"dim": 24, "num_blocks": [2, 3, 3, 4], "num_refinement_blocks": 2, "heads": [1, 2, 4, 8]},
}
_RESTORMER_TINY = {
    "teacher": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 2, 2]},
    "student": {"dim": 4, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 1, 1]},
}


def _build_presets() -> dict[str, Preset]:
    presets: list[Preset] = []
    for role in ("teacher", "student"):
        for scale in (2, 3, 4):
            presets.append(
                Preset(
                    f"swinir_x{scale}_{role}",
                    "swinir",
                    role,
                    scale,
                    ("sr",),
                    dict(_SWINIR[role]),
                    f"SwinIR {role}, paper Table 1 (x{scale})",
                )
            )
            presets.append(
                Preset(
                    f"rcan_x{scale}_{role}",
                    "rcan",
                    role,
                    scale,
                    ("sr",),
                    dict(_RCAN[role]),
                    f"RCAN {role}, paper Table 1 (x{scale})",
                )
            )
        presets.append(
            Preset(
                f"nafnet_{role}",
                "nafnet",
                role,
                None,
                ("deblur",),
                dict(_NAFNET[role]),
                f"NAFNet {role}, paper Table 1 (GoPro deblurring)",
            )
        )
        presets.append(
            Preset(
                f"restormer_{role}",
                "restormer",
                role,
                None,
                ("deblur", "derain"),
                dict(_RESTORMER[role]),
                f"Restormer {role}, paper Table 1 (deblurring, deraining)",
            )
        )
    presets.append(
        Preset(
            "swinir_light_x4_student",
            "swinir",
            "student",
            4,
            ("sr",),
            {
                **_SWINIR_COMMON,
                "img_size": 64,
                "embed_dim": 60,
                "depths": [6] * 4,
                "num_heads": [6] * 4,
                "upsampler": "pixelshuffledirect",
            },
            "SwinIR-light x4, paper Table 8",
        )
    )
    for role in ("teacher", "student"):
        for scale in (2, 4):
            presets.append(
                Preset(
                    f"rcan_tiny_x{scale}_{role}",
                    "rcan",
                    role,
                    scale,
                    ("sr",),
                    dict(_RCAN_TINY[role]),
                    f"tiny RCAN {role} for tests and the CPU demo (x{scale})",
                )
            )
            presets.append(
                Preset(
                    f"swinir_tiny_x{scale}_{role}",
                    "swinir",
                    role,
                    scale,
                    ("sr",),
                    dict(_SWINIR_TINY[role]),
                    f"tiny SwinIR {role} for tests and the CPU demo (x{scale})",
                )
            )
        presets.append(
            Preset(
                f"nafnet_tiny_{role}",
                "nafnet",
                role,
                None,
                ("deblur",),
                dict(_NAFNET_TINY[role]),
                f"tiny NAFNet {role} for tests and the CPU demo",
            )
        )
        presets.append(
            Preset(
                f"restormer_tiny_{role}",
                "restormer",
                role,
                None,
                ("deblur", "derain"),
                dict(_RESTORMER_TINY[role]),
                f"tiny Restormer {role} for tests and the CPU demo",
            )
        )
    return {p.name: p for p in sorted(presets, key=lambda p: p.name)}


#: Every preset by name. Treat as read-only: vary a preset with ``build_preset(name, **overrides)``.
PRESETS: dict[str, Preset] = _build_presets()
