"""``dckd data``: prepare the datasets, and move dataset folders to and from S3 (``s3://bucket/prefix``).

``prepare`` turns the official downloads (a folder, or an S3 prefix pushed with ``push``) into the
layout the experiment configs name under ``${data}`` (docs/data.md), one ``manifest.json`` per
dataset; ``prepare photos`` writes a tiny stand-in from scikit-image's photographs instead.

``push`` uploads every file under LOCAL_DIR and then ``manifest.json`` (path, size, sha256 of each
file); ``pull`` downloads by that manifest and verifies every file. A config may then name the
URI wherever it names a data folder: training syncs it to a per-node cache once.

The endpoint is ``DCKD_S3_ENDPOINT_URL`` (or boto3's ``AWS_ENDPOINT_URL_S3``); credentials come
from the standard AWS environment variables, ``~/.aws`` or the instance role.
"""

from __future__ import annotations

import argparse
import os
import sys

from dckd import storage


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="push a dataset folder to S3 or pull one from it (checksummed manifest)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    push = actions.add_parser("push", help="upload LOCAL_DIR to s3://bucket/prefix, manifest last")
    push.add_argument("local_dir", metavar="LOCAL_DIR", help="folder to upload (recursively)")
    push.add_argument("uri", metavar="URI", help="destination s3://bucket/prefix (the bucket must exist)")
    push.add_argument("--no-progress", action="store_true", help="no progress bar")
    push.set_defaults(func=run_push)

    pull = actions.add_parser("pull", help="download s3://bucket/prefix into LOCAL_DIR, verified")
    pull.add_argument("uri", metavar="URI", help="source s3://bucket/prefix (holding manifest.json)")
    pull.add_argument("local_dir", metavar="LOCAL_DIR", help="destination folder (created if needed)")
    pull.add_argument("--no-progress", action="store_true", help="no progress bar")
    pull.set_defaults(func=run_pull)

    from dckd.data.prepare import DATASET_CHOICES, DIV2K_CROP, DIV2K_STEP

    prep = actions.add_parser(
        "prepare",
        help="build the dataset layout the configs use from the official downloads (or 'photos')",
        description="Prepare datasets under ROOT: " + ", ".join(DATASET_CHOICES) + ". 'all' prepares "
        "whatever the sources hold and reports the rest; 'photos' writes a tiny synthetic stand-in "
        "(no --source). Exit status 1 when a requested dataset is missing or partial.",
    )
    prep.add_argument("datasets", nargs="+", metavar="DATASET", help="dataset names, 'all' or 'photos'")
    prep.add_argument("--source", action="append", default=[], metavar="PATH_OR_S3",
                      help="folder or s3://bucket/prefix holding the downloads; repeat to search several")
    prep.add_argument("--root", default=None,
                      help="output root (default: $DCKD_DATA_ROOT, else ./data: what ${data} means in configs)")
    prep.add_argument("--push", metavar="URI", default=None,
                      help="also upload each prepared dataset to URI/<dataset folder> (dckd data push)")
    prep.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="SR scales (default 2 3 4)")
    prep.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                      help="processes for decoding, resizing and writing (default: cores, at most 8)")
    prep.add_argument("--allow-partial", action="store_true",
                      help="prepare a dataset even when the source lacks some of its files (reported)")
    prep.add_argument("--force", action="store_true",
                      help="replace an output folder not made by prepare, or one made from another origin")
    prep.add_argument("--crop-size", type=int, default=DIV2K_CROP, help="DIV2K HR sub-image side (default 480)")
    prep.add_argument("--step", type=int, default=DIV2K_STEP, help="DIV2K HR sub-image step (default 240)")
    prep.add_argument("--no-progress", action="store_true", help="no progress bars")
    prep.set_defaults(func=run_prepare)


def run_push(args: argparse.Namespace) -> int:
    manifest = storage.push(args.local_dir, args.uri, progress=not args.no_progress)
    files, size = storage.manifest_totals(manifest)
    print(f"pushed {files} files, {size} bytes: {args.local_dir} -> {args.uri}")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    dest = storage.pull(args.uri, args.local_dir, progress=not args.no_progress)
    record = storage.local_manifest(dest)
    assert record is not None  # pull writes it after the last verified file
    files, size = storage.manifest_totals(record)
    print(f"pulled {files} files, {size} bytes: {args.uri} -> {dest}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from dckd.config import root_path
    from dckd.data.prepare import Options, exit_code, expand, prepare

    opts = Options(scales=tuple(sorted(set(args.scales))), crop=args.crop_size, step=args.step,
                   workers=args.workers, progress=not args.no_progress, allow_partial=args.allow_partial,
                   force=args.force, push=args.push)
    root = args.root or root_path("data")
    _, wants_all, _ = expand(args.datasets)

    def report(result) -> None:
        stream = sys.stdout if result.ok or (wants_all and result.status == "missing") else sys.stderr
        print(result.line(), file=stream, flush=True)

    results = prepare(args.datasets, root, args.source, opts, report=report)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"{root}: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return exit_code(results, wants_all)
