"""``dckd data``: move a dataset folder to and from S3 (``s3://bucket/prefix``).

``push`` uploads every file under LOCAL_DIR and then ``manifest.json`` (path, size, sha256 of each
file); ``pull`` downloads by that manifest and verifies every file. A config may then name the
URI wherever it names a data folder: training syncs it to a per-node cache once.

The endpoint is ``DCKD_S3_ENDPOINT_URL`` (or boto3's ``AWS_ENDPOINT_URL_S3``); credentials come
from the standard AWS environment variables, ``~/.aws`` or the instance role.
"""

from __future__ import annotations

import argparse

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
