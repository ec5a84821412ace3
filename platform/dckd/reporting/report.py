"""The report of a reproduction: reproduced numbers against the paper's, as Markdown and HTML.

``dckd reproduce`` gathers one :class:`CellResult` per table cell and calls :func:`write_report`,
which writes into its output folder:

    report.md        tables, plots and samples by relative path (readable on a repository host)
    report.html      the same, self-contained: inline CSS, plots and samples as data: URIs,
                     so one file can be mailed or logged as an MLflow artifact and still show
    results.csv      one row per (table, cell, benchmark) for further analysis
    paired.csv       each cell against the reference cells: paired Δ PSNR, 95% interval, Wilcoxon p
    per_image.csv    every run's per-image PSNR (the paired statistics can be redone from it)
    plots/           per table: reproduced vs published PSNR, the PSNR difference, PSNR over
                     seeds (K > 1) and a forest plot of the paired differences
    samples/         the first side-by-side restoration of each cell

Nothing in a result is trusted to be complete: a cell that failed has no metrics, a cell the
paper did not report has no published numbers, and both render as "—" rather than failing the
report that is meant to show them. A scaled-down smoke run says so at the very top, because its
numbers look like a (bad) reproduction and are not one.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import mimetypes
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dckd.reporting import evidence
from dckd.reporting.describe import PRESET_LEGEND
from dckd.reporting.evidence import Comparison, SeedRun

if TYPE_CHECKING:
    from dckd.reporting.tables import TableSpec

DASH = "—"
SAMPLE_LEGEND = "input (nearest-upscaled) | teacher | student | ground truth"
#: The settings of a cell the report shows beside its scores, with their column headings.
SETTINGS = {"method": "method (preset and changes)", "terms": "loss terms", "schedule": "learning rate",
            "batch": "batch per step"}
CSV_COLUMNS = ["table", "cell", "label", "benchmark", "status", "reproduced_psnr", "reproduced_ssim",
               "published_psnr", "published_ssim", "delta_psnr", "delta_ssim", "run_id", *SETTINGS]


@dataclass
class TableInfo:
    """What the report needs of a table file: its names and the benchmark columns, in order."""

    table: str
    title: str = ""
    paper_ref: str = ""
    benchmarks: list[str] = field(default_factory=list)
    notes: str = ""
    #: The cells every other cell is compared with, image by image (``dckd.reporting.evidence``).
    references: list[str] = field(default_factory=list)

    @classmethod
    def from_spec(cls, spec: TableSpec) -> TableInfo:
        return cls(table=spec.table, title=spec.title, paper_ref=spec.paper_ref,
                   benchmarks=list(spec.benchmarks), notes=spec.notes, references=spec.reference_cells)

    @property
    def heading(self) -> str:
        parts = [p for p in (self.paper_ref, self.title) if p]
        return f"{self.table}: {' — '.join(parts)}" if parts else self.table


@dataclass
class CellResult:
    """One reproduced cell: its scores per benchmark, the paper's, and where it came from."""

    table: str
    cell: str
    label: str
    status: str  # "ok", "stopped", "error", "missing"
    metrics: dict[str, tuple[float, float]]
    published: dict[str, tuple[float, float]]
    run_id: str | None = None
    samples: list[Path] = field(default_factory=list)
    error: str | None = None
    #: How the cell trained, in words (``SETTINGS`` keys: method, terms, schedule, batch).
    settings: dict[str, str] = field(default_factory=dict)
    #: Its training runs, one per seed (``metrics`` is their mean); empty when not known.
    runs: list[SeedRun] = field(default_factory=list)
    #: The pre-run estimate of its training steps, summed over seeds (``device_s``, ``train_s``).
    estimate: dict[str, float] | None = None
    best_seed: int | None = None  # the seed whose student was registered, with K > 1
    registered: str | None = None


# --------------------------------------------------------------------------- numbers
Pair = tuple[float | None, float | None]


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def score(values: Mapping[str, Sequence[Any]] | None, benchmark: str) -> Pair:
    """(PSNR, SSIM) of a benchmark, None where absent; tolerates lists (JSON) and short tuples."""
    pair = (values or {}).get(benchmark)
    if pair is None:
        return None, None
    items = list(pair)
    return (_num(items[0]) if items else None), (_num(items[1]) if len(items) > 1 else None)


def delta(reproduced: float | None, published: float | None) -> float | None:
    """reproduced − published, None unless both are finite (an inf/NaN difference says nothing)."""
    if reproduced is None or published is None or not (math.isfinite(reproduced) and math.isfinite(published)):
        return None
    return reproduced - published


def fmt(value: float | None, decimals: int, signed: bool = False) -> str:
    if value is None:
        return DASH
    if not math.isfinite(value):
        return str(value)
    value = round(value, decimals) + 0.0  # + 0.0: no "-0.00" for a difference that rounds to zero
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


# --------------------------------------------------------------------------- the model both renderings share
@dataclass
class _Row:
    result: CellResult
    reproduced: dict[str, Pair]
    published: dict[str, Pair]
    best: set[str]  # benchmarks where this row has the best reproduced PSNR
    sample: Path | None = None  # relative to the output folder

    def deltas(self, bench: str) -> Pair:
        (rp, rs), (pp, ps) = self.reproduced[bench], self.published[bench]
        return delta(rp, pp), delta(rs, ps)


@dataclass
class _Table:
    info: TableInfo
    rows: list[_Row]
    plots: dict[str, Path] = field(default_factory=dict)  # kind -> path relative to the output folder
    comparisons: list[Comparison] = field(default_factory=list)
    results: list[CellResult] = field(default_factory=list)

    @property
    def benchmarks(self) -> list[str]:
        return self.info.benchmarks


def _build(tables: Sequence[TableInfo], results: Sequence[CellResult]) -> list[_Table]:
    """Group results under their tables; results of tables not passed get a table of their own.

    Benchmarks a result has beyond its table's columns are appended rather than dropped.
    """
    infos = {t.table: TableInfo(t.table, t.title, t.paper_ref, list(t.benchmarks), t.notes, list(t.references))
             for t in tables}
    grouped: dict[str, list[CellResult]] = {t: [] for t in infos}
    for r in results:
        grouped.setdefault(r.table, []).append(r)
    out = []
    for table_id, cells in grouped.items():
        info = infos.get(table_id) or TableInfo(table=table_id)
        for r in cells:
            for bench in [*(r.metrics or {}), *(r.published or {})]:
                if bench not in info.benchmarks:
                    info.benchmarks.append(bench)
        rows = [_Row(r, {b: score(r.metrics, b) for b in info.benchmarks},
                     {b: score(r.published, b) for b in info.benchmarks}, set()) for r in cells]
        for bench in info.benchmarks:
            values = [row.reproduced[bench][0] for row in rows]
            finite = [v for v in values if v is not None and math.isfinite(v)]
            if finite:
                top = max(finite)
                for row, v in zip(rows, values):
                    if v == top:
                        row.best.add(bench)
        out.append(_Table(info, rows, comparisons=evidence.comparisons(info, cells), results=cells))
    return out


# --------------------------------------------------------------------------- files
def write_csv(model: list[_Table], path: Path) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for t in model:
            for row in t.rows:
                r = row.result
                for bench in t.benchmarks:
                    (rp, rs), (pp, ps) = row.reproduced[bench], row.published[bench]
                    dp, ds = row.deltas(bench)
                    writer.writerow({
                        "table": t.info.table, "cell": r.cell, "label": r.label, "benchmark": bench,
                        "status": r.status, "reproduced_psnr": _csv(rp), "reproduced_ssim": _csv(rs),
                        "published_psnr": _csv(pp), "published_ssim": _csv(ps),
                        # rounded so that 32.60 − 32.56 reads 0.04, not 0.03999999999999915
                        "delta_psnr": _csv(None if dp is None else round(dp, 6)),
                        "delta_ssim": _csv(None if ds is None else round(ds, 6)),
                        "run_id": r.run_id or "",
                        **{k: r.settings.get(k, "") for k in SETTINGS},
                    })
    return path


def _csv(value: float | None) -> str:
    return "" if value is None else repr(value)


def copy_samples(model: list[_Table], out_dir: Path) -> None:
    """Copy each cell's first sample into ``samples/<table>/<cell>``; a missing file is skipped."""
    for t in model:
        for row in t.rows:
            src = next((Path(p) for p in row.result.samples or []), None)
            if src is None or not src.is_file():
                continue
            rel = Path("samples") / _slug(t.info.table) / f"{_slug(row.result.cell)}{src.suffix.lower() or '.png'}"
            dst = out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, dst)
            except shutil.SameFileError:
                pass
            except OSError:
                continue
            row.sample = rel


def _short(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_tables(model: list[_Table], out_dir: Path) -> None:
    """Per table, reproduced vs published PSNR and the PSNR difference; nothing for empty tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out_dir / "plots"
    for t in model:
        names = [_plain(_short(row.result.label or row.result.cell)) for row in t.rows]
        benches = [b for b in t.benchmarks
                   if any(_finite(row.reproduced[b][0]) is not None or _finite(row.published[b][0]) is not None
                          for row in t.rows)]
        if benches:
            ncols = min(len(benches), 3)
            nrows = math.ceil(len(benches) / ncols)
            width = max(3.6, 0.6 * len(t.rows) + 1.4)
            fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.6 * nrows), dpi=110, squeeze=False)
            for ax in axes.flat[len(benches):]:
                ax.set_visible(False)
            for ax, bench in zip(axes.flat, benches):
                rep = [_finite(row.reproduced[bench][0]) for row in t.rows]
                pub = [_finite(row.published[bench][0]) for row in t.rows]
                xs = range(len(t.rows))
                ax.bar([x - 0.2 for x in xs], [v or 0.0 for v in rep], 0.4, label="reproduced", color="tab:blue")
                ax.bar([x + 0.2 for x in xs], [v or 0.0 for v in pub], 0.4, label="published",
                       color="tab:gray", hatch="//", edgecolor="white")
                vals = [v for v in rep + pub if v is not None]
                # PSNRs differ by tenths of a dB on a scale of 30: a zero baseline would hide them.
                ax.set_ylim(max(0.0, min(vals) - 1.0), max(vals) + 0.5)
                ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
                ax.set_title(_plain(bench))
                ax.set_ylabel("PSNR (dB)")
                ax.grid(axis="y", alpha=0.3)
            axes.flat[0].legend(fontsize=8)
            fig.suptitle(_plain(f"{t.info.table}: reproduced vs published PSNR"))
            fig.tight_layout()
            t.plots["psnr"] = _save(fig, folder / f"{_slug(t.info.table)}_psnr.png", out_dir)
            plt.close(fig)
        with_delta = [b for b in t.benchmarks if any(row.deltas(b)[0] is not None for row in t.rows)]
        if with_delta:
            fig, ax = plt.subplots(figsize=(max(4.5, 0.5 * len(t.rows) * len(with_delta) + 2.0), 3.6), dpi=110)
            width = 0.8 / len(with_delta)
            for i, bench in enumerate(with_delta):
                ds = [row.deltas(bench)[0] for row in t.rows]
                xs = [x - 0.4 + width * (i + 0.5) for x in range(len(t.rows))]
                ax.bar(xs, [d if d is not None else 0.0 for d in ds], width, label=_plain(bench))
            ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_xticks(list(range(len(t.rows))), names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("Δ PSNR (dB)")
            ax.set_title(_plain(f"{t.info.table}: reproduced − published PSNR"))
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            t.plots["delta_psnr"] = _save(fig, folder / f"{_slug(t.info.table)}_delta_psnr.png", out_dir)
            plt.close(fig)
        if any(len(r.runs) > 1 for r in t.results):
            seeds = evidence.plot_seeds(t.info, t.results, folder / f"{_slug(t.info.table)}_psnr_seeds.png", _plain)
            if seeds is not None:
                t.plots["psnr_seeds"] = seeds.relative_to(out_dir)
        forest = evidence.plot_forest(t.info, t.comparisons, folder / f"{_slug(t.info.table)}_forest.png", _plain)
        if forest is not None:
            t.plots["forest"] = forest.relative_to(out_dir)


def _plain(text: str) -> str:
    """Text matplotlib shows as written: it reads "$...$" as mathtext and fails on a malformed one."""
    return text.replace("$", r"\$")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _save(fig: Any, path: Path, out_dir: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path.relative_to(out_dir)


# --------------------------------------------------------------------------- header text
def _scale_banner(scale_down: float) -> str:
    return (f"SCALED-DOWN SMOKE RUN (factor {scale_down:g}): the experiments ran scaled down to check the "
            "pipeline end to end. Its numbers are NOT comparable with the paper's; the differences below "
            "say nothing about whether the paper reproduces.")


def _status_summary(results: Sequence[CellResult]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    return f"{len(results)} cell{'s' if len(results) != 1 else ''}" + (f": {parts}" if parts else "")


def _mean_delta(t: _Table) -> str | None:
    ds = [d for row in t.rows for b in t.benchmarks if (d := row.deltas(b)[0]) is not None]
    if not ds:
        return None
    return f"mean Δ PSNR {fmt(sum(ds) / len(ds), 2, signed=True)} dB over {len(ds)} published score(s)"


def _summary_line(t: _Table) -> str | None:
    parts = [_status_summary([r.result for r in t.rows])]
    if (mean := _mean_delta(t)) is not None:
        parts.append(mean)
    if (cost := evidence.table_total(t.info, t.results)) is not None:
        parts.append(cost)
    return "; ".join(parts) if len(parts) > 1 else None


def _evidence_intro(t: _Table) -> str:
    seeds = max((len(r.runs) for r in t.results), default=0)
    refs = ", ".join(t.info.references) or "none"
    return (f"Paired differences against the reference cells ({refs}): Y-PSNR (dB) of each cell minus the "
            "reference's, image by image" + (f", each image averaged over the {seeds} seeds" if seeds > 1 else "")
            + "; the 95% interval is a percentile bootstrap over the images (10,000 resamples, seed 0) and "
            "p is the two-sided Wilcoxon signed-rank test. Resolved: the interval excludes 0. Where a test set "
            "is scored per tile (eval.score_tiles), each image's PSNR is recomputed from its tiles' errors, the "
            "bootstrap resamples tiles within each image and the test is on the per-tile errors; the images "
            "column then counts tiles."
            + (" The per-seed column is the spread of the seed-by-seed mean differences (same seed: same "
               "initial weights and data order), which the bootstrap over images does not see; a difference "
               "counts as resolved only if no seed's own difference has the other sign." if seeds > 1
               else ""))


def _best_seed_lines(t: _Table) -> list[str]:
    return [f"{r.label or r.cell}: the registered student is seed {r.best_seed}'s (best mean test PSNR of "
            f"{len(r.runs)} seeds)" + (f", {r.registered}" if r.registered else "")
            for r in t.results if r.best_seed is not None]


def _md_evidence(t: _Table) -> list[str]:
    lines: list[str] = []
    if t.comparisons:
        lines += [_md(_evidence_intro(t)), "", "| " + " | ".join(evidence.COMPARISON_HEAD) + " |",
                  "|" + "---|" * len(evidence.COMPARISON_HEAD)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in evidence.comparison_rows(t.comparisons)]
        lines.append("")
    elif t.results and not t.info.references:
        lines += ["No reference cells: name them with `references:` in the table file for paired statistics.", ""]
    cost = evidence.cost_rows(t.info, t.results)
    if any(r.runs for r in t.results):
        lines += ["Seeds and cost (device time = workers x devices x wall time; training steps: the part the "
                  "estimate covers, without start-up, validation and test):", "",
                  "| " + " | ".join(evidence.COST_HEAD) + " |", "|" + "---|" * len(evidence.COST_HEAD)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in cost]
        lines.append("")
    lines += [f"- {_md(line)}" for line in _best_seed_lines(t)]
    return lines + ([""] if _best_seed_lines(t) else [])


def _html_rows(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ['<div class="scroll"><table><thead><tr>' + "".join(f"<th>{_h(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="label">{_h(row[0])}</td>' if i == 0 else f"<td>{_h(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    return out + ["</tbody></table></div>"]


def _html_evidence(t: _Table) -> list[str]:
    out: list[str] = []
    if t.comparisons:
        out += [f'<p class="meta">{_h(_evidence_intro(t))}</p>',
                *_html_rows(evidence.COMPARISON_HEAD, evidence.comparison_rows(t.comparisons))]
    if any(r.runs for r in t.results):
        out += ['<p class="meta">Seeds and cost (device time = workers x devices x wall time; training steps: '
                "the part the estimate covers):</p>",
                *_html_rows(evidence.COST_HEAD, evidence.cost_rows(t.info, t.results))]
    out += [f'<p class="meta">{_h(line)}</p>' for line in _best_seed_lines(t)]
    return out


# --------------------------------------------------------------------------- Markdown
def _has_settings(t: _Table) -> bool:
    return any(row.result.settings for row in t.rows)


def _md(text: str) -> str:
    """Inline text that cannot break a Markdown table or turn into emphasis or HTML."""
    text = " ".join(str(text).split())
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text)


def _md_pair(pair: Pair, bold: bool = False) -> str:
    p, s = pair
    if p is None and s is None:
        return DASH
    ptxt = fmt(p, 2)
    return f"{'**' + ptxt + '**' if bold and p is not None else ptxt} / {fmt(s, 4)}"


def _delta_text(pair: Pair) -> str:
    dp, ds = pair
    return DASH if dp is None and ds is None else f"{fmt(dp, 2, True)} / {fmt(ds, 4, True)}"


def render_markdown(model: list[_Table], results: Sequence[CellResult], title: str, generated: str,
                    scale_down: float | None, notes: Sequence[str]) -> str:
    lines = [f"# {_md(title)}", ""]
    if scale_down is not None:
        lines += [f"> **⚠ {_md(_scale_banner(scale_down))}**", ""]
    lines += [f"Generated {generated}. Reproduced: "
              + (", ".join(_md(t.info.heading) for t in model) or DASH) + f". {_md(_status_summary(results))}.", ""]
    if notes:
        lines += [f"- **Note:** {_md(n)}" for n in notes] + [""]
    lines += ["Each score is PSNR / SSIM; Δ is reproduced − published. The best reproduced PSNR of each "
              "benchmark is in bold. \"—\" marks a value that is not available.", ""]
    for t in model:
        lines += [f"## {_md(t.info.heading)}", ""]
        if t.info.notes:
            lines += [_md(t.info.notes), ""]
        if not t.rows:
            lines += ["No results for this table.", ""]
            continue
        if (summary := _summary_line(t)) is not None:
            lines += [f"{_md(summary)}.", ""]
        head = ["cell", "status"]
        for b in t.benchmarks:
            head += [f"{_md(b)} reproduced", f"{_md(b)} published", f"{_md(b)} Δ"]
        head += ["device time", "MLflow run"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in t.rows:
            r = row.result
            cell_id = r.cell.replace("`", "")
            cells = [_md(r.label or r.cell) + (f" (`{cell_id}`)" if r.label and r.label != r.cell else ""),
                     _md(r.status)]
            for b in t.benchmarks:
                cells += [_md_pair(row.reproduced[b], b in row.best), _md_pair(row.published[b]),
                          _delta_text(row.deltas(b))]
            cells.append(evidence.device_time(evidence.cost_total(r, "device_s")))
            cells.append(f"`{r.run_id.replace('`', '')}`" if r.run_id else DASH)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += _md_evidence(t)
        if _has_settings(t):
            lines += ["How each cell was trained:", "",
                      "| cell | " + " | ".join(SETTINGS.values()) + " |", "|" + "---|" * (len(SETTINGS) + 1)]
            for row in t.rows:
                r = row.result
                lines.append(f"| {_md(r.label or r.cell)} | "
                             + " | ".join(_md(r.settings.get(k) or DASH) for k in SETTINGS) + " |")
            lines += ["", _md(PRESET_LEGEND), ""]
        errors = [row.result for row in t.rows if row.result.error]
        if errors:
            lines += ["Errors:", ""] + [f"- {_md(r.cell)}: {_md(_short(r.error or '', 400))}" for r in errors] + [""]
        for kind, caption in (("psnr", "reproduced vs published PSNR"), ("delta_psnr", "Δ PSNR"),
                              ("psnr_seeds", "PSNR per cell over seeds"), ("forest", "paired differences")):
            if kind in t.plots:
                lines += [f"![{t.info.table} {caption}]({t.plots[kind].as_posix()})", ""]
        if any(row.result.samples for row in t.rows):
            lines += ["### Samples", "", f"Each panel: {SAMPLE_LEGEND}.", ""]
            for row in t.rows:
                name = _md(row.result.label or row.result.cell)
                if row.sample is not None:
                    rel = row.sample.as_posix()
                    lines += [f"**{name}**", "", f"[![{name}]({rel})]({rel})", ""]
                else:
                    lines += [f"**{name}**: {DASH}", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- HTML
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:24px 32px 64px}
h1{margin:0 0 12px}h2{margin-top:40px;border-bottom:2px solid #d7dbe0;padding-bottom:4px}
.banner{background:#fde8e8;border:2px solid #c81e1e;color:#7a0d0d;padding:14px 18px;border-radius:6px;
font-weight:600;margin:12px 0 16px}
.meta{color:#4b5563}.notes li{margin:2px 0}.muted{color:#6b7280}
.scroll{overflow-x:auto}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:8px 0}
th,td{border:1px solid #d7dbe0;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f4}td.label,th.label{text-align:left;white-space:normal;min-width:140px}
td.pos{color:#047857}td.neg{color:#b91c1c}
.status{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;background:#e5e7eb}
.status-ok{background:#d1fae5;color:#065f46}.status-stopped{background:#fef3c7;color:#92400e}
.status-error{background:#fee2e2;color:#991b1b}.status-missing{background:#e5e7eb;color:#374151}
code{font-size:12px;color:#374151}
.plots img{max-width:100%;height:auto;background:#fff;border:1px solid #d7dbe0;margin:6px 0}
.samples{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:16px}
figure{margin:0;background:#fff;border:1px solid #d7dbe0;padding:8px}
figure img{width:100%;height:auto;image-rendering:pixelated}
figcaption{font-size:13px;margin-top:4px}
.errors li{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _html_pair(pair: Pair, bold: bool = False) -> str:
    p, s = pair
    if p is None and s is None:
        return DASH
    ptxt = _h(fmt(p, 2))
    return f"{'<b>' + ptxt + '</b>' if bold and p is not None else ptxt} / {_h(fmt(s, 4))}"


def _html_table(t: _Table) -> list[str]:
    out = ['<div class="scroll"><table>', "<thead><tr>",
           '<th class="label" rowspan="2">cell</th><th rowspan="2">status</th>']
    out += [f'<th colspan="3">{_h(b)}</th>' for b in t.benchmarks]
    out += ['<th rowspan="2">device time</th><th rowspan="2">MLflow run</th></tr><tr>']
    out += ["<th>reproduced</th><th>published</th><th>Δ</th>" for _ in t.benchmarks]
    out += ["</tr></thead><tbody>"]
    for row in t.rows:
        r = row.result
        label = _h(r.label or r.cell)
        if r.label and r.label != r.cell:
            label += f' <code>{_h(r.cell)}</code>'
        status_cls = _slug(r.status.lower())
        tip = f' title="{_h(r.error)}"' if r.error else ""
        cells = [f'<td class="label">{label}</td>',
                 f'<td><span class="status status-{status_cls}"{tip}>{_h(r.status)}</span></td>']
        for b in t.benchmarks:
            d = row.deltas(b)
            sign = "" if d[0] is None or round(d[0], 2) == 0 else (' class="pos"' if d[0] > 0 else ' class="neg"')
            cells += [f"<td>{_html_pair(row.reproduced[b], b in row.best)}</td>",
                      f"<td>{_html_pair(row.published[b])}</td>", f"<td{sign}>{_h(_delta_text(d))}</td>"]
        cells.append(f"<td>{_h(evidence.device_time(evidence.cost_total(r, 'device_s')))}</td>")
        cells.append(f'<td><code title="{_h(r.run_id)}">{_h(r.run_id[:8])}</code></td>' if r.run_id
                     else f"<td>{DASH}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    out += _html_evidence(t)
    if _has_settings(t):
        out += ['<p class="meta">How each cell was trained:</p><div class="scroll"><table class="settings">',
                '<thead><tr><th class="label">cell</th>'
                + "".join(f'<th class="label">{_h(h)}</th>' for h in SETTINGS.values()) + "</tr></thead><tbody>"]
        for row in t.rows:
            r = row.result
            out.append(f'<tr><td class="label">{_h(r.label or r.cell)}</td>'
                       + "".join(f'<td class="label">{_h(r.settings.get(k) or DASH)}</td>' for k in SETTINGS)
                       + "</tr>")
        out.append(f'</tbody></table></div><p class="muted">{_h(PRESET_LEGEND)}</p>')
    return out


def render_html(model: list[_Table], results: Sequence[CellResult], title: str, generated: str,
                scale_down: float | None, notes: Sequence[str], out_dir: Path) -> str:
    body = [f"<h1>{_h(title)}</h1>"]
    if scale_down is not None:
        body.append(f'<div class="banner" role="alert">⚠ {_h(_scale_banner(scale_down))}</div>')
    reproduced = ", ".join(f'<a href="#{_h(_anchor(t))}">{_h(t.info.heading)}</a>' for t in model) or DASH
    body.append(f'<p class="meta">Generated {_h(generated)}. Reproduced: {reproduced}. '
                f"{_h(_status_summary(results))}.</p>")
    if notes:
        body.append('<ul class="notes">' + "".join(f"<li><b>Note:</b> {_h(n)}</li>" for n in notes) + "</ul>")
    body.append('<p class="muted">Each score is PSNR / SSIM; Δ is reproduced − published. The best reproduced '
                "PSNR of each benchmark is in bold. “—” marks a value that is not available.</p>")
    for t in model:
        body.append(f'<section id="{_h(_anchor(t))}"><h2>{_h(t.info.heading)}</h2>')
        if t.info.notes:
            body.append(f"<p>{_h(t.info.notes)}</p>")
        if not t.rows:
            body.append('<p class="muted">No results for this table.</p></section>')
            continue
        if (summary := _summary_line(t)) is not None:
            body.append(f'<p class="meta">{_h(summary)}.</p>')
        body += _html_table(t)
        errors = [row.result for row in t.rows if row.result.error]
        if errors:
            body.append('<p>Errors:</p><ul class="errors">'
                        + "".join(f"<li>{_h(r.cell)}: {_h(r.error)}</li>" for r in errors) + "</ul>")
        if t.plots:
            body.append('<div class="plots">' + "".join(
                f'<img alt="{_h(t.info.table + " " + kind)}" src="{_data_uri(out_dir / rel)}">'
                for kind, rel in t.plots.items()) + "</div>")
        if any(row.result.samples for row in t.rows):
            body.append(f'<h3>Samples</h3><p class="muted">Each panel: {_h(SAMPLE_LEGEND)}.</p><div class="samples">')
            for row in t.rows:
                name = _h(row.result.label or row.result.cell)
                img = (f'<img alt="{name}" src="{_data_uri(out_dir / row.sample)}">' if row.sample is not None
                       else f'<p class="muted">{DASH}</p>')
                body.append(f"<figure>{img}<figcaption>{name}</figcaption></figure>")
            body.append("</div>")
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_h(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def _anchor(t: _Table) -> str:
    return f"table-{_slug(t.info.table)}"


# --------------------------------------------------------------------------- entry point
def write_report(tables: list[TableInfo], results: list[CellResult], out_dir: Path, *,
                 scale_down: float | None = None, title: str | None = None,
                 extra_notes: list[str] | None = None) -> dict[str, Path]:
    """Writes out_dir/report.md, out_dir/report.html, out_dir/results.csv and plots; returns them by kind.

    Keys: ``md``, ``html``, ``csv``, ``samples`` (the folder, when a sample was copied) and one
    ``plot:<table>:psnr`` / ``plot:<table>:delta_psnr`` per plot written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _build(tables, results)
    title = title or "DCKD reproduction report"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = list(extra_notes or [])
    copy_samples(model, out_dir)
    plot_tables(model, out_dir)
    files: dict[str, Path] = {"csv": write_csv(model, out_dir / "results.csv")}
    if any(t.comparisons for t in model):
        files["paired_csv"] = evidence.write_paired_csv({t.info.table: t.comparisons for t in model},
                                                        out_dir / "paired.csv")
    if (per_image := evidence.write_per_image_csv(results, out_dir / "per_image.csv")) is not None:
        files["per_image_csv"] = per_image
    md = out_dir / "report.md"
    md.write_text(render_markdown(model, results, title, generated, scale_down, notes), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(render_html(model, results, title, generated, scale_down, notes, out_dir), encoding="utf-8")
    files.update(md=md, html=page)
    if any(row.sample is not None for t in model for row in t.rows):
        files["samples"] = out_dir / "samples"
    for t in model:
        for kind, rel in t.plots.items():
            files[f"plot:{t.info.table}:{kind}"] = out_dir / rel
    return files
