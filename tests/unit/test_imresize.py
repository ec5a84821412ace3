"""MATLAB bicubic imresize: hand-computed weights, invariants, sizes and a padding-based cross-check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data

from dckd.data.matlab_resize import bicubic_lr, contributions, imresize, modcrop

# Keys cubic (a = -0.5) at 0.25, 0.75, 1.25, 1.75, worked out by hand:
# 1.5|x|^3 - 2.5|x|^2 + 1 and -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2.
W025, W075, W125, W175 = 0.8671875, 0.2265625, -0.0703125, -0.0234375


def test_hand_computed_weights_for_halving_four_samples() -> None:
    # Output 1 (1-based) of 4 -> 2: centre u = 1/0.5 + 0.5 (1 - 2) = 1.5, kernel width 8,
    # taps at distances 3.5 ... -3.5 with weights 0.5 * cubic(0.5 d); they already sum to 1.
    weights, idx = contributions(4, 2, 0.5)
    expected = 0.5 * np.array([W175, W125, W075, W025, W025, W075, W125, W175])
    assert weights.shape == (2, 8)  # taps -3 and 6 have zero weight in every row: dropped
    np.testing.assert_allclose(weights[0], expected, atol=1e-15)
    np.testing.assert_allclose(weights[1], expected, atol=1e-15)
    # Taps -2..5 (1-based) mirror into [1, 4] as 3 2 1 | 1 2 3 4 | 4.
    np.testing.assert_array_equal(idx[0], np.array([3, 2, 1, 1, 2, 3, 4, 4]) - 1)
    signal = np.array([0.1, 0.7, 0.2, 0.9])
    out = imresize(signal[:, None], 0.5)
    assert out.shape == (2, 1)
    assert out[0, 0] == pytest.approx(float(expected @ signal[idx[0]]), abs=1e-15)


def test_constant_image_is_invariant() -> None:
    img = np.full((37, 23, 3), 0.3)
    for scale in (1 / 2, 1 / 3, 1 / 4, 0.7, 2, 3):
        out = imresize(img, scale)
        assert out.shape == (math.ceil(37 * scale), math.ceil(23 * scale), 3)
        np.testing.assert_allclose(out, 0.3, atol=1e-12)


def test_output_sizes_and_modcrop() -> None:
    img = np.zeros((280, 280, 3))
    assert imresize(img, 1 / 3).shape == (94, 94, 3)  # ceil(280/3) without mod-crop
    assert modcrop(img, 3).shape == (279, 279, 3)
    assert imresize(modcrop(img, 3), 1 / 3).shape == (93, 93, 3)
    assert bicubic_lr(np.zeros((280, 280, 3), np.uint8), 3).shape == (93, 93, 3)
    assert bicubic_lr(np.zeros((228, 344, 3), np.uint8), 3).shape == (76, 114, 3)
    assert imresize(np.zeros((10, 7)), 2).shape == (20, 14)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_linear_ramp_downscale_gives_block_means(factor: int) -> None:
    # The symmetric cubic kernel reproduces linear functions, so away from the mirrored border
    # LR sample j of ramp f(i) = i is the centre of its HR block: factor * j + (factor - 1) / 2.
    n = 24 * factor
    ramp = np.tile(np.arange(n, dtype=np.float64), (n, 1))[:, :, None] / n
    out = imresize(ramp, 1 / factor)[:, :, 0] * n
    j = np.arange(out.shape[1])
    expected = factor * j + (factor - 1) / 2
    np.testing.assert_allclose(out[:, 3:-3], np.broadcast_to(expected[3:-3], out[:, 3:-3].shape), atol=1e-10)
    assert not np.allclose(out[:, 0], expected[0])  # the border does see the mirrored samples


def _padded_reference(img: np.ndarray, scale: float) -> np.ndarray:
    """BasicSR's formulation: symmetric np.pad by the tap overhang, then sliding dot products."""

    def resize_axis(x: np.ndarray, axis: int) -> np.ndarray:
        n = x.shape[axis]
        out_n = math.ceil(n * scale)
        width = 4 / scale if scale < 1 else 4.0
        u = np.arange(1, out_n + 1) / scale + 0.5 * (1 - 1 / scale)
        left = np.floor(u - width / 2).astype(int)
        taps = math.ceil(width) + 2
        ind = left[:, None] + np.arange(taps)[None]
        d = u[:, None] - ind
        s = min(scale, 1.0)
        ad = np.abs(s * d)
        k = np.where(
            ad <= 1,
            1.5 * ad**3 - 2.5 * ad**2 + 1,
            np.where(ad <= 2, -0.5 * ad**3 + 2.5 * ad**2 - 4 * ad + 2, 0),
        )
        w = s * k
        w /= w.sum(1, keepdims=True)
        pad_s, pad_e = max(0, 1 - ind.min()), max(0, ind.max() - n)
        pad = [(0, 0)] * x.ndim
        pad[axis] = (pad_s, pad_e)
        xp = np.moveaxis(np.pad(x, pad, mode="symmetric"), axis, 0)
        res = np.stack([np.tensordot(w[i], xp[ind[i] - 1 + pad_s], axes=(0, 0)) for i in range(out_n)])
        return np.moveaxis(res, 0, axis)

    return resize_axis(resize_axis(img, 0), 1)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2])
def test_matches_padded_reference_on_a_photograph(scale: float) -> None:
    img = data.astronaut()[:120, 60:168].astype(np.float64) / 255
    np.testing.assert_allclose(imresize(img, scale), _padded_reference(img, scale), atol=1e-12)


def test_torch_chw_matches_numpy_hwc_and_dtypes_are_kept() -> None:
    img = data.chelsea()[:60, :90].astype(np.float32) / 255
    out_np = imresize(img, 1 / 3)
    assert out_np.dtype == np.float32
    out_t = imresize(torch.from_numpy(img.transpose(2, 0, 1).copy()), 1 / 3)
    assert out_t.dtype == torch.float32 and tuple(out_t.shape) == (3, 20, 30)
    np.testing.assert_allclose(out_t.numpy().transpose(1, 2, 0), out_np, atol=1e-6)
    with pytest.raises(TypeError):
        imresize(data.chelsea()[:10, :10], 0.5)


def test_bicubic_lr_rounds_half_away_from_zero_after_clipping() -> None:
    hr = data.coffee()[:64, :66]
    expected = np.floor(np.clip(imresize(hr.astype(np.float64) / 255, 1 / 2), 0, 1) * 255 + 0.5)
    lr = bicubic_lr(hr, 2)
    assert lr.dtype == np.uint8 and lr.shape == (32, 33, 3)
    np.testing.assert_array_equal(lr, expected.astype(np.uint8))
