"""Recognising bare weights by parameter names and shapes, with the class count read from the head."""

from __future__ import annotations

import pytest
import torch
import torchvision

from headstudio.core.errors import ArchitectureRequiredError
from headstudio.core.opening import fingerprint_index
from headstudio.core.opening.checkpoints import read_checkpoint
from headstudio.core.opening.fingerprint import identify
from headstudio.core.opening.fingerprint_index import build_on_meta, load_index
from headstudio.core.opening.sources import open_source

# timm models with non-default sizes, as people fine-tune them (the index also holds their neighbours)
TIMM_CASES = [
    ("convnext_nano", {"num_classes": 7}),
    ("convnext_atto", {"num_classes": 2, "in_chans": 1}),
    ("efficientnet_b1", {"num_classes": 12}),
    ("mobilenetv3_small_050", {"num_classes": 3}),
    ("vit_small_patch16_224", {"num_classes": 37}),
    ("deit_tiny_patch16_224", {"num_classes": 5}),
    ("resnet50d", {"num_classes": 20}),
    ("resnet10t", {"num_classes": 0}),
    ("regnety_002", {"num_classes": 4}),
    ("densenet121", {"num_classes": 14}),
    ("levit_128s", {"num_classes": 9}),
    ("edgenext_xx_small", {"num_classes": 6}),
    ("mobilevit_xxs", {"num_classes": 8}),
    ("poolformer_s12", {"num_classes": 11}),
    ("resnetv2_50", {"num_classes": 15}),
    ("fastvit_t8", {"num_classes": 10}),
    ("ghostnet_100", {"num_classes": 13}),
    ("dla34", {"num_classes": 16}),
    ("hgnetv2_b0", {"num_classes": 17}),
    ("cspresnet50", {"num_classes": 19}),
]


def spec(arch: str, kwargs: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{arch}({args})" if args else arch


def test_every_torchvision_classifier_and_a_timm_sample_are_recognised_from_plain_files(tmp_path):
    """torch.save(model.state_dict(), 'weights.pth') with neutral names (meta tensors: shapes, no GBs)."""
    cases = [
        (f"torchvision:{n}", {"num_classes": 23})
        for n in torchvision.models.list_models(module=torchvision.models)
    ]
    cases += [(f"timm:{n}", kwargs) for n, kwargs in TIMM_CASES]
    wrong = []
    for arch, kwargs in cases:
        path = tmp_path / "weights.pth"
        torch.save(build_on_meta(arch, **kwargs).state_dict(), path)
        found = identify(read_checkpoint(path).state_dict, limit=10)
        exact = [c.arch for c in found if c.exact]
        if not found[0].exact or spec(arch, kwargs) not in exact:
            wrong.append(f"{spec(arch, kwargs)} -> {found[0].describe()}")
    assert not wrong, f"{len(wrong)} of {len(cases)} not recognised: {wrong}"


def test_exact_match_opens_directly_and_says_how(tmp_path):
    torch.manual_seed(0)
    import timm

    model = timm.create_model("convnext_nano", pretrained=False, num_classes=7)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    doc = open_source(str(tmp_path / "weights.pth"))
    assert doc.origin.arch_from == "recognised from the weights as timm:convnext_nano(num_classes=7)"
    assert (doc.head.path, doc.head.out_features) == ("head.fc", 7)
    assert torch.equal(doc.model.head.fc.weight, model.head.fc.weight)


def test_equal_fits_open_the_plainest_and_name_the_others():
    found = identify(build_on_meta("timm:deit_tiny_patch16_224").state_dict())
    assert [c.arch for c in found[:2]] == ["timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224"]
    assert found[0].exact and found[1].exact


def test_near_matches_are_ranked_best_first_with_what_differs(tmp_path):
    state = build_on_meta("timm:convnext_nano", num_classes=7).state_dict()
    del state["stages.3.blocks.1.gamma"]
    state["stages.3.extra.weight"] = torch.empty(3, device="meta")
    found = identify(state)
    assert not found[0].exact and found[0].arch == "timm:convnext_nano(num_classes=7)"
    assert found[0].differs == (
        "1 missing (stages.3.blocks.1.gamma)",
        "1 unexpected (stages.3.extra.weight)",
    )
    assert found[0].score > found[1].score > 0
    torch.save(state, tmp_path / "weights.pth")
    with pytest.raises(ArchitectureRequiredError) as err:
        open_source(str(tmp_path / "weights.pth"))
    message = str(err.value)
    assert "nearest: timm:convnext_nano(num_classes=7)" in message and "resnet50" not in message
    assert "\n" not in message and err.value.candidates[0].arch == "timm:convnext_nano(num_classes=7)"


def test_weights_of_no_known_architecture_say_so_without_an_unrelated_example(tmp_path):
    torch.save({"encoder.w": torch.zeros(4, 4), "decoder.w": torch.zeros(4, 4)}, tmp_path / "w.pth")
    with pytest.raises(ArchitectureRequiredError, match="match no torchvision or timm architecture") as err:
        open_source(str(tmp_path / "w.pth"))
    assert "resnet50" not in str(err.value) and err.value.candidates == []


def test_index_is_cached_by_library_versions_and_rebuilt_when_they_change(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTUDIO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fingerprint_index, "BUNDLED_DIR", tmp_path / "none-shipped")
    monkeypatch.setattr(fingerprint_index, "known_architectures", lambda: ["torchvision:resnet18"])
    builds = []
    real_build = fingerprint_index.build_index
    monkeypatch.setattr(fingerprint_index, "build_index", lambda **kw: builds.append(1) or real_build(**kw))
    first = load_index()
    assert first.archs == ["torchvision:resnet18"] and len(builds) == 1
    fingerprint_index._LOADED.clear()  # a new process: read from the cache, not built again
    assert load_index().archs == first.archs and len(builds) == 1
    versions = {**fingerprint_index.library_versions(), "timm": "9.9.9"}
    monkeypatch.setattr(fingerprint_index, "library_versions", lambda: versions)
    load_index()
    assert len(builds) == 2 and [p.name for p in tmp_path.glob("*.npz")] == [
        fingerprint_index.index_path(versions).name
    ]
    fingerprint_index._LOADED.clear()


def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTUDIO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fingerprint_index, "BUNDLED_DIR", tmp_path / "none-shipped")
    monkeypatch.setattr(fingerprint_index, "known_architectures", lambda: ["torchvision:alexnet"])
    fingerprint_index.index_path().parent.mkdir(parents=True, exist_ok=True)
    fingerprint_index.index_path().write_bytes(b"not an index")
    assert load_index().archs == ["torchvision:alexnet"]
    fingerprint_index._LOADED.clear()


def test_index_shipped_for_these_versions_is_used_instead_of_a_build(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    monkeypatch.setattr(fingerprint_index, "BUNDLED_DIR", shipped)
    monkeypatch.setenv("HEADSTUDIO_CACHE_DIR", str(tmp_path / "cache"))
    fingerprint_index.build_index(["torchvision:alexnet"]).save(shipped / fingerprint_index.index_path().name)
    monkeypatch.setattr(fingerprint_index, "build_index", lambda **kw: pytest.fail("built although shipped"))
    assert load_index().archs == ["torchvision:alexnet"]
    assert fingerprint_index.index_path().is_file()  # copied to the cache for quicker loads
    fingerprint_index._LOADED.clear()
