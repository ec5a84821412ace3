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
    tiles: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Mean PSNR/SSIM per named set; optionally writes the restorations and per-image scores.

    With ``per_image``, ``results[set]["per_image"]`` lists ``{name, psnr, ssim}`` per image; with
    ``tiles`` too, per fixed tile of each whole-image restoration instead (:func:`tile_scores`).
    The set's mean is always over whole images, as the protocol reports it."""
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, dataset in sets:
            rows: list[dict[str, Any]] = []
            units: list[dict[str, Any]] = []
            for i in range(len(dataset)):
                item = dataset[i]
                pred = restore(model, item["lq"], device)
                gt = to_uint8(item["gt"])
                p, s = protocol.score(pred, gt)
                rows.append({"name": item["name"], "psnr": p, "ssim": s})
                if per_image and tiles:
                    units.extend(tile_scores(pred, gt, protocol, tiles, item["name"]))
                if save_dir is not None:
                    write_image(Path(save_dir) / name / f"{item['name']}.png", pred)
            results[name] = {
                "psnr": float(np.mean([r["psnr"] for r in rows])) if rows else float("nan"),
                "ssim": float(np.mean([r["ssim"] for r in rows])) if rows else float("nan"),
                "count": len(rows),
            }
            if per_image:
                results[name]["per_image"] = units if tiles else rows
    finally:
        model.train(was_training)
    return results


def tile_scores(pred: np.ndarray, gt: np.ndarray, protocol: Protocol, side: int, name: str) -> list[dict[str, Any]]:
    """PSNR/SSIM of each non-overlapping ``side`` x ``side`` tile of a whole-image restoration.

    The protocol's border is cropped from the whole image first, then the rest is cut into tiles
    from the top-left (a remainder narrower than ``side`` is left out) and each tile is scored
    with the protocol's channel rules and no further crop. The model saw the whole image, so a
    tile's score is a region of the protocol's score, not a restoration of a small crop. Tiles
    of one image are neighbours, not independent samples: statistics over them speak for these
    images, not for a population of images. Names read ``<image>@<row>,<col>`` (tile indices).
    """
    if side < 8:
        raise ValueError(f"eval.score_tiles = {side}: tiles under 8 px have no SSIM window")
    c = protocol.crop_border
    if c:
        pred, gt = pred[c:-c, c:-c], gt[c:-c, c:-c]
    inner = Protocol(crop_border=0, y_channel=protocol.y_channel, round_y=protocol.round_y)
    rows = []
    for i in range(pred.shape[0] // side):
        for j in range(pred.shape[1] // side):
            window = np.s_[i * side:(i + 1) * side, j * side:(j + 1) * side]
            p, s = inner.score(np.ascontiguousarray(pred[window]), np.ascontiguousarray(gt[window]))
            rows.append({"name": f"{name}@{i},{j}", "psnr": p, "ssim": s})
    return rows


SCORES_FILE = "test_scores.csv"
SCORE_COLUMNS = ("benchmark", "image", "psnr", "ssim")


def scores_csv(results: dict[str, dict[str, Any]]) -> str:
    """The per-image (or per-tile) scores of :func:`evaluate_sets` as CSV text, full float precision."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SCORE_COLUMNS)
    for bench, m in results.items():
        for row in m.get("per_image", []):
            writer.writerow([bench, row["name"], repr(float(row["psnr"])), repr(float(row["ssim"]))])
    return buf.getvalue()


def read_scores_csv(path: str | Path) -> dict[str, dict[str, tuple[float, float]]]:
    """benchmark -> image -> (PSNR, SSIM) from a ``test_scores.csv``; errors name the file."""
    import csv

    from dckd.errors import ConfigError

    path = Path(path)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != SCORE_COLUMNS:
                raise ConfigError(f"{path}: not a per-image score file (columns {reader.fieldnames}, "
                                  f"expected {list(SCORE_COLUMNS)})")
            for i, row in enumerate(reader, start=2):
                try:
                    out.setdefault(row["benchmark"], {})[row["image"]] = (float(row["psnr"]), float(row["ssim"]))
                except (TypeError, ValueError):
                    raise ConfigError(f"{path}: line {i}: PSNR/SSIM are not numbers: {row}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read per-image scores: {exc.strerror or exc}") from None
    return out
