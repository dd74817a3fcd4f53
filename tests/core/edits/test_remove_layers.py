"""RemoveLayers: blocks deleted and renumbered, shapes checked by tracing, configs in step, exact undo."""

from __future__ import annotations

import copy

import pytest
import torch
from edit_fixtures import assert_restored, opened, snapshot
from torch import nn

from headstudio.core import edits as E
from headstudio.core.codegen import snippet_for
from headstudio.core.errors import EditError
from headstudio.core.model.document import Document, Origin
from headstudio.core.recipe import Recipe


def tiny_vit(num_layers: int = 12) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=num_layers, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()


@pytest.fixture(scope="module")
def llama_config():
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip


def test_dropping_the_last_4_of_12_vit_blocks_keeps_the_output_and_loads_into_an_8_block_vit() -> None:
    doc = Document(tiny_vit(), Origin("vit", "module", "vit"))
    snap = snapshot(doc)
    paths = [f"encoder.layers.encoder_layer_{i}" for i in range(8, 12)]
    block_params = sum(p.numel() for p in doc.model.encoder.layers[8].parameters())
    preview = E.RemoveLayers(paths).preview(doc)
    assert preview.ok and preview.output_before == preview.output_after == [1, 1000]
    assert preview.params_before - preview.params_after == 4 * block_params
    edit = E.RemoveLayers(paths)
    doc.apply(edit)
    assert len(doc.model.encoder.layers) == 8
    fresh = tiny_vit(num_layers=8)
    fresh.load_state_dict(doc.model.state_dict())  # strict: same keys, same shapes
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh(x), doc.model(x))
    assert edit.describe() == f"Remove 4 layers ({paths[0]}, …, {paths[-1]})"
    doc.revert(edit)
    assert_restored(doc, snap)
    assert len(doc.model.encoder.layers) == 12


def test_dropping_resnet_block_layer1_1_renumbers_and_computes_like_del() -> None:
    torch.manual_seed(0)
    doc = opened("torchvision:resnet18")
    expected = copy.deepcopy(doc.model)
    del expected.layer1[1]
    snap = snapshot(doc)
    edit = E.RemoveLayers(["layer1.1"])
    doc.apply(edit)
    assert list(doc.model.layer1._modules) == ["0"]
    assert doc.model.state_dict().keys() == expected.state_dict().keys()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(doc.model(x), expected(x))
    assert edit.code() == ["del model.layer1[1]"]
    doc.revert(edit)
    assert_restored(doc, snap)


def test_removing_two_blocks_of_one_list_renumbers_the_rest_in_order() -> None:
    doc = opened("timm:vit_tiny_patch16_224", materialize=False)
    blocks = list(doc.model.blocks)
    doc.apply(E.RemoveLayers(["blocks.3", "blocks.7"]))
    assert list(doc.model.blocks._modules) == [str(i) for i in range(10)]
    kept = [b for i, b in enumerate(blocks) if i not in (3, 7)]
    assert all(a is b for a, b in zip(doc.model.blocks, kept, strict=True))
    assert doc.trace().output == [1, 1000]


def test_a_removal_that_breaks_shapes_is_refused_with_the_first_mismatch() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    snap = snapshot(doc)
    edit = E.RemoveLayers(["layer2.0"])
    with pytest.raises(EditError) as err:
        doc.apply(edit)
    message = str(err.value)
    assert "\n" not in message
    assert "first mismatch at 'layer2.1.conv1'" in message and "128 channels" in message
    assert doc.edits == []
    assert_restored(doc, snap)


def test_an_attribute_module_becomes_identity_and_reverts() -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    snap = snapshot(doc)
    edit = E.RemoveLayers(["layer1.0.bn2"])
    doc.apply(edit)
    assert isinstance(doc.model.layer1[0].bn2, nn.Identity)
    assert not any(k.startswith("layer1.0.bn2.") for k in doc.model.state_dict())
    assert edit.code() == ["model.layer1[0].bn2 = nn.Identity()"]
    doc.revert(edit)
    assert_restored(doc, snap)


def test_llama_decoder_layers_removed_config_and_layer_idx_follow_and_from_pretrained_reloads(
    llama_config, tmp_path
) -> None:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(copy.deepcopy(llama_config)).eval()
    doc = Document(model, Origin("llama", "module", "llama"), (1, 8))
    snap = snapshot(doc)
    edit = E.RemoveLayers(["model.layers.1", "model.layers.2"])
    doc.apply(edit)
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]
    assert "model.config.num_hidden_layers = 4" in edit.code()
    ids = torch.randint(0, 64, (1, 8))
    assert model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape == (
        1,
        11,
    )  # the KV cache fits
    model.save_pretrained(tmp_path / "cut")
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "cut").eval()
    assert reloaded.config.num_hidden_layers == 4
    assert torch.equal(reloaded(ids).logits, model(ids).logits)
    config = copy.deepcopy(llama_config)
    config.num_hidden_layers = 4
    LlamaForCausalLM(config).load_state_dict(model.state_dict())  # strict
    doc.revert(edit)
    assert_restored(doc, snap)
    assert model.config.num_hidden_layers == 6 and model.model.layers[3].self_attn.layer_idx == 3


def test_recipe_replays_and_code_export_does_the_same_removal(tmp_path) -> None:
    from headstudio.core.opening.sources import open_source
    from headstudio.core.saving.atomic import save

    torch.manual_seed(0)
    doc = opened("torchvision:resnet18")
    doc.apply(E.RemoveLayers(["layer1.1", "layer3.1"]))
    recipe = Recipe.from_json(Recipe.from_document(doc).to_json())
    assert recipe.edits[0].to_json() == {"kind": "remove_layers", "paths": ["layer1.1", "layer3.1"]}
    other = opened("torchvision:resnet18", materialize=False)
    recipe.replay(other)
    assert other.model.state_dict().keys() == doc.model.state_dict().keys()
    namespace = {"model": opened("torchvision:resnet18", materialize=False).model}
    exec(snippet_for(recipe), namespace)
    assert namespace["model"].state_dict().keys() == doc.model.state_dict().keys()
    save(doc, tmp_path / "cut.safetensors")
    reopened = open_source(str(tmp_path / "cut.safetensors"))  # rebuilt from the embedded recipe
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(reopened.model(x), doc.model.eval()(x))


@pytest.mark.parametrize(
    ("paths", "needle"),
    [
        ([], "remove what?"),
        (["layer1", "layer1.0"], "is inside 'layer1'"),
        (["layer9"], "no module 'layer9'"),
        ([""], "name a module inside the model"),
    ],
)
def test_meaningless_removals_are_one_line_problems(paths, needle) -> None:
    doc = opened("torchvision:resnet18", materialize=False)
    problems = E.RemoveLayers(paths).preview(doc).problems
    assert problems and needle in problems[0] and "\n" not in problems[0]
