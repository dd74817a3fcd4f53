"""``headstudio inspect``: the head of every torchvision classifier, JSON lines, and the human view."""

from __future__ import annotations

import pytest
import torchvision

TORCHVISION_MODELS = torchvision.models.list_models(module=torchvision.models)
BATCH = 10
BATCHES = [TORCHVISION_MODELS[i : i + BATCH] for i in range(0, len(TORCHVISION_MODELS), BATCH)]

# Where each family keeps its classifier, written from torchvision's model definitions.
FAMILY_HEADS = {
    "alexnet": "classifier.6",
    "vgg": "classifier.6",
    "convnext": "classifier.2",
    "densenet": "classifier",
    "efficientnet": "classifier.1",
    "mnasnet": "classifier.1",
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3": "classifier.3",
    "maxvit": "classifier.5",
    "squeezenet": "classifier.1",
    "swin": "head",
    "vit": "heads.head",
    "googlenet": "fc",
    "inception": "fc",
    "regnet": "fc",
    "resnet": "fc",
    "resnext": "fc",
    "wide_resnet": "fc",
    "shufflenet": "fc",
}
PROJECTIONS = ("Linear", "Conv2d")


def expected_head(name: str) -> str:
    """The family table's answer; a model of a new family fails loudly until it is added."""
    family = max((f for f in FAMILY_HEADS if name.startswith(f)), key=len, default=None)
    assert family, f"torchvision has a new model family ({name}): add where its head is to FAMILY_HEADS"
    return FAMILY_HEADS[family]


def last_projection(modules: list[dict]) -> str:
    """Ground truth by definition: the last Linear/Conv2d defined (torchvision defines heads last)."""
    return [m["path"] for m in modules if m["type"] in PROJECTIONS][-1]


@pytest.mark.parametrize("names", BATCHES, ids=[f"{b[0]}..{b[-1]}" for b in BATCHES])
def test_inspect_json_names_the_head_of_every_torchvision_classifier(cli, names):
    result = cli("inspect", *[f"torchvision:{n}" for n in names], "--json")
    assert result.status == 0, result.err
    records = result.records
    assert [r["source"] for r in records] == [f"torchvision:{n}" for n in names]
    for name, record in zip(names, records, strict=True):
        assert record["error"] is None, (name, record["error"])
        heads = [h["path"] for h in record["heads"]]
        assert heads == [expected_head(name)], name
        assert heads[0] == last_projection(record["modules"]), name
        head = record["head"]
        assert head["out_features"] == 1000 and head["in_features"] > 0, name
        assert head["type"] == ("Conv2d" if name.startswith("squeezenet") else "Linear"), name
        assert record["output_shape"] == [1, 1000], name


def test_inspect_googlenet_leaves_aux_heads_uncalled_and_not_primary(cli):
    result = cli("inspect", "torchvision:googlenet", "torchvision:inception_v3", "--json")
    googlenet, inception = result.records
    for record, aux in ((googlenet, "aux1"), (inception, "AuxLogits")):
        modules = {m["path"]: m for m in record["modules"]}
        assert modules[aux]["called"] is False
        assert modules[aux]["output_shape"] is None
        assert [h["path"] for h in record["heads"]] == ["fc"]
    assert inception["input_shape"] == [1, 3, 299, 299]


def test_inspect_json_has_the_documented_fields(cli):
    (record,) = cli("inspect", "torchvision:resnet18", "--json").records
    assert {"source", "format", "arch", "input_shape", "params", "trainable_params", "modules"} <= set(record)
    assert record["format"] == "spec" and record["arch"] == "torchvision:resnet18"
    assert record["params"] == record["trainable_params"] == 11_689_512
    conv1 = next(m for m in record["modules"] if m["path"] == "layer1.0.conv1")
    assert conv1 == {
        "path": "layer1.0.conv1",
        "name": "conv1",
        "type": "Conv2d",
        "params": 36_864,
        "trainable_params": 36_864,
        "output_shape": [1, 64, 56, 56],
        "called": True,
    }
    assert record["head"] == {"path": "fc", "type": "Linear", "in_features": 512, "out_features": 1000}


def test_inspect_json_depth_limits_the_modules_listed(cli):
    (record,) = cli("inspect", "torchvision:resnet18", "--json", "--depth", "1").records
    assert {m["path"] for m in record["modules"]} == {
        "", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"
    }  # fmt: skip


def test_inspect_one_failing_source_does_not_stop_the_others(cli):
    result = cli(
        "inspect", "torchvision:resnet18", "torchvision:resnet81", "torchvision:squeezenet1_1", "--json"
    )
    first, bad, last = result.records
    assert result.status != 0
    assert first["error"] is None and first["head"]["path"] == "fc"
    assert "resnet81" in bad["error"] and bad["source"] == "torchvision:resnet81"
    assert bad["heads"] == [] and bad["modules"] == []
    assert last["error"] is None and last["head"]["type"] == "Conv2d"
    assert "Traceback" not in result.out + result.err


def test_inspect_human_view_marks_the_head_and_totals(cli):
    result = cli("inspect", "torchvision:squeezenet1_1", "--depth", "2")
    assert result.status == 0
    lines = result.out.splitlines()
    head_row = next(line for line in lines if "◀ head" in line)
    assert head_row.split()[0] == "1" and "Conv2d" in head_row and "[1, 1000, 13, 13]" in head_row
    assert "Total params: 1,235,496" in result.out
    assert "Head: classifier.1 (Conv2d 512 → 1000)" in result.out


def test_inspect_human_view_says_when_a_module_is_not_called(cli):
    result = cli("inspect", "torchvision:googlenet", "--depth", "1")
    aux_row = next(line for line in result.out.splitlines() if line.strip().startswith("aux1"))
    assert "(not called)" in aux_row


def test_inspect_input_shape_override_changes_every_shape(cli):
    (record,) = cli("inspect", "torchvision:resnet18", "--input-shape", "2,3,64,64", "--json").records
    assert record["input_shape"] == [2, 3, 64, 64]
    layer4 = next(m for m in record["modules"] if m["path"] == "layer4")
    assert layer4["output_shape"] == [2, 512, 2, 2]
    assert record["output_shape"] == [2, 1000]


def test_inspect_timm_default_input_size_comes_from_its_config(cli):
    pytest.importorskip("timm")
    (record,) = cli("inspect", "timm:mobilevit_xxs", "--json", "--depth", "0").records
    assert record["input_shape"] == [1, 3, 256, 256]
    assert record["head"]["path"] == "head.fc"
