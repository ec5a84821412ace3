"""``python -m trainers.train CONFIG [--set a.b=v ...]``: the ``ray job submit`` entrypoint for training."""

from __future__ import annotations

import sys

from dckd.config import load_config


def run(config: str, overrides: list[str], tracking_uri: str | None = None) -> dict:
    from trainers.driver import fit

    cfg = load_config(config, overrides)
    result = fit(cfg, tracking_uri=tracking_uri)
    if result.error is not None:
        raise result.error
    return {"name": cfg.name, "metrics": result.metrics, "checkpoint": str(result.checkpoint.path)
            if result.checkpoint else None}


def main(argv: list[str] | None = None) -> int:
    """The same command as ``dckd train`` (one parser, one error format), run on Ray."""
    from dckd.cli import main as dckd_main

    return dckd_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
