"""Recipes: JSON round trip, replay on another model of the same arch, refusals, reopening saved files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot

from headstudio.core import edits as E
from headstudio.core.errors import EditError
from headstudio.core.recipe import Recipe, build_from_recipe

EDITS = [
    E.ReplaceHead("fc", 7, hidden=(32,), seed=1),
    E.AddHead("aux", 3, at="fc"),
    E.FreezeBackbone(bn_eval=True),
]


def recipe() -> Recipe:
    return Recipe("torchvision:resnet18", (1, 3, 224, 224), [E.edit_from_json(e.to_json()) for e in EDITS])


def test_recipe_round_trips_through_json() -> None:
    r = recipe()
    back = Recipe.from_json(r.to_json())
    assert back == r and json.loads(r.to_json())["edits"][0]["kind"] == "replace_head"


def test_recipe_from_document_replays_to_the_same_model_twice() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    recipe().replay(doc)
    r = Recipe.from_document(doc)
    assert [e.to_json() for e in r.edits] == [e.to_json() for e in EDITS]
    for _ in range(2):  # a recipe stays reusable: replay works on fresh copies of its edits
        other = opened("torchvision:resnet18", materialize=False)
        r.replay(other)
        assert other.trace().output == doc.trace().output == {"fc": [1, 7], "aux": [1, 3]}
        assert other.param_counts() == doc.param_counts()
        assert dict(other.model.state_dict()).keys() == dict(doc.model.state_dict()).keys()


def test_recipe_for_another_architecture_is_refused() -> None:
    doc = opened("torchvision:resnet34", materialize=False)
    snap = snapshot(doc)
    with pytest.raises(
        EditError, match="recipe is for torchvision:resnet18 but the model is torchvision:resnet34"
    ):
        recipe().replay(doc)
    assert_restored(doc, snap)


def test_failing_step_rolls_back_the_whole_replay() -> None:
    doc = opened("torchvision:resnet18")
    snap = snapshot(doc)
    bad = Recipe("torchvision:resnet18", (1, 3, 224, 224), [E.ReplaceHead("fc", 7), E.RemoveHead("nope")])
    with pytest.raises(EditError, match="recipe step 2"):
        bad.replay(doc)
    assert_restored(doc, snap)
    assert doc.edits == []


@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", "not valid JSON"),
        ('{"edits": []}', "no 'arch'"),
        ('{"arch": "torchvision:resnet18", "edits": [{"kind": "graft"}]}', "unknown edit kind 'graft'"),
        ('{"arch": "torchvision:resnet18", "edits": {"kind": "remove_head"}}', "must be a list"),
        ('{"arch": "torchvision:resnet18", "input_shape": [1, -3], "edits": []}', "input_shape"),
        ('{"arch": "torchvision:resnet18", "edits": [{"kind": "remove_head"}]}', "malformed"),
    ],
)
def test_malformed_recipe_is_a_one_line_edit_error(text: str, words: str) -> None:
    with pytest.raises(EditError, match=words) as err:
        Recipe.from_json(text)
    assert "\n" not in str(err.value)


def test_build_from_recipe_gives_an_architecture_the_edited_weights_fit() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    r = Recipe(
        "torchvision:resnet18", (1, 3, 224, 224), [E.CutAfter("layer4"), E.SetTrainable("layer1", False)]
    )
    r.replay(doc)
    model, arch, notes = build_from_recipe(r.to_json())
    assert notes == []
    assert arch == "torchvision:resnet18"
    rebuilt = {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt == {k: v.shape for k, v in doc.model.state_dict().items()}
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in doc.model.parameters()]


def test_saved_edited_state_dict_reopens_edited_and_keeps_its_recipe(tmp_path: Path) -> None:
    from headstudio.core.opening.sources import open_source
    from headstudio.core.saving.formats import set_recipe_metadata

    doc = opened("torchvision:resnet18")
    doc.apply(E.ReplaceHead("fc", 7))
    doc.apply(E.FreezeBackbone())
    path = tmp_path / "edited.pt"
    torch.save(set_recipe_metadata(doc.model.state_dict(), Recipe.from_document(doc).to_json()), path)
    again = open_source(str(path))
    assert again.trace().output == [1, 7] and again.param_counts()[1] == 3591
    assert torch.equal(again.model.fc.weight, doc.model.fc.weight)
    later = E.SetTrainable("layer4", True)
    again.apply(later)
    kinds = [e.kind for e in Recipe.from_document(again).edits]
    assert kinds == ["replace_head", "freeze_backbone", "set_trainable"]


@pytest.mark.parametrize(
    "edits",
    [
        [E.CutAfter("layer4")],
        [E.AddHead("age", 5, at="fc", adapter=16)],
        [E.ReplaceHead("fc", 7, hidden=(32,), dropout=0.1), E.FreezeBackbone(bn_eval=True)],
    ],
    ids=["cut", "add", "mlp-freeze"],
)
def test_saved_safetensors_reopen_with_the_edited_architecture(tmp_path: Path, edits: list[E.Edit]) -> None:
    from headstudio.core.opening.sources import open_source
    from headstudio.core.saving.atomic import save

    doc = opened("torchvision:resnet18")
    Recipe("torchvision:resnet18", doc.input_shape, edits).replay(doc)
    save(doc, tmp_path / "out.safetensors")
    again = open_source(str(tmp_path / "out.safetensors"))
    assert again.trace().output == doc.trace().output
    a, b = doc.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.requires_grad for p in again.model.parameters()] == [
        p.requires_grad for p in doc.model.parameters()
    ]
    assert [e.kind for e in Recipe.from_document(again).edits] == [e.kind for e in edits]
