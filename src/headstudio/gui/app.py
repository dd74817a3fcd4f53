"""``headstudio [SOURCE] [--screenshot PNG]``: the QApplication, its command line, and screenshots."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[3] / "resources"
SCREENSHOT_CLASSES = 10  # the head editor's preview in a screenshot: a 10-class head
SCREENSHOT_SIZE = (1440, 900)
SCREENSHOT_TIMEOUT_MS = 300_000


def build_parser() -> argparse.ArgumentParser:
    """The app's command line (subcommands such as ``inspect`` are handled by the cli package)."""
    from headstudio.core.model.shape_text import sizes_argument

    parser = argparse.ArgumentParser(prog="headstudio", description="Head Studio desktop app")
    parser.add_argument("source", nargs="?", metavar="SOURCE", help="checkpoint file or spec to open")
    parser.add_argument("--arch", metavar="SPEC", help="architecture for bare weights")
    parser.add_argument(
        "--input-shape", type=sizes_argument(), metavar="N,C,H,W", help="input shape to trace"
    )
    parser.add_argument("--trust", action="store_true", help="allow code inside this file to run")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of unexpected failures")
    parser.add_argument("--screenshot", metavar="PNG", help="render the window to PNG once traced and exit")
    return parser


def display_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why Qt would abort for want of a display, as one line saying what to do; None when it can start.

    Qt itself prints a page about platform plugins and aborts (core dump) in these cases.
    """
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return None
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0]
    x11, wayland = bool(env.get("DISPLAY")), bool(env.get("WAYLAND_DISPLAY"))
    fix = (
        "run it under a virtual display (xvfb-run -a headstudio ...), or set QT_QPA_PLATFORM=offscreen "
        "for --screenshot"
    )
    if platform == "xcb" and not x11:
        return f"QT_QPA_PLATFORM=xcb but DISPLAY is not set: no X display to open the window on; {fix}"
    if platform.startswith("wayland") and not wayland:
        return f"QT_QPA_PLATFORM={platform} but WAYLAND_DISPLAY is not set; {fix}"
    if not platform and not (x11 or wayland):
        return f"no display (DISPLAY and WAYLAND_DISPLAY are not set), so no window can open; {fix}"
    if platform in ("", "xcb") and x11 and not wayland:
        return _xcb_libraries_problem()
    return None


def _xcb_libraries_problem() -> str | None:
    """Qt's X11 plugin needs system libraries pip cannot install; name the first one missing."""
    import ctypes

    from PySide6 import __file__ as pyside

    plugin = Path(pyside).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.exists():
        return None
    try:
        ctypes.CDLL(str(plugin))  # loads its dependencies as Qt would, without aborting
    except OSError as err:
        missing = str(err).rsplit(": cannot open", 1)[0].rsplit(": ", 1)[-1]
        return (
            f"Qt's X11 platform plugin cannot load: {missing} is missing; install Qt's system packages "
            "(see README, 'Linux system packages'), or set QT_QPA_PLATFORM=offscreen for --screenshot"
        )
    return None


def application():
    """The running QApplication, created (with name and icon) if there is none yet."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Head Studio")
    app.setOrganizationName("HeadStudio")
    app.setDesktopFileName("headstudio")
    icon = RESOURCES / "headstudio.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Launch the app; the window appears before the core (and torch) is imported."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    problem = display_problem()
    if problem is not None:
        print(f"headstudio: {problem}", file=sys.stderr)
        return 2
    app = application()
    from .main_window import MainWindow

    if args.screenshot:
        import tempfile

        from PySide6.QtCore import QSettings

        with tempfile.TemporaryDirectory() as folder:  # a screenshot shows the default layout
            settings = QSettings(str(Path(folder) / "screenshot.ini"), QSettings.Format.IniFormat)
            window = MainWindow(settings=settings)
            if not args.source:
                print("headstudio: --screenshot needs a SOURCE to open", file=sys.stderr)
                return 2
            return screenshot(window, args, Path(args.screenshot))
    window = MainWindow()
    install_error_hook(window, debug=args.debug)
    window.show()
    if args.source:
        window.open(args.source, arch=args.arch, trust=args.trust, input_shape=args.input_shape)
    else:
        window.controller.warm_up()  # the start page is up; PyTorch loads while the user picks a file
    return app.exec()


def install_error_hook(window, debug: bool = False) -> None:
    """An exception escaping into Qt's event loop becomes the one-line error box (traceback: --debug)."""
    from .workers import one_line

    def hook(kind: type[BaseException], value: BaseException, tb: object) -> None:
        if debug:
            sys.__excepthook__(kind, value, tb)  # type: ignore[arg-type]
        window.show_error(one_line(value) + ("" if debug else " (rerun with --debug for the traceback)"))

    sys.excepthook = hook


def screenshot(window, args: argparse.Namespace, target: Path) -> int:
    """Open, wait for the trace, expand a bit, select the head, grab the window to ``target``."""
    from PySide6.QtCore import QEventLoop, QTimer

    window.quiet = True
    window.resize(*SCREENSHOT_SIZE)
    window.show()
    loop = QEventLoop()
    result = {"code": 1}
    ctl = window.controller

    def traced() -> None:
        if ctl.busy:
            QTimer.singleShot(50, traced)
            return
        panel = window.tree_panel
        panel.view.expandToDepth(1)
        panel.go_to_head()
        window.resize(*SCREENSHOT_SIZE)
        editor = window.head_editor
        if editor is not None:  # preview a 10-class head; grab once it shows (or after 10 s)
            editor.previewUpdated.connect(lambda: QTimer.singleShot(300, grab), type=_single_shot())
            editor.numClasses.setValue(SCREENSHOT_CLASSES)
            QTimer.singleShot(10_000, grab)
        else:
            QTimer.singleShot(1000, grab)

    def grab() -> None:
        if result.get("done"):
            return
        result["done"] = True
        target.parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(str(target), "PNG")
        if not ok:
            print(f"headstudio: could not write {target}", file=sys.stderr)
        result["code"] = 0 if ok else 1
        loop.quit()

    def failed(*_: object) -> None:
        if ctl.document is None:
            loop.quit()

    ctl.traceReady.connect(traced, type=_single_shot())
    ctl.openFailed.connect(failed)
    QTimer.singleShot(SCREENSHOT_TIMEOUT_MS, loop.quit)
    window.open(args.source, arch=args.arch, trust=args.trust, input_shape=args.input_shape)
    loop.exec()
    window.controller.wait_idle()
    window.close()
    return result["code"]


def _single_shot():
    from PySide6.QtCore import Qt

    return Qt.ConnectionType.SingleShotConnection
