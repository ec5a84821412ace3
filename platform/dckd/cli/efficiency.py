"""``dckd efficiency``: parameters, FLOPs, latency and peak memory of students against their teachers."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from dckd.deploy.efficiency import RUNTIMES, TABLE1_PAIRS

    p = sub.add_parser(
        "efficiency", help="student against teacher: parameters, FLOPs, latency, peak memory per runtime",
        description="Measure every paper Table 1 pair (and any --pair) at one output size (default 1280x720: "
        "a 320x180 input for x4 SR): parameters, FLOPs (FlopCounterMode on meta tensors), latency of PyTorch and "
        "ONNX Runtime on the CPU (and CUDA when present) in interleaved student/teacher rounds, and peak memory "
        "of each model in a process of its own. Prints a Markdown table; progress goes to stderr.")
    p.add_argument("--table1", default="all", metavar="NAMES",
                   help=f"Table 1 pairs to measure, comma-separated ({', '.join(TABLE1_PAIRS)}), 'all' (default) "
                   "or 'none'")
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("TEACHER", "STUDENT"),
                   help="also measure this pair (repeatable): preset names, run checkpoints (.pt), registry "
                   "addresses (models:/NAME@ALIAS, runs:/ID), model folders, or PRESET=FILE for a weights file")
    p.add_argument("--output-size", default="1280x720", metavar="WxH",
                   help="output size every network restores to (default 1280x720); the input is it over the scale")
    p.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds per runtime (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per model and runtime (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for torch and ONNX Runtime (default: each library's own choice)")
    p.add_argument("--runtimes", default="auto",
                   help=f"comma-separated subset of {', '.join(RUNTIMES)}; auto (default): all this machine has")
    p.add_argument("--onnx-low-memory", action="store_true",
                   help="ONNX Runtime without its CPU memory arena and memory patterns (for teachers that do not fit)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--out", metavar="DIR", help="write efficiency.md, efficiency.json and efficiency.png here "
                   "(rewritten after every runtime, so a long run leaves its results so far)")
    p.add_argument("--onnx-dir", metavar="DIR",
                   help="where ONNX exports are cached (default: DIR/onnx with --out, else a temporary folder)")
    p.add_argument("--tracking-uri", help="MLflow tracking server for models:/ and runs:/ sources")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.set_defaults(func=run)


def pairs_of(args: argparse.Namespace) -> list:  # list[PairSpec]
    """The Table 1 pairs asked for, then the --pair ones, in order."""
    from dckd.deploy.efficiency import TABLE1_PAIRS, PairSpec, split_source
    from dckd.errors import ConfigError

    names = [n.strip() for n in args.table1.split(",") if n.strip()]
    if names == ["all"]:
        names = list(TABLE1_PAIRS)
    elif names == ["none"]:
        names = []
    unknown = [n for n in names if n not in TABLE1_PAIRS]
    if unknown:
        raise ConfigError(f"--table1: unknown pair(s) {', '.join(unknown)}; known: {', '.join(TABLE1_PAIRS)}, "
                          "all, none")
    pairs = [TABLE1_PAIRS[n] for n in names]
    for i, (teacher, student) in enumerate(args.pair, 1):
        short = [split_source(s)[1] or s.rstrip("/").rsplit("/", 1)[-1] for s in (teacher, student)]
        pairs.append(PairSpec(f"pair{i}", f"{short[0]} / {short[1]}", teacher, student))
    return pairs


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from dckd.deploy.efficiency import (
        EfficiencySettings,
        format_table,
        parse_size,
        run_efficiency,
        write_outputs,
    )
    from dckd.errors import ConfigError

    runtimes = None if args.runtimes == "auto" else tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    try:
        settings = EfficiencySettings(output_size=parse_size(args.output_size), repeats=args.repeats,
                                      warmup=args.warmup, threads=args.threads, runtimes=runtimes,
                                      flops=not args.no_flops, onnx_low_memory=args.onnx_low_memory)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "settings"
        raise ConfigError(f"--{where.replace('_', '-')}: {first['msg']}") from None
    report = run_efficiency(pairs_of(args), settings, out=args.out, onnx_dir=args.onnx_dir,
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                            tracking_uri=args.tracking_uri)
    if args.out:
        files = write_outputs(report, args.out)
        print(f"efficiency: wrote {', '.join(str(f) for f in files.values())}", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else format_table(report), end="" if not args.json else "\n")
    return 0
