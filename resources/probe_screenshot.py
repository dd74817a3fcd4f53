"""Make resources/probe.png: the app with the Probe panel after probing an edited, two-headed resnet50.

    xvfb-run -a .venv/bin/python resources/probe_screenshot.py [resources/probe.png]

Weights are random (nothing is downloaded), so the class names on the bars are ImageNet's but the
scores mean nothing; the picture shows the panel, the active-head choice and the proof colours.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer


def main(target: Path) -> int:
    import numpy as np
    from PIL import Image

    from headstudio.core.edits import AddHead
    from headstudio.gui.app import application
    from headstudio.gui.main_window import MainWindow

    app = application()
    folder = tempfile.mkdtemp()
    yy, xx = np.mgrid[0:360, 0:480]
    rgb = np.stack([xx * 255 // 480, yy * 255 // 360, ((xx // 30 + yy // 30) % 2) * 180], axis=-1)
    image = Path(folder) / "tiles.jpg"
    Image.fromarray(rgb.astype("uint8")).save(image)
    window = MainWindow(settings=QSettings(str(Path(folder) / "s.ini"), QSettings.Format.IniFormat))
    window.quiet = True
    window.resize(1440, 900)
    window.show()
    ctl = window.controller
    _wait(app, ctl, lambda: window.open("torchvision:resnet50"), ctl.traceReady)
    _wait(app, ctl, lambda: ctl.push_edit(AddHead("age", 5, "fc", seed=0)), ctl.traceReady)
    window.probe.set_image(str(image))
    _wait(app, ctl, window.probe.run, ctl.probeFinished)
    window.tree_panel.view.expandToDepth(0)
    ctl.select("layer1")
    window.probe_dock.raise_()
    window.resizeDocks([window.probe_dock], [460], _horizontal())
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    ok = window.grab().save(str(target), "PNG")
    ctl.undo_stack.setClean()
    window.close()
    return 0 if ok else 1


def _horizontal():
    from PySide6.QtCore import Qt

    return Qt.Orientation.Horizontal


def _wait(app, ctl, start, signal) -> None:
    loop = QEventLoop()
    signal.connect(loop.quit)
    start()
    QTimer.singleShot(600_000, loop.quit)
    loop.exec()
    signal.disconnect(loop.quit)
    while ctl.busy:
        app.processEvents()
        time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("probe.png"))))
