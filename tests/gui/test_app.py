"""Starting the app: without a display it says in one line what to do, instead of Qt's abort."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headstudio.gui import app

SRC = str(Path(app.__file__).resolve().parents[2])


def start_app(env_changes: dict[str, str | None], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": SRC}
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    code = "import sys; from headstudio.cli import main; sys.exit(main([]))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland displays are a Linux matter")
@pytest.mark.parametrize(
    "platform",
    [None, "xcb"],
    ids=["no display at all", "QT_QPA_PLATFORM=xcb without DISPLAY"],
)
def test_without_a_display_the_app_says_in_one_line_what_to_do(tmp_path, platform):
    done = start_app({"DISPLAY": None, "WAYLAND_DISPLAY": None, "QT_QPA_PLATFORM": platform}, tmp_path)
    assert done.returncode == 2  # not Qt's abort (-6 / 134)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headstudio: ")
    assert "xvfb-run" in lines[0] and "QT_QPA_PLATFORM" in lines[0]
    assert "DISPLAY" in lines[0]


def test_display_problem_knows_when_the_app_can_start(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert app.display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert app.display_problem({"WAYLAND_DISPLAY": "wayland-0"}) is None
    assert "WAYLAND_DISPLAY" in app.display_problem({"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"})
    monkeypatch.setattr(sys, "platform", "darwin")
    assert app.display_problem({}) is None  # macOS and Windows always have their own platform


def test_missing_qt_system_libraries_are_named_with_where_to_read_more(monkeypatch):
    import ctypes

    def refuse(path, *args, **kwargs):
        raise OSError("libxcb-icccm.so.4: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", refuse)
    problem = app.display_problem({"DISPLAY": ":0"})
    assert problem is not None and "libxcb-icccm.so.4 is missing" in problem
    assert "README" in problem and "\n" not in problem
