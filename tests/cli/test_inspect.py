"""``headstudio inspect``: the head of every torchvision classifier, JSON lines, and the human view."""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
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
    assert record["head"] == {
        "path": "fc",
        "type": "Linear",
        "in_features": 512,
        "out_features": 1000,
        "role": "class logits",
        "rule": "main output",
    }


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
    assert bad["heads"] == [] and bad["modules"] == [] and bad["head"] is None
    assert set(bad) == set(first)  # a failed line has every field, so consumers need no special case
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


def test_inspect_bare_weights_with_arch_reports_format_and_notes(cli, tmp_path, resnet18_state):
    path = tmp_path / "ddp.pth"
    torch.save({"epoch": 1, "model": {"module." + k: v for k, v in resnet18_state.items()}}, path)
    (record,) = cli("inspect", path, "--arch", "torchvision:resnet18", "--json", "--depth", "0").records
    assert (record["format"], record["arch"], record["error"]) == ("checkpoint", "torchvision:resnet18", None)
    assert record["notes"] == ["stripped key prefix 'module.'"]
    assert record["head"]["path"] == "fc"


def test_inspect_headless_model_says_no_head(cli):
    pytest.importorskip("timm")
    result = cli("inspect", "timm:resnet10t(num_classes=0)", "--depth", "0")
    assert result.status == 0
    assert "Head: none found" in result.out


# --- Bad input: one line naming the problem and the fix, exit 1 or 2, never a traceback -------------


class Payload:
    """Unpickling this object would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path, via_exec: bool = False) -> None:
        self.marker, self.via_exec = marker, via_exec

    def __reduce__(self):
        if self.via_exec:
            return (exec, (f"open({str(self.marker)!r}, 'w').close()",))
        return (os.system, (f"touch {self.marker}",))


def assert_one_line_error(result, *needles: str, status: tuple[int, ...] = (2,)) -> str:
    """The user sees exactly one ``headstudio:`` line on stderr, containing every needle."""
    assert result.status in status, (result.status, result.err)
    assert "Traceback" not in result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headstudio: "), result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_missing_path_says_no_such_file_and_suggests_a_spec(cli, tmp_path):
    assert_one_line_error(cli("inspect", tmp_path / "nope.pt"), "no such file", "torchvision:")


def test_directory_says_give_a_file_inside_it(cli, tmp_path, resnet18_pt):
    (tmp_path / "run1").mkdir()
    shutil.copy(resnet18_pt, tmp_path / "run1" / "best.pt")
    assert_one_line_error(cli("inspect", tmp_path / "run1"), "is a directory", "best.pt")


def test_empty_file_says_zero_bytes_and_save_again(cli, tmp_path):
    (tmp_path / "empty.pt").touch()
    assert_one_line_error(cli("inspect", tmp_path / "empty.pt"), "empty (0 bytes)", "save it again")


def test_random_bytes_say_not_a_checkpoint(cli, tmp_path):
    (tmp_path / "noise.bin").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    assert_one_line_error(cli("inspect", tmp_path / "noise.bin"), "is not a PyTorch", "check the path")


def test_text_file_says_it_is_text(cli, tmp_path):
    (tmp_path / "notes.pt").write_text("epoch 3: loss 0.12\n")
    assert_one_line_error(cli("inspect", tmp_path / "notes.pt"), "is a text file", ".safetensors")


def test_truncated_zip_checkpoint_says_truncated_and_copy_again(cli, tmp_path, resnet18_pt):
    data = resnet18_pt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli("inspect", tmp_path / "cut.pt"), "truncated or corrupt", "again")


def test_unknown_spec_suggests_close_names(cli):
    line = assert_one_line_error(
        cli("inspect", "torchvision:resnet81"), "unknown torchvision model 'resnet81'"
    )
    assert "did you mean resnet18" in line


def test_timm_not_installed_names_the_extra(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    assert_one_line_error(cli("inspect", "timm:resnet18"), "timm is not installed", "pip install")


def test_wrong_arch_gives_key_counts_and_first_names(cli, resnet18_pt):
    line = assert_one_line_error(cli("inspect", resnet18_pt, "--arch", "torchvision:mobilenet_v3_small"))
    assert re.search(r"\d+ missing \(features\.0\.0\.weight", line), line
    assert re.search(r"\d+ unexpected \(conv1\.weight", line), line
    assert "check that --arch names the architecture" in line


def test_shape_mismatched_weights_hint_at_num_classes(cli, tmp_path):
    path = tmp_path / "r18_10.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    line = assert_one_line_error(cli("inspect", path, "--arch", "torchvision:resnet18"))
    assert "fc.weight: file [10, 512] vs architecture [1000, 512]" in line
    assert "--arch 'torchvision:resnet18(num_classes=10)'" in line
    assert cli("inspect", path, "--arch", "torchvision:resnet18(num_classes=10)").status == 0


def test_rejected_input_shape_shows_shapes_up_to_the_failing_module(cli):
    result = cli("inspect", "torchvision:alexnet", "--input-shape", "1,3,32,32", "--depth", "2")
    assert result.status == 1 and "Traceback" not in result.out + result.err
    rows = {line.split()[0]: line for line in result.out.splitlines()[3:] if line.strip()}
    assert "[1, 256, 1, 1]" in rows["11"]  # the last module that ran keeps its shape
    assert "✗ failed here" in rows["12"]
    assert "(not called)" in rows["avgpool"]
    assert "Trace failed at 'features.12'" in result.out and "Output size is too small" in result.out
    (record,) = cli("inspect", "torchvision:alexnet", "--input-shape", "1,3,32,32", "--json").records
    assert record["trace"]["failed_at"] == "features.12" and record["heads"] == []


@pytest.mark.parametrize(
    ("layout", "global_name"),
    [
        ("zip", f"{os.system.__module__}.system"),
        ("legacy", f"{os.system.__module__}.system"),
        ("exec", "builtins.exec"),
    ],
)
def test_malicious_pickle_is_refused_without_running_and_names_the_global(cli, tmp_path, layout, global_name):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"w": torch.zeros(1)}, "x": Payload(marker, via_exec=layout == "exec")}
    torch.save(payload, path, _use_new_zipfile_serialization=layout != "legacy")
    line = assert_one_line_error(
        cli("inspect", path, "--arch", "torchvision:resnet18"), global_name, "--trust"
    )
    assert "nothing was run" in line
    assert not marker.exists()


def test_torchscript_refused_without_trust_with_its_own_message(cli, scripted_pt):
    line = assert_one_line_error(cli("inspect", scripted_pt), "is a TorchScript archive", "--trust")
    assert "would import" not in line


def test_torchscript_with_arch_says_it_cannot(cli, scripted_pt):
    line = assert_one_line_error(cli("inspect", scripted_pt, "--arch", "torchvision:resnet18", "--trust"))
    assert "TorchScript" in line and "drop --arch" in line
    assert_one_line_error(cli("inspect", scripted_pt, "--arch", "torchvision:resnet18"), "drop --arch")


def test_torchscript_with_trust_inspects_and_says_it_cannot_be_edited(cli, scripted_pt):
    result = cli("inspect", scripted_pt, "--trust", "--depth", "1")
    assert result.status == 0, result.err
    assert "output: [1, 1000]" in result.out
    assert "inspect only" in result.out
    assert "Traceback" not in result.out + result.err


def test_missing_file_with_a_colon_in_its_name_is_still_a_missing_file(cli):
    assert_one_line_error(cli("inspect", "run3:best.pt"), "no such file: run3:best.pt")


def test_misspelled_spec_keyword_says_check_the_names(cli):
    assert_one_line_error(
        cli("inspect", "torchvision:resnet18(num_clases=3)"), "num_clases", "check the keyword"
    )
