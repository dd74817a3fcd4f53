"""Editing another copy of the weights (an EMA copy) the way the model was edited.

The document's edits are replayed twice on the source architecture, once over the copy's values and
once over the source's main weights, with the same random seed. Where the two replays differ, a value
came from the weights (kept classes, a moved head): the copy takes its own. Where they agree, it came
from the new layers' initialisation (or from equal weights): the copy takes the edited model's value,
so a fresh head starts identical in every copy, as it would in training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from headstudio.core.model.document import Document
from headstudio.core.saving.containers import WeightsChange

_SEED = 0


def edited_copy(
    doc: Document, change: WeightsChange, copy: Mapping[str, torch.Tensor], notes: list[str]
) -> dict[str, torch.Tensor]:
    """The copy's state after the document's edits; untouched tensors keep the copy's own bytes.

    A copy without buffers (an EMA of the parameters only) gets none: only parameters are written.
    """
    out: dict[str, torch.Tensor] = {}
    partial = len(copy) < len(change.before)
    pending = [k for k in change.after if k not in change.untouched]
    own = _replayed(doc, {**change.before, **copy}) if pending else None
    main = _replayed(doc, change.before) if own is not None else None
    moved = change.moved_from()
    fallback: list[str] = []
    for k, value in change.after.items():
        if partial and k not in copy and (k in change.untouched or k not in change.params):
            continue
        if k in change.untouched:
            out[k] = copy[k]
        elif own is not None and main is not None and _alike(own.get(k), main.get(k), value):
            out[k] = torch.where(own[k].ne(main[k]), own[k], value)
        elif k in moved:
            out[k] = copy[moved[k]]
        else:
            out[k] = value
            fallback.append(k)
    if fallback:
        notes.append(
            f"{len(fallback)} new tensor(s) of a weight copy ({fallback[0]}...) were taken from the edited "
            "model: the edits could not be replayed on the copy's own values"
        )
    return out


def _alike(a: torch.Tensor | None, b: torch.Tensor | None, want: torch.Tensor) -> bool:
    return all(
        isinstance(t, torch.Tensor) and t.shape == want.shape and t.dtype == want.dtype for t in (a, b)
    )


def _replayed(doc: Document, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The source architecture over ``state`` with the document's edits replayed; None if impossible."""
    from headstudio.core.edits import edit_from_json

    model = _source_model(doc, state)
    if model is None:
        return None
    replay = Document(model, doc.origin, doc.input_shape)
    try:
        for edit in doc.edits:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_SEED)
                replay.apply(edit_from_json(edit.to_json()))
    except Exception:  # any edit that cannot replay here: the caller takes the model's values and says so
        return None
    return replay.model.state_dict()


def _source_model(doc: Document, state: Mapping[str, torch.Tensor]) -> nn.Module | None:
    """The architecture the document was opened with (before its edits), holding ``state``."""
    from headstudio.core.opening.specs import build_model
    from headstudio.core.recipe import build_from_recipe

    ckpt = doc.origin.checkpoint
    builders = []
    if ckpt is not None and ckpt.recipe:
        builders.append(lambda: build_from_recipe(ckpt.recipe)[0])
    builders.append(lambda: build_model(doc.origin.arch))
    for build in builders:
        try:
            model = build()
            missing, unexpected = model.load_state_dict(dict(state), strict=False, assign=True)
        except Exception:  # a user factory or a foreign layout: the caller falls back and says so
            continue
        if not unexpected and all(k.endswith("num_batches_tracked") for k in missing):
            return model.eval()
    return None
