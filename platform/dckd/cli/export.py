"""``dckd export SOURCE --format onnx|torchscript OUT``: a student (or teacher) as a deployable file.

The file is verified before it is kept: loaded back and run on a crop of a real photograph (or
``--image``), its output compared with PyTorch's; the command fails, writing nothing, when the
largest difference exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dckd.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="export a student or teacher to ONNX or TorchScript, verified on a photograph",
                       description="Export a network to ONNX (dynamic height and width) or TorchScript and check "
                       "the file against PyTorch on a real photograph.")
    p.add_argument("source", help="models:/NAME@ALIAS, runs:/RUN_ID, a dckd run checkpoint, a BasicSR weights file "
                   "(with --preset) or a preset name (random weights)")
    p.add_argument("output", help="the file to write (.onnx or .pt)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default=None,
                   help="default: from the output suffix (.onnx: onnx, .pt/.ts: torchscript)")
    p.add_argument("--preset", help="the architecture of a BasicSR/official weights file")
    p.add_argument("--weights", choices=["ema", "student"], default="ema", help="with a run checkpoint: which weights")
    p.add_argument("--image", help="verify on this image instead of the built-in photograph crop")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest allowed |exported - PyTorch| on the [0, 1] scale (default 1e-4)")
    p.add_argument("--tracking-uri", help="MLflow tracking server or database for models:/ and runs:/")
    p.set_defaults(func=run)


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.output).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".ts", ".pth"):
        return "torchscript"
    raise ConfigError(f"{args.output}: give --format onnx|torchscript (the suffix {suffix or '(none)'} says neither)")


def run(args: argparse.Namespace) -> int:
    from dckd.deploy.export import DEFAULT_TOLERANCE, export, verification_image
    from dckd.deploy.sources import resolve_source

    fmt = _format(args)
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    if not tolerance > 0:
        raise ConfigError(f"--tolerance must be positive, got {args.tolerance}")
    image = verification_image(args.image) if args.image else None  # a bad --image fails before any work
    resolved = resolve_source(args.source, preset=args.preset, tracking_uri=args.tracking_uri, weights=args.weights)
    print(f"exporting {resolved.label} ({resolved.kind}) as {fmt} ...", file=sys.stderr)
    report = export(resolved.model, args.output, fmt, image=image, tolerance=tolerance)
    print(report.summary())
    return 0
