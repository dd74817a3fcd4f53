"""Command line front door: ``headstudio inspect`` and friends. Prints; never does surgery itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from headstudio.core.model.shape_text import sizes_argument

SUBCOMMANDS = ("inspect", "edit", "apply", "code", "head")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headstudio",
        description="See a PyTorch model's module tree with live shapes, find its head, edit it safely.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("inspect", help="print the module tree with output shapes and the head")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="checkpoint file or spec")
    _add_source_options(p)
    p.add_argument("--depth", type=int, default=None, help="levels of the tree to show (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per SOURCE per line")
    from headstudio.cli.edit import add_edit_parsers

    add_edit_parsers(sub, _add_source_options)
    from headstudio.cli.head import add_head_parser

    add_head_parser(sub, _add_source_options)
    return parser


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", metavar="SPEC", help="architecture for bare weights, e.g. torchvision:resnet50")
    p.add_argument("--input-shape", type=sizes_argument(), metavar="N,C,H,W", help="input shape to trace")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=SIZES[:DTYPE]",
        help="a named input to trace with, e.g. --input input_ids=1,128:int64 (repeat for several)",
    )
    p.add_argument("--trust", action="store_true", help="allow code inside these files to run")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        return _launch_app(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "head":
            from headstudio.cli.head import run_head_command

            return run_head_command(args)
        if args.command != "inspect":
            from headstudio.cli.edit import run_edit_command

            return run_edit_command(args)
        from headstudio.cli.inspect import run_inspect

        return run_inspect(args)
    except KeyboardInterrupt:
        print("headstudio: interrupted", file=sys.stderr)
        return 130


def _launch_app(argv: list[str]) -> int:
    try:
        from headstudio.gui.app import main as app_main
    except ImportError:
        return main(["inspect", *argv]) if argv else main(["--help"])
    return app_main(argv)


if __name__ == "__main__":
    sys.exit(main())
