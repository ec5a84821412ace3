"""Experiment configuration: pydantic v2 models, YAML loading and ``--set`` overrides.

Everything a run does is declared here, so a bad value is refused before any work starts,
with the file and the dotted field path in the message. The defaults are the authors'
released configuration (see ../shared/notes/reference-implementation.md); the paper-only
variants are named options.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dckd.errors import ConfigError
from dckd.models.vqgan import VQGANSpec


def _must_exist(value: str) -> str:
    """Local paths must exist when the config is read; remote URIs are checked when used."""
    if "://" not in value and not Path(value).expanduser().exists():
        raise ValueError(f"path does not exist: {value}")
    return value


ExistingPath = Annotated[str, AfterValidator(_must_exist)]
NonNegative = Annotated[float, Field(ge=0.0)]


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- models
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
            from dckd.models import PRESETS

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
        from dckd.models import PRESETS

        return PRESETS[self.preset].backbone  # type: ignore[index]

    @property
    def preset_scale(self) -> int | None:
        if self.preset is None:
            return None
        from dckd.models import PRESETS

        return PRESETS[self.preset].scale


# --------------------------------------------------------------------------- data
class ProgressiveConfig(Strict):
    """Restormer's progressive learning: stage i ends at iteration ``milestones[i]`` (cumulative).

    The batch of iteration t (1-based) uses the LR patch side and batch size of the first stage with
    t <= its milestone; after the last milestone the last stage continues, as in Restormer's
    ``train.py``. Restormer: milestones [92000, 156000, 204000, 240000, 276000, 300000],
    lq_patches [128, 160, 192, 256, 320, 384], batch_sizes [8, 5, 4, 2, 1, 1] per GPU.
    """

    milestones: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    lq_patches: list[Annotated[int, Field(ge=4)]] = Field(min_length=1)
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _stages(self) -> ProgressiveConfig:
        n = len(self.milestones)
        for field in ("lq_patches", "batch_sizes"):
            if len(getattr(self, field)) != n:
                raise ValueError(
                    f"progressive.{field} has {len(getattr(self, field))} entries but progressive.milestones "
                    f"has {n}: give one per stage"
                )
        for a, b in zip(self.milestones, self.milestones[1:]):
            if b <= a:
                raise ValueError(f"progressive.milestones must be strictly increasing, got {self.milestones}")
        return self

    def stage(self, iteration: int) -> int:
        """Index of the stage that iteration ``iteration`` (1-based) belongs to."""
        for i, end in enumerate(self.milestones):
            if iteration <= end:
                return i
        return len(self.milestones) - 1


class TrainDataConfig(Strict):
    """Training pairs: SR from an HR folder (LR read or generated), others from two folders."""

    hr_dir: ExistingPath | None = None
    lr_dir: ExistingPath | None = None
    input_dir: ExistingPath | None = None
    target_dir: ExistingPath | None = None
    lq_patch: int = Field(default=48, ge=4, description="LR patch side; the GT patch is lq_patch*scale")
    hflip: bool = True
    rot: bool = True
    cache_in_memory: bool = False
    num_workers: int = Field(default=0, ge=0)
    limit: int | None = Field(
        default=None, ge=1, description="use only the first N training pairs (sorted by name): smoke runs"
    )
    reflect_pad: bool = Field(
        default=False,
        description="reflect-pad images smaller than lq_patch (bottom/right) before cropping, as Restormer does",
    )
    progressive: ProgressiveConfig | None = Field(
        default=None, description="Restormer's progressive patch/batch sizes; replaces lq_patch and train.batch_size"
    )


class BenchmarkConfig(Strict):
    """A benchmark set scored on whole images (SR: HR folder, LR folder or generated)."""

    name: str = Field(min_length=1)
    hr_dir: ExistingPath | None = None
    lr_dir: ExistingPath | None = None
    input_dir: ExistingPath | None = None
    target_dir: ExistingPath | None = None
    limit: int | None = Field(default=None, ge=1, description="score only the first N images (sorted by name)")


class DataConfig(Strict):
    train: TrainDataConfig
    val: list[BenchmarkConfig] = Field(default_factory=list)
    test: list[BenchmarkConfig] = Field(default_factory=list)


# --------------------------------------------------------------------------- method
class TermConfig(Strict):
    """A loss term: switched on or off and weighted. ``enabled`` defaults from the method preset."""

    enabled: bool | None = None
    weight: NonNegative = 1.0


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


class DMMConfig(TermConfig):
    """Distribution mapping module (Eq. 8-9)."""

    weight: NonNegative = 0.001
    released_double_softmax: bool = Field(
        default=False,
        description="the released code feeds the student's probabilities to F.cross_entropy (softmax "
        "twice); default: Eq. 9 as written, one log-softmax",
    )


class LCRConfig(TermConfig):
    """DUKD label consistency as the DCKD release computes it (teacher on augmented LR, reverted)."""

    weight: NonNegative = 1.0
    prob: float = Field(default=0.5, ge=0.0, le=1.0)


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


class DUKDConfig(TermConfig):
    """DUKD data upcycling (Zhang et al. 2023): teacher-labelled zoom-in tiles and zoom-out pairs.

    ``weight`` is DUKD's w_kd on the upcycled data; the zoom-out reconstruction reuses ``rec.weight``.
    """

    weight: NonNegative = 1.0
    zoom_in_tiles: int = Field(default=1, ge=1, description="GT tiles per sample (at most scale**2)")
    zoom_out: bool = False
    lcr_prob: float = Field(default=0.3, ge=0.0, le=1.0, description="student-side label consistency on tiles")


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


#: Every loss term, in the order they are computed and logged.
TERM_NAMES: tuple[str, ...] = ("rec", "kd", "dcr", "dmm", "lcr", "fakd", "mipkd", "dukd", "mclir")
#: Terms that compare the student with a teacher.
TEACHER_TERMS: tuple[str, ...] = ("kd", "dcr", "dmm", "lcr", "fakd", "mipkd", "dukd")

METHOD_TERMS: dict[str, tuple[str, ...]] = {
    "scratch": ("rec",),
    "logits": ("rec", "kd"),
    "dckd": ("rec", "kd", "dcr", "dmm"),
    "dckd_release": ("rec", "kd", "dcr", "dmm", "lcr"),
    "dckd_star": ("rec", "kd", "dcr", "dmm", "lcr", "dukd"),
    "fakd": ("rec", "kd", "fakd"),
    "mipkd": ("rec", "kd", "mipkd"),
    "dukd": ("rec", "kd", "dukd"),
    "mclir": ("rec", "mclir"),
}
MethodPreset = Literal["scratch", "logits", "dckd", "dckd_release", "dckd_star", "fakd", "mipkd", "dukd", "mclir"]

#: The switches (paths inside ``method``) that make a step compute what the authors' release
#: computes, with their short names. Each defaults to the paper as written; ``dckd_release``
#: turns all of them on.
RELEASE_SWITCHES: dict[str, str] = {
    "dmm.released_double_softmax": "double-softmax DMM",
    "dcr.degradation.released_shared_gray_noise": "shared grey noise",
    "dcr.degradation.released_unclamped_resize": "unclamped resize",
}
#: Switch values a preset sets unless the config gives them itself.
PRESET_SWITCHES: dict[str, dict[str, bool]] = {"dckd_release": dict.fromkeys(RELEASE_SWITCHES, True)}


class MethodConfig(Strict):
    """A distillation method as weighted loss terms; ``preset`` says which are on by default."""

    preset: MethodPreset = "dckd"
    rec: TermConfig = Field(default_factory=TermConfig)
    kd: TermConfig = Field(default_factory=TermConfig)
    dcr: DCRConfig = Field(default_factory=DCRConfig)
    dmm: DMMConfig = Field(default_factory=DMMConfig)
    lcr: LCRConfig = Field(default_factory=LCRConfig)
    fakd: FAKDConfig = Field(default_factory=FAKDConfig)
    mipkd: MiPKDConfig = Field(default_factory=MiPKDConfig)
    dukd: DUKDConfig = Field(default_factory=DUKDConfig)
    mclir: MCLIRConfig = Field(default_factory=MCLIRConfig)

    @model_validator(mode="before")
    @classmethod
    def _preset_switches(cls, data: Any) -> Any:
        """A preset's switch values (``PRESET_SWITCHES``) fill what the config leaves unset."""
        switches = PRESET_SWITCHES.get(data.get("preset", "dckd"), {}) if isinstance(data, dict) else {}
        if not switches:
            return data
        data = dict(data)
        for dotted, value in switches.items():
            *path, leaf = dotted.split(".")
            node = data
            for part in path:
                child = node.get(part)
                if isinstance(child, BaseModel):  # a section passed as a model: keep what it set
                    child = child.model_dump(exclude_unset=True)
                if child is None:
                    child = {}
                if not isinstance(child, dict):
                    break  # not a mapping: field validation refuses it with its path
                node[part] = node = dict(child)  # copies: the caller's dicts stay as they were
            else:
                node.setdefault(leaf, value)
        return data

    @model_validator(mode="after")
    def _fill_enabled(self) -> MethodConfig:
        on = METHOD_TERMS[self.preset]
        for name in TERM_NAMES:
            term: TermConfig = getattr(self, name)
            if term.enabled is None:
                object.__setattr__(term, "enabled", name in on)
        if not any(self.term(n).enabled for n in TERM_NAMES):
            raise ValueError("every loss term is disabled: nothing to train")
        return self

    def term(self, name: str) -> TermConfig:
        return getattr(self, name)

    @property
    def enabled_terms(self) -> list[str]:
        return [n for n in TERM_NAMES if self.term(n).enabled]

    @property
    def needs_teacher(self) -> bool:
        return any(self.term(n).enabled for n in TEACHER_TERMS)

    @property
    def needs_vqgan(self) -> bool:
        return bool(self.dcr.enabled or self.dmm.enabled)

    def switch(self, dotted: str) -> bool:
        """The value of a switch named by its path inside ``method`` (see ``RELEASE_SWITCHES``)."""
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return bool(node)

    @property
    def release_switches(self) -> dict[str, bool]:
        return {name: self.switch(name) for name in RELEASE_SWITCHES}


# --------------------------------------------------------------------------- optimisation
class OptimConfig(Strict):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(default=1e-4, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = Field(default=1e-8, gt=0.0)
    weight_decay: NonNegative = 0.0
    grad_clip_norm: float | None = Field(default=None, gt=0.0)


class ScheduleConfig(Strict):
    """Learning-rate schedule as a pure function of the iteration (exact on resume)."""

    name: Literal["constant", "multistep", "cosine", "cosine_restart"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [100_000, 200_000])
    gamma: float = Field(default=0.1, gt=0.0)
    eta_min: float = Field(default=1e-7, ge=0.0)
    periods: list[int] = Field(default_factory=list, description="cosine_restart: cycle lengths")
    eta_mins: list[float] = Field(default_factory=list, description="cosine_restart: floor per cycle")

    @model_validator(mode="after")
    def _restart_lists(self) -> ScheduleConfig:
        if self.name == "cosine_restart" and (
            not self.periods or len(self.periods) != len(self.eta_mins)
        ):
            raise ValueError("cosine_restart needs 'periods' and 'eta_mins' of the same length")
        return self


class TrainConfig(Strict):
    iterations: int = Field(default=250_000, ge=1)
    batch_size: int = Field(default=16, ge=1, description="per worker (per GPU)")
    total_batch: int | None = Field(
        default=None, ge=1,
        description="the total batch per optimizer step the experiment is specified with (the paper's SR "
        "runs: 16 per GPU x 4 GPUs = 64). It changes nothing: a run whose world size gives another total "
        "says so before training, and reports carry it",
    )
    ema_decay: float = Field(default=0.999, ge=0.0, lt=1.0)
    val_every: int = Field(default=5000, ge=1)
    ckpt_every: int = Field(default=5000, ge=1)
    log_every: int = Field(default=100, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1)
    frozen_chunk_rows: int | None = Field(
        default=None, ge=1,
        description="rows per frozen VQGAN pass; default: all at once on a GPU, one image set at a time on a CPU",
    )


class EvalConfig(Strict):
    """Metric protocol; unset fields follow the task (SR: Y, crop=scale; derain: Y; deblur: RGB)."""

    crop_border: int | None = Field(default=None, ge=0)
    y_channel: bool | None = None
    round_y: bool | None = None
    weights: Literal["ema", "student"] = "ema"


class TrackingConfig(Strict):
    """MLflow: one run per training run; the best student goes to the registry under an alias."""

    enabled: bool = True
    tracking_uri: str | None = Field(
        default=None,
        description="default: $MLFLOW_TRACKING_URI, else a sqlite database in the run directory's parent",
    )
    experiment: str = "dckd"
    register_student: bool = Field(default=True, description="register the final student (sweeps: only the best)")
    register_as: str | None = Field(default=None, description="registered model name; default <name>-student")
    alias: str = "champion"

    def registered_name(self, run_name: str) -> str | None:
        """The registry name for the final student, or None when it is only logged."""
        return (self.register_as or f"{run_name}-student") if self.register_student else None
    samples: int = Field(default=2, ge=0, description="side-by-side sample restorations logged per validation")


class RayConfig(Strict):
    """Ray Train resources and fault tolerance (``dckd train`` without ``--local``)."""

    address: str | None = Field(default=None, description="Ray cluster address; default: a local instance")
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=1.0, ge=0)
    storage_path: str | None = Field(
        default=None, description="local folder or s3:// URI for Ray checkpoints; default <output_dir>/ray"
    )
    max_failures: int = Field(default=2, ge=-1, description="worker-group restarts from the last checkpoint")


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
        if self.method.dcr.enabled and len(self.method.dcr.level_weights) != len(self.vqgan.ch_mult):
            raise ValueError(
                f"method.dcr.level_weights has {len(self.method.dcr.level_weights)} entries but the "
                f"VQGAN encoder has {len(self.vqgan.ch_mult)} levels (vqgan.ch_mult)"
            )
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

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading
def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        loc = loc or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {loc}: {msg}{shown}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value``: the value is read as YAML, so ``3``, ``true``, ``[1, 2]`` and ``null`` work."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {text!r}: empty component in the key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {exc}") from exc
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config dict; list items are addressed by index (``data.val.0.name``)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = _child(node, part, text, parts[: i + 1])
            if nxt is None:
                nxt = {}
                _assign(node, part, nxt, text)
            node = nxt
        _assign(node, parts[-1], value, text)
    return data


def _child(node: Any, part: str, text: str, path: list[str]) -> Any:
    if isinstance(node, list):
        idx = _index(part, node, text)
        return node[idx]
    if isinstance(node, dict):
        return node.get(part)
    raise ConfigError(f"--set {text!r}: {'.'.join(path[:-1])} is not a section")


def _assign(node: Any, part: str, value: Any, text: str) -> None:
    if isinstance(node, list):
        node[_index(part, node, text)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"--set {text!r}: cannot set {part!r} inside a value")


def _index(part: str, node: list, text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {text!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read YAML (``yaml.safe_load`` only), apply ``--set`` overrides, validate everything."""
    source = str(path) if path is not None else "<config>"
    if data is None:
        if path is None:
            raise ConfigError("no configuration given")
        data = read_config_tree(Path(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    data = apply_overrides(copy.deepcopy(data), overrides or [])
    data = substitute_roots(data)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


# --------------------------------------------------------------------------- files and roots
ROOT_VARIABLES = {"data": ("DCKD_DATA_ROOT", "data"), "weights": ("DCKD_WEIGHTS_ROOT", "weights")}


def read_config_tree(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its ``extends:`` chain merged in (the file's own values win).

    ``extends`` names a file relative to this one (or a list of them, merged left to right);
    mappings merge key by key, anything else (lists included) is replaced.
    """
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: config file not found")
    if path.resolve() in _seen:
        raise ConfigError(f"{source}: extends itself (via {' -> '.join(map(str, _seen))})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    parents = data.pop("extends", None)
    if parents is None:
        return data
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else list(parents):
        if not isinstance(parent, str):
            raise ConfigError(f"{source}: extends: expected a file name, got {parent!r}")
        merged = deep_merge(merged, read_config_tree(path.parent / parent, (*_seen, path.resolve())))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def root_path(name: str) -> str:
    """Where ``${data}`` / ``${weights}`` point: $DCKD_DATA_ROOT / $DCKD_WEIGHTS_ROOT, else ./data, ./weights."""
    env, default = ROOT_VARIABLES[name]
    return os.environ.get(env) or default


def substitute_roots(value: Any) -> Any:
    """Replace ``${data}`` and ``${weights}`` in every string (paths of datasets and checkpoints)."""
    if isinstance(value, str):
        for name in ROOT_VARIABLES:
            token = "${" + name + "}"
            if token in value:
                value = value.replace(token, root_path(name).rstrip("/"))
        return value
    if isinstance(value, dict):
        return {k: substitute_roots(v) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_roots(v) for v in value]
    return value
