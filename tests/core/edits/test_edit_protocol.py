"""The edit protocol: previews leave the model alone, one-line refusals, JSON round trips, undo order."""

from __future__ import annotations

import json

import pytest
from edit_fixtures import assert_restored, opened, snapshot

from headstudio.core import edits as E
from headstudio.core.errors import EditError


def test_preview_reports_shape_and_counts_without_touching_the_model() -> None:
    doc = opened("torchvision:resnet18")
    snap = snapshot(doc)
    p = E.ReplaceHead("fc", 7).preview(doc)
    assert p.ok and p.output_before == [1, 1000] and p.output_after == [1, 7]
    assert p.params_before - p.params_after == (512 * 1000 + 1000) - (512 * 7 + 7)
    assert p.trainable_after == p.params_after
    assert_restored(doc, snap)


@pytest.mark.parametrize(
    "edit, words",
    [
        (E.ReplaceHead("fc", 0), "num_classes 0"),
        (E.ReplaceHead("fc", -3), "num_classes -3"),
        (E.ReplaceHead("fcc", 10), "no head 'fcc'"),
        (E.ReplaceHead("fc", 10, hidden=(0,)), "hidden sizes"),
        (E.ReplaceHead("fc", 10, dropout=1.5), "dropout"),
        (E.ReplaceHead("fc", 10, activation="swish2"), "activation"),
        (E.ReplaceHead("fc", 5, keep_classes=10), "keeps 10 classes"),
        (E.ReplaceHead("fc", 10, keep_classes=[1000]), "only 1000 classes"),
        (E.RemoveHead("nothing.here"), "no head"),
    ],
)
def test_bad_edit_is_one_line_error_and_model_untouched(edit: E.Edit, words: str) -> None:
    doc = opened("torchvision:resnet18")
    snap = snapshot(doc)
    p = edit.preview(doc)
    assert not p.ok and words in p.problems[0]
    with pytest.raises(EditError) as err:
        doc.apply(edit)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert_restored(doc, snap)
    assert doc.edits == []


def test_edits_round_trip_through_json() -> None:
    samples = [
        E.ReplaceHead(
            "fc", 10, hidden=(256, 128), activation="gelu", dropout=0.1, keep_classes="0-4", seed=3
        ),
        E.RemoveHead("fc"),
        E.CutAfter("layer4"),
        E.AddHead("age", 5, at="fc", adapter=64),
        E.SetTrainable("layer[12]*", False, bn_eval=True),
        E.FreezeBackbone(bn_eval=True, heads=["fc"]),
    ]
    for edit in samples:
        data = json.loads(json.dumps(edit.to_json()))
        assert E.edit_from_json(data) == edit


def test_unknown_edit_kind_is_an_edit_error() -> None:
    with pytest.raises(EditError, match="unknown edit kind 'graft_head'"):
        E.edit_from_json({"kind": "graft_head", "path": "fc"})
    with pytest.raises(EditError, match="unknown field"):
        E.edit_from_json({"kind": "remove_head", "path": "fc", "color": "red"})


def test_only_the_last_edit_can_be_reverted() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    first, second = E.ReplaceHead("fc", 10), E.AddHead("aux", 2, at="fc")
    doc.apply(first)
    doc.apply(second)
    with pytest.raises(EditError, match="not the last edit"):
        doc.revert(first)
    doc.revert(second)
    doc.revert(first)
    assert doc.trace().output == [1, 1000]
    with pytest.raises(EditError, match="not applied"):
        doc.revert(first)
