"""``dckd train CONFIG [--local] [--set a.b=v ...]``: validate the config, then train."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from dckd.config import load_config
from dckd.errors import ConfigError
from dckd.reporting.describe import run_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a student (distillation) from an experiment config")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field by its dotted path, e.g. --set train.iterations=1000")
    p.add_argument("--local", action="store_true",
                   help="run in this process (no Ray); default: Ray Train workers (config section 'ray')")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run instead of resuming: an earlier run in the run directory is moved aside "
                   "(renamed <dir>.before-<time>), never mixed with the new one")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config changes the training (seed, lr, a loss weight, ...); the "
                   "change is recorded in metrics.jsonl, MLflow tags and summary.json")
    p.add_argument("--check", action="store_true", help="validate the config, print it and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite in the runs folder)")
    p.set_defaults(func=run)


def load_runner(name: str) -> Callable[..., Any]:
    """A runner the Ray layer registers under the ``dckd.runners`` entry-point group."""
    for ep in entry_points(group="dckd.runners"):
        if ep.name == name:
            return ep.load()
    raise ConfigError(f"no '{name}' runner is installed (the Ray layer, trainers/): use --local, "
                      "or install the project with `pip install -e .`")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.check:
        # The resolved method, schedule and batch in words, as YAML comments above the config.
        world = 1 if args.local else cfg.ray.num_workers
        print("\n".join(f"# {line}" for line in run_summary(cfg, world)))
        print(cfg.to_yaml())
        return 0
    if not args.local:
        runner = load_runner("train")
        summary = runner(args.config, args.overrides, args.tracking_uri, fresh=args.fresh,
                         allow_config_change=args.allow_config_change)
        print(json.dumps(summary, indent=2, default=str))
        return 0
    from dckd.training.loop import train_local

    summary = train_local(cfg, resume=not args.fresh, progress=not args.no_progress,
                          tracking_uri=args.tracking_uri, allow_config_change=args.allow_config_change)
    print(json.dumps(summary, indent=2))
    return 0
