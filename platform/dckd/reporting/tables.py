"""The paper's tables as data: which experiments fill which cells, and the published numbers.

A table file (``experiments/tables/<id>.yaml``) names a base experiment config (the paper's
settings for one model and task), overrides shared by its cells, the benchmark columns, and
one entry per cell with its overrides and the published PSNR/SSIM:

    table: table5
    title: Ablation of DCR and DMM (RCAN x2)
    paper_ref: Table 5
    base: ../paper/rcan_x2.yaml
    benchmarks: [Set14, Urban100]          # test-set names of the base config, in column order
    cells:
      - id: baseline
        label: "DCR off, DMM off"
        set: [method.dcr.enabled=false, method.dmm.enabled=false]
        published: {Set14: [33.83, 0.9197], Urban100: [32.67, 0.9329]}
      - id: teacher
        kind: teacher                       # evaluate the teacher's checkpoint, no training
        published: {...}
      - id: dckd_paper
        optional: true                      # runs only when --cells names it (or +dckd_paper)
        set: [method.preset=dckd]

A group of files (``table2_swinir_x2.yaml``, ``table2_rcan_x4.yaml``, ...) is addressed by its
common prefix (``table2``). Every cell resolves to a full, validated ``ExperimentConfig``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dckd.config import ExperimentConfig, load_config, load_model_file
from dckd.errors import ConfigError

TABLES_DIR = Path("experiments") / "tables"


class Cell(BaseModel):
    """One row of a table: a training run (or the teacher's evaluation) and its published scores."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    label: str = ""
    kind: Literal["train", "teacher"] = "train"
    set: list[str] = Field(default_factory=list, description="overrides of the table's base for this cell")
    published: dict[str, tuple[float, float]] = Field(default_factory=dict, description="benchmark: [PSNR, SSIM]")
    optional: bool = Field(default=False, description="not run by default: only when --cells names it")

    @property
    def title(self) -> str:
        return self.label or self.id


class TableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    title: str
    paper_ref: str = ""
    base: str
    set: list[str] = Field(default_factory=list)
    benchmarks: list[str] = Field(min_length=1)
    cells: list[Cell] = Field(min_length=1)
    notes: str = ""
    references: list[str] | None = Field(
        default=None, description="cells every other cell is compared with image by image; default: the "
                                  "table's scratch and logits cells")

    @property
    def reference_cells(self) -> list[str]:
        if self.references is not None:
            return list(self.references)
        return [c for c in ("scratch", "logits") if any(cell.id == c for cell in self.cells)]

    @model_validator(mode="after")
    def _consistent(self) -> TableSpec:
        ids = [c.id for c in self.cells]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"cell ids repeat: {dup}")
        unknown_refs = sorted(set(self.references or []) - set(ids))
        if unknown_refs:
            raise ValueError(f"references {unknown_refs} are not cells of the table (cells: {ids})")
        for c in self.cells:
            unknown = sorted(set(c.published) - set(self.benchmarks))
            if unknown:
                raise ValueError(f"cell {c.id}: published scores for {unknown}, not among benchmarks {self.benchmarks}")
        return self

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise ConfigError(f"table {self.table}: no cell {cell_id!r} (cells: {', '.join(c.id for c in self.cells)})")


class LoadedTable(BaseModel):
    """A table file and where it lives (its ``base`` is relative to it)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    spec: TableSpec
    path: Path

    @property
    def base_path(self) -> Path:
        base = Path(self.spec.base)
        return base if base.is_absolute() else (self.path.parent / base)

    def cell_overrides(self, cell: Cell, extra: list[str] | None = None) -> list[str]:
        return [*self.spec.set, *cell.set, f"name={self.spec.table}-{cell.id}", *(extra or [])]

    def base_cell_config(self, cell: Cell, extra: list[str] | None = None) -> ExperimentConfig:
        """The cell's experiment with every test set of its base (overrides index that list)."""
        try:
            return load_config(self.base_path, self.cell_overrides(cell, extra))
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: cell {cell.id}:\n{exc}") from None

    def cell_config(self, cell: Cell, extra: list[str] | None = None) -> ExperimentConfig:
        """The cell's full experiment, scored on the table's benchmarks; errors name the table and cell."""
        cfg = self.base_cell_config(cell, extra)
        names = [b.name for b in cfg.data.test]
        missing = [b for b in self.spec.benchmarks if b not in names]
        if missing:
            raise ConfigError(f"{self.path}: cell {cell.id}: benchmarks {missing} are not test sets of "
                              f"{self.base_path} (it has {names})")
        # Only the table's columns are scored (Table 5 reports Set14 and Urban100, not B100).
        tests = [b for b in cfg.data.test if b.name in self.spec.benchmarks]
        return cfg.model_copy(update={"data": cfg.data.model_copy(update={"test": tests})})


def read_table(path: str | Path) -> LoadedTable:
    path = Path(path)
    return LoadedTable(spec=load_model_file(path, TableSpec, kind="table"), path=path)


def find_tables(name: str, tables_dir: str | Path = TABLES_DIR) -> list[LoadedTable]:
    """A table file's path, its id, or an id prefix (``table2`` -> every ``table2_*.yaml``)."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return [read_table(as_path)]
    folder = Path(tables_dir)
    exact = folder / f"{name}.yaml"
    if exact.is_file():
        return [read_table(exact)]
    group = sorted(folder.glob(f"{name}_*.yaml"))
    if not group:
        known = sorted({p.stem.split("_")[0] for p in folder.glob("*.yaml")} | {p.stem for p in folder.glob("*.yaml")})
        raise ConfigError(f"{name}: no table file {exact} or {folder}/{name}_*.yaml (known: {', '.join(known)})")
    return [read_table(p) for p in group]


def published_json(table: TableSpec) -> str:
    """The published numbers as JSON (logged with a reproduction for later comparison)."""
    data: dict[str, Any] = {c.id: {b: list(v) for b, v in c.published.items()} for c in table.cells}
    return json.dumps(data, indent=2, sort_keys=True)
