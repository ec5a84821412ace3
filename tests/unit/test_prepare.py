"""``dckd data prepare`` on a fake download tree in the official layouts, made of real photographs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from dckd.cli import main
from dckd.data import bicubic_lr, folder_pairs, load_pair, modcrop, sr_pairs
from dckd.data.prepare import SPECS, Options, prepare, window_starts
from dckd.imageio import list_images, read_image, write_image

SCALES = (2, 3, 4)
CROP, STEP = 48, 24  # small stand-ins for DIV2K's 480/240, divisible by every scale
# DIV2K HR sizes (h, w), deliberately not multiples of 12: mod-crop to 108x144, 96x120, 120x60.
DIV2K_SIZES = {"0001": (110, 150), "0002": (96, 120), "0003": (130, 61)}
# BasicSR arithmetic done by hand: rows x cols of windows (crop 48, step 24, thresh 0).
DIV2K_GRIDS = {"0001": ([0, 24, 48, 60], [0, 24, 48, 72, 96]), "0002": ([0, 24, 48], [0, 24, 48, 72]),
               "0003": ([0, 24, 48, 72], [0, 12])}
PHOTOS = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


def crop(i: int, h: int, w: int) -> np.ndarray:
    img = PHOTOS[i % len(PHOTOS)]
    top, left = 13 * (i % 7), 17 * (i % 5)
    return np.ascontiguousarray(img[top:top + h, left:left + w, :3])


def fake_downloads(root: Path) -> Path:
    """The official layouts at tiny sizes: DIV2K (3 of 800), EDSR-style Set5, a raw Set14 missing
    zebra, GOPRO_Large sequences, Rain13K and Restormer's test/Test100."""
    for i, (name, (h, w)) in enumerate(DIV2K_SIZES.items()):
        write_image(root / "DIV2K_train_HR" / f"{name}.png", crop(i, h, w))
    for i, name in enumerate(("0801", "0802")):
        write_image(root / "DIV2K_valid_HR" / f"{name}.png", crop(i + 5, 50, 70))
    for i, name in enumerate(SPECS["set5"].names):
        hr = crop(i, 37 + i, 41 + 2 * i)
        write_image(root / "benchmark" / "Set5" / "HR" / f"{name}.png", hr)
        write_image(root / "benchmark" / "Set5" / "LR_bicubic" / "X2" / f"{name}x2.png", bicubic_lr(hr, 2))
    for i, name in enumerate(SPECS["set14"].names[:-1]):  # no zebra
        suffix = ".bmp" if name == "baboon" else ".png"
        write_image(root / "Set14" / f"{name}{suffix}", crop(i, 30, 34))
    for split, seqs in (("train", ("GOPR0372_07_00", "GOPR0374_11_00")), ("test", ("GOPR0384_11_00",))):
        for j, seq in enumerate(seqs):
            for k in range(2):
                name = f"{47 + k:06d}.png"
                write_image(root / "GOPRO_Large" / split / seq / "sharp" / name, crop(j + k, 24, 32))
                write_image(root / "GOPRO_Large" / split / seq / "blur" / name, crop(j + k + 1, 24, 32))
                write_image(root / "GOPRO_Large" / split / seq / "blur_gamma" / name, crop(j, 24, 32))
    for k in range(3):
        write_image(root / "Rain13K" / "input" / f"{k}.jpg", crop(k, 20, 28))
        write_image(root / "Rain13K" / "target" / f"{k}.png", crop(k + 1, 20, 28))
    for k in range(2):
        write_image(root / "test" / "Test100" / "input" / f"rain-{k:03d}.png", crop(k, 20, 28))
        write_image(root / "test" / "Test100" / "target" / f"rain-{k:03d}.png", crop(k + 2, 20, 28))
    return root


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_downloads(tmp_path_factory.mktemp("downloads"))


def opts(**kw: object) -> Options:
    base = {"crop": CROP, "step": STEP, "progress": False}
    return Options(**{**base, **kw})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_manifest(folder: Path) -> dict:
    """manifest.json lists every other file under ``folder`` with its true size and sha256."""
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "dckd-dataset-manifest" and manifest["version"] == 1
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.is_file() and p.name != "manifest.json")
    assert [e["path"] for e in manifest["files"]] == on_disk
    for e in manifest["files"]:
        assert e["size"] == (folder / e["path"]).stat().st_size and e["sha256"] == sha(folder / e["path"])
    return manifest


# ---------------------------------------------------------------- arithmetic


def test_window_starts_follow_basicsr() -> None:
    assert window_starts(108, 48, 24) == [0, 24, 48, 60]
    assert window_starts(96, 48, 24) == [0, 24, 48]  # flush: no extra window
    assert window_starts(60, 48, 24) == [0, 12]
    assert window_starts(2040, 480, 240) == [0, 240, 480, 720, 960, 1200, 1440, 1560]
    assert window_starts(1356, 480, 240) == [0, 240, 480, 720, 876]
    assert window_starts(100, 48, 24, thresh=10) == [0, 24, 48]  # 4 px left over <= thresh
    with pytest.raises(ValueError, match="smaller"):
        window_starts(40, 48, 24)


# ---------------------------------------------------------------- DIV2K


def test_div2k_sub_images_and_bicubic_lr(downloads: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    [res] = prepare(["div2k"], out, [str(downloads)], opts(allow_partial=True))
    assert res.status == "prepared", res.line()
    assert "PARTIAL: 3 of 800 HR images; missing 0004.png" in res.message
    div2k = out / "DIV2K"
    expected_names = [f"{n}_s{i:03d}.png" for n, (r, c) in DIV2K_GRIDS.items() for i in range(1, len(r) * len(c) + 1)]
    assert sorted(p.name for p in (div2k / "train_HR_sub").iterdir()) == expected_names
    for s in SCALES:
        assert sorted(p.name for p in (div2k / "train_LR_bicubic" / f"X{s}_sub").iterdir()) == expected_names
    for name, (rows, cols) in DIV2K_GRIDS.items():
        hr = modcrop(read_image(downloads / "DIV2K_train_HR" / f"{name}.png"), 12)
        lrs = {s: bicubic_lr(hr, s) for s in SCALES}
        for s in SCALES:  # the LR grid computed on LR sizes, as BasicSR does for the X{s} folders
            assert window_starts(lrs[s].shape[0], CROP // s, STEP // s) == [r // s for r in rows]
            assert window_starts(lrs[s].shape[1], CROP // s, STEP // s) == [c // s for c in cols]
        idx = 0
        for top in rows:  # row-major numbering from 1
            for left in cols:
                idx += 1
                sub = f"{name}_s{idx:03d}.png"
                got = read_image(div2k / "train_HR_sub" / sub)
                np.testing.assert_array_equal(got, hr[top:top + CROP, left:left + CROP])
                for s in SCALES:
                    lr = read_image(div2k / "train_LR_bicubic" / f"X{s}_sub" / sub)
                    t, lft, c = top // s, left // s, CROP // s
                    np.testing.assert_array_equal(lr, lrs[s][t:t + c, lft:lft + c])
    # Validation images whole, LR by MATLAB bicubic, in the EDSR naming that sr_pairs reads.
    assert sorted(p.name for p in (div2k / "valid_HR").iterdir()) == ["0801.png", "0802.png"]
    assert sha(div2k / "valid_HR" / "0801.png") == sha(downloads / "DIV2K_valid_HR" / "0801.png")
    lr = read_image(div2k / "valid_LR_bicubic" / "X3" / "0801x3.png")
    np.testing.assert_array_equal(lr, bicubic_lr(read_image(downloads / "DIV2K_valid_HR" / "0801.png"), 3))
    manifest = check_manifest(div2k)
    prep = manifest["prepared"]
    assert prep["options"] == {"scales": [2, 3, 4], "crop": CROP, "step": STEP, "mod": 12, "thresh": 0}
    assert prep["complete"] is False and prep["dataset"] == "div2k"
    # Training pairs straight from the prepared folders.
    pairs = sr_pairs(div2k / "train_HR_sub", 4, div2k / "train_LR_bicubic" / "X4_sub")
    assert len(pairs) == len(expected_names)
    lq, gt = load_pair(pairs[0], 4)
    assert lq.shape == (12, 12, 3) and gt.shape == (48, 48, 3)


def test_prepare_is_idempotent_and_follows_source_changes(downloads: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in ("benchmark/Set5/HR",):
        for p in (downloads / rel).iterdir():
            (src / rel).mkdir(parents=True, exist_ok=True)
            (src / rel / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "data"
    [first] = prepare(["set5"], out, [str(src)], opts())
    assert first.status == "prepared"
    folder = out / "benchmarks" / "Set5"
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    [again] = prepare(["set5"], out, [str(src)], opts())
    assert again.status == "up to date" and "up to date" in again.line()
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == stamps  # nothing rewritten
    # Other scales or a changed source image: rebuilt, with no temporary folders left behind.
    [x4] = prepare(["set5"], out, [str(src)], opts(scales=(4,)))
    assert x4.status == "prepared" and sorted(p.name for p in (folder / "LR_bicubic").iterdir()) == ["X4"]
    write_image(src / "benchmark/Set5/HR/baby.png", crop(9, 40, 40))
    [changed] = prepare(["set5"], out, [str(src)], opts(scales=(4,)))
    assert changed.status == "prepared"
    np.testing.assert_array_equal(read_image(folder / "LR_bicubic/X4/babyx4.png"), bicubic_lr(crop(9, 40, 40), 4))
    assert sorted(p.name for p in (out / "benchmarks").iterdir()) == ["Set5"]
    # A folder that prepare did not make is never replaced silently.
    write_image(out / "benchmarks" / "Set14" / "mine.png", crop(0, 8, 8))
    [refused] = prepare(["set14"], out, [str(downloads)], opts(allow_partial=True))
    assert refused.status == "failed" and "not made by `dckd data prepare`" in refused.message
    assert (out / "benchmarks" / "Set14" / "mine.png").is_file()


# ---------------------------------------------------------------- benchmarks


def test_benchmark_layout_a_with_matlab_lr(downloads: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    [res] = prepare(["set5"], out, [str(downloads)], opts())
    assert res.ok and res.status == "prepared"
    folder = out / "benchmarks" / "Set5"
    names = sorted(f"{n}.png" for n in SPECS["set5"].names)
    assert sorted(p.name for p in (folder / "HR").iterdir()) == names
    for name in SPECS["set5"].names:
        src = downloads / "benchmark" / "Set5" / "HR" / f"{name}.png"
        assert sha(folder / "HR" / f"{name}.png") == sha(src)  # HR kept whole, byte for byte
        hr = read_image(src)
        for s in SCALES:
            lr = read_image(folder / "LR_bicubic" / f"X{s}" / f"{name}x{s}.png")
            assert lr.shape[:2] == (hr.shape[0] // s, hr.shape[1] // s)
            np.testing.assert_array_equal(lr, bicubic_lr(hr, s))
    check_manifest(folder)
    # The evaluation loader pairs them and crops HR top-left to scale x LR.
    pairs = sr_pairs(folder / "HR", 3, folder / "LR_bicubic" / "X3")
    lq, gt = load_pair(pairs[0], 3)
    assert gt.shape[:2] == (lq.shape[0] * 3, lq.shape[1] * 3)


def test_missing_and_partial_datasets_are_reported_by_name(downloads: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "data"
    base = ["data", "prepare", "--source", str(downloads), "--root", str(out), "--no-progress", "--workers", "1"]
    assert main([*base[:2], "urban100", *base[2:]]) == 1
    err = capsys.readouterr().err
    assert f"Urban100: source folder Urban100 not found in {downloads}" in err
    assert not (out / "benchmarks" / "Urban100").exists()

    assert main([*base[:2], "set14", *base[2:]]) == 1
    err = capsys.readouterr().err
    assert "Set14: 13 of 14 HR images; missing zebra.png" in err and "--allow-partial" in err
    assert not (out / "benchmarks" / "Set14").exists()

    assert main([*base[:2], "div2k", *base[2:], "--crop-size", "48", "--step", "24"]) == 1
    err = capsys.readouterr().err
    assert "DIV2K: 3 of 800 HR images; missing 0004.png, 0005.png, 0006.png, 0007.png, 0008.png and 792 more" in err
    assert "2 of 100 validation HR images; missing 0803.png" in err

    # --allow-partial: prepared, still reported; the .bmp HR is written as PNG.
    assert main([*base[:2], "set14", *base[2:], "--allow-partial"]) == 0
    out_text = capsys.readouterr().out
    assert "Set14: prepared 13 HR images" in out_text and "PARTIAL: 13 of 14" in out_text
    baboon = out / "benchmarks" / "Set14" / "HR" / "baboon.png"
    np.testing.assert_array_equal(read_image(baboon), read_image(downloads / "Set14" / "baboon.bmp"))


def test_all_prepares_what_is_there(downloads: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "data"
    code = main(["data", "prepare", "all", "--source", str(downloads), "--root", str(out), "--no-progress",
                 "--workers", "1", "--crop-size", "48", "--step", "24", "--allow-partial"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for title in ("B100", "Urban100", "Manga109", "Rain100H", "Rain100L", "Test2800", "Test1200"):
        assert f"{title}: source folder" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["DIV2K", "GoPro", "Rain13K", "benchmarks", "derain_test"]
    # GoPro: sequences flattened, blur (not blur_gamma) as input.
    gopro = out / "GoPro"
    assert sorted(p.name for p in (gopro / "train" / "input").iterdir()) == [
        "GOPR0372_07_00_000047.png", "GOPR0372_07_00_000048.png", "GOPR0374_11_00_000047.png",
        "GOPR0374_11_00_000048.png"]
    assert sha(gopro / "test/input/GOPR0384_11_00_000048.png") == sha(
        downloads / "GOPRO_Large/test/GOPR0384_11_00/blur/000048.png")
    assert sha(gopro / "test/target/GOPR0384_11_00_000048.png") == sha(
        downloads / "GOPRO_Large/test/GOPR0384_11_00/sharp/000048.png")
    assert "PARTIAL: 4 of 2103 train pairs" in captured.out
    # Deraining: jpg inputs kept as they are, pairs matched by name.
    rain = folder_pairs(out / "Rain13K/train/input", out / "Rain13K/train/target")
    assert [p.lq_path.name for p in rain] == ["0.jpg", "1.jpg", "2.jpg"]
    assert len(folder_pairs(out / "derain_test/Test100/input", out / "derain_test/Test100/target")) == 2
    for folder in (gopro, out / "Rain13K", out / "derain_test/Test100", out / "DIV2K", out / "benchmarks/Set5"):
        check_manifest(folder)
    # Nothing found at all is an error, even for 'all'; so is a source that does not exist.
    (tmp_path / "empty").mkdir()
    assert main(["data", "prepare", "all", "--source", str(tmp_path / "empty"), "--root", str(tmp_path / "o"),
                 "--no-progress"]) == 1
    assert main(["data", "prepare", "all", "--source", str(tmp_path / "nowhere"), "--root", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "--source " + str(tmp_path / "nowhere") + ": no such folder" in capsys.readouterr().err


def test_unpaired_files_make_a_dataset_partial(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for k in range(2):
        write_image(src / "Rain100L" / "input" / f"{k}.png", crop(k, 16, 16))
    write_image(src / "Rain100L" / "target" / "0.png", crop(3, 16, 16))
    [res] = prepare(["rain100l"], tmp_path / "out", [str(src)], opts())
    assert res.status == "partial"
    assert res.line().startswith("Rain100L: 1 of 100 pairs") and "no target for input 1.png" in res.line()


def test_flattened_gopro_release_and_worker_processes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for split in ("train", "test"):
        for k in range(2):
            write_image(src / "GoPro" / split / "input" / f"{split}{k}.png", crop(k, 16, 24))
            write_image(src / "GoPro" / split / "target" / f"{split}{k}.png", crop(k + 1, 16, 24))
    [res] = prepare(["gopro"], tmp_path / "out", [str(src)], opts(allow_partial=True, workers=2))
    assert res.status == "prepared", res.line()
    manifest = check_manifest(tmp_path / "out" / "GoPro")
    assert [e["path"] for e in manifest["files"]] == [
        "test/input/test0.png", "test/input/test1.png", "test/target/test0.png", "test/target/test1.png",
        "train/input/train0.png", "train/input/train1.png", "train/target/train0.png", "train/target/train1.png"]


def test_options_are_checked(tmp_path: Path) -> None:
    from dckd.errors import ConfigError

    with pytest.raises(ConfigError, match="--source is required"):
        prepare(["div2k"], tmp_path, [], opts())
    with pytest.raises(ConfigError, match="unknown dataset 'div3k'"):
        prepare(["div3k"], tmp_path, [str(tmp_path)], opts())
    with pytest.raises(ConfigError, match="scale"):
        prepare(["div2k"], tmp_path, [str(tmp_path)], opts(crop=50, step=25))
    with pytest.raises(ConfigError, match="local folder"):
        prepare(["photos"], "s3://bucket/data", [], opts())


# ---------------------------------------------------------------- photos


def test_photos_dataset_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "data"
    assert main(["data", "prepare", "photos", "--root", str(out), "--no-progress"]) == 0
    assert "13 prepared" in capsys.readouterr().out
    div2k = out / "DIV2K"
    subs = list_images(div2k / "train_HR_sub")
    assert len(subs) == 36 and subs[0].name == "astronaut_s001.png"  # 6 photos x 2 x 3 windows
    assert read_image(subs[0]).shape == (192, 192, 3)
    for s in SCALES:
        lrs = list_images(div2k / "train_LR_bicubic" / f"X{s}_sub")
        assert [p.name for p in lrs] == [p.name for p in subs]
        assert read_image(lrs[0]).shape == (192 // s, 192 // s, 3)
    assert [p.name for p in list_images(div2k / "valid_HR")] == ["chelsea.png", "rocket.png"]
    for name in ("Set5", "Set14", "B100", "Urban100", "Manga109"):
        folder = out / "benchmarks" / name
        assert [p.name for p in list_images(folder / "HR")] == ["chelsea.png", "rocket.png"]
        hr = read_image(folder / "HR" / "rocket.png")
        np.testing.assert_array_equal(read_image(folder / "LR_bicubic/X4/rocketx4.png"), bicubic_lr(hr, 4))
        check_manifest(folder)
    assert sha(out / "benchmarks/Set5/HR/chelsea.png") != sha(out / "benchmarks/Set14/HR/chelsea.png")
    for folder, n in (("GoPro/train", 6), ("GoPro/test", 2), ("Rain13K/train", 6), ("derain_test/Test100", 2),
                      ("derain_test/Rain100H", 2)):
        pairs = folder_pairs(out / folder / "input", out / folder / "target")
        assert len(pairs) == n
        a, b = read_image(pairs[0].lq_path), read_image(pairs[0].gt_path)
        assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() > 2  # really degraded
    rain_h = read_image(out / "derain_test/Rain100H/input/chelsea.png")
    rain_l = read_image(out / "derain_test/Rain100L/input/chelsea.png")
    assert not np.array_equal(rain_h, rain_l)  # different streaks per set
    # Deterministic: a fresh root gets identical bytes; a second run is a no-op.
    again = tmp_path / "again"
    prepare(["photos"], again, opts=opts())
    m1 = json.loads((div2k / "manifest.json").read_text())["files"]
    assert m1 == json.loads((again / "DIV2K" / "manifest.json").read_text())["files"]
    assert all(r.status == "up to date" for r in prepare(["photos"], out, opts=opts()))
    # Prepared real data is not overwritten by the photos (or the reverse) without --force.
    manifest = json.loads((out / "GoPro/manifest.json").read_text())
    manifest["prepared"]["origin"] = "downloads"
    (out / "GoPro/manifest.json").write_text(json.dumps(manifest))
    res = {r.title: r for r in prepare(["photos"], out, opts=opts())}
    assert res["GoPro"].status == "failed" and "--force" in res["GoPro"].message
    assert prepare(["photos"], out, opts=opts(force=True))[6].status == "prepared"
