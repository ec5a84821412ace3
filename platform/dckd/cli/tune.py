"""``dckd tune SWEEP.yaml``: a Ray Tune sweep of Train runs (runner provided by the Ray layer)."""

from __future__ import annotations

import argparse
import json

from dckd.cli.train import load_runner


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="sweep config fields with Ray Tune (grid/random, ASHA), results table and plots")
    p.add_argument("sweep", help="sweep YAML (base experiment, axes, search, scheduler)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the base experiment for every trial")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = load_runner("tune")(args.sweep, args.overrides, args.tracking_uri)
    print(json.dumps(summary, indent=2, default=str))
    return 0
