"""The DCR degradation module (paper Eq. 4): random blur, resize and noise of the LR input.

Parameters follow the authors' release (Real-ESRGAN-style first-order degradation): blur
kernel sizes from {3,...,11} and sigmas in [0.1, 2] drawn independently per axis and once
per degraded copy; resize up (p 0.25, x U(1, 1.5)) or down (x U(0.5, 1)) with a random
mode, undone after the noise; Gaussian noise with sigma U(1, 30)/255 per image, grey with
probability ``gray_noise_prob``, clipped to [0, 1] and not rounded.

Two of the release's quirks are switches (``DegradationConfig``), off by default and on in the
``dckd_release`` preset: BasicSR's noise helper draws one grey noise field for the whole batch
(``released_shared_gray_noise``), and nothing clamps after the resize back, so bicubic overshoot
stays in the negative (``released_unclamped_resize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dckd.config import DegradationConfig


@dataclass
class StepRng:
    """Random sources of one training step: scalars on the CPU, tensors on the batch's device.

    Both are seeded per iteration, so a resumed run draws exactly what it would have drawn.
    """

    cpu: torch.Generator
    device: torch.Generator

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> StepRng:
        cpu = torch.Generator().manual_seed(seed)
        dev = torch.Generator(device=device).manual_seed(seed + 1) if device.type != "cpu" else cpu
        return cls(cpu=cpu, device=dev)

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.cpu))

    def bernoulli(self, p: float) -> bool:
        return bool(torch.rand((), generator=self.cpu) < p)

    def choice(self, items: list):
        return items[int(torch.randint(len(items), (), generator=self.cpu))]


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps centred on the middle tap (kornia's ``get_gaussian_kernel1d``)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).float()


def gaussian_blur(x: torch.Tensor, size_xy: tuple[int, int], sigma_xy: tuple[float, float]) -> torch.Tensor:
    """Separable, axis-aligned Gaussian blur with reflect padding (kornia ``gaussian_blur2d``)."""
    c = x.shape[1]
    kx = gaussian_kernel1d(size_xy[0], sigma_xy[0]).to(x)
    ky = gaussian_kernel1d(size_xy[1], sigma_xy[1]).to(x)
    px, py = size_xy[0] // 2, size_xy[1] // 2
    mode = "reflect" if min(x.shape[-2:]) > max(px, py) else "replicate"
    y = F.pad(x, (px, px, py, py), mode=mode)
    y = F.conv2d(y, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=size, mode=mode, **kwargs)


def add_gaussian_noise(x: torch.Tensor, sigma_range: tuple[float, float], gray_prob: float,
                       rng: StepRng, shared_gray: bool = False) -> torch.Tensor:
    """Per-image sigma (0-255 scale) and per-image grey/colour choice, clipped to [0, 1].

    ``shared_gray``: the grey images of the batch all get the same unit noise field (each scaled
    by its own sigma), as BasicSR's ``generate_gaussian_noise_pt`` draws one HxW field per call.
    """
    b, c = x.shape[:2]
    lo, hi = sigma_range
    sigma = (lo + (hi - lo) * torch.rand(b, generator=rng.cpu)) / 255.0
    gray = torch.rand(b, generator=rng.cpu) < gray_prob
    noise = torch.randn(x.shape, generator=rng.device, device=x.device, dtype=x.dtype)
    if bool(gray.any()):
        fields = 1 if shared_gray else b
        gray_noise = torch.randn((fields, 1, *x.shape[2:]), generator=rng.device, device=x.device, dtype=x.dtype)
        noise = torch.where(gray.to(x.device).view(b, 1, 1, 1), gray_noise.expand_as(x), noise)
    return (x + noise * sigma.to(x).view(b, 1, 1, 1)).clamp(0.0, 1.0)


def degrade(x: torch.Tensor, cfg: DegradationConfig, rng: StepRng) -> torch.Tensor:
    """One degraded copy of a batch: blur -> resize -> noise -> resize back (each with its probability)."""
    h, w = x.shape[-2:]
    y = x
    if cfg.blur_prob > 0 and rng.bernoulli(cfg.blur_prob):
        ks = (rng.choice(cfg.blur_kernel_sizes), rng.choice(cfg.blur_kernel_sizes))
        sig = (rng.uniform(*cfg.blur_sigma), rng.uniform(*cfg.blur_sigma))
        y = gaussian_blur(y, ks, sig)
    resized = False
    if cfg.resize_prob > 0 and rng.bernoulli(cfg.resize_prob):
        up = rng.bernoulli(cfg.resize_up_prob)
        s = rng.uniform(*(cfg.resize_up_range if up else cfg.resize_down_range))
        size = (max(1, math.floor(h * s)), max(1, math.floor(w * s)))
        y = _resize(y, size, rng.choice(cfg.resize_modes))
        resized = True
    if cfg.noise_prob > 0 and rng.bernoulli(cfg.noise_prob):
        y = add_gaussian_noise(y, cfg.noise_sigma, cfg.gray_noise_prob, rng, cfg.released_shared_gray_noise)
    if resized:
        y = _resize(y, (h, w), rng.choice(cfg.resize_modes))
    return y if cfg.released_unclamped_resize else y.clamp(0.0, 1.0)


def negative_inputs(lq: torch.Tensor, num_negatives: int, cfg: DegradationConfig, rng: StepRng) -> torch.Tensor:
    """``[clean LR] + (N-1) degraded copies`` stacked along the batch, for one history-model pass."""
    copies = [lq] + [degrade(lq, cfg, rng) for _ in range(num_negatives - 1)]
    return torch.cat(copies, dim=0)
