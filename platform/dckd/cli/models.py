"""``dckd models``: the architecture presets a config can name, with exact parameter counts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dckd.models.presets import PRESETS
from dckd.models.restorer import preset_param_count


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "models",
        help="list the network presets and their parameter counts",
        description="List the network presets (paper Table 1/8 settings) with exact parameter counts. "
        "The table lists tiny presets for tests and the CPU demo with --all; --json always lists every preset.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--all", action="store_true", help="also list the tiny test/demo presets")
    parser.set_defaults(func=run)


def preset_rows(include_tiny: bool) -> list[dict[str, Any]]:
    """One JSON-ready dict per preset; counts come from building the model (exact, not estimated)."""
    return [
        {
            "name": p.name,
            "backbone": p.backbone,
            "role": p.role,
            "scale": p.scale,
            "params": preset_param_count(p.name),
            "tasks": list(p.tasks),
            "description": p.description,
        }
        for p in PRESETS.values()
        if include_tiny or not p.tiny
    ]


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("name", "backbone", "role", "scale", "params", "tasks")
    body = [
        (
            r["name"],
            r["backbone"],
            r["role"],
            "-" if r["scale"] is None else f"x{r['scale']}",
            f"{r['params'] / 1e6:.2f}M" if r["params"] >= 1_000_000 else f"{r['params'] / 1e6:.3f}M",
            ",".join(r["tasks"]),
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    right = {4}  # numbers right-aligned
    lines = []
    for row in (header, *body):
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = preset_rows(include_tiny=args.all or args.json)  # JSON is for tools: every preset
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
        hidden = sum(p.tiny for p in PRESETS.values()) if not args.all else 0
        if hidden:
            print(f"({hidden} tiny presets for tests and the CPU demo not shown; --all lists them)")
    return 0
