"""``dckd track sync RUN_DIR [--tracking-uri URI]``: send to MLflow what a run could not send.

A run tracked on an MLflow server keeps what it logs in ``RUN_DIR/tracking-pending/`` until the
server has it; a run that ended while the server was down leaves it there (and says so). ``sync``
sends it: metrics with their own steps and timestamps, params the run does not have yet, files,
the run's final status and a pending student registration; it is safe to repeat.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dckd.errors import TrackingError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("track", help="MLflow tracking of finished runs (send what a run could not send)",
                       description="Tracking tasks after a run. sync: send what a run left in "
                       "RUN_DIR/tracking-pending while its MLflow server was down.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = actions.add_parser("sync", help="send a run's pending tracking operations to MLflow",
                           description="Send what RUN_DIR/tracking-pending holds to the run's MLflow server, "
                           "then remove it. Repeating it sends nothing twice.")
    s.add_argument("run_dir", help="the run directory (or one journal folder inside tracking-pending/)")
    s.add_argument("--tracking-uri", default=None,
                   help="the MLflow server (default: the one the run used; needed when its URI held credentials)")
    s.add_argument("--dry-run", action="store_true", help="only say what would be sent")
    s.set_defaults(func=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    from dckd.tracking.sender import sync_run_dir

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise TrackingError(f"{run_dir}: no such run directory")
    _, refused = sync_run_dir(run_dir, args.tracking_uri, dry_run=args.dry_run)
    return 1 if refused else 0
