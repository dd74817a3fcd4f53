"""Specs that come from files are data: allow-listed builders only, no downloads, other code needs consent."""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from headstudio.core.codegen import snippet_for
from headstudio.core.errors import SourceError, TrustedCodeWarning, UntrustedSpecError
from headstudio.core.opening.checkpoints import RECIPE_KEY
from headstudio.core.opening.file_specs import file_spec
from headstudio.core.opening.sources import open_source
from headstudio.core.opening.specs import build_model, parse_spec
from headstudio.core.recipe import Recipe

EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")  # runs on import: the proof that code from the file ran
import torch
def build(width=4):
    return torch.nn.Linear(width, 2)
"""


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A module whose import leaves a marker file; its name is unique to the test."""
    name = f"evilfactory_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported.marker"
    root = tmp_path / "pkgroot"
    root.mkdir()
    (root / f"{name}.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(root))
    yield name, marker
    sys.modules.pop(name, None)


def recipe_text(arch: str) -> str:
    return json.dumps({"format": "headstudio.recipe", "version": 1, "arch": arch, "input_shape": [1, 4]})


def weights() -> dict[str, torch.Tensor]:
    return {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}


def safetensors_with(tmp_path: Path, arch: str) -> Path:
    path = tmp_path / "evil.safetensors"
    save_file(weights(), str(path), metadata={RECIPE_KEY: recipe_text(arch)})
    return path


def pt_with(tmp_path: Path, arch: str) -> Path:
    """A plain state_dict that torch.load(weights_only=True) reads; the recipe rides in _metadata."""
    state = OrderedDict(weights())
    state._metadata = OrderedDict({"": {RECIPE_KEY: recipe_text(arch)}})  # type: ignore[attr-defined]
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    return path


def test_the_evil_factory_really_runs_when_built_as_a_typed_spec(evil):
    name, marker = evil
    model = build_model(parse_spec(f"{name}:build"))
    assert isinstance(model, nn.Linear) and marker.exists()  # the payload is live


@pytest.mark.parametrize("make", [safetensors_with, pt_with], ids=["safetensors", "pt-metadata"])
def test_a_files_recipe_naming_other_code_is_refused_and_nothing_is_imported(tmp_path, evil, make):
    name, marker = evil
    path = make(tmp_path, f"{name}:build(width=4)")
    before = path.read_bytes()
    with pytest.raises(UntrustedSpecError) as info:
        open_source(str(path))
    message = str(info.value)
    assert f"would import '{name}' and call {name}.build(width=4)" in message and "\n" not in message
    assert info.value.exit_code == 2 and info.value.globals == [f"{name}.build(width=4)"]
    assert not marker.exists() and name not in sys.modules
    assert path.read_bytes() == before


def test_consent_to_exactly_the_listed_call_builds_it(tmp_path, evil):
    name, marker = evil
    path = safetensors_with(tmp_path, f"{name}:build")
    with pytest.raises(UntrustedSpecError):
        open_source(str(path), trust=frozenset({"something.else()"}))
    assert not marker.exists()
    with pytest.warns(TrustedCodeWarning, match=f"{name}.build"):
        doc = open_source(str(path), trust=frozenset({f"{name}.build()"}))
    assert marker.exists() and isinstance(doc.model, nn.Linear)


def test_a_recipe_json_naming_other_code_is_refused_by_code_and_apply_paths(tmp_path, evil):
    name, marker = evil
    recipe = Recipe.from_json(recipe_text(f"{name}:build"), "evil.json")
    with pytest.raises(UntrustedSpecError, match=r"evil\.json: its recipe would import"):
        snippet_for(recipe)
    with pytest.raises(UntrustedSpecError):
        file_spec(recipe.arch, "evil.json")
    assert not marker.exists() and name not in sys.modules


def test_os_system_through_a_recipe_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    arch = f"os:mkdir(path={str(marker)!r})"
    with pytest.raises(SourceError):  # live: building it as a typed spec makes the directory
        build_model(parse_spec(arch))
    assert marker.exists()
    marker.rmdir()
    path = safetensors_with(tmp_path, arch)
    with pytest.raises(UntrustedSpecError, match=r"would import 'os' and call os\.mkdir"):
        open_source(str(path))
    assert not marker.exists()


def test_download_switches_in_a_files_recipe_are_forced_off():
    spec, notes = file_spec("torchvision:squeezenet1_1(weights='DEFAULT', num_classes=3)", "f.pt")
    assert spec.kwargs == {"weights": None, "num_classes": 3}
    assert notes and "downloads are off" in notes[0]
    spec, notes = file_spec("timm:resnet18(pretrained=True)", "f.pt")
    assert spec.kwargs == {"pretrained": False}


@pytest.mark.parametrize(
    "arch",
    [
        "timm:resnet18(pretrained_cfg_overlay={'file': '/etc/passwd'})",
        "timm:resnet18(checkpoint_path='/tmp/x.pth')",
        "timm:hf-hub:timm/resnet18.a1_in1k",
        "torchvision:resnet18(norm_layer='https://example.com/x')",
        "timm:resnet18(pretrained_cfg={'url': 'https://example.com/w.pth'})",
    ],
)
def test_file_url_and_hub_arguments_in_a_files_recipe_are_refused(arch):
    with pytest.raises(SourceError) as info:
        file_spec(arch, "f.pt")
    assert "\n" not in str(info.value) and "f.pt" in str(info.value)


def test_unknown_model_names_in_a_files_recipe_are_refused():
    with pytest.raises(SourceError, match="not a registered torchvision model"):
        file_spec("torchvision:not_a_model", "f.pt")


def test_non_literal_arguments_in_a_files_recipe_are_refused():
    with pytest.raises(SourceError, match="not a valid spec"):
        file_spec("torchvision:resnet18(num_classes=__import__('os').getpid())", "f.pt")


def test_allow_listed_recipe_in_a_file_opens_without_trust(tmp_path):
    import torchvision

    model = torchvision.models.squeezenet1_1(weights=None, num_classes=3)
    path = tmp_path / "sq.safetensors"
    save_file(
        model.state_dict(),
        str(path),
        metadata={RECIPE_KEY: recipe_text("torchvision:squeezenet1_1(num_classes=3, weights='DEFAULT')")},
    )
    doc = open_source(str(path))
    assert doc.origin.arch == "torchvision:squeezenet1_1(num_classes=3, weights=None)"
    assert any("downloads are off" in n for n in doc.origin.notes)


def test_a_typed_module_spec_is_found_in_the_current_directory(tmp_path, monkeypatch):
    name = f"cwdmodels_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("import torch\ndef tiny():\n    return torch.nn.Linear(3, 1)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        doc = open_source(f"{name}:tiny")
    finally:
        sys.modules.pop(name, None)
    assert isinstance(doc.model, nn.Linear) and str(tmp_path) not in sys.path


def test_a_files_recipe_asking_for_a_huge_new_head_is_refused_before_building_it(tmp_path):
    huge = {"kind": "replace_head", "path": "classifier.1", "num_classes": 10**9}
    text = json.dumps(
        {"format": "headstudio.recipe", "version": 1, "arch": "torchvision:squeezenet1_1", "edits": [huge]}
    )
    path = tmp_path / "huge.safetensors"
    save_file(weights(), str(path), metadata={RECIPE_KEY: text})
    with pytest.raises(SourceError, match=r"step 1 \(replace_head\) asks for size 1,000,000,000") as info:
        open_source(str(path))  # building it would allocate a 2 TB head
    assert "\n" not in str(info.value)


def test_a_files_recipe_head_bigger_than_free_memory_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from torchvision.models import squeezenet1_1

    from headstudio.core.edits import head_builder

    # sizes within the file's own dimensions, but a head of ~6 MB on a machine with 1 MB free: sized on meta
    monkeypatch.setattr(head_builder, "free_memory", lambda: 2**20)
    wide = {"kind": "replace_head", "path": "classifier.1", "num_classes": 1000, "hidden": [1000]}
    arch = "torchvision:squeezenet1_1"
    recipe = {"format": "headstudio.recipe", "version": 1, "arch": arch, "edits": [wide]}
    path = tmp_path / "wide.safetensors"
    save_file(squeezenet1_1().state_dict(), str(path), metadata={RECIPE_KEY: json.dumps(recipe)})
    with pytest.raises(SourceError, match=r"new head needs 6.1 MB .* but 1.0 MB of memory is free") as info:
        open_source(str(path))
    assert "\n" not in str(info.value)
