"""Table files and reproduction plans: bad tables are refused by name; scale-down shrinks consistently."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dckd.errors import ConfigError
from dckd.reporting.reproduction import plan, scale_down_overrides
from dckd.reporting.tables import find_tables, read_table
from tests.conftest import tiny_config_dict


@pytest.fixture
def table_dir(tmp_path: Path, hr_folder: Path) -> Path:
    base = tiny_config_dict(hr_folder, tmp_path / "run", iterations=1000, val_every=500, ckpt_every=250,
                            log_every=100)
    base["data"]["test"] = [{"name": "crops", "hr_dir": str(hr_folder)}]
    base["schedule"] = {"name": "multistep", "milestones": [400, 800]}
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    table = {"table": "t1_a", "title": "A", "base": "base.yaml", "benchmarks": ["crops"],
             "cells": [{"id": "scratch", "set": ["method.preset=scratch"], "published": {"crops": [30.0, 0.9]}},
                       {"id": "dckd", "set": ["method.preset=dckd"]}]}
    (folder / "t1_a.yaml").write_text(yaml.safe_dump(table))
    (folder / "t1_b.yaml").write_text(yaml.safe_dump({**table, "table": "t1_b"}))
    return folder


def test_a_group_is_found_by_prefix_and_cells_resolve(table_dir: Path) -> None:
    tables = find_tables("t1", table_dir)
    assert [t.spec.table for t in tables] == ["t1_a", "t1_b"]
    cfg = tables[0].cell_config(tables[0].spec.cell("dckd"))
    assert cfg.name == "t1_a-dckd" and cfg.method.preset == "dckd"
    with pytest.raises(ConfigError, match="no table file"):
        find_tables("t9", table_dir)


def test_bad_tables_are_refused_naming_the_file_and_the_cell(table_dir: Path) -> None:
    bad = yaml.safe_load((table_dir / "t1_a.yaml").read_text())
    bad["cells"][1]["published"] = {"Urban100": [1.0, 0.5]}
    (table_dir / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="bad.yaml.*not among benchmarks"):
        read_table(table_dir / "bad.yaml")
    bad["cells"][1] = {"id": "dckd", "set": ["method.dcr.num_negatives=0"]}
    (table_dir / "bad.yaml").write_text(yaml.safe_dump(bad))
    t = read_table(table_dir / "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml: cell dckd:[\s\S]*num_negatives"):
        t.cell_config(t.spec.cell("dckd"))
    with pytest.raises(ConfigError, match="--cells"):
        plan("t1_a", ["nope"], tables_dir=table_dir)


def test_scale_down_shrinks_every_iteration_setting(table_dir: Path) -> None:
    t = find_tables("t1_a", table_dir)[0]
    cfg = t.cell_config(t.spec.cell("dckd"))
    small = t.cell_config(t.spec.cell("dckd"), scale_down_overrides(cfg, 0.01))
    assert small.train.iterations == 10 and small.train.val_every == 5 and small.train.ckpt_every == 3
    assert small.schedule.milestones == [4, 8]
    assert small.method.dcr.history.update_every == 1  # 4 * 0.01 rounds to 0: at least 1
    assert small.data.train.lq_patch == 8 and small.train.batch_size == 2
    with pytest.raises(ConfigError, match="scale-down"):
        scale_down_overrides(cfg, 1.5)
    planned = plan("t1", None, 0.01, tables_dir=table_dir)
    assert [p.key for p in planned] == ["t1_a:scratch", "t1_a:dckd", "t1_b:scratch", "t1_b:dckd"]
    assert all(p.cfg.train.iterations == 10 for p in planned)
