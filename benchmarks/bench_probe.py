"""Probe speed and app responsiveness: resnet50 on one 224x224 image.

1. In one process, interleaved round by round: a plain ``model(x)`` under ``torch.no_grad()`` on the
   prepared input, and ``probe(doc, make_input(doc, image=...))`` (image decode, resize, crop, normalise,
   the forward with hooks on the heads, top-k with class names). Medians of ``--repeat`` rounds after a
   warm-up; target: probe <= 1.5x the plain call. CPU time (all threads) is shown too: it moves less than
   wall time when other work shares the machine.
2. The app (offscreen) opens the model, then the Probe panel runs the image ``--gui-runs`` times (every
   module's output summarised), once more after an edit (with the surgery proof). A QTimer ticks every
   10 ms on the UI thread; the longest gap minus the period is the longest stall (target < 100 ms).

    .venv/bin/python benchmarks/bench_probe.py [--repeat 5] [--gui-runs 3] [--model resnet50]
                                               [--threads N] [--core-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
TICK_MS = 10
TARGET_RATIO = 1.5
TARGET_STALL_MS = 100.0


def synthetic_image(folder: Path) -> Path:
    """A 640x480 JPEG photo-like picture (gradients and shapes), so decoding costs what a photo costs."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:480, 0:640]
    rgb = np.stack([xx * 255 // 640, yy * 255 // 480, ((xx // 40 + yy // 40) % 2) * 200], axis=-1)
    path = folder / "photo.jpg"
    Image.fromarray(rgb.astype("uint8")).save(path, quality=90)
    return path


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_core(spec: str, image: Path, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Interleaved (wall, cpu) seconds of the plain call and the probe, after one warm-up each."""
    import torch

    from headstudio.core.model.probe import make_input, probe
    from headstudio.core.opening.sources import open_source

    doc = open_source(spec, materialize=True)
    doc.trace()  # the app and the CLI have traced the model before a probe
    x = make_input(doc, image=image).tensor
    model = doc.model.eval()

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def probed() -> None:
        probe(doc, make_input(doc, image=image))

    plain(), probed()
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "probe": []}
    for _ in range(repeat):
        runs["plain"].append(_timed(plain))
        runs["probe"].append(_timed(probed))
    return runs


def measure_gui(spec: str, image: Path, runs: int) -> list[tuple[str, float, float]]:
    """(what, longest stall ms, median stall ms) for each probe run in the app."""
    from headstudio.gui.app import application
    from headstudio.gui.main_window import MainWindow

    app = application()
    window = MainWindow()
    window.quiet = True
    window.resize(1440, 900)
    window.show()
    ctl = window.controller
    _wait(app, ctl, lambda: window.open(spec), ctl.traceReady)
    results = [("idle app, no probe (control), 5 s", *_summary(_stalls_idle(5000)))]
    for index in range(runs + 1):
        if index == runs:
            from headstudio.core.edits import ReplaceHead

            _wait(app, ctl, lambda: ctl.push_edit(ReplaceHead("fc", 10, seed=0)), ctl.traceReady)
        stalls = _stalls_while_probing(window, image)
        what = "probe + surgery proof (edited)" if index == runs else f"probe {index + 1}"
        results.append((what, *_summary(stalls)))
    ctl.undo_stack.setClean()
    window.close()
    return results


def _summary(stalls: list[float]) -> tuple[float, float]:
    return max(stalls), statistics.median(stalls)


def _stalls_idle(duration_ms: int) -> list[float]:
    """Stalls of the event loop doing nothing: what the machine's load alone costs the UI thread."""
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

    gaps, clock, last = [], QElapsedTimer(), [0]
    clock.start()

    def tick() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer(interval=TICK_MS)
    timer.timeout.connect(tick)
    loop = QEventLoop()
    QTimer.singleShot(duration_ms, loop.quit)
    timer.start()
    loop.exec()
    timer.stop()
    return [max(g - TICK_MS, 0) for g in gaps]


def _stalls_while_probing(window, image: Path) -> list[float]:
    """Run the Probe panel once; the UI thread's stalls (tick gaps minus the period) meanwhile, in ms."""
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

    ctl = window.controller
    window.probe.set_image(str(image))
    gaps, clock, last, cpu = [], QElapsedTimer(), [0], [time.thread_time()]
    phase = ["start"]
    clock.start()

    def tick() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        if now - last[0] > TARGET_STALL_MS:  # was the UI thread busy itself, or waiting for the CPU/GIL?
            ui_ms = (time.thread_time() - cpu[0]) * 1000
            print(
                f"    stall {now - last[0]} ms during '{phase[0]}', UI thread CPU {ui_ms:.0f} ms", flush=True
            )
        last[0], cpu[0] = now, time.thread_time()

    ctl.progressChanged.connect(lambda message, fraction: phase.__setitem__(0, message))
    ctl.probeFinished.connect(lambda *_: phase.__setitem__(0, "showing the results"))

    timer = QTimer(interval=TICK_MS)
    timer.timeout.connect(tick)
    timer.start()
    loop = QEventLoop()
    done = ctl.probeFinished.connect(lambda *_: QTimer.singleShot(300, loop.quit))  # panels redraw meanwhile
    failed = ctl.errorRaised.connect(lambda message: (print(message, file=sys.stderr), loop.quit()))
    window.probe.run()
    loop.exec()
    timer.stop()
    ctl.probeFinished.disconnect(done)
    ctl.errorRaised.disconnect(failed)
    return [max(g - TICK_MS, 0) for g in gaps]


def _wait(app, ctl, start, signal) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    signal.connect(loop.quit)
    start()
    QTimer.singleShot(600_000, loop.quit)
    loop.exec()
    signal.disconnect(loop.quit)
    while ctl.busy:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gui-runs", type=int, default=3)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--threads", type=int, help="torch threads (1: CPU times free of thread spinning)")
    parser.add_argument("--core-only", action="store_true", help="skip the app's stall measurement")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    spec = f"torchvision:{args.model}"
    with tempfile.TemporaryDirectory() as folder:
        image = synthetic_image(Path(folder))
        runs = measure_core(spec, image, args.repeat)
        wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
        ratio = wall["probe"] / wall["plain"]
        print(f"{args.model}, one 640x480 JPEG -> 224x224, {args.repeat} interleaved rounds, medians")
        for key, label in (("plain", "plain model(x), no_grad"), ("probe", "probe (image to top-5)")):
            print(f"  {label:26s} {wall[key] * 1000:7.0f} ms wall  {cpu[key] * 1000:7.0f} ms CPU")
        verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
        print(f"  probe / plain: {ratio:.2f}x wall, {cpu['probe'] / cpu['plain']:.2f}x CPU "
              f"(target <= {TARGET_RATIO}x: {verdict})")  # fmt: skip
        pairs = zip(runs["plain"], runs["probe"], strict=True)
        print(
            "  rounds (plain, probe) wall ms: "
            + ", ".join(f"({p[0] * 1e3:.0f}, {q[0] * 1e3:.0f})" for p, q in pairs)
        )
        if args.core_only:
            return 0
        stalls = measure_gui(spec, image, args.gui_runs)
    print(f"app, Probe panel on {args.model} (every module summarised), tick {TICK_MS} ms")
    for what, worst, median in stalls:
        print(f"  {what:32s} longest stall {worst:5.0f} ms, median {median:4.1f} ms")
    worst = max(s for what, s, _ in stalls if not what.startswith("idle"))
    print(f"  longest stall overall {worst:.0f} ms (target < {TARGET_STALL_MS:.0f} ms: "
          f"{'ok' if worst < TARGET_STALL_MS else 'MISSED'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
