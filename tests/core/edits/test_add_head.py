"""AddHead: named outputs on the same features, `active` selection, refusals, revert in order."""

from __future__ import annotations

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot
from torch import nn

from headstudio.core import edits as E
from headstudio.core.errors import EditError


def test_add_head_returns_named_outputs_and_active_selects_one() -> None:
    doc = opened("torchvision:resnet18")
    snap = snapshot(doc)
    edit = E.AddHead("age", 5, at="fc")
    assert edit.preview(doc).output_after == {"fc": [1, 1000], "age": [1, 5]}
    doc.apply(edit)
    out = doc.model(torch.randn(1, 3, 64, 64))
    assert set(out) == {"fc", "age"} and out["age"].shape == (1, 5)
    doc.model.fc.active = "age"
    assert doc.model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert doc.model.fc.heads["fc"] is snap.modules["fc"]  # the old head is kept, weights and all
    doc.revert(edit)
    assert_restored(doc, snap)


def test_second_add_head_joins_the_first_and_reverts_in_order() -> None:
    doc = opened("timm:convnext_atto", materialize=False)
    first, second = E.AddHead("a", 2, at="head.fc"), E.AddHead("b", 3, at="head.fc", adapter=16)
    doc.apply(first)
    doc.apply(second)
    assert doc.trace().output == {"fc": [1, 1000], "a": [1, 2], "b": [1, 3]}
    assert isinstance(doc.model.head.fc.heads["b"], nn.Sequential)
    doc.revert(second)
    assert doc.trace().output == {"fc": [1, 1000], "a": [1, 2]}
    doc.revert(first)
    assert doc.trace().output == [1, 1000]


@pytest.mark.parametrize(
    "edit, words",
    [
        (E.AddHead("age", 0, at="fc"), "num_classes 0"),
        (E.AddHead("age", 5, at="fc", adapter=0), "adapter 0 cannot size"),
        (E.AddHead("age", 5, at="nope"), "no head 'nope'"),
        (E.AddHead("fc", 5, at="fc"), "already exists"),
        (E.AddHead("not a name", 5, at="fc"), "identifier"),
    ],
)
def test_bad_add_head_is_refused_with_model_untouched(edit: E.Edit, words: str) -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    snap = snapshot(doc)
    with pytest.raises(EditError, match=words):
        doc.apply(edit)
    assert_restored(doc, snap)


def test_add_head_where_later_layers_need_one_tensor_says_so() -> None:
    doc = opened("torchvision:squeezenet1_1", materialize=False)
    with pytest.raises(EditError, match="cannot take several outputs"):
        doc.apply(E.AddHead("aux", 3, at="classifier.1"))
    assert doc.trace().output == [1, 1000]
