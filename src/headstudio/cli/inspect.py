"""``headstudio inspect``: open each SOURCE, print its tree or a JSON line; a bad one never stops the rest."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from headstudio.cli import unexpected
from headstudio.cli.report import render_report, stderr_progress

_JSON_KEYS = (
    "source",
    "format",
    "arch",
    "arch_from",
    "input_shape",
    "params",
    "trainable_params",
    "output_shape",
)


def run_inspect(args: argparse.Namespace) -> int:
    """Inspect every source in turn; the exit status is the worst of theirs."""
    from headstudio.core.errors import HeadStudioError
    from headstudio.core.opening.sources import open_source

    status = 0
    for index, source in enumerate(args.sources):
        try:
            doc = open_source(
                source,
                arch=args.arch,
                trust=args.trust,
                input_shape=args.input_shape,
                weights=args.weights,
                progress=stderr_progress,
            )
            use_named_inputs(doc, args)
            report = doc.summary()
        except HeadStudioError as err:
            status = max(status, err.exit_code)
            _print_error(args, source, str(err))
            continue
        except Exception as err:  # a bug for this source: one line, and the other sources still run
            if args.debug:
                raise
            status = max(status, 1)
            _print_error(args, source, unexpected(err))
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
            text = render_report(doc, report, 3 if args.depth is None else args.depth)
            from headstudio.core.errors import printable  # names from a file never drive the terminal

            print("\n".join(printable(line) for line in text.splitlines()), flush=True)
    return status


def use_named_inputs(doc: Any, args: argparse.Namespace) -> None:
    """Trace with the ``--input NAME=SIZES[:DTYPE]`` inputs when given."""
    if getattr(args, "input", None):
        from headstudio.core.model.inputs import parse_inputs

        doc.set_inputs(parse_inputs(args.input))


def _print_error(args: argparse.Namespace, source: str, message: str) -> None:
    if args.json:
        empty = dict.fromkeys(_JSON_KEYS)
        fields = {"source": source, "modules": [], "head": None, "heads": [], "trace": None, "notes": []}
        fields["inputs"] = []
        print(json.dumps({**empty, **fields, "error": message}), flush=True)
    else:
        from headstudio.core.errors import printable

        print(f"headstudio: {printable(message)}", file=sys.stderr, flush=True)


def _depth(path: str) -> int:
    return 0 if not path else path.count(".") + 1
