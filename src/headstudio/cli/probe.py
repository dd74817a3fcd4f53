"""``headstudio probe``: run one real input through a model; heads' top-k, activations, surgery proof."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from headstudio.core.errors import HeadStudioError, printable


def add_probe_parser(sub: Any, add_source_options: Any) -> None:
    """Register ``probe`` on the main parser's subparsers."""
    p = sub.add_parser("probe", help="run an image or a seeded random input; top-k per head, activations")
    p.add_argument("source", metavar="SOURCE", help="checkpoint file or spec")
    add_source_options(p, named_inputs=False)  # probe's --input is an image
    given = p.add_mutually_exclusive_group()
    given.add_argument("--input", metavar="IMAGE", help="image file, resized/normalised as the model expects")
    given.add_argument("--random", action="store_true", help="a seeded random input (the default)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the random input (default 0)")
    p.add_argument("--module", metavar="PATH", action="append", default=[], help="show this module's output")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes per head (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument(
        "--against",
        metavar="ORIGINAL",
        help="surgery proof: run the same input through ORIGINAL and compare every shared module",
    )


def run_probe(args: argparse.Namespace) -> int:
    """Open, probe, optionally compare, print; one line and exit status on a HeadStudioError."""
    try:
        report, lines = _probe(args)
    except HeadStudioError as err:
        if args.json:
            print(json.dumps({"source": args.source, "error": str(err)}), flush=True)
        else:
            print(f"headstudio: {printable(str(err))}", file=sys.stderr, flush=True)
        return err.exit_code
    print(json.dumps(report) if args.json else "\n".join(lines), flush=True)
    return 0


def _probe(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    from headstudio.core.model.probe import make_input, probe, resolve_modules

    doc = _open(args.source, args.arch, args)
    resolve_modules(doc.model, args.module)  # a typo fails before any image is read
    given = make_input(doc, image=args.input, seed=args.seed)
    result = probe(doc, given, args.module, args.top_k)
    report = {
        "source": args.source,
        "arch": doc.origin.arch,
        **result.to_json(),
        "proof": None,
        "error": None,
    }
    lines = [
        f"{args.source}  [{doc.origin.arch}]",
        f"Input: {given.description} → {list(given.tensor.shape)}",
    ]
    lines += _head_lines(result)
    lines += [
        f"{a.path or '(model)'} ({a.type}) {a.shape}: {a.describe()}" for a in result.activations.values()
    ]
    lines.append(f"Forward: {result.seconds * 1000:.0f} ms")
    if args.against:
        proof = _against(args, doc, given.tensor)
        report["proof"] = proof.to_json()
        lines += _proof_lines(args.against, proof, args.module)
    return report, lines


def _open(source: str, arch: str | None, args: argparse.Namespace) -> Any:
    """Open with the file's own architecture (a spec, a saved recipe, a whole module), else with ``arch``.

    So ``--arch`` can serve whichever of SOURCE and ORIGINAL holds bare weights.
    """
    from headstudio.core.errors import ArchitectureRequiredError
    from headstudio.core.opening.sources import open_source

    shape = args.input_shape
    try:
        return open_source(source, trust=args.trust, input_shape=shape, materialize=True)
    except ArchitectureRequiredError:
        if arch is None:
            raise
    return open_source(source, arch=arch, trust=args.trust, input_shape=shape, materialize=True)


def _against(args: argparse.Namespace, doc: Any, x: Any) -> Any:
    """Open ORIGINAL (bare weights take --arch, else the edited model's architecture) and compare on ``x``."""
    from headstudio.core.model.surgery_proof import compare_models

    original = _open(args.against, args.arch or doc.origin.arch, args)
    return compare_models(original.model, doc.model, x)


def _head_lines(result: Any) -> list[str]:
    if not result.heads:
        return ["Heads: none found (a feature extractor); ask for outputs with --module PATH"]
    lines = []
    for head in result.heads:
        names = f"names from {head.classes_from}" if head.classes_from else "class indices (no names known)"
        active = "" if head.active is None else ("  [returned]" if head.active else "  [not returned]")
        reduced = f", {head.reduced}" if head.reduced else ""
        lines.append(f"Head {head.path} ({head.type}, {head.size} outputs; {names}{reduced}){active}")
        width = max(len(str(t.index)) for t in head.top)
        for rank, top in enumerate(head.top, 1):
            name = f"  {top.name}" if top.name else ""
            lines.append(
                f"  {rank:>2}. {top.index:>{width}}{name}  score {top.score:.4g}  p {top.probability:.3f}"
            )
    return lines


def _proof_lines(original: str, proof: Any, modules: list[str]) -> list[str]:
    lines = [f"Surgery proof against {original}: {proof.summary()}"]
    shown = set(modules)
    for item in proof.modules:
        if item.path in shown or (item.status != "unchanged" and item.status != "added"):
            lines.append(f"  {item.path or '(model output)'} ({item.type}): {item.describe()}")
    return lines
