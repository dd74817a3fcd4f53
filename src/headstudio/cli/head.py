"""``headstudio head export``: write a model's head (weights + description) to a head file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from headstudio.core.errors import HeadStudioError, SaveError


def add_head_parser(sub: Any, add_source_options: Any) -> None:
    """Register ``head export`` on the main parser's subparsers."""
    p = sub.add_parser("head", help="heads as files: export a head to attach it elsewhere (edit --from)")
    actions = p.add_subparsers(dest="head_command", metavar="ACTION", required=True)
    e = actions.add_parser("export", help="write the head's weights and description to a .safetensors file")
    e.add_argument("source", metavar="SOURCE", help="checkpoint file or spec")
    add_source_options(e)
    e.add_argument("--head", metavar="PATH", help="the head to export (default: the detected head)")
    e.add_argument("-o", "--output", required=True, metavar="OUT", help="head file to write (.safetensors)")


def run_head_command(args: argparse.Namespace) -> int:
    """Export the head; one line on a HeadStudioError."""
    try:
        return _export(args)
    except HeadStudioError as err:
        print(f"headstudio: {err}", file=sys.stderr, flush=True)
        return err.exit_code


def _export(args: argparse.Namespace) -> int:
    from headstudio.core.head_description import describe_head
    from headstudio.core.head_files import export_head, file_sha256
    from headstudio.core.modules import find_module
    from headstudio.core.opening.sources import open_source
    from headstudio.core.saving.atomic import check_target

    out = Path(args.output)
    if out.suffix.lower() != ".safetensors":
        raise SaveError(f"a head file is a .safetensors file; name it e.g. {out.with_suffix('.safetensors')}")
    doc = open_source(
        args.source, arch=args.arch, trust=args.trust, input_shape=args.input_shape, materialize=True
    )
    check_target(doc, out)
    path = args.head or (doc.head.path if doc.head is not None else None)
    if not path:
        raise HeadStudioError("no head was detected in this model; name the head to export with --head PATH")
    head = find_module(doc.model, path, "head")
    origin = doc.origin
    source = {
        "name": origin.path.name if origin.path else origin.source,
        "arch": origin.arch,
        "sha256": file_sha256(origin.path) if origin.path and origin.path.is_file() else None,
        "head_path": path,
    }
    description = describe_head(head, path, _class_names(doc.model), source)
    written = export_head(head, description, out)
    params = sum(t.numel() for t in written.state.values())
    print(
        f"exported head {path} ({written.in_features} → {written.out_features}, {params:,} params, "
        f"{_layers(description['layers'])}) to {out} (sha256 {written.sha256[:16]}…)"
    )
    return 0


def _class_names(model: Any) -> list[str] | None:
    """Class names the model carries (a transformers config's id2label), else None."""
    labels = getattr(getattr(model, "config", None), "id2label", None)
    if not isinstance(labels, dict) or not labels:
        return None
    try:
        return [str(labels[i]) for i in range(len(labels))]
    except KeyError:
        return None


def _layers(layers: list[dict]) -> str:
    kinds = [layer["kind"] for layer in layers]
    return " + ".join(kinds) if len(kinds) <= 4 else f"{len(kinds)} layers"
