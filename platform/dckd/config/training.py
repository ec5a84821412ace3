"""Optimisation, schedule, training loop, evaluation protocol, tracking and Ray resources."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dckd.config.base import NonNegative, Strict


class OptimConfig(Strict):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(default=1e-4, gt=0.0, allow_inf_nan=False)
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
    precision: Literal["fp32", "bf16", "auto"] = Field(
        default="fp32",
        description="arithmetic of the network passes: bf16 runs them under autocast (losses, parameters, EMA, "
        "history model and optimizer state stay fp32); auto: bf16 on a CUDA device that supports it and on a "
        "CPU with AMX or AVX-512 BF16, else fp32 (the run log and MLflow say which and why)",
    )
    channels_last: bool = Field(
        default=False,
        description="channels-last memory layout for the convolutional networks (RCAN, NAFNet, the VQGAN "
        "encoder) and their inputs; `dckd bench --layouts` measures whether it pays on a device",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the frozen networks (teacher, VQGAN encoder); a compile failure falls back "
        "to eager with a note",
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        default="stop",
        description="a NaN or Inf loss: 'stop' ends the run (naming the term and the iteration; the last "
        "good checkpoint is kept, nothing is registered, the command exits non-zero); 'skip' drops that "
        "step's update and counts it (metrics.jsonl, MLflow and the summary carry the count)",
    )


class EvalConfig(Strict):
    """Metric protocol; unset fields follow the task (SR: Y, crop=scale; derain: Y; deblur: RGB)."""

    crop_border: int | None = Field(default=None, ge=0)
    y_channel: bool | None = None
    round_y: bool | None = None
    weights: Literal["ema", "student"] = "ema"
    score_tiles: int | None = Field(
        default=None, ge=8,
        description="per-image test scores per fixed tile of this side (HR px) of each restored image, for "
                    "paired statistics on test sets of few images (the set's mean stays whole-image)")


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
    log_onnx: bool = Field(
        default=True,
        description="log the student's ONNX export (verified against PyTorch) with it; costs seconds per student",
    )

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
