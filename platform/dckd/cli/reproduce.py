"""``dckd reproduce TABLE``: a paper table as one Tune grid, with a report against the published numbers.

TABLE is a table file, its id (``table5``) or an id prefix naming a group of files (``table2``
runs every ``experiments/tables/table2_*.yaml``). ``--check`` validates every cell, prints the
plan and an estimate of its device time (a few timed training steps of each distinct pair and
method on this machine, or on a worker when ray.address names a cluster), and trains nothing;
``--list`` lists the tables and their cells. ``--seeds K`` trains every cell K times; the report
then gives each cell's spread over seeds beside the paired per-image statistics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dckd.cli.train import load_runner


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run a paper table's cells on Ray and report against the paper",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", nargs="?", help="table id (table5), id prefix (table2) or table file")
    p.add_argument("--cells", action="append", default=[], metavar="ID[,ID...]",
                   help="only these cells; +ID adds a cell to the default ones (--cells +dckd_paper runs the "
                        "table and the paper-as-written DCKD beside it)")
    p.add_argument("--scale-down", type=float, default=None, metavar="F",
                   help="shrink iterations, patches, batches and data by F (0 < F < 1) for a smoke run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field in every cell (e.g. ray.num_workers=4)")
    p.add_argument("--out", default=None, help="report folder (default runs/reproduce/<table>)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what fits)")
    p.add_argument("--tables-dir", default=None, help="folder of table files (default experiments/tables)")
    p.add_argument("--seeds", type=int, default=1, metavar="K",
                   help="train each cell K times with seeds seed..seed+K-1 (default 1); the best seed's student "
                        "is the cell's registered one")
    p.add_argument("--check", action="store_true",
                   help="validate every cell, print the plan and its device-time estimate; train nothing")
    p.add_argument("--no-estimate", action="store_true",
                   help="skip the timed calibration steps (--check: only validate; a run: no estimate in the report)")
    p.add_argument("--list", action="store_true", help="list the table files and their cells")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dckd.errors import ConfigError
    from dckd.reporting.tables import TABLES_DIR, read_table

    folder = Path(args.tables_dir or TABLES_DIR)
    if args.list:
        for path in sorted(folder.glob("*.yaml")):
            t = read_table(path).spec
            extra = [c.id for c in t.cells if c.optional]
            print(f"{t.table:24s} {t.paper_ref:10s} {t.title}\n{'':35s} cells: "
                  + ", ".join(c.id for c in t.cells if not c.optional)
                  + (f"; optional (--cells +ID): {', '.join(extra)}" if extra else ""))
        return 0
    if not args.table:
        raise ConfigError("name a table (see dckd reproduce --list)")
    cells = [c for item in args.cells for c in item.split(",") if c]
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: must be at least 1")
    if args.check:
        from dckd.reporting.reproduction import describe_plan

        print(describe_plan(args.table, cells or None, args.scale_down, args.overrides, folder, args.seeds))
        if not args.no_estimate:
            print(load_runner("reproduce_estimate")(args.table, cells or None, args.scale_down, args.overrides,
                                                    str(folder), args.seeds), flush=True)
        return 0
    summary = load_runner("reproduce")(args.table, cells or None, args.scale_down, args.overrides, args.out,
                                       args.tracking_uri, args.max_concurrent, str(folder), args.seeds,
                                       not args.no_estimate)
    print(json.dumps(summary, indent=2, default=str))
    return 2 if summary.get("errors") else 0
