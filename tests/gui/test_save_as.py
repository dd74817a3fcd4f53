"""The app's Save As: the name decides the format unless a format is picked; contradictions are refused."""

from __future__ import annotations

import os

import pytest
import torch

LIT_ARCH = "container_zoo:tiny_net"
SAVE_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def lit_ckpt(tmp_path_factory: pytest.TempPathFactory):
    from container_zoo import make_lightning_checkpoint

    return make_lightning_checkpoint(tmp_path_factory.mktemp("gui_lightning"))


@pytest.fixture
def lit_window(window, open_in, answers, lit_ckpt, retraced):
    """The Lightning checkpoint opened with its architecture, its head replaced by 3 classes."""
    from headstudio.core.edits import ReplaceHead

    answers.arch = LIT_ARCH
    open_in(window, lit_ckpt)
    retraced(window, lambda: window.controller.push_edit(ReplaceHead("fc", 3)))
    return window


def test_the_default_filter_lets_the_typed_name_decide(monkeypatch, tmp_path):
    from headstudio.gui import dialogs

    default = next(iter(dialogs.SAVE_FILTERS))
    for typed, expected in (("x.ckpt", "x.ckpt"), ("x", "x.ckpt")):
        answer = (str(tmp_path / typed), default)
        monkeypatch.setattr(dialogs.QFileDialog, "getSaveFileName", lambda *args, a=answer: a)
        assert dialogs.ask_save_path(None, str(tmp_path / "m-edited.ckpt")) == (
            str(tmp_path / expected),
            None,
        )


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".tar", ".safetensors"])
def test_save_as_writes_the_format_the_name_says(qtbot, lit_window, answers, tmp_path, suffix):
    target = tmp_path / f"edited{suffix}"
    answers.save_path = (str(target), None)
    with qtbot.waitSignal(lit_window.controller.saveFinished, timeout=SAVE_TIMEOUT_MS) as saved:
        lit_window.action_save_as.trigger()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        assert saved.args[0].format == "safetensors" and load_file(target)["fc.weight"].shape == (3, 8)
    else:
        container = torch.load(target, weights_only=True)  # torch.load reads it: a container, kept
        assert saved.args[0].format == "checkpoint" and container["hyper_parameters"]["num_classes"] == 3
        assert container["state_dict"]["model.fc.weight"].shape == (3, 8) and "optimizer_states" in container


def test_save_as_with_a_format_contradicting_the_name_shows_one_line_and_writes_nothing(
    qtbot, lit_window, answers, tmp_path
):
    answers.save_path = (str(tmp_path / "edited.ckpt"), "safetensors")
    lit_window.action_save_as.trigger()
    qtbot.waitUntil(lambda: bool(answers.errors), timeout=SAVE_TIMEOUT_MS)
    assert "misname" in answers.errors[-1] and "\n" not in answers.errors[-1]
    qtbot.waitUntil(lambda: not lit_window.controller.busy, timeout=SAVE_TIMEOUT_MS)
    assert os.listdir(tmp_path) == []
