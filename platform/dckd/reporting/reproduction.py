"""Planning a reproduction: a table's cells as validated experiment configs, optionally scaled down.

The Ray layer (``trainers.reproduce``) runs the plan; ``dckd reproduce --check`` prints it.
``scale_down_overrides`` shrinks a run by a factor F for smoke runs: iterations and every
iteration-valued setting (validation, checkpoints, schedule milestones, history-model steps,
progressive stages), patch and batch sizes, and the number of training and test images.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from dckd.config import ExperimentConfig
from dckd.errors import ConfigError
from dckd.reporting.describe import batch_note, batch_summary, method_label, schedule_summary, terms_summary
from dckd.reporting.tables import Cell, LoadedTable, find_tables

MIN_ITERATIONS = 2


def scale_down_overrides(cfg: ExperimentConfig, factor: float) -> list[str]:
    """Overrides that shrink a run by ``factor``; every iteration-valued setting shrinks with it."""
    if not 0 < factor <= 1:
        raise ConfigError(f"--scale-down {factor}: must be in (0, 1]")

    def its(n: int) -> int:
        return max(1, round(n * factor))

    t = cfg.train
    total = max(MIN_ITERATIONS, its(t.iterations))
    # At most two validations and four checkpoints: a smoke run is about the path, not the curve.
    out = [f"train.iterations={total}",
           f"train.val_every={min(total, max(its(t.val_every), math.ceil(total / 2)))}",
           f"train.ckpt_every={min(total, max(its(t.ckpt_every), math.ceil(total / 4)))}",
           f"train.log_every={min(total, its(t.log_every))}",
           f"train.batch_size={max(2, round(t.batch_size * factor))}",
           f"data.train.lq_patch={max(8, round(cfg.data.train.lq_patch * factor))}"]
    if cfg.schedule.milestones:
        out.append(f"schedule.milestones={json.dumps([its(m) for m in cfg.schedule.milestones])}")
    if cfg.schedule.periods:
        periods = [its(p) for p in cfg.schedule.periods]
        out.append(f"schedule.periods={json.dumps(periods)}")
    h = cfg.method.dcr.history
    out += [f"method.dcr.history.update_every={its(h.update_every)}",
            f"method.dcr.history.growth_milestones={json.dumps([its(m) for m in h.growth_milestones])}"]
    progressive = getattr(cfg.data.train, "progressive", None)
    if progressive is not None:
        out += [f"data.train.progressive.milestones={json.dumps([its(m) for m in progressive.milestones])}",
                f"data.train.progressive.lq_patches={json.dumps([max(8, round(p * factor)) for p in progressive.lq_patches])}",
                f"data.train.progressive.batch_sizes={json.dumps([max(2, round(b * factor)) for b in progressive.batch_sizes])}"]
    out += _limit_overrides(cfg, factor)
    return out


def _limit_overrides(cfg: ExperimentConfig, factor: float) -> list[str]:
    """Fewer training and test images: a fraction of what each local folder holds."""
    from dckd.data.specs import pairs_for

    out: list[str] = []
    if not hasattr(cfg.data.train, "limit"):
        return out
    try:
        n_train = len(pairs_for(cfg.data.train, cfg.task, cfg.scale))
        out.append(f"data.train.limit={max(2, math.ceil(n_train * factor))}")
        for split in ("val", "test"):
            for i, bench in enumerate(getattr(cfg.data, split)):
                n = len(pairs_for(bench, cfg.task, cfg.scale))
                out.append(f"data.{split}.{i}.limit={max(1, math.ceil(n * factor))}")
    except Exception as exc:  # noqa: BLE001 - s3 folders etc.: keep all images, say why
        print(f"note: --scale-down keeps every image ({exc})", file=sys.stderr)
    return out


class PlannedCell:
    """A cell (one seed of it, with ``--seeds K``) with its overrides, validated before anything runs.

    With K > 1 seeds each seed is a run of its own (``<table>-<cell>-s<seed>``, its own output
    folder, so it resumes on its own) that logs its student without registering it: the cell's
    registered student is its best seed's (``registered_name``), registered after all have run.
    """

    def __init__(self, table: LoadedTable, cell: Cell, overrides: list[str], seed: int | None = None,
                 registered_name: str | None = None) -> None:
        self.table, self.cell = table, cell
        self.overrides = overrides
        self.seed = seed  # None: the cell's single run (its config's seed)
        self.registered_name = registered_name
        self.cfg = table.cell_config(cell, overrides)

    @property
    def cell_key(self) -> str:
        return f"{self.table.spec.table}:{self.cell.id}"

    @property
    def key(self) -> str:
        return self.cell_key if self.seed is None else f"{self.cell_key}@s{self.seed}"

    @property
    def world_size(self) -> int:
        """Workers of the cell's Train run (``dckd reproduce`` runs every cell on Ray Train)."""
        return self.cfg.ray.num_workers

    @property
    def settings(self) -> dict[str, str]:
        """How the cell trains, in words: the report's settings table (``dckd.reporting.describe``)."""
        c = self.cfg
        if self.cell.kind == "teacher":
            return {"method": "teacher evaluation (no training)"}
        return {"method": method_label(c.method), "terms": terms_summary(c.method),
                "schedule": schedule_summary(c.schedule, c.optim.lr, c.train.iterations),
                "batch": batch_summary(c, self.world_size)}

    @property
    def batch_note(self) -> str | None:
        return None if self.cell.kind == "teacher" else batch_note(self.cfg, self.world_size)


def selected(cell: Cell, cells: list[str] | None) -> bool:
    """Whether ``--cells`` picks this cell.

    Without ``--cells`` every cell runs except the optional ones. Plain ids pick only those
    cells; ``+id`` adds a cell to the default selection (``--cells +dckd_paper``: every default
    cell and the paper-as-written DCKD).
    """
    only = {c for c in cells or [] if not c.startswith("+")}
    added = {c[1:] for c in cells or [] if c.startswith("+")}
    return cell.id in only or cell.id in added or (not only and not cell.optional)


def plan(name: str, cells: list[str] | None = None, scale_down: float | None = None,
         overrides: list[str] | None = None, out: Path | None = None,
         tables_dir: str | Path | None = None, seeds: int = 1) -> list[PlannedCell]:
    """Every selected cell's full config: a bad table, cell or override fails here, before any trial.

    ``seeds`` K > 1 plans each trained cell K times with seeds ``seed, seed + 1, ..., seed + K - 1``
    (the config's seed first); a teacher cell is an evaluation and runs once."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: must be at least 1")
    tables = find_tables(name, *([tables_dir] if tables_dir else []))
    known = {c.id for t in tables for c in t.spec.cells}
    unknown = sorted({c.removeprefix("+") for c in cells or []} - known)
    if unknown:
        raise ConfigError(f"{name}: --cells {unknown} not in the table (cells: {', '.join(sorted(known))})")
    planned = []
    for table in tables:
        for cell in table.spec.cells:
            if not selected(cell, cells):
                continue
            extra = list(overrides or [])
            if out is not None:
                extra.append(f"output_dir={out / 'runs' / table.spec.table / cell.id}")
            if scale_down is not None and scale_down < 1:
                probe = table.base_cell_config(cell, extra)
                extra = [*scale_down_overrides(probe, scale_down), *extra]
            if seeds == 1 or cell.kind == "teacher":
                planned.append(PlannedCell(table, cell, extra))
                continue
            single = table.cell_config(cell, extra)
            for seed in range(single.seed, single.seed + seeds):
                per_seed = [*extra, f"seed={seed}", f"name={single.name}-s{seed}",
                            "tracking.register_student=false"]
                if out is not None:
                    per_seed.append(f"output_dir={out / 'runs' / table.spec.table / cell.id / f'seed{seed}'}")
                planned.append(PlannedCell(table, cell, per_seed, seed,
                                           single.tracking.registered_name(single.name)))
    if not planned:
        raise ConfigError(f"{name}: no cells selected")
    return planned


def describe_plan(name: str, cells: list[str] | None, scale_down: float | None, overrides: list[str] | None,
                  tables_dir: str | Path | None = None, seeds: int = 1,
                  planned: list[PlannedCell] | None = None) -> str:
    """One line per cell: what would run (validated), for ``dckd reproduce --check``."""
    planned = planned or plan(name, cells, scale_down, overrides, None, tables_dir, seeds)
    runs = len({p.cell_key for p in planned})
    lines = [f"{runs} cells" + (f", {len(planned)} runs ({seeds} seeds per trained cell)" if seeds > 1 else "")
             + (f", scaled down x{scale_down:g}" if scale_down else "")]
    for p in planned:
        if p.seed is not None and p is not next(q for q in planned if q.cell_key == p.cell_key):
            continue  # one description per cell: its seeds differ only in the seed
        seeds_note = (f" x seeds {[q.seed for q in planned if q.cell_key == p.cell_key]}"
                      if p.seed is not None else "")
        c = p.cfg
        role = c.teacher if p.cell.kind == "teacher" and c.teacher is not None else c.student
        net = f"{role.preset or role.resolved_backbone} x{c.scale}"
        if p.cell.kind == "teacher":
            lines.append(f"  {p.cell_key:32s} {net}: teacher evaluation; test {[b.name for b in c.data.test]}")
            continue
        s = p.settings
        lines += [f"  {p.cell_key:32s} {net}: {s['method']} = {s['terms']}; test {[b.name for b in c.data.test]}"
                  + seeds_note,
                  f"  {'':32s} schedule {s['schedule']}; batch {s['batch']}, patch {c.data.train.lq_patch}"]
    return "\n".join(lines)
