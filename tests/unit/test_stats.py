"""Paired statistics against values computed independently here (by hand, by enumeration, by loops)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dckd.reporting.stats import (
    bootstrap_interval,
    compare,
    paired_difference,
    per_seed_differences,
    seed_averaged,
    seed_spread,
    wilcoxon_p,
)

# Hand-made per-image PSNRs of two methods on eight images.
A = [30.10, 28.40, 33.25, 31.00, 29.95, 27.30, 32.80, 30.55]
B = [30.00, 28.55, 33.05, 30.70, 29.90, 27.00, 32.35, 30.60]
# The differences, by hand (A - B, image by image):
D = [0.10, -0.15, 0.20, 0.30, 0.05, 0.30, 0.45, -0.05]


def test_the_paired_difference_is_the_mean_of_the_hand_computed_differences() -> None:
    assert np.allclose(np.subtract(A, B), D)
    res = paired_difference(A, B)
    assert res.n == 8
    assert res.mean == pytest.approx(sum(D) / 8)  # 1.20 / 8 = 0.15
    assert res.mean == pytest.approx(0.15)


def _bootstrap_by_loop(d: list[float], samples: int, seed: int) -> tuple[float, float]:
    """The same percentile bootstrap, written independently: one draw of indices per resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(d), size=(samples, len(d)))
    means = sorted(sum(d[i] for i in row) / len(d) for row in draws)

    def percentile(q: float) -> float:  # linear interpolation between order statistics (numpy's default)
        pos = q / 100 * (len(means) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (means[hi] - means[lo]) * (pos - lo)

    return percentile(2.5), percentile(97.5)


def test_the_bootstrap_interval_equals_an_independent_computation_with_the_same_seed() -> None:
    d = list(np.subtract(A, B))
    low, high = bootstrap_interval(d, samples=2000, seed=7)
    ref_low, ref_high = _bootstrap_by_loop(d, 2000, 7)
    assert (low, high) == pytest.approx((ref_low, ref_high), abs=1e-12)
    assert low < 0.15 < high
    # Same seed, same interval; the default is fixed, so a report is reproducible.
    assert paired_difference(A, B) == paired_difference(A, B)
    # The interval of a mean lies inside the range of the data and narrows with more samples of it.
    assert min(d) <= low and high <= max(d)
    wide = bootstrap_interval(d, samples=2000, seed=7)
    narrow = bootstrap_interval(d * 16, samples=2000, seed=7)
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2


def _exact_wilcoxon_two_sided(d: list[float]) -> float:
    """Exact signed-rank p-value by enumerating all 2^n sign patterns (no ties, no zeros)."""
    ranks = {v: r + 1 for r, v in enumerate(sorted(abs(x) for x in d))}
    r = [ranks[abs(x)] for x in d]
    t_plus = sum(ri for ri, x in zip(r, d) if x > 0)
    stats = [sum(ri for ri, s in zip(r, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    total = sum(r)
    t = min(t_plus, total - t_plus)  # the two-sided test on the smaller of T+ and T-
    tail = sum(1 for s in stats if s <= t) / len(stats)
    return min(1.0, 2 * tail)


def test_the_wilcoxon_p_value_equals_exact_enumeration() -> None:
    d = [0.12, -0.03, 0.25, 0.31, 0.07, 0.18, 0.44, -0.09]  # distinct |d|: no ties
    # Ranks of |d|: 0.03->1, 0.07->2, 0.09->3, 0.12->4, 0.18->5, 0.25->6, 0.31->7, 0.44->8;
    # T- = 1 + 3 = 4, so p = 2 * #{patterns with T <= 4} / 256 = 2 * 7 / 256 (hand count:
    # sums <= 4 of distinct ranks from 1..8: {}, {1}, {2}, {3}, {4}, {1,2}, {1,3}).
    assert _exact_wilcoxon_two_sided(d) == pytest.approx(14 / 256)
    assert wilcoxon_p(d) == pytest.approx(14 / 256)
    assert paired_difference(np.add(d, 30.0), np.full(8, 30.0)).p_value == pytest.approx(14 / 256)


def test_resolved_means_the_interval_excludes_zero() -> None:
    clear = paired_difference([31.0 + 0.01 * i for i in range(20)], [30.0] * 20)
    assert clear.resolved and clear.low > 0.9 and clear.p_value < 1e-4
    noise = paired_difference([30.0, 30.2, 29.9, 30.1], [30.1, 30.0, 30.0, 30.05])
    assert not noise.resolved and noise.low < 0 < noise.high
    same = paired_difference([30.0, 31.0], [30.0, 31.0])
    assert same.mean == 0 and same.p_value is None and not same.resolved
    single = paired_difference([31.0], [30.0])
    assert single.low == single.high == pytest.approx(1.0) and not single.resolved
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0, 2.0], [1.0])


def test_seeds_are_averaged_per_image_before_pairing_and_their_spread_reported() -> None:
    cell = {0: {"a": 30.0, "b": 31.0, "c": 29.0}, 1: {"a": 30.4, "b": 31.2, "c": 29.2}}
    ref = {0: {"a": 29.8, "b": 30.9, "c": 29.1}, 1: {"a": 30.0, "b": 31.1, "c": 28.9}}
    assert seed_averaged(list(cell.values())) == pytest.approx({"a": 30.2, "b": 31.1, "c": 29.1})
    res = compare(list(cell.values()), list(ref.values()))
    # by hand: averaged cell 30.2, 31.1, 29.1; averaged ref 29.9, 31.0, 29.0; differences .3 .1 .1
    assert res.n == 3 and res.mean == pytest.approx(0.5 / 3)
    # per seed: seed 0: (.2 + .1 - .1) / 3; seed 1: (.4 + .1 + .3) / 3
    per_seed = per_seed_differences(cell, ref)
    assert per_seed == pytest.approx([0.2 / 3, 0.8 / 3])
    mean, std = seed_spread(per_seed)
    assert mean == pytest.approx(0.5 / 3) and std == pytest.approx(math.sqrt(2) * 0.3 / 3)
    assert seed_spread([30.0]) == (30.0, None)
    # An image a seed lacks is left out of the pairing, not filled in.
    partial = compare([{"a": 30.0, "b": 31.0}, {"a": 30.0}], [{"a": 29.0, "b": 30.0}])
    assert partial.n == 1 and partial.mean == pytest.approx(1.0)


def test_tiles_compare_the_images_psnr_from_their_errors_with_a_bootstrap_within_each_image() -> None:
    from dckd.reporting.stats import tiled_difference

    # Two images of three tiles. A flat tile at ~56 dB and textured ones at ~30 dB: averaging tile
    # PSNRs would let the flat tile decide; the image's PSNR is set by its error.
    a = {"x@0,0": 56.0, "x@0,1": 30.5, "x@0,2": 31.0, "y@0,0": 28.0, "y@0,1": 29.0, "y@0,2": 27.5}
    b = {"x@0,0": 58.0, "x@0,1": 30.0, "x@0,2": 30.6, "y@0,0": 27.8, "y@0,1": 28.9, "y@0,2": 27.0}
    mse = {k: {n: 10 ** (-v / 10) for n, v in d.items()} for k, d in (("a", a), ("b", b))}

    def image_delta(img: str, tiles: list[str]) -> float:
        ma = sum(mse["a"][f"{img}@0,{t}"] for t in tiles) / len(tiles)
        mb = sum(mse["b"][f"{img}@0,{t}"] for t in tiles) / len(tiles)
        return 10 * math.log10(mb / ma)

    res = tiled_difference(a, b, samples=500, seed=3)
    by_hand = (image_delta("x", ["0", "1", "2"]) + image_delta("y", ["0", "1", "2"])) / 2
    assert res.mean == pytest.approx(by_hand) and res.n == 6
    assert sum(a[n] - b[n] for n in a) / 6 < 0 < res.mean  # the tile-PSNR mean has the other sign
    # The bootstrap, written independently: per image, resample its three tiles (same draws in order).
    rng = np.random.default_rng(3)
    draws = {img: rng.integers(0, 3, size=(500, 3)) for img in ("x", "y")}
    boot = [(image_delta("x", [str(i) for i in draws["x"][s]]) + image_delta("y", [str(i) for i in draws["y"][s]]))
            / 2 for s in range(500)]
    assert (res.low, res.high) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])), abs=1e-12)
    # Wilcoxon on the per-tile error differences mse(b) - mse(a): positive where a is better.
    from scipy.stats import wilcoxon

    d = [mse["b"][n] - mse["a"][n] for n in sorted(a)]
    assert res.p_value == pytest.approx(wilcoxon(d).pvalue)
    # compare() takes this path for tile names, averaging each tile's error over seeds.
    assert compare([a], [b]) == tiled_difference(a, b)
    two = compare([a, a], [b, b])
    assert two.mean == pytest.approx(res.mean)
