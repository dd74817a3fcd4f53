"""SetActiveHead: which head of a MultiHead the model returns; undoable, JSON, code, kept by saving."""

from __future__ import annotations

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot

from headstudio.core.codegen import snippet_for
from headstudio.core.edits import AddHead, SetActiveHead, edit_from_json
from headstudio.core.errors import EditError
from headstudio.core.opening.sources import open_source
from headstudio.core.saving.atomic import save

SMALL = (1, 3, 64, 64)


@pytest.fixture
def two_heads():
    doc = opened("torchvision:resnet18")
    doc.set_input_shape(SMALL)
    doc.apply(AddHead("age", 5, "fc", seed=0))
    return doc


def _output(doc):
    with torch.no_grad():
        return doc.model.eval()(torch.zeros(SMALL))


def test_the_model_returns_only_the_active_head_and_revert_restores_the_dict(two_heads):
    assert set(_output(two_heads)) == {"fc", "age"}
    before = snapshot(two_heads)
    edit = SetActiveHead("fc", "age")
    preview = edit.preview(two_heads)
    assert preview.ok and preview.output_before == {"fc": [1, 1000], "age": [1, 5]}
    assert preview.output_after == [1, 5]
    two_heads.apply(edit)
    assert _output(two_heads).shape == (1, 5) and two_heads.trace().output == [1, 5]
    assert edit.describe() == "Active head at fc: age"
    two_heads.revert(edit)
    assert_restored(two_heads, before)
    assert two_heads.model.fc.active is None and set(_output(two_heads)) == {"fc", "age"}


def test_none_returns_every_head_again(two_heads):
    two_heads.apply(SetActiveHead("fc", "fc"))
    back = SetActiveHead("fc", None)
    two_heads.apply(back)
    assert set(_output(two_heads)) == {"fc", "age"} and back.describe() == "Active head at fc: all (dict)"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (SetActiveHead("fc", "height"), "no head 'height' at 'fc'; its heads are fc, age"),
        (SetActiveHead("layer4", "age"), "'layer4' is a Sequential, not several heads"),
        (SetActiveHead("fc", None), "all heads are already active"),
        (SetActiveHead("nope", "age"), "no head 'nope'"),
    ],
)
def test_invalid_choices_are_refused_with_one_line(two_heads, edit, message):
    with pytest.raises(EditError, match=message):
        edit.validate(two_heads)


def test_json_round_trip_and_plain_pytorch_code(two_heads):
    edit = SetActiveHead("fc", "age")
    assert edit_from_json(edit.to_json()) == edit
    assert edit.to_json() == {"kind": "set_active_head", "path": "fc", "name": "age"}
    two_heads.apply(edit)
    code = snippet_for(list(two_heads.edits))
    assert "model.fc.active = 'age'" in code
    import torchvision

    model = torchvision.models.resnet18()
    exec(code, {"model": model, "torch": torch})  # the snippet works on a user's own model
    with torch.no_grad():
        out = model.eval()(torch.zeros(SMALL))
    assert out.shape == (1, 5)


def test_the_saved_model_keeps_the_choice(two_heads, tmp_path):
    two_heads.apply(SetActiveHead("fc", "age"))
    expected = _output(two_heads)
    target = tmp_path / "multitask.safetensors"
    save(two_heads, target)
    reopened = open_source(str(target), input_shape=SMALL)
    assert reopened.model.fc.active == "age"
    assert [e.kind for e in reopened.edits] == [] and reopened.trace().output == [1, 5]
    assert torch.equal(_output(reopened), expected)
