"""Command line front door: ``headstudio inspect`` and friends. Prints; never does surgery itself."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from headstudio.core.model.shape_text import sizes_argument

SUBCOMMANDS = ("inspect", "edit", "apply", "code", "head", "probe")


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
    from headstudio.cli.probe import add_probe_parser

    add_probe_parser(sub, _add_source_options)
    return parser


def _add_source_options(p: argparse.ArgumentParser, named_inputs: bool = True) -> None:
    """--arch, --input-shape, --weights, --input NAME=SIZES (unless the command's --input is another thing),
    --trust and --debug."""
    p.add_argument("--arch", metavar="SPEC", help="architecture for bare weights, e.g. torchvision:resnet50")
    p.add_argument("--input-shape", type=sizes_argument(), metavar="N,C,H,W", help="input shape to trace")
    p.add_argument(
        "--weights",
        choices=("main", "ema"),
        default=None,
        help="which weights of a training checkpoint with an EMA copy (default: main)",
    )
    if named_inputs:
        p.add_argument(
            "--input",
            action="append",
            default=[],
            metavar="NAME=SIZES[:DTYPE]",
            help="a named input to trace with, e.g. --input input_ids=1,128:int64 (repeat for several)",
        )
    p.add_argument(
        "--trust",
        action="store_true",
        help="allow the code these files name to run (pickled classes, TorchScript, a recipe's own factory); "
        "a warning line names what each file ran",
    )
    add_debug_option(p)


def add_debug_option(p: argparse.ArgumentParser) -> None:
    """``--debug``: an unexpected failure shows its traceback instead of one line."""
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected failure")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        return _launch_app(argv)
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        _print_trust_warnings()
        try:
            if args.command == "head":
                from headstudio.cli.head import run_head_command

                return guarded(run_head_command, args)
            if args.command == "probe":
                from headstudio.cli.probe import run_probe

                return guarded(run_probe, args)
            if args.command != "inspect":
                from headstudio.cli.edit import run_edit_command

                return guarded(run_edit_command, args)
            from headstudio.cli.inspect import run_inspect

            return guarded(run_inspect, args)
        except KeyboardInterrupt:
            print("headstudio: interrupted", file=sys.stderr)
            return 130


def guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; any failure is one line on stderr (a traceback only with ``--debug``)."""
    from headstudio.core.errors import HeadStudioError, printable

    try:
        return run(args)
    except HeadStudioError as err:
        print(f"headstudio: {printable(str(err))}", file=sys.stderr, flush=True)
        return err.exit_code
    except Exception as err:
        if getattr(args, "debug", False):
            raise
        print(f"headstudio: {printable(unexpected(err))}", file=sys.stderr, flush=True)
        return 1


def unexpected(err: BaseException) -> str:
    """One line for a failure nobody planned for, with the way to see more."""
    from headstudio.core.errors import first_line

    if isinstance(err, MemoryError):
        return "not enough memory for this model; close other programs or open a smaller model"
    return f"unexpected {first_line(err, with_type=True)} (a bug; rerun with --debug for the traceback)"


def _print_trust_warnings() -> None:
    """Code allowed by --trust is announced on stderr, one line per file, as it is about to run."""
    from headstudio.core.errors import TrustedCodeWarning, printable

    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        print(f"headstudio: warning: {printable(str(message))}", file=sys.stderr, flush=True)

    warnings.simplefilter("always", TrustedCodeWarning)
    warnings.showwarning = show


def _launch_app(argv: list[str]) -> int:
    try:
        from headstudio.gui.app import main as app_main
    except ImportError:
        return main(["inspect", *argv]) if argv else main(["--help"])
    return app_main(argv)


if __name__ == "__main__":
    sys.exit(main())
