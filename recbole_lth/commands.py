"""Subcommands on finished run directories (``python run_recbole_lth.py report RUN_DIR`` ...).

    report  RUN_DIR [--ticket KEY] [--buckets N]   report.md, curve.png, embedding_sizes.png
    export  RUN_DIR TICKET [--out PATH] [--values fp32|fp16|int8] [--evaluate]
                                                   compact ticket (default RUN_DIR/exports/TICKET.pt)
    compare RUN_DIR... [--out DIR]                 comparison.csv/.md/.png (default ./lth_compare)
"""
from __future__ import annotations

import argparse
import os
import sys

from recbole_lth.core import paths
from recbole_lth.core.compact import VALUE_FORMATS
from recbole_lth.core.errors import RunDamaged
from recbole_lth.deploy.export import export_recbole, export_ticket, record_evaluation
from recbole_lth.views.compare import compare
from recbole_lth.views.report import write_report

COMMANDS = ("report", "export", "compare")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_recbole_lth.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="write report.md and its pictures into a run directory")
    report.add_argument("run_dir")
    report.add_argument("--ticket", default=None, help="ticket for the embedding-size analysis (default: sparsest)")
    report.add_argument("--buckets", type=int, default=5, help="popularity buckets (default 5)")
    export = sub.add_parser("export", help="write one ticket in the compact format, or as RecBole's checkpoint")
    export.add_argument("run_dir")
    export.add_argument("ticket")
    export.add_argument("--out", default=None)
    export.add_argument("--format", choices=("compact", "recbole"), default="compact",
                        help="compact: bitmap + kept values (weights-only); recbole: RecBole's own checkpoint, "
                             "for recbole.quick_start.load_data_and_model (pickles RecBole's Config)")
    export.add_argument("--values", choices=VALUE_FORMATS, default="fp32",
                        help="compact format's kept values: fp32, fp16, or int8 with a fp16 scale and offset per row")
    export.add_argument("--evaluate", action="store_true",
                        help="load the export compact, evaluate it on the test set through RecBole and store its "
                             "bytes and metrics next to it (report.md lists them)")
    compare = sub.add_parser("compare", help="merge several run directories into one table and picture")
    compare.add_argument("run_dirs", nargs="+")
    compare.add_argument("--out", default="lth_compare")
    return parser


def _change(value: float, reference) -> str:
    if not reference:
        return "no ticket value"
    return "exact" if value == reference else f"{(value - reference) / reference:+.2%} vs the ticket"


def os_error_line(err: OSError) -> str:
    """A read-only run directory, a full disk: the file and the OS's reason."""
    return f"recbole_lth: {err.filename or 'a file'}: {err.strerror or err}"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "export" and args.out and os.path.isdir(args.out):
            raise ValueError(f"--out={args.out}: allowed values are the path of a file to write, not an existing "
                             f"folder (e.g. {os.path.join(args.out, args.ticket + '.pt')})")
        if args.command == "report":
            if args.buckets < 1:
                raise ValueError(f"--buckets={args.buckets}: allowed values are whole numbers >= 1")
            print(f"report: {write_report(args.run_dir, ticket=args.ticket, buckets=args.buckets)}")
        elif args.command == "export" and args.format == "recbole":
            if args.values != "fp32" or args.evaluate:
                raise ValueError("--values and --evaluate: allowed with --format compact only")
            out = args.out or str(paths.RunPaths(args.run_dir).export(args.ticket).with_suffix(".recbole.pth"))
            print(f"export: {export_recbole(args.run_dir, args.ticket, out)} (RecBole checkpoint)")
        elif args.command == "export":
            path = export_ticket(args.run_dir, args.ticket, args.out, values=args.values)
            row = paths.read_json(paths.RunPaths(args.run_dir).ticket_result(args.ticket))
            dense = 4 * row["prunable_params"]  # the full model's prunable tables in fp32
            size = os.path.getsize(path)
            print(f"export: {path} ({size} bytes; the full model's prunable tables {dense} bytes, "
                  f"ratio {size / dense:.4f})")
            if args.evaluate:
                record = record_evaluation(args.run_dir, args.ticket, path, args.values)
                changes = ", ".join(f"{k} {v:.4f} ({_change(v, record['ticket_test'].get(k))})"
                                    for k, v in record["test"].items())
                print(f"compact ({args.values}): tables {record['resident_table_bytes']} bytes resident; "
                      f"test {changes}")
        else:
            print(f"comparison: {compare(args.run_dirs, args.out)}")
    except (FileNotFoundError, ValueError) as err:
        print(f"recbole_lth: {err}", file=sys.stderr)
        return 2
    except RunDamaged as err:  # a file of the run cannot be read: the message says how to rebuild it
        print(f"recbole_lth: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a read-only run directory, a full disk: the file and the reason, no traceback
        print(os_error_line(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # every file is written atomically: what was there is still there
        print("recbole_lth: interrupted (Ctrl-C); the run directory is as it was", file=sys.stderr)
        return 130
    return 0
