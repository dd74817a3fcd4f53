"""Code export: the snippet, run on a fresh copy of the model, gives what the tool's edits gave."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from headstudio.core import edits as E
from headstudio.core.codegen import snippet_for
from headstudio.core.errors import EditError
from headstudio.core.opening.sources import open_source
from headstudio.core.opening.specs import build_model
from headstudio.core.recipe import Recipe


def run_snippet(code: str, model: nn.Module) -> nn.Module:
    """Execute the snippet as a user would, with ``model`` defined, and return the resulting model."""
    scope: dict = {"model": model}
    exec(compile(code, "<snippet>", "exec", dont_inherit=True), scope)
    return scope["model"]


def assert_same_model(tool: nn.Module, mine: nn.Module, x: torch.Tensor) -> None:
    """Same module types per path, bit-equal tensors, requires_grad flags, hooks and outputs."""
    assert {k: type(m).__name__ for k, m in tool.named_modules()} == {
        k: type(m).__name__ for k, m in mine.named_modules()
    }
    a, b = tool.state_dict(), mine.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {k: p.requires_grad for k, p in tool.named_parameters()} == {
        k: p.requires_grad for k, p in mine.named_parameters()
    }
    assert [len(m._forward_pre_hooks) for m in tool.modules()] == [
        len(m._forward_pre_hooks) for m in mine.modules()
    ]
    tool.eval(), mine.eval()
    with torch.no_grad():
        out_a, out_b = tool(x), mine(x)
    if isinstance(out_a, dict):
        assert out_a.keys() == out_b.keys() and all(torch.equal(out_a[k], out_b[k]) for k in out_a)
    else:
        assert torch.equal(out_a, out_b)


CASES = [
    ("torchvision:resnet18", [E.ReplaceHead("fc", 10, seed=0), E.FreezeBackbone(bn_eval=True)]),
    (
        "torchvision:resnet18",
        [E.ReplaceHead("fc", 5, keep_classes="0-2,9"), E.AddHead("age", 4, at="fc", seed=2)],
    ),
    ("torchvision:resnet18", [E.CutAfter("layer3"), E.SetTrainable("layer[12]*", False, bn_eval=True)]),
    ("torchvision:squeezenet1_1", [E.ReplaceHead("classifier.1", 6, hidden=(32,), dropout=0.3, seed=4)]),
    ("torchvision:mobilenet_v3_small", [E.RemoveHead("classifier.3"), E.SetTrainable("features.0", False)]),
    ("timm:convnext_atto", [E.ReplaceHead("head.fc", 3, seed=5), E.SetTrainable("stages.3", False)]),
    ("torchvision:resnet18", [E.FreezeBackbone(bn_eval=True), E.SetTrainable("layer4", True)]),
    ("torchvision:vit_b_16", [E.ReplaceHead("heads.head", 10, seed=6), E.FreezeBackbone()]),
]


@pytest.mark.parametrize("spec, edits", CASES, ids=[f"{s}-{e[0].kind}" for s, e in CASES])
def test_snippet_does_what_the_tool_did(spec: str, edits: list[E.Edit]) -> None:
    doc = open_source(spec, materialize=True)
    fresh = build_model(spec, meta=False)
    fresh.load_state_dict(doc.model.state_dict())
    recipe = Recipe(doc.origin.arch, doc.input_shape, edits)
    recipe.replay(doc)
    code = snippet_for(Recipe.from_document(doc))
    assert code.startswith("import torch\nfrom torch import nn\n")
    assert_same_model(doc.model, run_snippet(code, fresh), torch.randn(doc.input_shape))


def test_snippet_from_a_recipe_file_replays_on_meta_for_traced_sizes() -> None:
    text = Recipe("torchvision:resnet18", (1, 3, 224, 224), [E.ReplaceHead("fc", 10)]).to_json()
    code = snippet_for(Recipe.from_json(text))
    assert "model.fc = nn.Linear(512, 10)" in code


def test_snippet_for_unapplied_edits_without_a_recipe_is_refused() -> None:
    with pytest.raises(EditError, match="pass a Recipe"):
        snippet_for([E.RemoveHead("fc")])


def test_snippet_defines_each_helper_once() -> None:
    edits = [E.SetTrainable("layer1", False, bn_eval=True), E.FreezeBackbone(bn_eval=True)]
    code = snippet_for(Recipe("torchvision:resnet18", (1, 3, 224, 224), edits))
    assert code.count("def keep_in_eval") == 1
    compile(code, "<snippet>", "exec", dont_inherit=True)
