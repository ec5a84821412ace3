"""Training pairs and benchmark sets: folders, patch sizes, progressive learning."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from dckd.config.base import ExistingPath, Strict


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
    num_workers: int | None = Field(
        default=None, ge=0,
        description="loader processes; default: 0 on a CPU device (the step computes on those cores), "
        "on a GPU one per CPU this worker has (Ray: ray.cpus_per_worker; locally: the CPUs this process may "
        "use, divided among the visible GPUs) minus one for the step's own process, at most 8",
    )
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
