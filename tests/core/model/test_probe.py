"""Probe: a real forward on an image or seeded random input; heads' top-k, activations, surgery proof."""

from __future__ import annotations

import copy

import pytest
import torch
from probe_images import lying_header, not_an_image, picture, truncated
from torch import nn

from headstudio.core.edits import AddHead, CutAfter, FreezeBackbone, ReplaceHead, SetActiveHead, SetTrainable
from headstudio.core.errors import InputError, SourceError, UnsupportedOperationError
from headstudio.core.model.document import Document, Origin
from headstudio.core.model.probe import make_input, probe
from headstudio.core.model.probe_inputs import preprocess_for, random_input
from headstudio.core.model.surgery_proof import compare_models, prove_surgery
from headstudio.core.opening.sources import open_source

SMALL = (1, 3, 64, 64)  # resnet18 runs a 64x64 input in a few ms


@pytest.fixture
def doc(resnet18_pt):
    return open_source(str(resnet18_pt), arch="torchvision:resnet18", input_shape=SMALL)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return picture(tmp_path_factory.mktemp("img") / "synthetic.png")


def test_image_is_prepared_from_torchvision_weights_metadata_and_runs_once(doc, image):
    given = make_input(doc, image=image)
    assert given.tensor.shape == SMALL and given.tensor.dtype == torch.float32
    assert "torchvision ResNet18_Weights" in given.description
    result = probe(doc, given, modules=["layer1", "avgpool"], top_k=3)
    head = result.heads[0]
    assert head.path == "fc" and head.size == 1000 and len(head.top) == 3
    with torch.no_grad():
        logits = doc.model(given.tensor)[0]
    assert [t.index for t in head.top] == logits.topk(3).indices.tolist()  # the model's own answer
    assert head.top[0].probability == pytest.approx(logits.softmax(0).max().item(), rel=1e-5)


def test_top_k_carries_torchvision_category_names(doc, image):
    head = probe(doc, make_input(doc, image=image)).heads[0]
    from torchvision.models import ResNet18_Weights

    categories = ResNet18_Weights.DEFAULT.meta["categories"]
    assert head.classes_from == "torchvision ResNet18_Weights categories"
    assert [t.name for t in head.top] == [categories[t.index] for t in head.top]


def test_class_names_from_the_checkpoint_beat_everything_else(tmp_path, image):
    torch.manual_seed(1)
    model = __import__("torchvision").models.resnet18(num_classes=3)
    path = tmp_path / "run.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": {"class_names": ["cat", "dog", "fox"]}}, path
    )
    doc = open_source(str(path), arch="torchvision:resnet18(num_classes=3)", input_shape=SMALL)
    head = probe(doc, make_input(doc, image=image), top_k=3).heads[0]
    assert head.classes_from == "checkpoint 'hyper_parameters.class_names'"
    assert sorted(t.name for t in head.top) == ["cat", "dog", "fox"]


def test_a_replaced_head_shows_indices_not_the_old_names(doc, image):
    doc.apply(ReplaceHead("fc", 7, seed=0))
    head = probe(doc, make_input(doc, image=image), top_k=7).heads[0]
    assert head.classes_from is None and all(t.name is None for t in head.top)
    assert sorted(t.index for t in head.top) == list(range(7))


def test_activations_are_feature_maps_vectors_and_token_matrices(doc, image):
    result = probe(doc, make_input(doc, image=image), modules=["layer1", "avgpool"])
    maps, pooled = result.activations["layer1"], result.activations["avgpool"]
    assert maps.layout == "maps" and maps.channels == 64 and maps.data.shape == (64, 16, 16)
    grid = maps.grid()
    assert grid.shape == (8 * 17 - 1, 8 * 17 - 1)
    assert (
        float(torch.tensor(grid).nan_to_num(0.5).min()) >= 0
        and float(torch.tensor(grid).nan_to_num(0.5).max()) <= 1
    )
    assert maps.stats["min"] >= 0 and 0 < maps.stats["zeros"] < 1  # after a ReLU
    assert pooled.layout == "vector" and pooled.data.shape == (512,)
    seq = _sequence_doc()
    act = probe(seq, make_input(seq), modules=["encoder"]).activations["encoder"]
    assert (
        act.layout == "sequence"
        and act.data.shape == (10, 16)
        and "10 tokens x 16 channels" in act.describe()
    )


def test_token_models_get_seeded_token_ids_below_the_vocabulary():
    model = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 4))
    first, again = random_input(model, (1, 12), seed=3), random_input(model, (1, 12), seed=3)
    assert first.tensor.dtype == torch.long and int(first.tensor.max()) < 50
    assert torch.equal(first.tensor, again.tensor)
    doc = Document(model, Origin("tiny", "module", "tiny"), (1, 12))
    head = probe(doc, first).heads[0]
    assert head.path == "1" and head.reduced == "last of 12 positions"


def test_timm_models_are_prepared_from_their_pretrained_cfg():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False)
    prep = preprocess_for(model, (1, 3, 224, 224))
    assert prep.source == "timm pretrained_cfg" and prep.interpolation == "bicubic"
    assert prep.resize == 235  # 224 / crop_pct 0.95


def test_meta_weights_are_refused_with_one_line():
    doc = open_source("torchvision:resnet18", input_shape=SMALL)  # a spec without materialize: on meta
    with pytest.raises(UnsupportedOperationError, match=r"meta device.*materialize=True"):
        probe(doc, random_input(nn.Linear(1, 1), SMALL))


def test_a_missing_module_names_close_paths(doc):
    with pytest.raises(InputError, match=r"no module 'layer9'.*did you mean layer"):
        probe(doc, make_input(doc), modules=["layer9"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (not_an_image, "is not an image Pillow can read"),
        (truncated, "is damaged or truncated"),
        (lying_header, "pixels.*use a smaller image"),
    ],
)
def test_hostile_image_files_are_refused_with_one_line(doc, tmp_path, make, message):
    path = make(tmp_path / "photo.png")
    with pytest.raises(SourceError, match=message) as caught:
        make_input(doc, image=path)
    assert "\n" not in str(caught.value)


def test_a_header_that_lies_about_a_plausible_size_is_a_damaged_file(doc, tmp_path):
    path = lying_header(tmp_path / "photo.png", 3000, 2000)
    with pytest.raises(SourceError, match="damaged or truncated"):
        make_input(doc, image=path)


def test_sixteen_bit_and_float_images_keep_their_range(doc, tmp_path):
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "depth.png")  # mode I;16: Pillow's own convert would clip it
    Image.fromarray((ramp / 65535).astype(np.float32)).save(tmp_path / "float.tif")
    for name in ("depth.png", "float.tif"):
        x = make_input(doc, image=tmp_path / name).tensor[0, 0]  # the centre crop of a 0..1 ramp
        assert float(x.mean()) == pytest.approx((0.5 - 0.485) / 0.229, abs=0.15)  # clipped: 2.25 or -2.12
        assert float(x.std()) > 1.0  # a spread of grey levels, not one saturated value


def test_missing_and_empty_images_are_refused(doc, tmp_path):
    with pytest.raises(SourceError, match="no such image"):
        make_input(doc, image=tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        make_input(doc, image=tmp_path / "empty.png")


def test_images_need_an_image_model():
    doc = Document(nn.Sequential(nn.Linear(8, 2)), Origin("mlp", "module", "mlp"), (1, 8))
    with pytest.raises(InputError, match=r"N,C,H,W.*--random"):
        make_input(doc, image="any.png")


# ----- surgery proof
@pytest.mark.parametrize(
    "edit",
    [SetTrainable("layer1", False), FreezeBackbone(bn_eval=True)],
    ids=["set_trainable", "freeze_backbone"],
)
def test_freezing_keeps_every_output_bit_identical(doc, edit):
    x = make_input(doc).tensor
    doc.apply(edit)
    proof = prove_surgery(doc, x)
    assert proof.first_difference is None
    assert len(proof.compared) == len(list(doc.model.modules()))
    assert all(m.status == "unchanged" and m.max_abs_diff == 0.0 for m in proof.modules)


def test_replace_head_keeps_the_backbone_bit_identical_and_the_difference_starts_at_the_head(doc):
    x = make_input(doc).tensor
    doc.apply(ReplaceHead("fc", 7, seed=0))
    proof = prove_surgery(doc, x)
    status = {m.path: m.status for m in proof.modules}
    assert proof.first_difference.path == "fc"
    assert status["fc"] == "shape changed" and status[""] == "shape changed"
    assert all(s == "unchanged" for p, s in status.items() if p not in ("fc", ""))
    assert status["layer4.1.bn2"] == "unchanged"


def test_cut_after_keeps_the_remaining_outputs_bit_identical(doc):
    x = make_input(doc).tensor
    doc.apply(CutAfter("layer3"))
    proof = prove_surgery(doc, x)
    assert proof.first_difference.path == ""  # only the model's output differs: it is layer3's now
    assert proof.first_difference.note == "[1, 1000] → [1, 256, 4, 4]"
    unchanged = {m.path for m in proof.modules if m.unchanged}
    assert {"conv1", "layer1.0.conv1", "layer3.1.bn2"} <= unchanged and len(unchanged) == 38  # every leaf
    assert not any(m.path.startswith(("layer4", "fc")) for m in proof.modules)  # cut away: not compared


def test_a_changed_backbone_weight_shows_where_outputs_start_to_differ(doc):
    x = make_input(doc).tensor
    tuned = copy.deepcopy(doc.model)
    with torch.no_grad():
        tuned.layer3[0].conv1.weight.mul_(1.01)
    proof = compare_models(doc.model, tuned, x)
    first = proof.first_difference
    assert first.path == "layer3.0.conv1" and first.status == "changed" and first.max_abs_diff > 0
    by_path = proof.by_path()
    assert by_path["layer2"].unchanged and by_path["layer3.0.downsample.0"].unchanged
    assert by_path["layer4"].status == "changed" and by_path["fc"].max_abs_diff > 0


def test_removing_a_block_changes_the_outputs_after_it_and_nothing_before(doc):
    from headstudio.core.edits import RemoveLayers

    x = make_input(doc).tensor
    doc.apply(RemoveLayers(("layer2.1",)))
    proof = prove_surgery(doc, x)
    by_path = proof.by_path()
    assert by_path["layer2.0"].unchanged and by_path["layer1"].unchanged
    assert proof.first_difference.path == "layer2"  # the Sequential that lost its second block
    assert proof.first_difference.max_abs_diff > 0
    assert by_path["layer3.0.conv1"].status == "changed" and by_path["fc"].max_abs_diff > 0
    assert "layer2.1" not in by_path and "layer2.1.conv1" not in by_path  # gone: nothing to compare


def test_outputs_over_the_copy_budget_are_compared_by_digest(doc):
    x = make_input(doc).tensor
    tuned = copy.deepcopy(doc.model)
    with torch.no_grad():
        tuned.fc.bias.add_(1.0)
    proof = compare_models(doc.model, tuned, x, budget=0)
    assert proof.by_path()["layer4"].unchanged
    assert proof.by_path()["fc"].status == "changed" and proof.by_path()["fc"].max_abs_diff is None


def test_an_unedited_model_has_nothing_to_prove(doc):
    with pytest.raises(UnsupportedOperationError, match="--against"):
        prove_surgery(doc, make_input(doc).tensor)


def test_the_baseline_shares_weights_and_survives_the_edit(doc):
    before = doc.model.fc
    doc.apply(ReplaceHead("fc", 7, seed=0))
    assert doc.baseline.fc is not before and doc.baseline.fc.weight is before.weight  # shared tensor
    assert doc.baseline.layer1[0].conv1.weight is doc.model.layer1[0].conv1.weight


# ----- several heads
def test_every_head_of_a_multihead_is_shown_and_probing_never_changes_the_output(doc, image):
    given = make_input(doc, image=image)
    doc.apply(AddHead("age", 5, "fc", seed=0))
    heads = {h.name: h for h in probe(doc, given).heads}
    assert set(heads) == {"fc", "age"} and heads["age"].size == 5 and heads["fc"].size == 1000
    assert heads["fc"].classes_from is not None and heads["age"].classes_from is None
    assert heads["fc"].active and heads["age"].active  # no active head: the model returns both
    doc.apply(SetActiveHead("fc", "age"))
    heads = {h.name: h for h in probe(doc, given).heads}
    assert set(heads) == {"fc", "age"} and heads["age"].active and not heads["fc"].active
    with torch.no_grad():
        out = doc.model.eval()(given.tensor)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 5)
    assert [t.index for t in heads["age"].top] == out[0].topk(5).indices.tolist()


def _sequence_doc() -> Document:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(4, 16)
            layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x)).mean(1))

    return Document(Tokens(), Origin("tokens", "module", "tokens"), (1, 10, 4))
