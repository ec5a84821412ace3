"""What a report can say about its differences: seeds, paired per-image statistics and cost.

For every cell against the table's reference cells (``references`` in the table file; by
default its ``scratch`` and ``logits`` cells), per benchmark: the mean per-image PSNR
difference (images paired by name, each averaged over the seeds), its bootstrap 95% interval,
the Wilcoxon signed-rank p-value, the spread of the per-seed differences, and the published
difference beside it (:mod:`dckd.reporting.stats`). A difference is *resolved* when its
interval excludes zero. The cost of each cell (summed over its seeds) comes with its
pre-run estimate (:mod:`dckd.training.calibrate`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dckd.reporting.stats import PairedDifference, compare, per_seed_differences, seed_spread

if TYPE_CHECKING:
    from dckd.reporting.report import CellResult, TableInfo

DASH = "—"


@dataclass
class SeedRun:
    """One training run of a cell: its seed, test scores, per-image PSNRs and what it cost."""

    seed: int | None
    run_id: str | None
    status: str
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)  # benchmark -> image -> PSNR
    cost: dict[str, float] = field(default_factory=dict)  # cost/* metrics without the prefix


@dataclass
class Comparison:
    """One cell against one reference cell on one benchmark."""

    cell: str
    label: str
    reference: str
    reference_label: str
    benchmark: str
    diff: PairedDifference
    seeds: int
    per_seed: list[float]
    published: float | None

    @property
    def seeds_agree(self) -> bool:
        """Every seed's own difference has the sign of the interval (trivially true for one seed)."""
        return all((d > 0) == (self.diff.mean > 0) and d != 0 for d in self.per_seed) if len(self.per_seed) > 1 \
            else True

    @property
    def resolved(self) -> bool:
        """The interval over images excludes zero and, with several seeds, no seed's difference has the
        other sign: the bootstrap over images does not see training noise, the seeds do."""
        return self.diff.resolved and self.seeds_agree

    @property
    def verdict(self) -> str:
        if self.diff.resolved and not self.seeds_agree:
            return "no: seeds disagree"
        if not self.diff.resolved:
            return "no"
        return "yes, better" if self.diff.mean > 0 else "yes, worse"


def _per_image_by_seed(result: CellResult, bench: str) -> dict[int, dict[str, float]]:
    return {(run.seed if run.seed is not None else 0): run.per_image[bench]
            for run in result.runs if run.status == "ok" and run.per_image.get(bench)}


def comparisons(info: TableInfo, results: Sequence[CellResult]) -> list[Comparison]:
    """Every cell against each reference cell (a reference against the references listed before it)."""
    by_id = {r.cell: r for r in results if r.table == info.table}
    refs = [r for r in info.references if r in by_id]
    out = []
    for r in (r for r in results if r.table == info.table):
        for ref_id in refs:
            if ref_id == r.cell or (r.cell in refs and refs.index(r.cell) < refs.index(ref_id)):
                continue
            ref = by_id[ref_id]
            for bench in info.benchmarks:
                a, b = _per_image_by_seed(r, bench), _per_image_by_seed(ref, bench)
                if not a or not b:
                    continue
                diff = compare(list(a.values()), list(b.values()))
                if diff.n == 0:
                    continue
                pub_a, pub_b = (r.published or {}).get(bench), (ref.published or {}).get(bench)
                published = (float(pub_a[0]) - float(pub_b[0])) if pub_a and pub_b else None
                out.append(Comparison(r.cell, r.label or r.cell, ref_id, ref.label or ref_id, bench, diff,
                                      min(len(a), len(b)), per_seed_differences(a, b), published))
    return out


def seed_psnr(result: CellResult, bench: str) -> list[float]:
    """The benchmark PSNR of each finished seed of a cell."""
    return [run.metrics[bench][0] for run in result.runs if run.status == "ok" and bench in run.metrics]


def cost_total(result: CellResult, key: str) -> float | None:
    values = [run.cost[key] for run in result.runs if key in run.cost]
    return sum(values) if values else None


def device_time(seconds: float | None) -> str:
    from dckd.training.calibrate import hours

    return DASH if seconds is None or not math.isfinite(seconds) else hours(seconds)


# --------------------------------------------------------------------------- rows both renderings share
def _signed(v: float | None, d: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return DASH
    return f"{round(v, d) + 0.0:+.{d}f}"


def _p(p: float | None) -> str:
    if p is None:
        return DASH
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def comparison_rows(comps: Sequence[Comparison]) -> list[list[str]]:
    rows = []
    for c in comps:
        spread = DASH
        if len(c.per_seed) > 1:
            mean, std = seed_spread(c.per_seed)
            spread = f"{_signed(mean)} ± {std:.3f}"
        rows.append([c.label, c.reference_label, c.benchmark, str(c.diff.n), str(c.seeds), _signed(c.diff.mean),
                     f"[{_signed(c.diff.low)}, {_signed(c.diff.high)}]", _p(c.diff.p_value), c.verdict, spread,
                     _signed(c.published, 2)])
    return rows


COMPARISON_HEAD = ["cell", "vs", "benchmark", "images", "seeds", "Δ PSNR", "95% interval", "Wilcoxon p",
                   "resolved at 95%", "per-seed Δ (mean ± std)", "published Δ"]
COST_HEAD = ["cell", "seeds", "PSNR per seed (mean ± std)", "wall", "device time", "training steps",
             "images/s", "peak memory", "estimate (steps)", "actual steps / estimate"]


def cost_rows(info: TableInfo, results: Sequence[CellResult]) -> list[list[str]]:
    rows = []
    tot = {"device_s": 0.0, "train_s": 0.0, "estimate": 0.0}
    seen = {"device_s": False, "estimate": False}
    for r in (r for r in results if r.table == info.table):
        spreads = []
        for bench in info.benchmarks:
            mean, std = seed_spread(seed_psnr(r, bench))
            if math.isfinite(mean):
                spreads.append(f"{bench} {mean:.2f}" + (f" ± {std:.3f}" if std is not None else ""))
        device_s, train_s = cost_total(r, "device_s"), cost_total(r, "train_s")
        est = (r.estimate or {}).get("device_s")
        per_worker = max((run.cost.get("workers", 1.0) * run.cost.get("devices_per_worker", 1.0)
                          for run in r.runs if run.cost), default=1.0)
        step_device_s = None if train_s is None else train_s * per_worker
        ratio = (f"{step_device_s / est:.2f}x" if step_device_s is not None and est else DASH)
        peaks = [run.cost["peak_mem_mb"] for run in r.runs if "peak_mem_mb" in run.cost]
        speeds = [run.cost["images_per_s"] for run in r.runs if run.cost.get("images_per_s")]
        rows.append([r.label or r.cell, str(len(r.runs)), "; ".join(spreads) or DASH,
                     device_time(cost_total(r, "wall_s")), device_time(device_s), device_time(step_device_s),
                     f"{sum(speeds) / len(speeds):.1f}" if speeds else DASH,
                     f"{max(peaks):.0f} MB" if peaks else DASH,
                     device_time(est) if est is not None else DASH, ratio])
        if device_s is not None:
            tot["device_s"] += device_s
            seen["device_s"] = True
        if step_device_s is not None:
            tot["train_s"] += step_device_s
        if est is not None:
            tot["estimate"] += est
            seen["estimate"] = True
    if rows:
        ratio = f"{tot['train_s'] / tot['estimate']:.2f}x" if seen["estimate"] and tot["estimate"] else DASH
        rows.append(["total", str(sum(int(r[1]) for r in rows)), "", "",
                     device_time(tot["device_s"]) if seen["device_s"] else DASH,
                     device_time(tot["train_s"]) if seen["device_s"] else DASH, "", "",
                     device_time(tot["estimate"]) if seen["estimate"] else DASH, ratio])
    return rows


def table_total(info: TableInfo, results: Sequence[CellResult]) -> str | None:
    """The table's device time in one phrase (None when no run logged a cost)."""
    values = [v for r in results if r.table == info.table and (v := cost_total(r, "device_s")) is not None]
    return f"{device_time(sum(values))} of device time" if values else None


# --------------------------------------------------------------------------- files
def write_paired_csv(comps_by_table: dict[str, list[Comparison]], path: Path) -> Path:
    cols = ["table", "cell", "reference", "benchmark", "images", "seeds", "delta_psnr", "ci_low", "ci_high",
            "wilcoxon_p", "resolved", "per_seed_delta", "published_delta"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for table, comps in comps_by_table.items():
            for c in comps:
                w.writerow([table, c.cell, c.reference, c.benchmark, c.diff.n, c.seeds, repr(c.diff.mean),
                            repr(c.diff.low), repr(c.diff.high), "" if c.diff.p_value is None else repr(c.diff.p_value),
                            str(c.resolved).lower(), ";".join(repr(d) for d in c.per_seed),
                            "" if c.published is None else repr(round(c.published, 6))])
    return path


def write_per_image_csv(results: Sequence[CellResult], path: Path) -> Path | None:
    """Every run's per-image PSNR in one file (table, cell, seed, run, benchmark, image, psnr)."""
    rows = [[r.table, r.cell, "" if run.seed is None else run.seed, run.run_id or "", bench, image, repr(v)]
            for r in results for run in r.runs for bench, images in run.per_image.items()
            for image, v in images.items()]
    if not rows:
        return None
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["table", "cell", "seed", "run_id", "benchmark", "image", "psnr"])
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- plots
def plot_seeds(info: TableInfo, results: Sequence[CellResult], path: Path, plain: Any) -> Path | None:
    """Per-cell test PSNR: the mean over seeds with ± one std (K > 1) and each seed as a dot."""
    cells = [r for r in results if r.table == info.table and any(seed_psnr(r, b) for b in info.benchmarks)]
    benches = [b for b in info.benchmarks if any(seed_psnr(r, b) for r in cells)]
    if not cells or not benches:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(benches), figsize=(max(3.8, 0.7 * len(cells) + 1.6) * len(benches), 3.6),
                             dpi=110, squeeze=False)
    for ax, bench in zip(axes.flat, benches):
        for x, r in enumerate(cells):
            values = seed_psnr(r, bench)
            if not values:
                continue
            mean, std = seed_spread(values)
            ax.bar(x, mean, 0.6, color="tab:blue", alpha=0.35)
            if std is not None:
                ax.errorbar(x, mean, yerr=std, color="black", capsize=4, linewidth=1)
            ax.scatter([x] * len(values), values, s=14, color="tab:blue", zorder=3)
        vals = [v for r in cells for v in seed_psnr(r, bench)]
        span = max(vals) - min(vals)
        ax.set_ylim(min(vals) - max(0.1, span), max(vals) + max(0.1, span))
        ax.set_xticks(range(len(cells)), [plain(r.label or r.cell) for r in cells], rotation=30, ha="right",
                      fontsize=8)
        ax.set_title(plain(bench))
        ax.set_ylabel("test PSNR (dB)")
        ax.grid(axis="y", alpha=0.3)
    k = max(len(r.runs) for r in cells)
    fig.suptitle(plain(f"{info.table}: PSNR per cell" + (f", mean ± std over {k} seeds (dots: seeds)" if k > 1
                                                          else " (one seed: no error bars)")), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_forest(info: TableInfo, comps: Sequence[Comparison], path: Path, plain: Any) -> Path | None:
    """The paired differences with their 95% intervals, one row each; published differences as diamonds."""
    if not comps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 0.42 * len(comps) + 1.6), dpi=110)
    ys = list(range(len(comps)))[::-1]
    for y, c in zip(ys, comps):
        color = "tab:green" if c.resolved and c.diff.mean > 0 else "tab:red" if c.resolved else "tab:gray"
        ax.plot([c.diff.low, c.diff.high], [y, y], color=color, linewidth=2)
        ax.plot([c.diff.mean], [y], "o", color=color)
        if c.published is not None:
            ax.plot([c.published], [y], "D", markerfacecolor="none", markeredgecolor="black", markersize=6)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [plain(f"{c.label} − {c.reference_label} ({c.benchmark})") for c in comps], fontsize=8)
    ax.set_xlabel("Δ PSNR (dB), paired by image: mean, 95% interval")
    ax.plot([], [], "D", markerfacecolor="none", markeredgecolor="black", label="published Δ")
    ax.plot([], [], "-", color="tab:gray", label="not resolved (interval or seeds)")
    ax.plot([], [], "-", color="tab:green", label="resolved, better")
    ax.plot([], [], "-", color="tab:red", label="resolved, worse")
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(plain(f"{info.table}: paired differences against the reference cells"), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
