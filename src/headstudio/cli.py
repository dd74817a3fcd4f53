"""Command line front door: ``headstudio inspect`` and friends. Prints; never does surgery itself."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

SUBCOMMANDS = ("inspect", "edit", "apply", "code")
_JSON_KEYS = (
    "source",
    "format",
    "arch",
    "input_shape",
    "params",
    "trainable_params",
    "output_shape",
)


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,3,224,224`` (or ``1x3x224x224``) -> (1, 3, 224, 224)."""
    parts = text.replace("x", ",").replace("×", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a shape; write sizes separated by commas, e.g. 1,3,224,224"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"'{text}': every size must be a positive integer")
    return shape


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
    from headstudio.edit_commands import add_edit_parsers

    add_edit_parsers(sub, _add_source_options)
    return parser


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", metavar="SPEC", help="architecture for bare weights, e.g. torchvision:resnet50")
    p.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W", help="input shape to trace")
    p.add_argument("--trust", action="store_true", help="allow code inside these files to run")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        return _launch_app(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command != "inspect":
            from headstudio.edit_commands import run_edit_command

            return run_edit_command(args)
        return _inspect(args)
    except KeyboardInterrupt:
        print("headstudio: interrupted", file=sys.stderr)
        return 130


def _launch_app(argv: list[str]) -> int:
    try:
        from headstudio.gui.app import main as app_main
    except ImportError:
        return main(["inspect", *argv]) if argv else main(["--help"])
    return app_main(argv)


def _inspect(args: argparse.Namespace) -> int:
    from headstudio.core.errors import HeadStudioError
    from headstudio.core.sources import open_source

    status = 0
    for index, source in enumerate(args.sources):
        try:
            doc = open_source(source, arch=args.arch, trust=args.trust, input_shape=args.input_shape)
            report = doc.summary()
        except HeadStudioError as err:
            status = max(status, err.exit_code)
            _print_error(args, source, str(err))
            continue
        if report["trace"]["error"]:
            status = max(status, 1)
        if args.json:
            if args.depth is not None:
                report["modules"] = [m for m in report["modules"] if _depth(m["path"]) <= args.depth]
            print(json.dumps(report), flush=True)
        else:
            if index:
                print()
            print(render_report(doc, report, 3 if args.depth is None else args.depth), flush=True)
    return status


def _print_error(args: argparse.Namespace, source: str, message: str) -> None:
    if args.json:
        empty = dict.fromkeys(_JSON_KEYS)
        fields = {"source": source, "modules": [], "head": None, "heads": [], "trace": None, "notes": []}
        print(json.dumps({**empty, **fields, "error": message}), flush=True)
    else:
        print(f"headstudio: {message}", file=sys.stderr, flush=True)


def _depth(path: str) -> int:
    return 0 if not path else path.count(".") + 1


def render_report(doc: Any, report: dict[str, Any], depth: int) -> str:
    """The human inspect view: an indented tree table with the head marked and totals."""
    trace = doc.trace()
    rows: list[tuple[str, str, str, str, str]] = []
    hidden = 0
    not_called = "(not traced)" if report["format"] == "torchscript" else "(not called)"
    for node in doc.tree().walk():
        if node.depth > depth:
            hidden += 1
            continue
        label = ("  " * node.depth + node.name) if node.path else report["arch"]
        if node.is_head:
            label += "  ◀ head" if node.head_rank == 0 else "  ◀ head " + str(node.head_rank + 1)
        if node.path == trace.failed_at and trace.error:
            label += "  ✗ failed here"
        shape = _fmt_shape(node.output_shape) if node.called else not_called
        if not node.called and trace.error and node.path in trace.inputs:
            shape = "(failed inside)"
        trainable = "all" if node.trainable_params == node.params else f"{node.trainable_params:,}"
        if node.params == 0:
            trainable = "-"
        rows.append((label, node.type, shape, f"{node.params:,}", trainable))
    header = ("Module", "Type", "Output shape", "Params", "Trainable")
    widths = [min(max(len(r[i]) for r in [header, *rows]), 60) for i in range(5)]
    lines = [
        f"{report['source']}  [{report['format']}, {report['arch']}, "
        f"input {list(report['input_shape'])}, {trace.mode} trace]"
    ]
    lines.append(_row(header, widths))
    lines.append("  ".join("─" * w for w in widths))
    lines += [_row(r, widths) for r in rows]
    lines.append("  ".join("─" * w for w in widths))
    total, trainable = report["params"], report["trainable_params"]
    lines.append(
        f"Total params: {total:,}   trainable: {trainable:,}   frozen: {total - trainable:,}"
        f"   output: {_fmt_shape(report['output_shape'])}"
    )
    lines.append(_heads_line(report))
    if hidden:
        lines.append(f"({hidden} deeper modules hidden; show them with --depth N)")
    if trace.error:
        lines.append(f"Trace failed at '{trace.failed_at or 'the model'}': {trace.error}")
    lines += [f"Note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def _heads_line(report: dict[str, Any]) -> str:
    if not report["heads"] and report["trace"]["error"]:
        return "Head: unknown (the trace failed before the output; try another --input-shape)"
    if not report["heads"] and report["format"] == "torchscript":
        return "Head: not detected (TorchScript runs without hooks; open the original model to find its head)"
    if not report["heads"]:
        return "Head: none found (the model ends without a classifier: a feature extractor)"
    parts = [f"{h['path']} ({h['type']} {h['in_features']} → {h['out_features']})" for h in report["heads"]]
    return ("Head: " if len(parts) == 1 else "Heads: ") + ", ".join(parts)


def _row(cells: Sequence[str], widths: list[int]) -> str:
    left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True)]
    right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:], strict=True)]
    return "  ".join(left + right).rstrip()


def _fmt_shape(shape: Any) -> str:
    if shape is None:
        return "-"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {_fmt_shape(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, list) and all(isinstance(d, int) for d in shape):
        return "[" + ", ".join(map(str, shape)) + "]"
    return "(" + ", ".join(_fmt_shape(s) for s in shape) + ")"


if __name__ == "__main__":
    sys.exit(main())
