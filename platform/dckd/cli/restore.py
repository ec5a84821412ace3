"""``dckd restore (--model URI | --checkpoint PATH) IN OUT``: restore images with a trained student.

``--model`` takes a registry address (``models:/NAME@ALIAS``): the student is rebuilt from its
weights-only state dict, nothing is unpickled. ``--checkpoint`` takes a dckd training checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dckd.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("restore", help="restore images with a registered student or a training checkpoint",
                       description="Restore one image or a folder of images, tile by tile (any image size).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="URI",
                     help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID, a local model folder or an exported .onnx file")
    src.add_argument("--checkpoint", metavar="PATH", help="a dckd training checkpoint (checkpoints/iter_*.pt)")
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("output", help="an image file (for one input file) or a folder (PNG files named as the inputs)")
    p.add_argument("--tracking-uri", help="MLflow tracking server or database for --model (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--weights", choices=["ema", "student"], default="ema", help="with --checkpoint: which weights")
    p.add_argument("--tile", type=int, default=128, help="tile side in input pixels; 0 restores whole images")
    p.add_argument("--overlap", type=int, default=16, help="overlap of neighbouring tiles in input pixels")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--overwrite", action="store_true",
                   help="allow an output path that is one of the inputs (the input image is replaced)")
    p.set_defaults(func=run)


def _jobs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    from dckd.imageio import IMAGE_EXTENSIONS, list_images

    if src.is_dir():
        if dst.suffix.lower() in IMAGE_EXTENSIONS and not dst.is_dir():
            raise ConfigError(f"{dst}: the input is a folder, so the output must be a folder")
        files = list_images(src)
        stems = [f.stem for f in files]
        clash = sorted({s for s in stems if stems.count(s) > 1})
        if clash:
            raise DataError(f"{src}: several images share a name ({', '.join(clash)}); outputs would collide")
        return [(f, dst / f"{f.stem}.png") for f in files]
    if not src.is_file():
        raise DataError(f"{src}: no such image file or folder")
    if dst.is_dir() or dst.suffix.lower() not in IMAGE_EXTENSIONS:
        return [(src, dst / f"{src.stem}.png")]
    return [(src, dst)]


def refuse_overwriting_inputs(jobs: list[tuple[Path, Path]], overwrite: bool) -> None:
    """An output that is one of the inputs would destroy it: refused before any work, unless asked for."""
    if overwrite:
        return
    inputs = {src.resolve() for src, _ in jobs}
    clash = [dst for _, dst in jobs if dst.resolve() in inputs]
    if clash:
        more = f" ({len(clash) - 1} more outputs would overwrite theirs)" if len(clash) > 1 else ""
        raise ConfigError(f"{clash[0]}: the output would overwrite an input image{more}; choose another output "
                          "(or give --overwrite to replace the inputs with their restorations)")


def run(args: argparse.Namespace) -> int:
    from dckd.evaluation.restore import restore_image
    from dckd.imageio import read_image, write_image
    from dckd.training.engine import resolve_device

    jobs = _jobs(Path(args.input), Path(args.output))
    refuse_overwriting_inputs(jobs, args.overwrite)
    if args.tile < 0 or args.overlap < 0 or (args.tile > 0 and 2 * args.overlap >= args.tile):
        raise ConfigError(f"--overlap must be less than half of --tile (got {args.overlap} and {args.tile})")
    if args.model and args.model.lower().endswith(".onnx"):
        from dckd.deploy.runtime import OnnxRestorer

        model = OnnxRestorer(args.model, device="cpu" if args.device == "auto" else args.device)
    elif args.model:
        from dckd.tracking import load_student

        model = load_student(args.model, tracking_uri=args.tracking_uri)
    else:
        from dckd.deploy.sources import from_checkpoint

        model = from_checkpoint(args.checkpoint, args.weights)
    device = resolve_device(args.device)
    model.to(device).eval()
    for src, dst in jobs:
        img = read_image(src)
        out = restore_image(model, img, model.scale, tile=args.tile, overlap=args.overlap, device=device)
        write_image(dst, out)
        print(f"{src} ({img.shape[1]}x{img.shape[0]}) -> {dst} ({out.shape[1]}x{out.shape[0]})", file=sys.stderr)
    return 0
