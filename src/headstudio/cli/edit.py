"""``headstudio edit / apply / code``: build edits from options, let the core apply and save, print.

The surgery itself is the core's (edits, recipe, saving); this module only translates the command line
into edit values and the results into lines for people.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstudio.cli.inspect import use_named_inputs
from headstudio.cli.report import stderr_progress
from headstudio.core.errors import EditError, HeadStudioError, SourceError
from headstudio.core.model.shape_text import sizes_argument

if TYPE_CHECKING:
    from headstudio.core.edits import Edit
    from headstudio.core.model.document import Document
    from headstudio.core.saving import SaveReport


def add_edit_parsers(sub: Any, add_source_options: Any) -> None:
    """Register the edit, apply and code subcommands on the main parser's subparsers."""
    p = sub.add_parser("edit", help="change a model's head / trainable flags and save it (verified)")
    p.add_argument("source", metavar="SOURCE", help="checkpoint file or spec")
    add_source_options(p)
    p.add_argument("--head", metavar="PATH", help="the head to edit (default: the detected head)")
    ops = p.add_argument_group(
        "edits (applied in this order: cut, remove layers, remove head, replace, add, freeze, unfreeze)"
    )
    ops.add_argument("--cut-after", metavar="PATH", help="keep the computation up to PATH; return its output")
    ops.add_argument(
        "--remove",
        metavar="PATH[,PATH...]",
        help="remove these layers (list indices renumbered, shapes checked)",
    )
    ops.add_argument("--remove-head", action="store_true", help="head becomes Identity: a feature extractor")
    ops.add_argument("--replace-head", type=int, metavar="N", help="new head with N classes")
    ops.add_argument(
        "--mlp",
        type=sizes_argument("list of hidden sizes", "512,256"),
        metavar="512,256",
        help="hidden sizes for an MLP head",
    )
    ops.add_argument("--dropout", type=float, default=0.0, metavar="P", help="dropout before the new layers")
    ops.add_argument("--keep-classes", metavar="SPEC", help="keep trained rows of these classes, e.g. 0-9")
    ops.add_argument(
        "--labels",
        metavar="A,B,C",
        help="class names for the new head (a transformers model's id2label); alone, "
        "a new head with one class per name",
    )
    ops.add_argument("--add-head", metavar="NAME:N", action="append", default=[], help="add another head")
    ops.add_argument(
        "--from",
        dest="from_file",
        metavar="HEAD.safetensors",
        help="the head comes from a head file: replaces the head, or is added with --add-head NAME",
    )
    ops.add_argument(
        "--adapter",
        metavar="D|auto",
        help="added heads get a Linear to D features (then ReLU) first; with --from: auto, a Linear "
        "from the backbone's width to the head file's",
    )
    ops.add_argument("--freeze-backbone", action="store_true", help="freeze everything but the head(s)")
    ops.add_argument("--freeze", metavar="GLOB", action="append", default=[], help="freeze modules matching")
    ops.add_argument("--unfreeze", metavar="GLOB", action="append", default=[], help="unfreeze matching")
    ops.add_argument("--bn-eval", action="store_true", help="frozen BatchNorm layers stay in eval mode")
    ops.add_argument("--seed", type=int, metavar="S", help="seed for new layers' initialisation")
    _add_output_options(p)
    p.add_argument("--print-code", action="store_true", help="print the plain-PyTorch snippet as well")
    p.add_argument("--recipe-out", metavar="FILE", help="also save the recipe JSON (for headstudio apply)")

    p = sub.add_parser("apply", help="replay a recipe JSON on a checkpoint and save the result")
    p.add_argument("recipe", metavar="RECIPE", help="recipe JSON file (from edit --recipe-out or the app)")
    p.add_argument("source", metavar="SOURCE", help="checkpoint file or spec of the recipe's architecture")
    add_source_options(p)
    _add_output_options(p)

    p = sub.add_parser("code", help="print the plain-PyTorch snippet for a recipe")
    p.add_argument("recipe", metavar="RECIPE", help="recipe JSON file")
    p.add_argument(
        "--trust", action="store_true", help="allow the recipe's own factory (not allow-listed) to run"
    )
    from headstudio.cli import add_debug_option

    add_debug_option(p)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="file to write, or a folder for a transformers model (never the source)",
    )  # fmt: skip
    p.add_argument(
        "--format",
        metavar="F",
        help="safetensors, state_dict, checkpoint, full, torchscript, export, hf_folder",
    )


def run_edit_command(args: argparse.Namespace) -> int:
    """Dispatch edit / apply / code (errors become one line in ``cli.guarded``)."""
    return {"edit": _edit, "apply": _apply, "code": _code}[args.command](args)


def _edit(args: argparse.Namespace) -> int:
    from headstudio.core.saving.atomic import save

    doc, out = _open_to_save(args, args.arch)
    edits = edits_from_args(args, doc)
    before = _figures(doc)
    for edit in edits:
        doc.apply(edit)
    after = _figures(doc)
    report = save(doc, out, args.format)
    print(_before_after(doc, edits, before, after))
    _print_saved(report)
    if args.recipe_out:
        _write_recipe(doc, Path(args.recipe_out))
    if args.print_code:
        from headstudio.core.codegen import snippet_for
        from headstudio.core.recipe import Recipe

        print(snippet_for(Recipe.from_document(doc)))
    return 0


def edits_from_args(args: argparse.Namespace, doc: Document) -> list[Edit]:
    """The edit values the options ask for, in a fixed order; raise EditError for a meaningless mix."""
    from headstudio.core import edits as E

    head = args.head or _detected_head(doc, args)
    out: list[Edit] = []
    if args.cut_after:
        out.append(E.CutAfter(args.cut_after))
    if args.remove is not None:
        paths = [p.strip() for p in args.remove.split(",") if p.strip()]
        if not paths:
            raise EditError(
                "--remove needs module paths, e.g. --remove layer1.1 or --remove blocks.10,blocks.11"
            )
        out.append(E.RemoveLayers(paths))
    if args.from_file:
        return out + _from_file_edits(args, head, E)
    adapter = _adapter_size(args.adapter)
    if args.remove_head:
        out.append(E.RemoveHead(head))
    labels = _labels(args.labels)
    count = args.replace_head
    if count is None and labels and not args.remove_head:
        count = len(labels)  # --labels alone: one class per name
    if count is not None:
        if count <= 0:
            raise EditError(f"--replace-head {count}: the number of classes must be 1 or more")
        out.append(
            E.ReplaceHead(
                head, count, hidden=args.mlp or (), dropout=args.dropout,
                keep_classes=args.keep_classes, seed=args.seed, labels=labels,
            )
        )  # fmt: skip
    elif args.mlp or args.keep_classes or args.dropout or args.labels:
        raise EditError(
            "--mlp, --dropout, --keep-classes and --labels shape a new head; add --replace-head N"
        )
    for spec in args.add_head:
        name, _, count = spec.partition(":")
        if not name or not count.strip().isdigit() or int(count) <= 0:
            raise EditError(f"--add-head '{spec}': write NAME:N with N classes, e.g. --add-head age:5")
        out.append(E.AddHead(name, int(count), at=head, adapter=adapter, seed=args.seed))
    if args.adapter is not None and not args.add_head:
        raise EditError("--adapter sizes the Linear in front of an added head; add --add-head NAME:N")
    return out + _trainable_edits(args, E)


def _from_file_edits(args: argparse.Namespace, head: str, E: Any) -> list[Any]:
    """--from HEAD.safetensors: replace the head by the file's, or add it with --add-head NAME."""
    if args.replace_head is not None or args.remove_head or args.mlp or args.keep_classes or args.dropout:
        raise EditError("--from attaches the head file's head; drop --replace-head/--remove-head/--mlp")
    if args.adapter not in (None, "auto"):
        raise EditError("with --from the adapter is sized by the head file; write --adapter auto")
    adapter = args.adapter == "auto"
    if len(args.add_head) > 1 or any(":" in name for name in args.add_head):
        raise EditError("with --from, --add-head takes only the new head's NAME (its size is in the file)")
    if args.add_head:
        edit = E.AddHeadFromFile.from_file(args.add_head[0], head, args.from_file, adapter, args.seed)
    else:
        edit = E.ReplaceHeadFromFile.from_file(head, args.from_file, adapter, args.seed)
    return [edit, *_trainable_edits(args, E)]


def _adapter_size(value: str | None) -> int | None:
    if value is None:
        return None
    if value == "auto":
        raise EditError("--adapter auto sizes the adapter from a head file; add --from HEAD.safetensors")
    if not value.isdigit() or int(value) <= 0:
        raise EditError(f"--adapter {value}: give a positive feature count, e.g. --adapter 256")
    return int(value)


def _trainable_edits(args: argparse.Namespace, E: Any) -> list[Any]:
    """--freeze-backbone / --freeze / --unfreeze, after the head edits."""
    out: list[Any] = []
    if args.bn_eval and not (args.freeze_backbone or args.freeze):
        raise EditError(
            "--bn-eval keeps frozen BatchNorm layers in eval mode; add --freeze-backbone or --freeze"
        )
    if args.freeze_backbone:
        out.append(E.FreezeBackbone(bn_eval=args.bn_eval, heads=[args.head] if args.head else None))
    out += [E.SetTrainable(glob, False, bn_eval=args.bn_eval) for glob in args.freeze]
    out += [E.SetTrainable(glob, True, bn_eval=False) for glob in args.unfreeze]
    return out


def _labels(text: str | None) -> tuple[str, ...] | None:
    """``--labels cat,dog,bird`` as names (spaces around commas ignored)."""
    if text is None:
        return None
    return tuple(name.strip() for name in text.split(","))


def _detected_head(doc: Document, args: argparse.Namespace) -> str | None:
    """The detected head's path; an error only when an edit needs a head and none was found."""
    needs = (
        args.remove_head or args.replace_head is not None or args.add_head or args.from_file or args.labels
    )
    head = doc.head
    if head is None and needs:
        raise EditError("no head was detected in this model; name the module to edit with --head PATH")
    return head.path if head is not None else None


def _apply(args: argparse.Namespace) -> int:
    from headstudio.core.opening.file_specs import file_spec
    from headstudio.core.recipe import Recipe
    from headstudio.core.saving.atomic import save

    recipe = Recipe.from_json(_read_text(args.recipe), args.recipe)
    arch = args.arch
    if arch is None and Path(args.source).exists() and _is_bare_weights(args.source, args.trust):
        spec, notes = file_spec(recipe.arch, args.recipe, args.trust)  # the recipe file's arch is data
        arch = recipe.arch = str(spec)  # bare weights: the recipe names their architecture
        for note in notes:
            print(f"Note: {note}")
    doc, out = _open_to_save(args, arch)
    before = _figures(doc)
    recipe.replay(doc)
    report = save(doc, out, args.format)
    print(_before_after(doc, list(doc.edits), before, _figures(doc)))
    _print_saved(report)
    return 0


def _code(args: argparse.Namespace) -> int:
    from headstudio.core.codegen import snippet_for
    from headstudio.core.recipe import Recipe

    print(snippet_for(Recipe.from_json(_read_text(args.recipe), args.recipe), trust=args.trust))
    return 0


def _is_bare_weights(source: str, trust: bool) -> bool:
    """True for a weights-only file with no embedded recipe (it needs an architecture from somewhere)."""
    from headstudio.core.opening.checkpoints import read_checkpoint

    ckpt = read_checkpoint(Path(source), trust=trust)
    return ckpt.module is None and not ckpt.recipe


RECIPE_CAP = 16 << 20  # a recipe is a few kB of JSON; a bigger "recipe" file is refused unread


def _read_text(path: str) -> str:
    try:
        if Path(path).stat().st_size > RECIPE_CAP or not Path(path).is_file():
            raise SourceError(f"{path} is not a recipe JSON file (not a regular file of at most 16 MB)")
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"no such recipe file: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SourceError(f"{path} cannot be read as a recipe JSON file ({err}); check the path") from None


def _write_recipe(doc: Document, path: Path) -> None:
    from headstudio.core.recipe import Recipe

    try:
        path.write_text(Recipe.from_document(doc).to_json() + "\n", encoding="utf-8")
    except OSError as err:
        raise HeadStudioError(f"could not write the recipe to {path}: {err.strerror or err}") from None
    print(f"recipe written to {path}")


def _open_to_save(args: argparse.Namespace, arch: str | None) -> tuple[Document, Path]:
    """Open SOURCE with real weights and check the output (name, format, place) before any edit runs."""
    from headstudio.core.opening.sources import open_source
    from headstudio.core.saving.atomic import check_target, resolve_format

    doc = open_source(
        args.source,
        arch=arch,
        trust=args.trust,
        input_shape=args.input_shape,
        materialize=True,
        weights=args.weights,
        progress=stderr_progress,
    )
    use_named_inputs(doc, args)
    out = Path(args.output)
    resolve_format(doc, out, args.format)
    check_target(doc, out)
    return doc, out


def _figures(doc: Document) -> tuple[Any, int, int, dict]:
    total, trainable = doc.param_counts()
    return doc.trace().output, total, trainable, doc.trace().outputs


def _before_after(doc: Document, edits: list[Edit], before: tuple, after: tuple) -> str:
    """The edits made and a before/after table of output shape, params and trainable params."""
    lines = [f"{doc.origin.source}  [{doc.origin.kind}, {doc.origin.arch}]"]
    if doc.origin.architecture_line():
        lines.append(doc.origin.architecture_line())
    for edit in edits:
        lines.append(f"  {edit.describe()}")
        changed = edit.changed_paths()
        if len(changed) > 1 or any(after[3].get(p) != after[0] for p in changed):  # sizes output hides
            lines += [f"    {p}: {_shape(before[3].get(p))} → {_shape(after[3].get(p))}" for p in changed]
    lines += [] if edits else ["  (no edits: saved as is)"]
    rows = [
        ("", "before", "after"),
        ("output", _shape(before[0]), _shape(after[0])),
        ("params", f"{before[1]:,}", f"{after[1]:,}"),
        ("trainable", f"{before[2]:,}", f"{after[2]:,}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    return "\n".join(lines)


def _shape(shape: Any) -> str:
    from headstudio.core.model.shape_text import format_shape

    return format_shape(shape)


def _print_saved(report: SaveReport) -> None:
    print(report.describe())
    for warning in report.warnings:
        print(f"Note: {warning}")
