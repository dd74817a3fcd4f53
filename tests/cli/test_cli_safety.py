"""The CLI runs no code from a file without --trust, names what --trust allowed, never shows a traceback."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from cli_checks import listing, one_line_error, sha
from safetensors.torch import save_file
from torch import nn

from headstudio.core.opening.checkpoints import RECIPE_KEY
from headstudio.core.opening.specs import build_model, parse_spec


def recipe(arch: str) -> str:
    return json.dumps({"format": "headstudio.recipe", "version": 1, "arch": arch, "input_shape": [1, 4]})


@pytest.fixture
def mkdir_spec(tmp_path):
    """A recipe arch that makes a directory when built, proven live first."""
    marker = tmp_path / "PWNED"
    spec = f"os:mkdir(path={str(marker)!r})"
    with pytest.raises(Exception):  # noqa: B017 (mkdir returns None: not a model, but it ran)
        build_model(parse_spec(spec))
    assert marker.exists()
    marker.rmdir()
    return spec, marker


@pytest.fixture
def evil_safetensors(tmp_path, mkdir_spec):
    spec, marker = mkdir_spec
    path = tmp_path / "evil.safetensors"
    save_file({"weight": torch.zeros(2, 4)}, str(path), metadata={RECIPE_KEY: recipe(spec)})
    return path, marker


def test_inspect_and_edit_refuse_a_files_recipe_code_and_run_nothing(cli, evil_safetensors, tmp_path):
    path, marker = evil_safetensors
    before, files = sha(path), listing(tmp_path)
    result = cli("inspect", path)
    line = one_line_error(result)
    assert result.status == 2 and "would import 'os' and call os.mkdir" in line
    result = cli("edit", path, "--replace-head", "3", "-o", tmp_path / "out.safetensors")
    assert result.status == 2 and "--trust" in one_line_error(result)
    assert not marker.exists() and sha(path) == before and listing(tmp_path) == files


def test_trust_runs_it_and_says_so_on_stderr(cli, evil_safetensors):
    path, marker = evil_safetensors
    result = cli("inspect", path, "--trust")
    assert marker.exists()  # consent given: the code ran (and returned no model)
    warning, error = [line for line in result.err.splitlines() if line.strip()]
    assert warning.startswith("headstudio: warning: ") and str(path) in warning and "os.mkdir" in warning
    assert result.status == 2 and "not a torch.nn.Module" in error


def test_code_and_apply_refuse_a_recipe_json_naming_code(cli, mkdir_spec, tmp_path, resnet18_pt):
    spec, marker = mkdir_spec
    evil = tmp_path / "evil.json"
    evil.write_text(recipe(spec))
    result = cli("code", evil)
    assert result.status == 2 and "evil.json: its recipe would import 'os'" in one_line_error(result)
    out = tmp_path / "out.pt"
    result = cli("apply", evil, resnet18_pt, "-o", out)
    assert result.status == 2 and "os.mkdir" in one_line_error(result)
    assert not marker.exists() and not out.exists()


def test_trust_on_several_sources_warns_once_per_file_naming_what_ran(cli, tmp_path):
    paths = []
    for name in ("a.pt", "b.pt"):
        torch.save(nn.Sequential(nn.Linear(4, 2)), tmp_path / name)
        paths.append(tmp_path / name)
    result = cli("inspect", *paths, "--trust", "--input-shape", "1,4")
    warnings = [line for line in result.err.splitlines() if "warning" in line]
    assert result.status == 0 and len(warnings) == 2
    for path, line in zip(paths, warnings, strict=True):
        assert str(path) in line and "torch.nn.modules.container.Sequential" in line


def test_an_unexpected_failure_is_one_line_and_other_sources_still_run(cli, monkeypatch, resnet18_pt):
    from headstudio.core.opening import sources

    real = sources.open_source

    def flaky(source, **kwargs):
        if source == "torchvision:squeezenet1_1":
            raise ZeroDivisionError("boom\ninternal detail")
        return real(source, **kwargs)

    monkeypatch.setattr(sources, "open_source", flaky)
    result = cli("inspect", "torchvision:squeezenet1_1", "torchvision:alexnet", "--json")
    first, second = result.records
    assert result.status == 1 and "unexpected ZeroDivisionError: boom" in first["error"]
    assert "--debug" in first["error"] and not second.get("error")
    assert second["arch"] == "torchvision:alexnet"
    result = cli("inspect", "torchvision:squeezenet1_1")
    assert "rerun with --debug" in one_line_error(result)
    with pytest.raises(ZeroDivisionError):
        cli("inspect", "torchvision:squeezenet1_1", "--debug")


def test_an_unexpected_failure_in_edit_is_one_line(cli, monkeypatch, tmp_path):
    from headstudio.core.saving import atomic

    monkeypatch.setattr(atomic, "resolve_format", lambda *a: (_ for _ in ()).throw(KeyError("fmt")))
    result = cli("edit", "torchvision:squeezenet1_1", "--replace-head", "3", "-o", tmp_path / "o.pt")
    assert result.status == 1 and "unexpected KeyError" in one_line_error(result)


def test_a_text_pickle_is_refused_with_its_imports_not_called_text(cli, tmp_path):
    path = tmp_path / "notes.pt"
    path.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    assert pickle.loads(path.read_bytes()) == 0  # live: it runs a shell command when unpickled
    line = one_line_error(cli("inspect", path))
    assert "os.system" in line and "text file" not in line and "\x1b" not in line


def test_names_with_newlines_and_terminal_escapes_stay_one_plain_line(cli, tmp_path):
    module = "os\x1b[2J\nFAKE: all clear"
    data = (
        b"\x80\x04"
        + b"\x8c" + bytes([len(module)]) + module.encode()
        + b"\x8c\x05mkdir" + b"\x93" + b"\x8c\x01x\x85R."
    )  # fmt: skip
    path = tmp_path / "odd\nname.pt"
    path.write_bytes(data)
    line = one_line_error(cli("inspect", path))
    assert "\x1b" not in line and "odd\\nname.pt" in line and "os\\x1b[2J\\nFAKE" in line


def test_a_fifo_given_as_a_recipe_is_refused_without_blocking(cli, tmp_path, resnet18_pt):
    fifo = tmp_path / "recipe.json"
    os.mkfifo(fifo)
    result = cli("code", fifo)
    assert result.status == 2 and "not a recipe JSON file" in one_line_error(result)


@pytest.mark.parametrize(
    "extra",
    [
        {"edits": [{"kind": "replace_head", "path": "classifier.1", "num_classes": 10**9}]},
        {
            "edits": [
                {"kind": "add_head", "name": "x", "num_classes": 2, "at": "classifier.1", "adapter": 10**8}
            ]
        },
        {"input_shape": [1, 3, 10**6, 10**6]},
    ],
    ids=["huge-head", "huge-adapter", "huge-input"],
)
def test_a_recipe_file_asking_for_huge_sizes_is_refused_before_building(cli, tmp_path, extra):
    path = tmp_path / "huge.json"
    data = {"format": "headstudio.recipe", "version": 1, "arch": "torchvision:squeezenet1_1", **extra}
    path.write_text(json.dumps(data))
    result = cli("code", path)
    assert result.status == 2 and ("asks for size" in result.err or "too large" in result.err)
    one_line_error(result)


def test_a_file_name_with_terminal_escapes_is_printed_escaped(cli, tmp_path, resnet18_pt):
    path = tmp_path / "\x1b[2Jclear.pt"
    path.symlink_to(resnet18_pt)
    result = cli("inspect", path, "--arch", "torchvision:resnet18", "--depth", "0")
    assert result.status == 0 and "\x1b" not in result.out and "\\x1b[2Jclear.pt" in result.out
