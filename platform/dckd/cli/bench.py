"""``dckd bench``: step time (interleaved rounds), peak memory and FLOPs of scratch, logits and DCKD."""

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
    p.add_argument("--steps", type=int, default=5,
                   help="interleaved rounds: one timed step of every method per round (medians reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="auto")
    p.add_argument("--negatives", default="1,3,5",
                   help="DCKD negative counts to time, comma-separated (default 1,3,5; 5 is always included)")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                   help="also time DCKD N=5 in this precision (JSON dckd_<precision>_step_ms); the other "
                   "methods and the released structure stay fp32")
    p.add_argument("--layouts", action="store_true",
                   help="also time DCKD with train.channels_last and with train.compile")
    p.add_argument("--loader", action="store_true",
                   help="time the training data loader on 480x480 PNG sub-images (images/s, default workers)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count and the matmul peak")
    p.add_argument("--no-ray", action="store_true",
                   help="skip the in-process vs 1-worker Ray Train loop comparisons")
    p.add_argument("--no-ray-pair", action="store_true",
                   help="compare Ray and in-process loops on the tiny config only, not on the pair")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dckd.bench import format_table, run_bench

    report = run_bench(pair=args.pair, batch=args.batch, patch=args.patch, vqgan=args.vqgan,
                       steps=args.steps, warmup=args.warmup, threads=args.threads, device=args.device,
                       progress=lambda msg: print(msg, file=sys.stderr, flush=True), ray=not args.no_ray,
                       negatives=_negatives(args.negatives), precision=args.precision, layouts=args.layouts, flops=not args.no_flops,
                       loader=args.loader, ray_pair=not args.no_ray_pair)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _negatives(text: str) -> tuple[int, ...]:
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()} | {5})
    except ValueError:
        raise SystemExit(f"dckd bench: error: --negatives {text!r}: comma-separated integers, e.g. 1,3,5") from None
    if values[0] < 1:
        raise SystemExit(f"dckd bench: error: --negatives {text!r}: counts must be at least 1")
    return tuple(values)
