"""Metrics against hand-derived values and an independent SSIM written here from the paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage import data

from dckd.errors import ConfigError, DataError
from dckd.evaluation.metrics import DEBLUR, DERAIN, Protocol, psnr, rgb_to_y, score_folders, ssim
from dckd.imageio import write_image

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def const(value: tuple[int, int, int] | int, h: int = 32, w: int = 32) -> np.ndarray:
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[...] = value
    return img


def test_y_of_primary_pixels() -> None:
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    y = rgb_to_y(px)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0], [16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0], atol=1e-12)
    np.testing.assert_array_equal(rgb_to_y(px, round_y=True)[0], [81, 145, 41, 235, 16])


def test_psnr_of_constant_images_with_known_mse() -> None:
    # Every pixel differs by 10 in every channel: MSE = 100.
    assert psnr(const(110), const(100)) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    # In Y the difference is 10 * (65.481 + 128.553 + 24.966) / 255 = 10 * 219 / 255.
    dy = 10 * 219 / 255
    assert psnr(const(110), const(100), y_channel=True) == pytest.approx(20 * math.log10(255 / dy), abs=1e-10)
    assert psnr(const(7), const(7)) == math.inf


def test_ssim_of_constant_images_matches_closed_form() -> None:
    # Zero variance and covariance: SSIM = (2 mx my + C1) C2 / ((mx^2 + my^2 + C1) C2).
    mx, my = 100.0, 110.0
    expected = (2 * mx * my + C1) / (mx**2 + my**2 + C1)
    assert ssim(const(100), const(110)) == pytest.approx(expected, abs=1e-9)
    ya, yb = 16 + 100 * 219 / 255, 16 + 110 * 219 / 255
    expected_y = (2 * ya * yb + C1) / (ya**2 + yb**2 + C1)
    assert ssim(const(100), const(110), y_channel=True) == pytest.approx(expected_y, abs=1e-9)


def test_crop_border_excludes_the_border() -> None:
    gt = np.ascontiguousarray(data.astronaut()[100:164, 200:264])
    pred = gt.copy()
    pred[:4] = 255 - pred[:4]
    pred[:, -4:] = 0
    assert psnr(pred, gt, crop_border=4) == math.inf
    assert ssim(pred, gt, crop_border=4) == pytest.approx(1.0, abs=1e-12)
    assert math.isfinite(psnr(pred, gt, crop_border=3))
    # SSIM keeps only the valid region, but windows centred 5 px inside still see row 3.
    assert ssim(pred, gt, crop_border=3) < 1.0 - 1e-4


def test_rgb_and_y_follow_their_definitions() -> None:
    rng = np.random.default_rng(0)
    gt = data.astronaut()[:96, :96]
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    mse_rgb = np.mean((pred.astype(float) - gt.astype(float)) ** 2)
    assert psnr(pred, gt) == pytest.approx(10 * math.log10(255**2 / mse_rgb), abs=1e-10)

    def y(img: np.ndarray) -> np.ndarray:
        f = img.astype(float)
        return 16 + (65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]) / 255

    mse_y = np.mean((y(pred) - y(gt)) ** 2)
    assert psnr(pred, gt, y_channel=True) == pytest.approx(10 * math.log10(255**2 / mse_y), abs=1e-10)
    mse_ry = np.mean((np.floor(y(pred) + 0.5) - np.floor(y(gt) + 0.5)) ** 2)
    assert psnr(pred, gt, y_channel=True, round_y=True) == pytest.approx(10 * math.log10(255**2 / mse_ry))
    # RGB SSIM is the mean of the per-channel SSIMs.
    per_channel = [ssim(pred[..., c], gt[..., c]) for c in range(3)]
    assert ssim(pred, gt) == pytest.approx(float(np.mean(per_channel)), abs=1e-12)
    assert psnr(pred, gt) != pytest.approx(psnr(pred, gt, y_channel=True))


def _gaussian_valid_filter(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    rows = np.einsum("hwk,k->hw", np.lib.stride_tricks.sliding_window_view(img, 11, axis=0), g)
    return np.einsum("hwk,k->hw", np.lib.stride_tricks.sliding_window_view(rows, 11, axis=1), g)


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 / MATLAB ssim_index: 11x11 Gaussian sigma 1.5, 'valid', mean of the map."""
    x = np.arange(-5, 6, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    mu_a, mu_b = _gaussian_valid_filter(a, g), _gaussian_valid_filter(b, g)
    var_a = _gaussian_valid_filter(a * a, g) - mu_a**2
    var_b = _gaussian_valid_filter(b * b, g) - mu_b**2
    cov = _gaussian_valid_filter(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2))
    return float(ssim_map.mean())


def test_ssim_matches_an_independent_implementation_on_a_photograph() -> None:
    rng = np.random.default_rng(1)
    gt = data.astronaut()[:256, 128:384]
    pred = np.clip(gt.astype(float) + rng.normal(0, 12, gt.shape), 0, 255).round().astype(np.uint8)

    def y(img: np.ndarray) -> np.ndarray:
        f = img.astype(float)
        return 16 + (65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]) / 255

    expected = _reference_ssim(y(pred)[4:-4, 4:-4], y(gt)[4:-4, 4:-4])
    assert ssim(pred, gt, crop_border=4, y_channel=True) == pytest.approx(expected, abs=1e-6)
    expected_rgb = np.mean(
        [_reference_ssim(pred[..., c].astype(float), gt[..., c].astype(float)) for c in range(3)]
    )
    assert ssim(pred, gt) == pytest.approx(expected_rgb, abs=1e-6)
    assert 0.3 < expected < 0.95


def test_shape_mismatch_and_bad_arguments() -> None:
    with pytest.raises(DataError, match="does not match"):
        psnr(const(1, 32, 32), const(1, 32, 31))
    with pytest.raises(DataError):
        ssim(const(1, 32, 32), const(1, 31, 32))
    with pytest.raises(TypeError):
        psnr(const(1).astype(np.float32), const(1).astype(np.float32))
    with pytest.raises(DataError, match="11x11"):
        ssim(const(1, 20, 20), const(2, 20, 20), crop_border=5)


def test_protocols_per_task() -> None:
    assert Protocol.for_task("sr", 4) == Protocol(crop_border=4, y_channel=True, round_y=False)
    assert Protocol.for_task("derain", 1) == DERAIN == Protocol(0, True, True)
    assert Protocol.for_task("deblur", 1) == DEBLUR == Protocol(0, False, False)
    with pytest.raises(ConfigError):
        Protocol.for_task("denoise", 1)
    with pytest.raises(ConfigError):
        Protocol(crop_border=0, y_channel=False, round_y=True)
    gt = data.astronaut()[:64, :64]
    pred = gt // 2
    p, s = Protocol.for_task("sr", 2).score(pred, gt)
    assert p == psnr(pred, gt, crop_border=2, y_channel=True)
    assert s == ssim(pred, gt, crop_border=2, y_channel=True)


def test_score_folders_matches_by_stem(tmp_path) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    photo = np.minimum(data.coffee()[:48, :64], 245)
    write_image(gt_dir / "a.png", photo)
    write_image(pred_dir / "a.png", photo + 10)
    write_image(gt_dir / "b.png", photo[::-1])
    write_image(pred_dir / "b.bmp", photo[::-1].copy())
    result = score_folders(gt_dir, pred_dir, DEBLUR)
    assert result["count"] == 2
    assert [r["name"] for r in result["per_image"]] == ["a", "b"]
    assert result["per_image"][0]["psnr"] == pytest.approx(10 * math.log10(650.25), abs=1e-10)
    assert result["per_image"][1]["psnr"] == math.inf
    assert result["ssim"] == pytest.approx((result["per_image"][0]["ssim"] + 1.0) / 2)
    write_image(pred_dir / "c.png", photo)
    with pytest.raises(DataError, match="c.png"):
        score_folders(gt_dir, pred_dir, DEBLUR)
