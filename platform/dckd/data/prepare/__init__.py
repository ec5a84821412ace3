"""``dckd data prepare``: the code lives in :mod:`dckd.data.prepare.runner` while it is split up."""

from dckd.data.prepare.runner import (
    DATASET_CHOICES,
    DIV2K_CROP,
    DIV2K_STEP,
    PHOTO_TEST,
    PHOTO_TRAIN,
    SPECS,
    Options,
    Result,
    Source,
    exit_code,
    expand,
    load_ref,
    motion_blur,
    photo,
    photo_plan,
    prepare,
    rain_streaks,
    run_job,
    window_starts,
)

__all__ = [
    "DATASET_CHOICES", "DIV2K_CROP", "DIV2K_STEP", "PHOTO_TEST", "PHOTO_TRAIN", "SPECS", "Options", "Result",
    "Source", "expand", "exit_code", "load_ref", "motion_blur", "photo", "photo_plan", "prepare",
    "rain_streaks", "run_job", "window_starts",
]
