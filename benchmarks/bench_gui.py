"""GUI responsiveness: how long the event loop stalls while the app opens and traces the vit_h_14 checkpoint.

A QTimer ticks every 10 ms on the UI thread and records the gap between ticks from the moment the open
starts until the model is traced and idle; the max and median gap (minus the 10 ms period) are the stalls
a user would feel (target: max < 100 ms). Also reported: when the window first appeared relative to the
process start and whether ``import torch`` had already happened then, and a lazy tree build over a
synthetic model of 10,000+ modules. The checkpoint is generated once by bench_inspect's cache.

    .venv/bin/python benchmarks/bench_gui.py [--repeat 3] [--warm] [--where] [--shell-only] [--model vit_h_14]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
TICK_MS = 10
TARGET_MS = 100.0

_RUN = r"""
import os, sys, time, json
started = time.perf_counter()
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
from headstudio.gui.app import application
from headstudio.gui.main_window import MainWindow
app = application()
if sys.argv[3] == "shell-only":  # leave the panels out, to tell the shell's stalls from theirs
    MainWindow._build_next_panel = lambda self: False
window = MainWindow()
window.quiet = True
window.resize(1440, 900)
window.show()
app.processEvents()
shown = time.perf_counter() - started
torch_at_show = "torch" in sys.modules
if sys.argv[4] == "warm":  # as from the start page: PyTorch loaded in the background before the open
    window.controller.warm_up()
    while window.controller.busy:
        app.processEvents()
        time.sleep(0.01)
import threading, traceback
def worker_at():  # where another thread was when the UI thread got the GIL back
    main = threading.main_thread().ident
    for ident, frame in sys._current_frames().items():
        if ident != main:
            return " < ".join(f"{f.name} ({os.path.basename(f.filename)}:{f.lineno})"
                              for f in reversed(traceback.extract_stack(frame)[-3:]))
    return ""
gaps, clock, last, phase, long = [], QElapsedTimer(), [0], ["start"], []
cpu = [time.thread_time()]
clock.start()
def tick():
    now = clock.elapsed()
    gaps.append(now - last[0])
    ui_cpu = (time.thread_time() - cpu[0]) * 1000
    if now - last[0] > 100:
        long.append([now - last[0], phase[0], worker_at(), ui_cpu])
    last[0], cpu[0] = now, time.thread_time()
timer = QTimer(interval=%(tick)d)
timer.timeout.connect(tick)
loop = QEventLoop()
ctl = window.controller
def done():
    if ctl.busy:
        QTimer.singleShot(5, done)
    else:
        QTimer.singleShot(300, loop.quit)  # keep measuring while panels react to the new model
ctl.traceReady.connect(done)
ctl.progressChanged.connect(lambda message, fraction: phase.__setitem__(0, message))
ctl.documentChanged.connect(lambda: phase.__setitem__(0, "panels react to the new model"))
ctl.errorRaised.connect(lambda m: (print(m, file=sys.stderr), loop.quit()))
timer.start()
opened = time.perf_counter()
window.open(sys.argv[1], arch=sys.argv[2])
loop.exec()
timer.stop()
print(json.dumps({"shown": shown, "torch_at_show": torch_at_show, "open": time.perf_counter() - opened - 0.3,
                  "gaps": gaps[1:], "long": long, "traced": ctl.tree is not None}))
window.controller.undo_stack.setClean()
window.close()
"""


def measure_open(path: Path, arch: str, shell_only: bool = False, warm: bool = False) -> dict:
    """One fresh app process opening ``path``: window-shown time, open time, tick gaps."""
    import json

    code = _RUN % {"tick": TICK_MS}
    out = subprocess.run(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-c",
            code,
            str(path),
            arch,
            "shell-only" if shell_only else "all",
            "warm" if warm else "cold",
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"the app process failed ({out.returncode}):\n{out.stderr[-3000:]}")
    out = out.stdout
    return json.loads(out.strip().splitlines()[-1])


def tree_build_seconds(blocks: int = 3400) -> tuple[int, float, float]:
    """(modules, seconds to snapshot the tree, seconds to build model + proxy + view and show the top)."""
    from PySide6.QtWidgets import QApplication, QTreeView
    from torch import nn

    from headstudio.core.model.tree import build_tree
    from headstudio.gui.tree_model import ModuleFilter, ModuleTreeModel

    QApplication.instance() or QApplication([])
    wide = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(blocks)])
    started = time.perf_counter()
    root = build_tree(wide, None)
    snapshot = time.perf_counter() - started
    started = time.perf_counter()
    model, proxy, view = ModuleTreeModel(), ModuleFilter(), QTreeView()
    model.set_tree(root)
    proxy.setSourceModel(model)
    view.setModel(proxy)
    view.setUniformRowHeights(True)
    view.resize(800, 600)
    view.expand(proxy.index(0, 0))
    view.show()
    QApplication.processEvents()
    shown = time.perf_counter() - started
    return sum(1 for _ in root.walk()), snapshot, shown


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="vit_h_14")
    parser.add_argument("--shell-only", action="store_true", help="without the panels (head editor, …)")
    parser.add_argument("--warm", action="store_true", help="open after the start page's PyTorch warm-up")
    parser.add_argument("--where", action="store_true", help="show where the worker thread was at each stall")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "headstudio-bench")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench_inspect import checkpoint

    path = checkpoint(args.workdir, args.model)
    runs = [
        measure_open(path, f"torchvision:{args.model}", args.shell_only, args.warm)
        for _ in range(args.repeat)
    ]
    stalls = [max(g - TICK_MS, 0) for run in runs for g in run["gaps"]]
    worst = [max(run["gaps"]) - TICK_MS for run in runs]
    size = path.stat().st_size / 1e9
    what = "shell only (no panels)" if args.shell_only else "whole window"
    what += ", opened after warm-up" if args.warm else ", opened at once (cold)"
    print(f"{args.model} ({size:.2f} GB), {what}, {args.repeat} fresh app processes, tick {TICK_MS} ms")
    shown = statistics.median(r["shown"] for r in runs)
    print(
        f"  window shown after      {shown:6.2f} s "
        f"(torch imported by then: {any(r['torch_at_show'] for r in runs)})"
    )
    print(f"  open + trace            {statistics.median(r['open'] for r in runs):6.2f} s (median)")
    verdict = "OK" if max(worst) < TARGET_MS else "MISSED"
    print(
        f"  max event-loop stall    {statistics.median(worst):6.0f} ms "
        f"(median of per-run max; worst {max(worst):.0f} ms)"
    )
    print(f"                          target < {TARGET_MS:.0f} ms: {verdict}")
    print(f"  median stall            {statistics.median(stalls):6.1f} ms over {len(stalls)} ticks")
    for run in runs:
        for gap, where, worker, ui_cpu in run["long"]:
            print(f"    stall {gap:5.0f} ms during: {where}")
            if args.where:  # UI thread busy itself, or waiting for the GIL while the worker ran
                print(f"      UI thread CPU {ui_cpu:.0f} ms; worker at: {worker}")
    modules, snapshot, shown_tree = tree_build_seconds()
    print(
        f"  tree of {modules:,} modules: snapshot {snapshot:.2f} s, "
        f"model+proxy+view shown {shown_tree * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
