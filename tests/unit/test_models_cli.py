"""``dckd models``: the preset listing (JSON and table)."""

from __future__ import annotations

import argparse
import json

import pytest

from dckd.cli import models as models_cli
from dckd.models import PRESETS
from tests.conftest import PAPER_PARAMS_M


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser(prog="dckd")
    models_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_models_json_lists_every_preset_with_exact_counts(capsys: pytest.CaptureFixture[str]) -> None:
    rows = json.loads(_run(["models", "--json"], capsys))
    assert [r["name"] for r in rows] == sorted(PRESETS)
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        assert {"name", "backbone", "role", "scale", "params", "tasks"} <= set(row)
        assert isinstance(row["params"], int) and row["params"] > 0
        preset = PRESETS[row["name"]]
        assert (row["backbone"], row["role"], row["scale"], tuple(row["tasks"])) == (
            preset.backbone,
            preset.role,
            preset.scale,
            preset.tasks,
        )
    for name, paper in PAPER_PARAMS_M.items():
        got = by_name[name]["params"] / 1e6
        assert abs(got - paper) <= 0.05 + 0.01 * paper, f"{name}: {got:.3f}M vs paper {paper}M"
    assert by_name["nafnet_teacher"]["scale"] is None and by_name["rcan_x4_teacher"]["scale"] == 4
    assert by_name["restormer_student"]["tasks"] == ["deblur", "derain"]


def test_models_table_hides_tiny_presets_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(["models"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["name", "backbone", "role", "scale", "params", "tasks"]
    row = next(line for line in lines if line.startswith("rcan_x4_teacher "))
    assert "15.59M" in row and "x4" in row
    assert "_tiny_" not in out and "--all" in lines[-1]
    assert len(lines) == 1 + sum(not p.tiny for p in PRESETS.values()) + 1
