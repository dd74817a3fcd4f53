"""The Qt binding itself: a long session must not wear out Python's own objects (PySide6 6.12.0 did)."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    text = Signal(str)
    flag = Signal(bool)


def test_emitting_signals_to_python_receivers_keeps_true_alive(qapp) -> None:
    emitter = _Emitter()
    received: list[object] = []
    emitter.text.connect(received.append)
    emitter.flag.connect(received.append)
    before = sys.getrefcount(True)
    for _ in range(2000):
        emitter.text.emit("x")
        emitter.flag.emit(True)
    assert len(received) == 4000
    # 6.12.0 lost one reference per emit; after ~28k Python aborts with "deallocating True"
    assert sys.getrefcount(True) >= before - 10
