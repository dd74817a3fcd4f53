"""Fixtures shared by the panel tests: a controller with a small model opened and traced."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Callable
from pathlib import Path

import pytest

OPEN_TIMEOUT_MS = 120_000


@pytest.fixture(scope="session")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (randomly initialised) resnet18 state_dict on disk: weights to compare bit-exactly."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture
def controller(qtbot):
    """The app's DocumentController, as the main window uses it."""
    from headstudio.gui.controller import DocumentController

    ctl = DocumentController()
    yield ctl
    wait = getattr(ctl, "wait_idle", None) or getattr(ctl, "shutdown", None)
    if callable(wait):
        wait()


@pytest.fixture
def open_model(qtbot, controller) -> Callable[..., object]:
    """open_model(source, arch=None) opens in the background and returns once shapes are traced."""

    def open_(source: str | Path, arch: str | None = None) -> object:
        with qtbot.waitSignal(controller.traceReady, timeout=OPEN_TIMEOUT_MS):
            controller.open(str(source), arch=arch)
        qtbot.waitUntil(lambda: not getattr(controller, "busy", False), timeout=OPEN_TIMEOUT_MS)
        return controller.document

    return open_
