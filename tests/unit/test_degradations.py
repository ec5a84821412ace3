"""The DCR degradation module: kernels by hand, ranges, determinism, the negative batch layout."""

from __future__ import annotations

import math

import pytest
import torch

from dckd.config import DegradationConfig
from dckd.losses.degradations import StepRng, degrade, gaussian_blur, gaussian_kernel1d, negative_inputs


def rng(seed: int = 0) -> StepRng:
    return StepRng.seeded(seed, torch.device("cpu"))


def test_gaussian_kernel_by_hand() -> None:
    # size 3, sigma 1: exp(-x^2/2) at x = -1, 0, 1 -> (e^-0.5, 1, e^-0.5) / (1 + 2 e^-0.5)
    e = math.exp(-0.5)
    expected = torch.tensor([e, 1.0, e]) / (1 + 2 * e)
    torch.testing.assert_close(gaussian_kernel1d(3, 1.0), expected)


def test_blur_keeps_constants_and_is_separable_per_axis() -> None:
    x = torch.full((1, 3, 9, 9), 0.25)
    torch.testing.assert_close(gaussian_blur(x, (5, 3), (1.0, 0.5)), x)
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[..., 4, 4] = 1.0
    out = gaussian_blur(impulse, (3, 5), (1.0, 2.0))
    torch.testing.assert_close(out[0, 0, 4, 3:6], gaussian_kernel1d(3, 1.0) * gaussian_kernel1d(5, 2.0)[2])
    torch.testing.assert_close(out[0, 0, 2:7, 4], gaussian_kernel1d(5, 2.0) * gaussian_kernel1d(3, 1.0)[1])


def test_noise_only_as_released() -> None:
    cfg = DegradationConfig()  # noise only, sigma U(1, 30)/255, grey with p 0.5
    x = torch.full((64, 3, 32, 32), 0.5)
    y = degrade(x, cfg, rng(1))
    sigma = (y - x).flatten(1).std(dim=1) * 255
    assert sigma.min() > 0.8 and sigma.max() < 31
    gray = ((y[:, 0] - y[:, 1]).abs().amax(dim=(1, 2)) == 0)
    assert 10 < int(gray.sum()) < 54  # about half of the images get grey noise
    assert y.min() >= 0 and y.max() <= 1


def test_degradations_are_deterministic_per_seed_and_keep_the_size() -> None:
    cfg = DegradationConfig(type="mix")
    x = torch.rand(2, 3, 24, 20)
    a, b, c = degrade(x, cfg, rng(5)), degrade(x, cfg, rng(5)), degrade(x, cfg, rng(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape


@pytest.mark.parametrize("kind", ["blur", "resize"])
def test_blur_and_resize_alone_add_no_noise(kind: str) -> None:
    x = torch.full((2, 3, 16, 16), 0.3)
    y = degrade(x, DegradationConfig(type=kind), rng(2))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_negative_batch_is_clean_first_then_degraded_copies() -> None:
    x = torch.rand(3, 3, 8, 8)
    negs = negative_inputs(x, 5, DegradationConfig(), rng(0))
    assert negs.shape == (15, 3, 8, 8)
    assert torch.equal(negs[:3], x)
    assert all(not torch.equal(negs[3 * k:3 * k + 3], x) for k in range(1, 5))
    assert negative_inputs(x, 1, DegradationConfig(), rng(0)).shape == (3, 3, 8, 8)


def _correlations(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between the noise fields (channel 0) of every pair of images."""
    n = (y - x)[:, 0].flatten(1)
    n = (n - n.mean(1, keepdim=True)) / n.std(1, keepdim=True)
    return (n @ n.t()) / (n.shape[1] - 1)


@pytest.mark.parametrize("shared", [True, False])
def test_grey_noise_is_one_field_for_the_batch_only_with_the_release_switch(shared: bool) -> None:
    # BasicSR's generate_gaussian_noise_pt draws torch.randn(H, W) once and scales it by each
    # image's sigma: every grey image of the batch carries the same pattern.
    cfg = DegradationConfig(noise_prob=1.0, gray_noise_prob=1.0, released_shared_gray_noise=shared)
    x = torch.full((6, 3, 24, 24), 0.5)  # mid-grey: the clip to [0, 1] never bites at sigma <= 30/255
    y = degrade(x, cfg, rng(4))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])  # grey noise: channels equal
    corr = _correlations(y, x)
    off_diagonal = corr[~torch.eye(6, dtype=torch.bool)]
    if shared:
        assert off_diagonal.min() > 0.9999
        # the pattern is shared, the strength is each image's own sigma
        spread = (y - x)[:, 0].flatten(1).std(1)
        assert spread.max() / spread.min() > 1.05
    else:
        assert off_diagonal.abs().max() < 0.25


def test_colour_noise_stays_independent_under_the_release_switch() -> None:
    cfg = DegradationConfig(noise_prob=1.0, gray_noise_prob=0.0, released_shared_gray_noise=True)
    x = torch.full((4, 3, 24, 24), 0.5)
    y = degrade(x, cfg, rng(4))
    assert _correlations(y, x)[~torch.eye(4, dtype=torch.bool)].abs().max() < 0.25


@pytest.mark.parametrize("seed", range(4))
def test_resize_negatives_keep_bicubic_overshoot_only_with_the_release_switch(seed: int) -> None:
    # A hard edge: bicubic's negative lobes overshoot on both sides, down and back up.
    x = torch.zeros(2, 3, 24, 24)
    x[..., 12:] = 1.0
    kw = {"type": "resize", "resize_modes": ["bicubic"]}
    released = degrade(x, DegradationConfig(**kw, released_unclamped_resize=True), rng(seed))
    clamped = degrade(x, DegradationConfig(**kw), rng(seed))
    assert released.min() < -0.01 and released.max() > 1.01
    assert clamped.min() >= 0.0 and clamped.max() <= 1.0
    torch.testing.assert_close(clamped, released.clamp(0, 1), rtol=0, atol=0)  # the same draw, clamped
