"""GUI test setup: offscreen Qt, settings in a temp folder, dialogs answered by the test (never blocking),
one timeout for background work, and the shared fixtures (a controller, a window, a small real model)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

OPEN_TIMEOUT_MS = 120_000  # opening + tracing in the background on a busy 2-core machine


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory: pytest.TempPathFactory):
    """Recent files and window state go to a fresh temp folder, never the user's settings."""
    from PySide6.QtCore import QCoreApplication, QSettings

    QCoreApplication.setOrganizationName("HeadStudioTests")
    QCoreApplication.setApplicationName("Head Studio Tests")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path_factory.mktemp("qs"))
    )
    yield


@dataclass
class Answers:
    """What the 'user' answers to each dialog, and what the dialogs showed."""

    consent: bool | None = None  # None: a real ConsentDialog gets Enter pressed (its default)
    arch: str | None = None
    save_changes: str = "cancel"
    save_path: tuple[str, str | None] | None = None
    open_path: str | None = None
    errors: list[str] = field(default_factory=list)
    asked: list[tuple[str, object]] = field(default_factory=list)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch, qtbot) -> Answers:
    """Replace every modal dialog the main window uses with the test's answers."""
    from PySide6.QtCore import Qt

    from headstudio.gui import dialogs

    user = Answers()

    def consent(parent, path, globals_):
        user.asked.append(("consent", list(globals_)))
        if user.consent is not None:
            return user.consent
        dialog = dialogs.ConsentDialog(path, globals_, parent)
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.keyClick(dialog, Qt.Key.Key_Return)
        return dialog.result() == dialogs.QDialog.DialogCode.Accepted

    def architecture(parent, path):
        user.asked.append(("arch", path))
        return user.arch

    def save_changes(parent):
        user.asked.append(("save_changes", None))
        return user.save_changes

    monkeypatch.setattr(dialogs, "ask_consent", consent)
    monkeypatch.setattr(dialogs, "ask_architecture", architecture)
    monkeypatch.setattr(dialogs, "ask_save_changes", save_changes)
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, suggested: user.save_path)
    monkeypatch.setattr(dialogs, "ask_open_path", lambda parent, directory="": user.open_path)
    monkeypatch.setattr(dialogs, "show_error", lambda parent, message: user.errors.append(message))
    return user


@pytest.fixture
def window(qtbot, answers):
    """A shown MainWindow whose dialogs are answered by ``answers``."""
    from headstudio.gui import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    yield win
    win.controller.cancel()
    win.controller.wait_idle()
    win.controller.undo_stack.setClean()  # teardown closes the window: no unsaved-edits question


@pytest.fixture
def slow_wait(qtbot) -> Callable[[Callable[[], object]], None]:
    """slow_wait(predicate): wait as long as background work (open, trace) may take."""
    return lambda predicate: qtbot.waitUntil(predicate, timeout=OPEN_TIMEOUT_MS)


@pytest.fixture
def traced(qtbot):
    """``with traced(controller[, *more_signals]):`` waits for the (re-)trace the block starts."""

    def wait(controller, *more):
        if more:
            return qtbot.waitSignals([*more, controller.traceReady], timeout=OPEN_TIMEOUT_MS)
        return qtbot.waitSignal(controller.traceReady, timeout=OPEN_TIMEOUT_MS)

    return wait


@pytest.fixture
def open_in(traced, slow_wait):
    """open_in(win, source, **kw): open like a user and wait until traced and idle."""

    def open_(win, source: str | Path, **kwargs) -> None:
        with traced(win.controller):
            win.open(str(source), **kwargs)
        slow_wait(lambda: not win.controller.busy)

    return open_


@pytest.fixture
def retraced(traced, slow_wait):
    """retraced(win, action): do an edit or shape change and wait for the background re-trace."""

    def run(win, action) -> None:
        with traced(win.controller):
            action()
        slow_wait(lambda: not win.controller.busy)

    return run


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
    ctl.wait_idle()


@pytest.fixture
def open_model(controller, traced, slow_wait) -> Callable[..., object]:
    """open_model(source, arch=None) opens in the background and returns once shapes are traced."""

    def open_(source: str | Path, arch: str | None = None) -> object:
        with traced(controller):
            controller.open(str(source), arch=arch)
        slow_wait(lambda: not controller.busy)
        return controller.document

    return open_
