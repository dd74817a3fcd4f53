"""Zoo: what share of transformers model types open as folders with the right head and role.

For every model type of the task families' auto mappings (sequence/image/token classification,
question answering, causal and masked LM), a tiny shrunken config is saved with ``save_pretrained``;
Head Studio then opens the folder, traces it and must name the right head with the right role.
The tiny model must also run its own forward on the inputs Head Studio builds from its config; a
gentler config (default sizes, fewer layers) is tried when the tiny one cannot be built or run.
Statuses: ok, wrong (other head or role), failed (Head Studio cannot open or trace it), forward (the
model's own forward fails on Head Studio's inputs with every config tried: a possible Head Studio input
gap, counted as a failure), skipped (transformers cannot build any config tried: not ours to open).

With ``--edits`` each type that opens right is also edited and saved as a folder, as a user would:
classifiers get a new head of five named classes, language models lose their head; the folder must
load with transformers' own Auto class without missing, unexpected or mismatched keys (bar a part the
save named as added by that class), with the names and width asked for (status ``edit`` otherwise).

    PYTHONPATH=src python benchmarks/zoo_hf.py [--families sequence,qa] [--limit N] [--edits] [--json F]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "core"))

import hf_fixtures as fx


def own_forward(model: object) -> None:
    """The model's own forward on the inputs Head Studio builds from its config; raises when it fails."""
    import torch

    from headstudio.core.model.inputs import config_inputs, make_tensors, without_cache

    inputs = config_inputs(model)
    if inputs is None:
        raise ValueError("Head Studio builds no inputs from this config")
    with torch.no_grad(), without_cache(model):  # as Head Studio traces it
        model(**make_tensors(inputs, model, torch.float32))


LABELS = ("a", "b", "c", "d", "e")
AUTO_CLASSES = {
    "sequence": "AutoModelForSequenceClassification",
    "image": "AutoModelForImageClassification",
    "token": "AutoModelForTokenClassification",
    "causal": "AutoModel",
    "masked": "AutoModel",
}


def edit_round_trip(doc: object, family: str, out: Path) -> str | None:
    """A user's edit for this family, saved as a folder and reloaded by transformers; a problem or None."""
    import torch
    import transformers

    from headstudio.core.edits import RemoveHead, ReplaceHead
    from headstudio.core.model.inputs import config_inputs, make_tensors, without_cache
    from headstudio.core.saving.atomic import save
    from headstudio.core.saving.hf_folder import parts_the_class_adds, saved_model

    language = family in ("causal", "masked")
    doc.apply(RemoveHead(doc.head.path) if language else ReplaceHead(doc.head.path, 5, labels=LABELS))
    save(doc, out)
    auto = getattr(transformers, AUTO_CLASSES[family])
    model, info = auto.from_pretrained(str(out), output_loading_info=True)
    # a part the class adds that the saved model never had (a pooler) is what the save itself allows
    added = set(parts_the_class_adds(saved_model(doc), info["missing_keys"]))
    missing = {k for k in info["missing_keys"] if k.split(".")[0] not in added}
    bad = [f"{k}: {sorted(map(str, v))[:1]}" for k, v in info.items() if k != "error_msgs" and v and
           (k != "missing_keys" or missing)]  # fmt: skip
    if bad or language:
        return "; ".join(bad) or None
    names = [model.config.id2label.get(i) for i in range(model.config.num_labels)]
    with torch.no_grad(), without_cache(model):
        output = model.eval()(**make_tensors(config_inputs(model), model, torch.float32))
    logits = getattr(output, "logits", None)  # PP-LCNet's own classifier returns none (a transformers bug)
    width = logits.shape[-1] if logits is not None else model.config.num_labels
    return None if names == list(LABELS) and width == 5 else f"labels {names}, width {width}"


def run_one(root: Path, family: str, model_type: str, edits: bool = False) -> tuple[str, str]:
    """('ok' | 'wrong' | 'failed' | 'forward' | 'edit' | 'skipped', detail) for one type of one family."""
    from headstudio.core.errors import HeadStudioError
    from headstudio.core.opening.sources import open_source

    try:
        folder = fx.make_folder(root, family, model_type, check=own_forward)
    except fx.CheckFailed as err:  # built, but its own forward fails on Head Studio's inputs
        return "forward", f"own forward: {str(err)[:140]}"
    except Exception as err:  # transformers cannot build any config tried: not a Head Studio result
        return "skipped", f"build: {type(err).__name__}: {fx.first_line(str(err))[:120]}"
    try:
        doc = open_source(str(folder))
        trace = doc.trace()
        heads = doc.heads()
    except HeadStudioError as err:
        return "failed", f"open: {err}"[:160]
    except Exception as err:
        return "failed", f"crash: {type(err).__name__}: {str(err)[:120]}"
    if trace.error:
        return "failed", f"trace: {trace.error}"[:160]
    expected = fx.expected_head(doc.model, family)
    role = fx.expected_role(doc.model, family)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6
    if heads and heads[0].path in expected and heads[0].role == role:
        if edits and family in AUTO_CLASSES:
            try:
                problem = edit_round_trip(doc, family, root / f"edited-{family}-{model_type}")
            except Exception as err:
                problem = f"{type(err).__name__}: {fx.first_line(str(err))[:140]}"
            if problem:
                return "edit", problem
        return "ok", f"{heads[0].path} ({trace.mode}, {size:.1f} MB)"
    found = f"{heads[0].path}/{heads[0].role}" if heads else "none"
    return "wrong", f"head {found}, expected {sorted(expected)[:2]}/{role}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", default=",".join(fx.FAMILIES))
    parser.add_argument("--limit", type=int, default=0, help="at most N types per family (0: all)")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per model type")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("--edits", action="store_true", help="also edit, save and reload each type")
    args = parser.parse_args()
    from transformers.models.auto import modeling_auto
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("timeout")))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            types = sorted(getattr(modeling_auto, fx.FAMILIES[family][0]))
            for model_type in types[: args.limit or None]:
                started = time.perf_counter()
                signal.alarm(args.timeout)
                try:
                    status, detail = run_one(Path(tmp), family, model_type, args.edits)
                except TimeoutError:
                    status, detail = "failed", "timeout"
                finally:
                    signal.alarm(0)
                seconds = time.perf_counter() - started
                results.append({"family": family, "type": model_type, "status": status, "detail": detail})
                print(f"{family:9} {model_type:28} {status:8} {seconds:5.1f}s {detail}", flush=True)
    summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def summary(results: list[dict]) -> None:
    """Per family and overall: ok / (ok + wrong + failed + forward); skipped types are counted apart."""
    print()
    for family in [*dict.fromkeys(r["family"] for r in results), None]:
        rows = [r for r in results if family is None or r["family"] == family]
        tried = [r for r in rows if r["status"] != "skipped"]
        ok = sum(r["status"] == "ok" for r in tried)
        forward = sum(r["status"] == "forward" for r in tried)
        edit = sum(r["status"] == "edit" for r in tried)
        share = 100 * ok / len(tried) if tried else 0
        label = family or "all"
        print(f"{label:9} {ok}/{len(tried)} open with the right head ({share:.1f}%), {forward} of the "
              f"misses are own-forward failures on Head Studio's inputs, {edit} edit round trips failed, "
              f"{len(rows) - len(tried)} skipped (transformers cannot build the config)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
