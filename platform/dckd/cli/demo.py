"""``dckd demo``: the main job of ``make demo`` (teacher, then scratch/logits/DCKD students, a table)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="distil on scikit-image's photographs and print a PSNR/SSIM table")
    p.add_argument("--out", default=None,
                   help="output folder (data, runs, results.md); default runs/demo, or runs/demo-quick with --quick "
                   "(a quick run's 40 iterations on the cosine schedule are another run, which a full demo in the "
                   "same folder would refuse to resume)")
    p.add_argument("--config", default=None, help="base config (default: experiments/demo.yaml)")
    p.add_argument("--quick", action="store_true", help="a few iterations only (a smoke run)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dckd.demo import format_table, run_demo

    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))
    result = run_demo(out, Path(args.config) if args.config else None, quick=args.quick,
                      progress=not args.no_progress)
    print()
    print(format_table(result))
    print(f"\n(written to {out / 'results.md'})")
    for cell, error in result.get("errors", {}).items():
        print(f"dckd demo: error: {cell} failed: {error}", file=sys.stderr)
    return 2 if result.get("errors") else 0
