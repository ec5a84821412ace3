"""Image IO, pairing, loading and the deterministic training dataset, on real PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch.utils.data import DataLoader

from dckd.data import (
    BenchmarkSet,
    ImagePair,
    TrainPatches,
    bicubic_lr,
    derive_seed,
    folder_pairs,
    load_pair,
    modcrop,
    sr_pairs,
)
from dckd.errors import DataError
from dckd.imageio import list_images, read_image, to_tensor, to_uint8, write_image

# Deliberately not multiples of 2 or 3, to exercise mod-cropping.
PHOTOS = {
    "astronaut": data.astronaut()[40:171, 100:251],
    "chelsea": data.chelsea()[:101, 50:171],
    "coffee": data.coffee()[100:197, 200:340],
}


@pytest.fixture()
def hr_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "HR"
    for name, img in PHOTOS.items():
        write_image(folder / f"{name}.png", np.ascontiguousarray(img))
    return folder


# ---------------------------------------------------------------- image IO


def test_write_read_roundtrip_is_atomic_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.png"
    write_image(target, PHOTOS["coffee"])
    np.testing.assert_array_equal(read_image(target), PHOTOS["coffee"])
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.png"]  # no temp file left


def test_corrupt_and_missing_files_raise_data_error_with_path(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)
    truncated = tmp_path / "truncated.png"
    write_image(truncated, PHOTOS["chelsea"])
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(DataError, match="truncated.png"):
        read_image(truncated)
    with pytest.raises(DataError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")


def test_grayscale_alpha_and_16_bit_become_uint8_rgb(tmp_path: Path) -> None:
    gray = data.camera()[:50, :60]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    img = read_image(tmp_path / "gray.png")
    assert img.shape == (50, 60, 3) and img.dtype == np.uint8
    assert (img == gray[:, :, None]).all()

    rgba = np.dstack([PHOTOS["coffee"], np.full(PHOTOS["coffee"].shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), PHOTOS["coffee"])

    sixteen = gray.astype(np.uint16) * 257  # exact 8 -> 16 bit replication
    sixteen[0, 0] = 300  # 300 / 257 = 1.17 -> 1
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    img16 = read_image(tmp_path / "g16.png")
    expected = gray.copy()
    expected[0, 0] = 1
    np.testing.assert_array_equal(img16[..., 1], expected)


def test_list_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing"):
        list_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        list_images(tmp_path)
    write_image(tmp_path / "b.PNG", PHOTOS["coffee"][:8, :8])
    write_image(tmp_path / "a.jpg", PHOTOS["coffee"][:8, :8])
    (tmp_path / "._a.png").write_bytes(b"resource fork")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]


def test_tensor_conversions_follow_tensor2img() -> None:
    img = PHOTOS["chelsea"]
    t = to_tensor(img)
    assert t.dtype == torch.float32 and tuple(t.shape) == (3, *img.shape[:2])
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    np.testing.assert_array_equal(to_uint8(t), img)
    odd = torch.tensor([[[-0.2, 1.3, 0.5, 100.4 / 255, 100.6 / 255]]])
    before = odd.clone()
    np.testing.assert_array_equal(to_uint8(odd)[0, :, 0], [0, 255, 128, 100, 101])
    assert torch.equal(odd, before)


# ---------------------------------------------------------------- pairing and loading


def test_generated_lr_pairs_have_exact_scale_sizes(hr_dir: Path) -> None:
    for scale in (2, 3, 4):
        pairs = sr_pairs(hr_dir, scale)
        assert [p.name for p in pairs] == sorted(PHOTOS)
        assert all(p.lq_path is None for p in pairs)
        for pair in pairs:
            lq, gt = load_pair(pair, scale)
            h, w = PHOTOS[pair.name].shape[:2]
            assert lq.shape == (h // scale, w // scale, 3)
            assert gt.shape == (h // scale * scale, w // scale * scale, 3)
            np.testing.assert_array_equal(lq, bicubic_lr(PHOTOS[pair.name], scale))


def test_lr_folder_layouts_and_top_left_gt_crop(hr_dir: Path, tmp_path: Path) -> None:
    layout_a = tmp_path / "LR_bicubic" / "X3"  # EDSR: {name}x3.png, HR not mod-cropped
    layout_b = tmp_path / "LRbicx3"  # BasicSR: identical names
    for name, img in PHOTOS.items():
        write_image(layout_a / f"{name}x3.png", bicubic_lr(img, 3))
        write_image(layout_b / f"{name}.png", bicubic_lr(img, 3))
    for lr_dir in (layout_a, layout_b):
        pairs = sr_pairs(hr_dir, 3, lr_dir)
        for pair in pairs:
            assert pair.lq_path is not None and pair.lq_path.parent == lr_dir
            lq, gt = load_pair(pair, 3)
            np.testing.assert_array_equal(gt, modcrop(PHOTOS[pair.name], 3))
            assert gt.shape[:2] == (lq.shape[0] * 3, lq.shape[1] * 3)


def test_size_mismatch_names_both_files(hr_dir: Path, tmp_path: Path) -> None:
    lr_dir = tmp_path / "LR"
    for name, img in PHOTOS.items():
        write_image(lr_dir / f"{name}x2.png", bicubic_lr(img, 3))  # x3 images in an x2 folder
    pair = sr_pairs(hr_dir, 2, lr_dir)[0]
    with pytest.raises(DataError) as err:
        load_pair(pair, 2)
    assert str(pair.lq_path) in str(err.value) and str(pair.gt_path) in str(err.value)
    with pytest.raises(DataError, match="astronautx4.png"):
        sr_pairs(hr_dir, 4, lr_dir)  # no astronaut.png / astronautx4.png partner


def test_corrupt_file_fails_through_the_datasets(hr_dir: Path) -> None:
    bad = hr_dir / "zzz.png"
    bad.write_bytes(np.random.default_rng(3).bytes(256))
    pairs = sr_pairs(hr_dir, 2)
    with pytest.raises(DataError, match="zzz.png"):
        BenchmarkSet(pairs, 2)
    with pytest.raises(DataError, match="zzz.png"):
        load_pair(pairs[-1], 2)


def test_folder_pairs_match_by_stem(tmp_path: Path) -> None:
    inp, tgt = tmp_path / "input", tmp_path / "target"
    write_image(inp / "rain-1.jpg", PHOTOS["coffee"])
    write_image(tgt / "rain-1.png", PHOTOS["coffee"])
    write_image(inp / "rain-2.png", PHOTOS["chelsea"])
    write_image(tgt / "rain-2.png", PHOTOS["chelsea"])
    pairs = folder_pairs(inp, tgt)
    assert [(p.lq_path.name, p.gt_path.name, p.name) for p in pairs] == [
        ("rain-1.jpg", "rain-1.png", "rain-1"),
        ("rain-2.png", "rain-2.png", "rain-2"),
    ]
    lq, gt = load_pair(pairs[1], 1)
    np.testing.assert_array_equal(lq, gt)
    with pytest.raises(DataError, match="rain-1.png"):
        load_pair(ImagePair(inp / "rain-2.png", tgt / "rain-1.png", "x"), 1)  # sizes differ at scale 1
    write_image(tgt / "rain-3.png", PHOTOS["astronaut"])
    with pytest.raises(DataError, match="rain-3.png"):
        folder_pairs(inp, tgt)


def test_benchmark_set_returns_whole_images(hr_dir: Path) -> None:
    bench = BenchmarkSet(sr_pairs(hr_dir, 2), 2)
    assert len(bench) == 3
    item = bench[0]
    assert set(item) == {"lq", "gt", "name", "lq_path", "gt_path"}
    assert item["name"] == "astronaut" and item["gt_path"].endswith("astronaut.png")
    h, w = PHOTOS["astronaut"].shape[:2]
    assert tuple(item["lq"].shape) == (3, h // 2, w // 2)
    assert tuple(item["gt"].shape) == (3, h // 2 * 2, w // 2 * 2)
    np.testing.assert_array_equal(to_uint8(item["gt"]), bench.arrays(0)[1])


# ---------------------------------------------------------------- training patches


def test_derive_seed_is_stable_and_order_sensitive() -> None:
    assert derive_seed(1, 2, 3) == 5419794275248380757  # fixed forever: resumed runs depend on it
    assert derive_seed(np.int64(1), 2, 3) == derive_seed(1, 2, 3)
    assert derive_seed(1, 0) != derive_seed(0, 1)
    assert 0 <= derive_seed(2**70, -5) < 2**63


def test_train_patches_are_a_pure_function_of_seed_rank_and_k(hr_dir: Path) -> None:
    pairs = sr_pairs(hr_dir, 2)
    a = TrainPatches(pairs, 2, lq_patch=16, seed=7)
    b = TrainPatches(pairs, 2, lq_patch=16, seed=7, cache_in_memory=True)
    for k in (0, 5, 4, 17):  # out of order on purpose: no hidden sequential state
        x, y = a[k], b[k]
        assert torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"])
        assert x["gt_path"] == y["gt_path"] and x["lq_path"] == ""
    assert tuple(a[0]["lq"].shape) == (3, 16, 16) and tuple(a[0]["gt"].shape) == (3, 32, 32)
    assert a[0]["lq"].dtype == torch.float32
    assert not torch.equal(a[0]["lq"], a[1]["lq"])
    other_rank = TrainPatches(pairs, 2, lq_patch=16, seed=7, rank=1)
    other_seed = TrainPatches(pairs, 2, lq_patch=16, seed=8)
    assert not torch.equal(a[0]["lq"], other_rank[0]["lq"])
    assert not torch.equal(a[0]["lq"], other_seed[0]["lq"])
    # Each epoch visits every image once.
    for epoch in range(3):
        assert sorted(a.image_index(epoch * 3 + i) for i in range(3)) == [0, 1, 2]
    # A DataLoader driven by sample numbers (how a resumed run asks for iteration 5 on).
    batch = next(iter(DataLoader(a, batch_size=4, sampler=range(5 * 4, 6 * 4))))
    assert tuple(batch["gt"].shape) == (4, 3, 32, 32)
    assert torch.equal(batch["lq"][1], a[21]["lq"])


def test_patches_are_aligned_with_their_crop_plan(hr_dir: Path) -> None:
    pairs = sr_pairs(hr_dir, 3)
    ds = TrainPatches(pairs, 3, lq_patch=12, seed=1)
    seen = set()
    for k in range(24):
        plan = ds.sample_plan(k)
        seen.add((plan.hflip, plan.vflip, plan.rot90))
        lq, gt = load_pair(pairs[plan.index], 3)
        item = ds[k]
        got_lq, got_gt = to_uint8(item["lq"]), to_uint8(item["gt"])
        # Undo the transforms in reverse order, then compare with the plain crops.
        for img_name in ("lq", "gt"):
            img = got_lq if img_name == "lq" else got_gt
            if plan.rot90:
                img = img.transpose(1, 0, 2)
            if plan.vflip:
                img = img[::-1]
            if plan.hflip:
                img = img[:, ::-1]
            if img_name == "lq":
                np.testing.assert_array_equal(img, lq[plan.top : plan.top + 12, plan.left : plan.left + 12])
            else:
                t, left = plan.top * 3, plan.left * 3
                np.testing.assert_array_equal(img, gt[t : t + 36, left : left + 36])
    assert len(seen) > 3  # the transforms are actually used


def test_generated_lr_patch_is_the_downscaled_gt_patch(hr_dir: Path) -> None:
    ds = TrainPatches(sr_pairs(hr_dir, 2), 2, lq_patch=20, hflip=False, rot=False, seed=4)
    for k in range(6):
        item = ds[k]
        lq, gt = to_uint8(item["lq"]), to_uint8(item["gt"])
        # Interior LR pixels only see HR pixels inside the patch: identical to downscaling it.
        np.testing.assert_array_equal(bicubic_lr(gt, 2)[3:-3, 3:-3], lq[3:-3, 3:-3])


def test_image_smaller_than_patch_is_named(hr_dir: Path) -> None:
    ds = TrainPatches(sr_pairs(hr_dir, 2), 2, lq_patch=60)  # chelsea LR is 50 pixels high
    with pytest.raises(DataError, match="chelsea.png"):
        for k in range(3):
            ds[k]
