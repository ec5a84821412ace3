"""Shared fixtures: real photographs from scikit-image written as small image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from dckd.imageio import write_image

# Paper Table 1 (#Params, millions, one decimal as printed).
PAPER_PARAMS_M = {
    "swinir_x4_teacher": 11.9,
    "swinir_x4_student": 1.2,
    "rcan_x4_teacher": 15.6,
    "rcan_x4_student": 5.2,
    "nafnet_teacher": 17.1,
    "nafnet_student": 2.7,
    "restormer_teacher": 26.1,
    "restormer_student": 3.8,
}


def photo_crops(size: int = 64, count: int = 4) -> list[np.ndarray]:
    """Crops of real colour photographs (astronaut, coffee, chelsea, rocket)."""
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    out = []
    for i in range(count):
        img = photos[i % len(photos)]
        top, left = 40 + 7 * i, 60 + 11 * i
        out.append(np.ascontiguousarray(img[top:top + size, left:left + size, :3]))
    return out


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    for i, img in enumerate(photo_crops()):
        write_image(folder / f"img{i}.png", img)
    return folder


def tiny_config_dict(hr_dir: Path, out_dir: Path, method: str = "dckd", **train: object) -> dict:
    """The smallest complete experiment: tiny RCAN x2 pair, tiny VQGAN, patch 8, batch 2."""
    return {
        "name": "tiny",
        "task": "sr",
        "scale": 2,
        "seed": 3,
        "output_dir": str(out_dir),
        "teacher": {"preset": "rcan_tiny_x2_teacher"},
        "student": {"preset": "rcan_tiny_x2_student"},
        "data": {"train": {"hr_dir": str(hr_dir), "lq_patch": 8, "cache_in_memory": True},
                 "val": [{"name": "crops", "hr_dir": str(hr_dir)}]},
        "method": {"preset": method, "dcr": {"num_negatives": 3,
                                             "history": {"update_every": 4, "growth_milestones": [8]}}},
        "vqgan": {"ch": 32, "num_res_blocks": 1, "z_channels": 8, "embed_dim": 8, "n_embed": 16},
        "optim": {"lr": 1e-3},
        "train": {"iterations": 10, "batch_size": 2, "val_every": 1000, "ckpt_every": 1000,
                  "log_every": 5, "threads": 1, "device": "cpu", **train},
        # Tests that check tracking replace this section; the others skip MLflow's cost.
        "tracking": {"enabled": False},
    }


RAY_TEST_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
}


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (starting one takes seconds)."""
    import os

    for key, value in RAY_TEST_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    from trainers.driver import dashboard_port

    # The dashboard serves the State API that Ray Train needs to free the resources of a Tune
    # trial stopped by ASHA (see trainers.driver.ensure_ray).
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=dashboard_port(), object_store_memory=100 * 1024**2,
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
