"""``headstudio probe``: top-k per head, module outputs, surgery proof with --against, one-line errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from cli_checks import one_line_error, sha
from probe_images import lying_header, not_an_image, picture, truncated

R18 = "torchvision:resnet18"
SMALL = "1,3,64,64"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return picture(tmp_path_factory.mktemp("img") / "photo.jpg")


@pytest.fixture(scope="module")
def tuned_pt(tmp_path_factory, resnet18_state):
    """resnet18's weights with one backbone layer (layer3.0.conv1) fine-tuned a little."""
    state = {k: v.clone() for k, v in resnet18_state.items()}
    state["layer3.0.conv1.weight"].mul_(1.01)
    path = tmp_path_factory.mktemp("tuned") / "tuned.pt"
    torch.save(state, path)
    return path


def test_probe_prints_top_k_with_names_and_the_asked_module(cli, resnet18_pt, image):
    before = sha(resnet18_pt)
    result = cli("probe", resnet18_pt, "--arch", R18, "--input", image, "--module", "layer2", "--top-k", "3")
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert (
        lines[1].startswith("Input: photo.jpg: resize 256, crop 224x224") and "ResNet18_Weights" in lines[1]
    )
    assert lines[2].startswith("Head fc (Linear, 1000 outputs; names from torchvision ResNet18_Weights")
    assert [line.split(".")[0].strip() for line in lines[3:6]] == ["1", "2", "3"]
    assert any(
        line.startswith("layer2 (Sequential) [1, 128, 28, 28]: feature maps 128 x 28x28") for line in lines
    )
    assert sha(resnet18_pt) == before  # the source is only read


def test_json_carries_heads_modules_and_input(cli, resnet18_pt):
    result = cli(
        "probe", resnet18_pt, "--arch", R18, "--random", "--seed", "2", "--input-shape", SMALL,
        "--module", "avgpool", "--json",
    )  # fmt: skip
    assert result.status == 0, result.err
    (record,) = result.records
    assert record["error"] is None and record["input"]["shape"] == [1, 3, 64, 64]
    head = record["heads"][0]
    assert head["path"] == "fc" and len(head["top"]) == 5 and head["top"][0]["name"]
    probabilities = [t["probability"] for t in head["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert record["modules"]["avgpool"]["layout"] == "vector"
    model = torchvision.models.resnet18()  # the same weights and input through plain torchvision
    model.load_state_dict(torch.load(resnet18_pt))
    x = torch.randn((1, 3, 64, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model.eval()(x)[0]
    assert [t["index"] for t in head["top"]] == logits.topk(5).indices.tolist()
    assert head["top"][0]["score"] == pytest.approx(logits.max().item(), rel=1e-5)


def test_a_spec_is_probed_with_real_random_weights_and_a_seeded_input(cli):
    first = cli(
        "probe", "torchvision:squeezenet1_1", "--random", "--seed", "4", "--input-shape", SMALL, "--json"
    )
    assert first.status == 0, first.err
    head = first.records[0]["heads"][0]
    assert head["path"] == "classifier.1" and head["size"] == 1000
    assert first.records[0]["input"]["description"] == "random normal values (seed 4)"


def test_against_proves_a_replaced_head_left_the_backbone_bit_identical(cli, resnet18_pt, tmp_path):
    edited = tmp_path / "r18-7.safetensors"
    made = cli("edit", resnet18_pt, "--arch", R18, "--replace-head", "7", "--freeze-backbone", "-o", edited)
    assert made.status == 0, made.err
    result = cli("probe", edited, "--against", resnet18_pt, "--arch", R18, "--input-shape", SMALL, "--json")
    assert result.status == 0, result.err
    proof = result.records[0]["proof"]
    assert proof["first_difference"] == "fc"
    changed = [m["path"] for m in proof["modules"] if m["status"] != "unchanged"]
    assert changed == ["fc", ""] and proof["unchanged"] == proof["compared"] - 2
    human = cli("probe", edited, "--against", resnet18_pt, "--arch", R18, "--input-shape", SMALL)
    assert "unchanged (bit-identical), 2 changed; first difference at fc" in human.out


def test_against_finds_where_a_fine_tuned_backbone_starts_to_differ(cli, resnet18_pt, tuned_pt):
    result = cli("probe", tuned_pt, "--arch", R18, "--against", resnet18_pt, "--input-shape", SMALL, "--json")
    assert result.status == 0, result.err
    proof = result.records[0]["proof"]
    assert proof["first_difference"] == "layer3.0.conv1"
    by_path = {m["path"]: m for m in proof["modules"]}
    assert by_path["layer2"]["status"] == "unchanged" and by_path["layer3.0.conv1"]["max_abs_diff"] > 0


@pytest.mark.parametrize(
    ("make", "message"),
    [(not_an_image, "not an image"), (truncated, "damaged or truncated"), (lying_header, "pixels")],
)
def test_bad_images_end_with_one_line(cli, resnet18_pt, tmp_path, make, message):
    path = make(tmp_path / "photo.png")
    line = one_line_error(cli("probe", resnet18_pt, "--arch", R18, "--input", path))
    assert message in line and line.startswith("headstudio: ")


def test_a_missing_module_and_meaningless_options_end_with_one_line(cli, resnet18_pt):
    line = one_line_error(cli("probe", resnet18_pt, "--arch", R18, "--module", "layer5.0"))
    assert "no module 'layer5.0'" in line
    line = one_line_error(cli("probe", resnet18_pt, "--arch", R18, "--top-k", "0"))
    assert "top-k 0 must be 1 or more" in line
    recognised = cli("probe", resnet18_pt)  # bare weights need no --arch once recognised
    assert recognised.status == 0 and "[torchvision:resnet18]" in recognised.out


def test_a_bad_input_in_json_mode_is_one_json_error(cli, resnet18_pt, tmp_path):
    result = cli("probe", resnet18_pt, "--arch", R18, "--input", tmp_path / "nope.png", "--json")
    assert result.status == 2
    (record,) = result.records
    assert "no such image" in record["error"]
