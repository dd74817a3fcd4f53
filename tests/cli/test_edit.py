"""``headstudio edit``: edits from options, before/after figures, verified save; bad input writes nothing."""

from __future__ import annotations

import pytest
import torch
from cli_checks import listing, one_line_error, sha

R18 = "torchvision:resnet18"


@pytest.fixture(scope="module")
def unused_branch(tmp_path_factory) -> str:
    """A user's model with an auxiliary head used only in training (like googlenet's aux heads)."""
    import sys

    root = tmp_path_factory.mktemp("editpkg")
    (root / "probemodels.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class WithProbe(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Linear(8, 16)\n"
        "        self.probe = nn.Linear(16, 2)\n"
        "        self.fc = nn.Linear(16, 3)\n\n"
        "    def forward(self, x):\n"
        "        h = self.body(x)\n"
        "        if self.training:\n"
        "            self.probe(h)\n"
        "        return self.fc(h)\n"
    )
    sys.path.insert(0, str(root))
    yield "probemodels:WithProbe"
    sys.path.remove(str(root))
    sys.modules.pop("probemodels", None)


def test_replace_head_and_freeze_backbone_survive_the_save_for_inspect(cli, tmp_path):
    out = tmp_path / "x.safetensors"
    result = cli("edit", R18, "--replace-head", "7", "--freeze-backbone", "-o", out)
    assert result.status == 0, result.err
    assert "verified" in result.out and "[1, 1000]" in result.out and "[1, 7]" in result.out
    report = cli("inspect", out, "--json").records[0]
    assert report["error"] is None, report
    assert report["head"]["out_features"] == 7 and report["trainable_params"] == 3591


def test_edit_prints_before_and_after_figures(cli, tmp_path):
    result = cli("edit", R18, "--replace-head", "7", "--freeze-backbone", "-o", tmp_path / "x.pt")
    lines = {line.split()[0]: line.split()[1:] for line in result.out.splitlines() if line.strip()}
    assert lines["output"] == ["[1, 1000]", "[1, 7]"] or lines["output"] == ["[1,", "1000]", "[1,", "7]"]
    assert lines["params"] == ["11,689,512", "11,180,103"]
    assert lines["trainable"] == ["11,689,512", "3,591"]


def test_edit_on_a_checkpoint_file_leaves_the_source_bytes_unchanged(cli, resnet18_pt, tmp_path):
    before = sha(resnet18_pt)
    out = tmp_path / "edited.safetensors"
    result = cli("edit", resnet18_pt, "--arch", R18, "--replace-head", "3", "--mlp", "64", "-o", out)
    assert result.status == 0, result.err
    assert sha(resnet18_pt) == before
    assert cli("inspect", out, "--json").records[0]["output_shape"] == [1, 3]


def test_remove_head_saves_a_feature_extractor(cli, tmp_path):
    out = tmp_path / "features.safetensors"
    assert cli("edit", "torchvision:squeezenet1_1", "--remove-head", "-o", out).status == 0
    report = cli("inspect", out, "--json").records[0]
    assert report["output_shape"][1] != 1000


def test_print_code_prints_the_plain_pytorch_snippet(cli, tmp_path):
    result = cli("edit", R18, "--replace-head", "7", "--print-code", "-o", tmp_path / "x.safetensors")
    assert result.status == 0, result.err
    assert "nn.Linear" in result.out and "model.fc" in result.out


def test_freeze_glob_and_unfreeze_glob_set_trainable_counts(cli, tmp_path):
    out = tmp_path / "x.safetensors"
    result = cli("edit", R18, "--freeze", "*", "--unfreeze", "layer4*", "-o", out)
    assert result.status == 0, result.err
    report = cli("inspect", out, "--json").records[0]
    layer4 = next(m for m in report["modules"] if m["path"] == "layer4")
    assert report["trainable_params"] == layer4["trainable_params"] > 0


def test_keep_classes_carries_the_trained_rows_into_the_saved_head(
    cli, resnet18_pt, resnet18_state, tmp_path
):
    from safetensors.torch import load_file

    out = tmp_path / "ten.safetensors"
    result = cli(
        "edit", resnet18_pt, "--arch", R18, "--replace-head", "10", "--keep-classes", "0-9", "-o", out
    )
    assert result.status == 0, result.err
    saved = load_file(str(out))
    assert torch.equal(saved["fc.weight"], resnet18_state["fc.weight"][:10])


def test_add_head_saves_a_two_headed_model_that_inspect_reopens(cli, tmp_path):
    out = tmp_path / "two.safetensors"
    result = cli("edit", R18, "--add-head", "age:5", "-o", out)
    assert result.status == 0, result.err
    report = cli("inspect", out, "--json").records[0]
    assert report["error"] is None and isinstance(report["output_shape"], dict)
    assert [1, 5] in report["output_shape"].values()


def test_add_head_with_an_adapter_puts_a_linear_of_that_width_before_the_new_classifier(cli, tmp_path):
    from headstudio.core.opening.sources import open_source

    out = tmp_path / "two.safetensors"
    assert cli("edit", R18, "--add-head", "age:5", "--adapter", "64", "-o", out).status == 0
    model = open_source(str(out)).model
    linears = [m for m in model.fc.heads["age"].modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 64), (64, 5)]
    assert model(torch.randn(1, 3, 64, 64))["age"].shape == (1, 5)


def test_freeze_backbone_with_bn_eval_survives_the_save_and_keeps_batchnorm_stats(cli, tmp_path):
    from headstudio.core.opening.sources import open_source

    out = tmp_path / "x.safetensors"
    assert cli("edit", R18, "--freeze-backbone", "--bn-eval", "-o", out).status == 0
    model = open_source(str(out)).model.train()
    stats = model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))  # a training step's forward: frozen BatchNorm statistics stay put
    assert torch.equal(model.bn1.running_mean, stats) and model.fc.training


# --- bad input: one line, nothing written, source untouched ----------------------------------------


@pytest.mark.parametrize("count", ["0", "-3"])
def test_replace_head_with_no_classes_is_refused(cli, tmp_path, count):
    message = one_line_error(cli("edit", R18, "--replace-head", count, "-o", tmp_path / "x.safetensors"))
    assert count in message
    assert listing(tmp_path) == []


@pytest.mark.parametrize("width", ["0", "-8"])
def test_an_adapter_that_cannot_be_sized_is_refused(cli, tmp_path, width):
    message = one_line_error(
        cli("edit", R18, "--add-head", "age:5", "--adapter", width, "-o", tmp_path / "x.pt")
    )
    assert "adapter" in message and width in message
    assert listing(tmp_path) == []


def test_a_head_path_that_does_not_exist_is_refused(cli, tmp_path):
    result = cli("edit", R18, "--head", "classifier.9", "--replace-head", "3", "-o", tmp_path / "x.pt")
    assert "classifier.9" in one_line_error(result)
    assert listing(tmp_path) == []


def test_cut_after_a_module_the_output_does_not_depend_on_is_refused(cli, tmp_path, unused_branch):
    result = cli(
        "edit", unused_branch, "--input-shape", "1,8", "--cut-after", "probe", "-o", tmp_path / "x.pt"
    )
    assert "probe" in one_line_error(result)
    assert listing(tmp_path) == []


def test_output_equal_to_the_source_is_refused(cli, resnet18_pt):
    before = sha(resnet18_pt)
    result = cli("edit", resnet18_pt, "--arch", R18, "--replace-head", "3", "-o", resnet18_pt)
    assert "source" in one_line_error(result)
    assert sha(resnet18_pt) == before


def test_an_unwritable_directory_is_refused(cli, tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    result = cli("edit", R18, "--replace-head", "3", "-o", tmp_path / "afile" / "x.safetensors")
    assert "not a directory" in one_line_error(result)
    assert listing(tmp_path) == ["afile"]


def test_a_write_failing_midway_keeps_the_previous_file(cli, tmp_path, monkeypatch):
    from headstudio.core.saving import formats

    out = tmp_path / "x.safetensors"
    assert cli("edit", R18, "--replace-head", "3", "-o", out).status == 0
    before = sha(out)

    def failing(fh, tensors, metadata, tick=None):
        fh.write(b"\0" * 4096)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(formats, "write_safetensors", failing)
    message = one_line_error(cli("edit", R18, "--replace-head", "5", "-o", out))
    assert "No space left" in message
    assert listing(tmp_path) == ["x.safetensors"] and sha(out) == before


@pytest.mark.parametrize(
    "options",
    [
        ["--add-head", "age"],
        ["--mlp", "64"],
        ["--format", "onnx", "--replace-head", "3"],
        ["--bn-eval"],
        ["--adapter", "64", "--replace-head", "3"],
    ],
    ids=[
        "add-head-without-count",
        "mlp-without-replace",
        "unknown-format",
        "bn-eval-without-freeze",
        "adapter-without-add-head",
    ],
)
def test_meaningless_options_are_refused(cli, tmp_path, options):
    one_line_error(cli("edit", R18, *options, "-o", tmp_path / "x.pt"))
    assert listing(tmp_path) == []
