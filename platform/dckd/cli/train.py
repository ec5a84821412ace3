"""``dckd train CONFIG [--local] [--set a.b=v ...]``: validate the config, then train."""

from __future__ import annotations

import argparse
import json

from dckd.config import load_config
from dckd.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a student (distillation) from an experiment config")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field by its dotted path, e.g. --set train.iterations=1000")
    p.add_argument("--local", action="store_true", help="run in this process (no Ray)")
    p.add_argument("--fresh", action="store_true",
                   help="ignore checkpoints already in the run directory instead of resuming from them")
    p.add_argument("--check", action="store_true", help="validate the config, print it and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.check:
        print(cfg.to_yaml())
        return 0
    if not args.local:
        raise ConfigError(
            "the Ray runner is not part of this installation yet: run with --local to train in this process"
        )
    from dckd.loop import train_local

    summary = train_local(cfg, resume=not args.fresh, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0
