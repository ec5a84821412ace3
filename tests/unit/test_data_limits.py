"""Data limits and Restormer's progressive patch/batch schedule: config, batch plan and loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dckd.config import load_config
from dckd.data.datasets import IterationBatches, Stage, TrainPatches
from dckd.data.specs import benchmark_sets, train_pairs
from dckd.errors import ConfigError
from dckd.training.loop import make_loader, training_stages
from tests.conftest import tiny_config_dict

PROGRESSIVE = {"milestones": [2, 5], "lq_patches": [8, 12], "batch_sizes": [3, 2]}


def config(hr: Path, tmp_path: Path, **train_data: object):
    data = tiny_config_dict(hr, tmp_path / "run")
    data["data"]["train"].update(train_data)
    return load_config(data=data)


def batches(cfg, start: int, end: int, rank: int = 0) -> list[dict]:
    return list(make_loader(cfg, start, end, rank=rank))


# ---------------------------------------------------------------- config


def test_progressive_config_is_validated_naming_the_field(tmp_path: Path, hr_folder: Path) -> None:
    cfg = config(hr_folder, tmp_path, progressive=PROGRESSIVE)
    p = cfg.data.train.progressive
    assert [p.stage(t) for t in (1, 2, 3, 5, 6, 100)] == [0, 0, 1, 1, 1, 1]
    cases = [
        ({**PROGRESSIVE, "lq_patches": [8]}, "progressive.lq_patches has 1 entries but progressive.milestones has 2"),
        ({**PROGRESSIVE, "batch_sizes": [3, 2, 1]}, "progressive.batch_sizes has 3 entries"),
        ({**PROGRESSIVE, "milestones": [5, 5]}, "strictly increasing"),
        ({**PROGRESSIVE, "milestones": [0, 5]}, "data.train.progressive.milestones.0"),
        ({**PROGRESSIVE, "batch_sizes": [3, 0]}, "data.train.progressive.batch_sizes.1"),
        ({**PROGRESSIVE, "patch": 3}, "unknown key"),
    ]
    for bad, fragment in cases:
        with pytest.raises(ConfigError, match="data.train.progressive") as err:
            config(hr_folder, tmp_path, progressive=bad)
        assert fragment in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match="data.train.limit"):
        config(hr_folder, tmp_path, limit=0)


# ---------------------------------------------------------------- limits


def test_limits_keep_the_first_pairs_by_name(tmp_path: Path, hr_folder: Path) -> None:
    data = tiny_config_dict(hr_folder, tmp_path / "run")
    data["data"]["train"]["limit"] = 2
    data["data"]["val"] = [{"name": "a", "hr_dir": str(hr_folder), "limit": 3}, {"name": "b", "hr_dir": str(hr_folder)}]
    cfg = load_config(data=data)
    assert [p.name for p in train_pairs(cfg)] == ["img0", "img1"]
    sets = dict(benchmark_sets(cfg, "val"))
    assert [p.name for p in sets["a"].pairs] == ["img0", "img1", "img2"] and len(sets["b"]) == 4
    # Training only ever sees the kept images; a limit above the count keeps them all.
    seen = {b for batch in batches(cfg, 0, 6) for b in batch["gt_path"]}
    assert {Path(p).stem for p in seen} == {"img0", "img1"}
    data["data"]["train"]["limit"] = 50
    assert len(train_pairs(load_config(data=data))) == 4


# ---------------------------------------------------------------- batch plan


def test_iteration_batches_count_samples_across_stages() -> None:
    stages = [Stage(2, 8, 3), Stage(5, 12, 2)]
    plan = IterationBatches(stages, 0, 7)
    assert [plan.samples_before(t) for t in range(1, 9)] == [0, 3, 6, 8, 10, 12, 14, 16]
    got = list(plan)
    assert [len(b) for b in got] == [3, 3, 2, 2, 2, 2, 2] and len(plan) == 7
    assert got[0] == [(0, 8), (1, 8), (2, 8)] and got[2] == [(6, 12), (7, 12)]
    assert got[-1] == [(14, 12), (15, 12)]  # after the last milestone the last stage continues
    assert list(IterationBatches(stages, 3, 7)) == got[3:]  # resuming needs no state
    # One open stage: the plain sample numbers of the fixed-batch loader.
    assert list(IterationBatches([Stage(None, 8, 4)], 2, 4)) == [[8, 9, 10, 11], [12, 13, 14, 15]]
    with pytest.raises(ConfigError):
        IterationBatches([Stage(None, 8, 4), Stage(5, 8, 4)], 0, 1)


def test_tuple_index_is_the_same_sample_with_another_patch(hr_folder: Path, tmp_path: Path) -> None:
    cfg = config(hr_folder, tmp_path)
    ds = TrainPatches(train_pairs(cfg), 2, lq_patch=8, seed=5)
    assert torch.equal(ds[(7, 8)]["lq"], ds[7]["lq"])
    big = ds[(7, 20)]
    assert tuple(big["lq"].shape) == (3, 20, 20) and tuple(big["gt"].shape) == (3, 40, 40)
    assert big["gt_path"] == ds[7]["gt_path"]  # same image; only the crop differs
    plan = ds.sample_plan(7, 20)
    assert 0 <= plan.top <= 32 - 20 and 0 <= plan.left <= 32 - 20


# ---------------------------------------------------------------- loader


def test_progressive_loader_shapes_per_iteration(tmp_path: Path, hr_folder: Path) -> None:
    cfg = config(hr_folder, tmp_path, progressive=PROGRESSIVE)
    assert training_stages(cfg) == [Stage(2, 8, 3), Stage(5, 12, 2)]
    shapes = [(tuple(b["lq"].shape), tuple(b["gt"].shape)) for b in batches(cfg, 0, 7)]
    small = ((3, 3, 8, 8), (3, 3, 16, 16))
    large = ((2, 3, 12, 12), (2, 3, 24, 24))
    assert shapes == [small, small, large, large, large, large, large]


def test_progressive_loader_resumes_exactly(tmp_path: Path, hr_folder: Path) -> None:
    cfg = config(hr_folder, tmp_path, progressive=PROGRESSIVE)
    full = batches(cfg, 0, 7)
    for start in (1, 2, 4):
        resumed = batches(cfg, start, 7)
        assert len(resumed) == 7 - start
        for a, b in zip(full[start:], resumed):
            assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"]) and a["gt_path"] == b["gt_path"]
    # DataLoader worker processes get the same (k, patch) requests.
    workers = config(hr_folder, tmp_path, progressive=PROGRESSIVE, num_workers=1)
    for a, b in zip(full, batches(workers, 0, 7)):
        assert torch.equal(a["lq"], b["lq"])
    # Each Ray worker (rank) draws its own samples.
    other = batches(cfg, 0, 2, rank=1)
    assert not torch.equal(other[0]["lq"], full[0]["lq"])


def test_fixed_batch_loader_is_unchanged(tmp_path: Path, hr_folder: Path) -> None:
    cfg = config(hr_folder, tmp_path)
    b = cfg.train.batch_size
    ds = TrainPatches(train_pairs(cfg), cfg.scale, lq_patch=cfg.data.train.lq_patch, seed=cfg.seed)
    for t, batch in enumerate(batches(cfg, 2, 4), start=3):
        for j in range(b):  # iteration t holds samples (t-1)*B .. t*B-1, as before progressive stages
            assert torch.equal(batch["lq"][j], ds[(t - 1) * b + j]["lq"])


def test_reflect_pad_lets_small_images_fill_the_largest_patch(tmp_path: Path, hr_folder: Path) -> None:
    import numpy as np

    from dckd.data import load_pair
    from dckd.data.datasets import reflect_pad
    from dckd.errors import DataError
    from dckd.imageio import to_uint8

    # The crops are 64x64, so LR 32x32 at x2: stage 2's patch of 40 needs Restormer's padding.
    prog = {"milestones": [1, 3], "lq_patches": [16, 40], "batch_sizes": [2, 1]}
    with pytest.raises(DataError, match="smaller than the 40x40 training patch"):
        batches(config(hr_folder, tmp_path, progressive=prog, lq_patch=40), 0, 3)
    cfg = config(hr_folder, tmp_path, progressive=prog, lq_patch=40, reflect_pad=True)
    got = batches(cfg, 0, 3)
    assert [tuple(b["gt"].shape) for b in got] == [(2, 3, 32, 32), (1, 3, 80, 80), (1, 3, 80, 80)]
    lq, gt = load_pair(train_pairs(cfg)[0], 2)
    plq, pgt = reflect_pad(lq, gt, 40, 2)
    assert plq.shape == (40, 40, 3) and pgt.shape == (80, 80, 3)
    np.testing.assert_array_equal(plq[32:40, :32], lq[31:23:-1])  # cv2.BORDER_REFLECT: edge repeated
    np.testing.assert_array_equal(pgt[:64, :64], gt)
    ds = TrainPatches(train_pairs(cfg), 2, lq_patch=40, hflip=False, rot=False, pad_to=40)
    item = ds[0]
    index = ds.image_index(0)
    np.testing.assert_array_equal(to_uint8(item["lq"]), reflect_pad(*load_pair(ds.pairs[index], 2), 40, 2)[0])
