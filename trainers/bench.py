"""The Ray half of ``dckd bench``'s loop-overhead check: a 1-worker Train run of a given config."""

from __future__ import annotations

from typing import Any

from dckd.config import load_config


def ray_images_per_s(config_data: dict[str, Any]) -> float:
    """Images/s of the last logging window of a 1-worker Ray Train run (after warm-up)."""
    from trainers.driver import fit

    result = fit(load_config(data=config_data))
    if result.error is not None:
        raise result.error
    return float(result.metrics["images_per_s"])
