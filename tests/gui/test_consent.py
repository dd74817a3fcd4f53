"""The app asks before a file's code runs, lists exactly that code, shows names as plain text."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torchvision
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel
from safetensors.torch import save_file

from headstudio.core.opening.checkpoints import RECIPE_KEY
from headstudio.core.opening.specs import build_model, parse_spec
from headstudio.gui import dialogs

HOSTILE = ["x<!--.pt", "<br><b>safe.pt", "a&lt;b<script>.pt"]


@pytest.mark.parametrize("name", HOSTILE)
def test_consent_dialog_shows_hostile_file_names_as_plain_text(qtbot, tmp_path, name):
    dialog = dialogs.ConsentDialog(str(tmp_path / name), ["os.system", "<i>x</i>"])
    qtbot.addWidget(dialog)
    labels = {label.objectName(): label for label in dialog.findChildren(QLabel)}
    shown = labels["consentFile"]
    assert shown.text() == name and shown.textFormat() == Qt.TextFormat.PlainText
    warning = labels["consentText"]
    assert "runs code from the file" in warning.text() and warning.textFormat() == Qt.TextFormat.PlainText
    items = [dialog.globals_list.item(i).text() for i in range(dialog.globals_list.count())]
    assert items == ["os.system", "<i>x</i>"]


@pytest.fixture
def evil_recipe_file(tmp_path):
    marker = tmp_path / "PWNED"
    spec = f"os:mkdir(path={str(marker)!r})"
    with pytest.raises(Exception):  # noqa: B017 (live: building it makes the directory)
        build_model(parse_spec(spec))
    assert marker.exists()
    marker.rmdir()
    path = tmp_path / "evil.safetensors"
    text = json.dumps({"format": "headstudio.recipe", "version": 1, "arch": spec, "input_shape": [1, 4]})
    save_file({"weight": torch.zeros(2, 4)}, str(path), metadata={RECIPE_KEY: text})
    return path, marker


def test_opening_a_file_whose_recipe_names_code_asks_first_and_refusal_runs_nothing(
    window, qtbot, answers, evil_recipe_file
):
    path, marker = evil_recipe_file
    window.open(str(path))
    qtbot.waitUntil(lambda: bool(answers.asked) and not window.controller.busy, timeout=60_000)
    kind, listed = answers.asked[0]
    assert kind == "consent" and listed == [f"os.mkdir(path={str(marker)!r})"]
    assert not marker.exists() and window.controller.document is None and not answers.errors


def test_allowing_it_runs_exactly_that_and_a_bad_result_is_one_line(window, qtbot, answers, evil_recipe_file):
    path, marker = evil_recipe_file
    answers.consent = True
    window.open(str(path))
    qtbot.waitUntil(lambda: bool(answers.errors), timeout=60_000)
    assert marker.exists() and len(answers.asked) == 1
    assert "\n" not in answers.errors[0] and "not a torch.nn.Module" in answers.errors[0]


def test_a_torchscript_file_opened_with_consent_can_be_browsed(window, open_in, answers, tmp_path, qtbot):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torchvision.models.squeezenet1_1(weights=None)).save(str(path))
    answers.consent = True
    open_in(window, path)
    assert answers.asked[0] == ("consent", ["TorchScript program"])
    view, model = window.tree_panel.view, window.tree_panel.model
    for row in range(model.rowCount()):
        view.setCurrentIndex(model.index(row, 0))  # the inspector reads each module: nothing may raise
    qtbot.wait(200)
    assert not answers.errors


def test_an_exception_escaping_into_the_event_loop_is_shown_as_one_line(window, answers, monkeypatch):
    from headstudio.gui.app import install_error_hook

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    install_error_hook(window)
    try:
        raise ZeroDivisionError("division by zero\nmore detail")
    except ZeroDivisionError as err:
        sys.excepthook(type(err), err, err.__traceback__)
    assert len(answers.errors) == 1
    assert (
        answers.errors[0].startswith("unexpected ZeroDivisionError: division by zero")
        and "--debug" in answers.errors[0]
    )
