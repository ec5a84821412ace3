"""``python -m trainers.train CONFIG [--set a.b=v ...]``: the ``ray job submit`` entrypoint for training."""

from __future__ import annotations

import argparse
import json
import sys

from dckd.config import load_config
from dckd.errors import DckdError


def run(config: str, overrides: list[str], tracking_uri: str | None = None) -> dict:
    from trainers.driver import fit

    cfg = load_config(config, overrides)
    result = fit(cfg, tracking_uri=tracking_uri)
    if result.error is not None:
        raise result.error
    return {"name": cfg.name, "metrics": result.metrics, "checkpoint": str(result.checkpoint.path)
            if result.checkpoint else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.train", description=__doc__)
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tracking-uri", default=None)
    args = p.parse_args(argv)
    try:
        summary = run(args.config, args.overrides, args.tracking_uri)
    except DckdError as exc:
        print(f"trainers.train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
