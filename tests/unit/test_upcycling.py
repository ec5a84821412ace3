"""DUKD data upcycling: zoom-in tiles are exact, distinct grid cells; zoom-out is MATLAB bicubic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata

from dckd.data.matlab_resize import imresize
from dckd.losses.upcycling import zoom_in_tiles, zoom_out


def _coordinate_gt(batch: int, height: int, width: int) -> torch.Tensor:
    """GT whose channels hold (row, column, sample index): every pixel says where it came from."""
    rows = torch.arange(height, dtype=torch.float32).view(1, height, 1).expand(batch, height, width)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, width).expand(batch, height, width)
    sample = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1).expand(batch, height, width)
    return torch.stack([rows, cols, sample], dim=1).contiguous()


def _cells(tiles: torch.Tensor, gt: torch.Tensor, scale: int, n_tiles: int) -> list[list[tuple[int, int]]]:
    """Grid cell (row, col) of every tile, per sample, after checking each is that exact cell."""
    b = gt.shape[0]
    h, w = gt.shape[-2] // scale, gt.shape[-1] // scale
    out = []
    for s in range(b):
        cells = []
        for k in range(n_tiles):
            tile = tiles[s * n_tiles + k]
            r, c = int(tile[0, 0, 0]) // h, int(tile[1, 0, 0]) // w
            assert int(tile[0, 0, 0]) % h == 0 and int(tile[1, 0, 0]) % w == 0, "tile not grid-aligned"
            torch.testing.assert_close(
                tile, gt[s, :, r * h : (r + 1) * h, c * w : (c + 1) * w], rtol=0, atol=0
            )
            cells.append((r, c))
        out.append(cells)
    return out


@pytest.mark.parametrize(("scale", "n_tiles"), [(2, 1), (2, 3), (3, 2), (4, 16)])
def test_tiles_are_exact_distinct_grid_cells_sample_major(scale: int, n_tiles: int) -> None:
    h, w = 4, 5  # LR tile size, deliberately not square
    gt = _coordinate_gt(3, scale * h, scale * w)
    tiles = zoom_in_tiles(gt, scale, n_tiles, torch.Generator().manual_seed(0))
    assert tiles.shape == (3 * n_tiles, 3, h, w)
    assert tiles.dtype == gt.dtype
    # Sample-major: rows b*n ... b*n+n-1 all come from sample b.
    assert tiles[:, 2, 0, 0].tolist() == [float(b) for b in range(3) for _ in range(n_tiles)]
    for cells in _cells(tiles, gt, scale, n_tiles):
        assert len(set(cells)) == n_tiles, f"a cell repeats within a sample: {cells}"
        assert all(0 <= r < scale and 0 <= c < scale for r, c in cells)


def test_all_tiles_is_a_permutation_of_the_grid() -> None:
    gt = _coordinate_gt(2, 9, 6)
    tiles = zoom_in_tiles(gt, 3, 9, torch.Generator().manual_seed(1))
    for cells in _cells(tiles, gt, 3, 9):
        assert sorted(cells) == [(r, c) for r in range(3) for c in range(3)]


def test_cells_are_drawn_per_sample_and_cover_the_grid() -> None:
    gt = _coordinate_gt(64, 8, 8)
    tiles = zoom_in_tiles(gt, 2, 1, torch.Generator().manual_seed(2))
    cells = [c[0] for c in _cells(tiles, gt, 2, 1)]
    assert set(cells) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # P(miss one) = 4 * 0.75**64 ~ 1e-8


def test_seeded_generator_is_deterministic() -> None:
    gt = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    a = zoom_in_tiles(gt, 3, 2, torch.Generator().manual_seed(7))
    b = zoom_in_tiles(gt, 3, 2, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    draws = {zoom_in_tiles(gt, 3, 2, torch.Generator().manual_seed(seed)).sum().item() for seed in range(8)}
    assert len(draws) > 1, "different seeds should give different tiles"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_with_cuda_tensors_matches_cpu() -> None:
    gt = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    cpu = zoom_in_tiles(gt, 2, 2, torch.Generator().manual_seed(5))
    cuda = zoom_in_tiles(gt.cuda(), 2, 2, torch.Generator().manual_seed(5))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=0)


def test_zoom_in_errors() -> None:
    g = torch.Generator().manual_seed(0)
    gt = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"n_tiles must be an integer in \[1, 4\]"):
        zoom_in_tiles(gt, 2, 5, g)
    with pytest.raises(ValueError, match="n_tiles"):
        zoom_in_tiles(gt, 2, 0, g)
    with pytest.raises(ValueError, match="9x8 is not divisible by the scale 2"):
        zoom_in_tiles(torch.zeros(2, 3, 9, 8), 2, 1, g)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        zoom_in_tiles(torch.zeros(3, 8, 8), 2, 1, g)
    with pytest.raises(ValueError, match="scale"):
        zoom_in_tiles(gt, 0, 1, g)


def _astronaut_crops(size: tuple[int, int]) -> np.ndarray:
    """Two real-photo crops, float64 in [0, 1], HWC."""
    photo = skdata.astronaut().astype(np.float64) / 255.0
    h, w = size
    return np.stack([photo[40 : 40 + h, 60 : 60 + w], photo[200 : 200 + h, 230 : 230 + w]])


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zoom_out_matches_matlab_imresize_on_a_photo(scale: int, dtype: torch.dtype) -> None:
    crops = _astronaut_crops((48, 60))  # rectangular, divisible by 2, 3 and 4
    lq = torch.from_numpy(crops).permute(0, 3, 1, 2).to(dtype)
    small = zoom_out(lq, scale)
    assert small.shape == (2, 3, 48 // scale, 60 // scale)
    assert small.dtype == dtype and small.device == lq.device
    for b in range(2):
        # The reference takes the same (possibly float32-rounded) input the function saw.
        ref = np.clip(imresize(lq[b].permute(1, 2, 0).double().numpy(), 1.0 / scale), 0.0, 1.0)
        np.testing.assert_allclose(small[b].permute(1, 2, 0).double().numpy(), ref, rtol=0, atol=1e-6)


def test_zoom_out_clips_bicubic_overshoot() -> None:
    # A hard edge makes the cubic kernel ring outside [0, 1]; the student must not see that.
    lq = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    lq[..., 8:] = 1.0
    raw = imresize(lq[0].permute(1, 2, 0).numpy(), 0.5)
    assert raw.min() < 0.0 and raw.max() > 1.0
    small = zoom_out(lq, 2)
    assert small.min() >= 0.0 and small.max() <= 1.0
    np.testing.assert_allclose(small[0].permute(1, 2, 0).numpy(), np.clip(raw, 0.0, 1.0), atol=1e-12)


def test_zoom_out_errors() -> None:
    with pytest.raises(ValueError, match="LR size 50x48 is not divisible by the scale 4"):
        zoom_out(torch.zeros(1, 3, 50, 48), 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        zoom_out(torch.zeros(3, 8, 8), 2)
    with pytest.raises(TypeError, match="float"):
        zoom_out(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 2)
