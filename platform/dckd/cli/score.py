"""``dckd score``: PSNR/SSIM of a folder of predictions against a folder of ground truth.

Files are matched by name without extension. Flags mirror :class:`dckd.evaluation.metrics.Protocol`:
``--crop-border N --y-channel`` is the SR protocol for scale N, ``--y-channel --round-y`` the
deraining one, no flags the deblurring one (RGB, no crop).

JSON output (``--json``) is one object: ``psnr``, ``ssim`` (means), ``count``, ``per_image``
(``name``, ``psnr``, ``ssim``) and ``protocol``. JSON has no infinity, and the PSNR of an image
identical to its ground truth is infinite: such values (and a mean they make infinite) are
written as ``null`` and the object gets a ``notes`` list saying so, rather than a fake number.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from dckd.evaluation.metrics import Protocol, json_ready, score_folders


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score",
        help="PSNR/SSIM of predicted images against ground truth (BasicSR/MATLAB protocol)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gt", required=True, help="folder of ground-truth images")
    p.add_argument("--pred", required=True, help="folder of predicted images (same file stems)")
    p.add_argument("--crop-border", type=int, default=0, metavar="N", help="pixels removed from every edge")
    p.add_argument("--y-channel", action="store_true", help="score the BT.601 Y channel instead of RGB")
    p.add_argument("--round-y", action="store_true", help="round Y to integers (MATLAB uint8 rgb2ycbcr)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "inf"


def run(args: argparse.Namespace) -> int:
    protocol = Protocol(crop_border=args.crop_border, y_channel=args.y_channel, round_y=args.round_y)
    result = score_folders(args.gt, args.pred, protocol)
    if args.json:
        out: dict[str, Any] = {
            "psnr": result["psnr"],
            "ssim": result["ssim"],
            "count": result["count"],
            "protocol": {
                "crop_border": protocol.crop_border,
                "y_channel": protocol.y_channel,
                "round_y": protocol.round_y,
            },
            "gt_dir": str(args.gt),
            "pred_dir": str(args.pred),
            "per_image": [
                {"name": r["name"], "psnr": r["psnr"], "ssim": r["ssim"]}
                for r in result["per_image"]
            ],
        }
        if any(not math.isfinite(r["psnr"]) for r in result["per_image"]):
            out["notes"] = ["psnr is null where the prediction equals the ground truth (infinite PSNR)"]
        print(json.dumps(json_ready(out), allow_nan=False))
        return 0

    rows = [(r["name"], _fmt(r["psnr"], 4), _fmt(r["ssim"], 6)) for r in result["per_image"]]
    mean_row = (f"mean ({result['count']})", _fmt(result["psnr"], 4), _fmt(result["ssim"], 6))
    header = ("image", "PSNR (dB)", "SSIM")
    w0 = max(len(header[0]), len(mean_row[0]), *(len(r[0]) for r in rows))
    w1 = max(len(header[1]), len(mean_row[1]), *(len(r[1]) for r in rows))
    w2 = max(len(header[2]), len(mean_row[2]), *(len(r[2]) for r in rows))

    def line(r: tuple[str, str, str]) -> str:
        return f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:>{w2}}"

    space = "RGB" if not protocol.y_channel else ("Y (rounded)" if protocol.round_y else "Y")
    print(f"protocol: {space}, crop_border={protocol.crop_border}")
    print(line(header))
    print("-" * (w0 + w1 + w2 + 4))
    for r in rows:
        print(line(r))
    print("-" * (w0 + w1 + w2 + 4))
    print(line(mean_row))
    return 0
