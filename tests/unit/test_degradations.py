"""The DCR degradation module: kernels by hand, ranges, determinism, the negative batch layout."""

from __future__ import annotations

import math

import pytest
import torch

from dckd.config import DegradationConfig
from dckd.degradations import StepRng, degrade, gaussian_blur, gaussian_kernel1d, negative_inputs


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
