"""The start page: what needs a model waits for one, and an empty recent list says so."""

from __future__ import annotations

MODEL_ACTIONS = (
    "actionSave",
    "actionSaveAs",
    "actionMarkHead",
    "actionGoToHead",
    "actionFreezeBackbone",
    "actionShowCode",
)


def actions(win) -> dict[str, bool]:
    from PySide6.QtGui import QAction

    return {name: win.findChild(QAction, name).isEnabled() for name in MODEL_ACTIONS}


def test_actions_that_need_a_model_are_disabled_until_one_is_open(window, open_in):
    assert actions(window) == dict.fromkeys(MODEL_ACTIONS, False)
    assert window.findChild(type(window.action_open), "actionOpen").isEnabled()
    open_in(window, "torchvision:squeezenet1_1")
    assert actions(window) == dict.fromkeys(MODEL_ACTIONS, True)
    window.controller.close_document()
    assert actions(window) == dict.fromkeys(MODEL_ACTIONS, False)


def test_an_empty_recent_list_says_so_instead_of_a_blank_box(window, tmp_path):
    page = window.start_page
    assert page.recent.isHidden() and not page.noRecent.isHidden()
    assert "No recent files" in page.noRecent.text()
    assert page.noRecent.parentWidget().height() < page.height() // 4  # a line, not a large blank box
    window.add_recent(str(tmp_path / "model.pt"))
    assert not page.recent.isHidden() and page.noRecent.isHidden()
    assert page.recent.count() == 1
