"""Fixtures shared by core and CLI tests: small checkpoints built on the spot, and a CLI runner.

Nothing here downloads weights: every checkpoint is a randomly initialised model saved to tmp.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@dataclass
class CliResult:
    """What a user sees from one ``headstudio`` call: exit status, stdout, stderr."""

    status: int
    out: str
    err: str

    @property
    def records(self) -> list[dict]:
        """The ``--json`` lines, one dict per SOURCE."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., CliResult]:
    """Run ``headstudio ARGS...`` in-process (no 3 s torch import per call) and capture its output."""
    from headstudio.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        status = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(status, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def resnet18_state(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A randomly initialised resnet18 state_dict (real tensors, seeded)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture(scope="session")
def resnet18_pt(tmp_path_factory: pytest.TempPathFactory, resnet18_state: dict) -> Path:
    """resnet18's bare state_dict saved with torch.save (zip format, memory-mappable)."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pt"
    torch.save(resnet18_state, path)
    return path


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A user's own model package on sys.path: ``tinymodels:NAME`` specs resolve to its factories."""
    import sys

    root = tmp_path_factory.mktemp("userpkg")
    (root / "tinymodels.py").write_text(TINY_MODELS)
    sys.path.insert(0, str(root))
    yield "tinymodels"
    sys.path.remove(str(root))
    sys.modules.pop("tinymodels", None)


TINY_MODELS = '''
"""Small user models with the shapes of outputs real projects have."""
import torch
from torch import nn


class TwoHeads(nn.Module):
    """Backbone with a class head and a box head, returned as a tuple."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.cls = nn.Linear(8, num_classes)
        self.box = nn.Linear(8, 4)

    def forward(self, x):
        f = torch.flatten(self.body(x), 1)
        return self.cls(f), self.box(f)


class DictHeads(TwoHeads):
    """Same, returned as a dict."""

    def forward(self, x):
        f = torch.flatten(self.body(x), 1)
        return {"logits": self.cls(f), "boxes": torch.sigmoid(self.box(f))}


class HeadDefinedFirst(nn.Module):
    """The head attribute is defined before the body: only function can tell which one is the head."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(16, 3)
        self.body = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 16))

    def forward(self, x):
        return self.out(self.body(x)).softmax(-1) * 2


class ItemInForward(nn.Module):
    """Reads a value with .item() in forward: fake tensors cannot do that."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x):
        h = self.fc1(x)
        if h.abs().sum().item() >= 0:
            h = h.relu()
        return self.fc2(h)


class Mismatched(nn.Module):
    """Fails on its second layer for any input: 16 features go into a layer expecting 32."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(32, 4)
        self.fc3 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc3(self.fc2(self.fc1(x)))


def two_heads(num_classes=5):
    return TwoHeads(num_classes)


def not_a_model():
    return 42
'''


@pytest.fixture(scope="session")
def scripted_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchScript archive of a small CNN (squeezenet1_1), as torch.jit.save writes it."""
    import warnings

    import torch
    import torchvision

    path = tmp_path_factory.mktemp("script") / "squeezenet_script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(torchvision.models.squeezenet1_1(weights=None).eval()).save(str(path))
    return path


# Architectures the tests' fingerprint index holds: every torchvision classification model plus a broad
# timm sample with near neighbours (same family, other widths/depths), so recognition must discriminate.
TIMM_INDEXED = (
    "resnet10t", "resnet18", "resnet18d", "resnet26", "resnet34", "resnet50", "resnet50d",
    "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny",
    "efficientnet_b0", "tf_efficientnet_b0", "efficientnet_b1", "mobilenetv3_small_050",
    "mobilenetv3_small_100", "mobilenetv3_large_100", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
    "vit_small_patch16_224", "vit_tiny_patch16_384", "regnetx_002", "regnety_002", "densenet121",
    "mixnet_s", "ghostnet_100", "levit_128s", "edgenext_xx_small", "mobilevit_xxs", "poolformer_s12",
    "resnetv2_50", "efficientvit_b0", "fastvit_t8", "repvgg_a0", "lcnet_050", "tinynet_e",
    "hgnetv2_b0", "cspresnet50", "dla34",
)  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def fingerprint_cache(tmp_path_factory: pytest.TempPathFactory):
    """The fingerprint index lives in a temp cache and holds the archs above (built once, on first use)."""
    from headstudio.core.opening import fingerprint_index

    def archs() -> list[str]:
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        return [f"torchvision:{n}" for n in names] + [f"timm:{n}" for n in TIMM_INDEXED]

    cache = tmp_path_factory.mktemp("headstudio-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSTUDIO_CACHE_DIR", str(cache))
    patch.setattr(fingerprint_index, "known_architectures", archs)
    yield cache
    patch.undo()


@pytest.fixture(scope="session")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: the folder of a tiny transformers model of (family, model_type), saved by save_pretrained.

    Each (family, type, overrides) is made once per session; tests must not write into it.
    """
    from hf_fixtures import make_folder

    root = tmp_path_factory.mktemp("hf")
    made: dict[str, Path] = {}

    def get(family: str, model_type: str, **overrides: object) -> Path:
        key = f"{family}-{model_type}-{sorted(overrides.items())}"
        if key not in made:
            made[key] = make_folder(root / str(len(made)), family, model_type, **overrides)
        return made[key]

    return get
