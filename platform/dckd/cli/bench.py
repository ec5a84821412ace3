"""``dckd bench``: median step time and peak memory of scratch, logits and DCKD (N = 1, 3, 5)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from dckd.bench import PAIRS

    p = sub.add_parser("bench", help="time one training step per method (and the released structure)")
    p.add_argument("--pair", choices=sorted(PAIRS), default="swinir_x4",
                   help="teacher/student presets (default: the SwinIR x4 pair of Table 1)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=32, help="LR patch side")
    p.add_argument("--vqgan", choices=["full", "reduced"], default="full")
    p.add_argument("--steps", type=int, default=5, help="timed steps per method (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ray", action="store_true",
                   help="skip the in-process vs 1-worker Ray Train loop comparison")
    p.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dckd.bench import format_table, run_bench

    report = run_bench(pair=args.pair, batch=args.batch, patch=args.patch, vqgan=args.vqgan,
                       steps=args.steps, warmup=args.warmup, threads=args.threads, device=args.device,
                       progress=lambda msg: print(msg, file=sys.stderr, flush=True), ray=not args.no_ray)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
