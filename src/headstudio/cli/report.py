"""The human inspect view: an indented table of modules with shapes, counts and the head marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headstudio.core.model.shape_text import format_shape


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
        shape = format_shape(node.output_shape) if node.called else not_called
        if not node.called and trace.error and node.path in trace.inputs:
            shape = "(failed inside)"
        trainable = "all" if node.trainable_params == node.params else f"{node.trainable_params:,}"
        if node.params == 0:
            trainable = "-"
        rows.append((label, node.type, shape, f"{node.params:,}", trainable))
    header = ("Module", "Type", "Output shape", "Params", "Trainable")
    widths = [min(max(len(r[i]) for r in [header, *rows]), 60) for i in range(5)]
    named = report.get("inputs") or []
    inputs = " ".join(_input_text(i) for i in named) if named else str(list(report["input_shape"]))
    lines = [
        f"{report['source']}  [{report['format']}, {report['arch']}, input {inputs}, {trace.mode} trace]"
    ]
    if doc.origin.architecture_line():
        lines.append(doc.origin.architecture_line())
    lines.append(_row(header, widths))
    lines.append("  ".join("─" * w for w in widths))
    lines += [_row(r, widths) for r in rows]
    lines.append("  ".join("─" * w for w in widths))
    total, trainable = report["params"], report["trainable_params"]
    lines.append(
        f"Total params: {total:,}   trainable: {trainable:,}   frozen: {total - trainable:,}"
        f"   output: {format_shape(report['output_shape'])}"
    )
    lines.append(_heads_line(report))
    if hidden:
        lines.append(f"({hidden} deeper modules hidden; show them with --depth N)")
    if report["trace"].get("fallback"):
        lines.append(f"Note: {report['trace']['fallback']}")
    if trace.error:
        lines.append(f"Trace failed at '{trace.failed_at or 'the model'}': {trace.error}")
    elif trace.mode == "real" and report["format"] != "torchscript":
        lines.append(
            "Note: traced for real (data-dependent steps, e.g. a detector's box count): sizes after them "
            "hold for this input and these weights only"
        )
    lines += [f"Note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def _heads_line(report: dict[str, Any]) -> str:
    if not report["heads"] and report["trace"]["error"]:
        return "Head: unknown (the trace failed before the output; try another --input-shape)"
    if not report["heads"] and report["format"] == "torchscript":
        return "Head: not detected (TorchScript runs without hooks; open the original model to find its head)"
    if not report["heads"]:
        return "Head: none found (the model ends without a classifier: a feature extractor)"
    parts = [_head_text(h, report["heads"]) for h in report["heads"]]
    return ("Head: " if len(parts) == 1 else "Heads: ") + ", ".join(parts)


def _head_text(head: dict[str, Any], heads: list) -> str:
    text = f"{head['path']} ({head['type']} {head['in_features']} → {head['out_features']}"
    rule = head.get("rule") or ""
    named = head.get("role") and (len(heads) > 1 or rule.startswith("transformers"))
    text += f", {head['role']})" if named else ")"
    if "tied" in rule:
        text += " [" + rule.rpartition("; ")[2] + "]"
    return text


def _input_text(item: dict[str, Any]) -> str:
    sizes = ",".join(str(d) for d in item["shape"])
    return f"{item['name']}={sizes}" + (f":{item['dtype']}" if item.get("dtype") else "")


def _row(cells: Sequence[str], widths: list[int]) -> str:
    left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True)]
    right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:], strict=True)]
    return "  ".join(left + right).rstrip()


_shown = {"step": -1}


def stderr_progress(message: str, fraction: float) -> None:
    """Long one-time work (building the architecture index) says what it does on stderr; the rest is quiet."""
    import sys

    if not message.startswith("indexing"):
        return
    step = int(fraction * 10)
    if step != _shown["step"]:
        _shown["step"] = step
        print(f"headstudio: {message}", file=sys.stderr, flush=True)
