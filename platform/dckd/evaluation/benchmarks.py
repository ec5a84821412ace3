"""Scoring a model on whole benchmark images under a task's published protocol."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dckd.config import ExperimentConfig
from dckd.evaluation.metrics import Protocol
from dckd.imageio import to_uint8, write_image


def protocol_for(cfg: ExperimentConfig) -> Protocol:
    """The task's protocol (SR: Y, crop=scale; derain: Y rounded; deblur: RGB), with config overrides."""
    base = Protocol.for_task(cfg.task, cfg.scale)
    e = cfg.eval
    return Protocol(
        crop_border=base.crop_border if e.crop_border is None else e.crop_border,
        y_channel=base.y_channel if e.y_channel is None else e.y_channel,
        round_y=base.round_y if e.round_y is None else e.round_y,
    )


@torch.no_grad()
def restore(model: nn.Module, lq: torch.Tensor, device: torch.device) -> np.ndarray:
    """One whole image through the model, rounded to uint8 as the protocol requires."""
    out = model(lq.unsqueeze(0).to(device))[0]
    return to_uint8(out.float().cpu())


@torch.no_grad()
def evaluate_sets(
    model: nn.Module,
    sets: Sequence[tuple[str, Dataset]],
    protocol: Protocol,
    device: torch.device,
    save_dir: str | Path | None = None,
    per_image: bool = False,
) -> dict[str, dict[str, Any]]:
    """Mean PSNR/SSIM per named set; optionally writes the restorations and per-image scores."""
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, dataset in sets:
            rows = []
            for i in range(len(dataset)):
                item = dataset[i]
                pred = restore(model, item["lq"], device)
                gt = to_uint8(item["gt"])
                p, s = protocol.score(pred, gt)
                rows.append({"name": item["name"], "psnr": p, "ssim": s})
                if save_dir is not None:
                    write_image(Path(save_dir) / name / f"{item['name']}.png", pred)
            results[name] = {
                "psnr": float(np.mean([r["psnr"] for r in rows])) if rows else float("nan"),
                "ssim": float(np.mean([r["ssim"] for r in rows])) if rows else float("nan"),
                "count": len(rows),
            }
            if per_image:
                results[name]["per_image"] = rows
    finally:
        model.train(was_training)
    return results
