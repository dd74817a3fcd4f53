"""Measuring a command in a fresh subprocess: wall time and peak RSS. Shared by the benchmark scripts.

Peak RSS comes from the kernel's own high-water mark for that one child (``os.wait4`` rusage), so no
sampling can miss a short spike. File-backed pages (memory-mapped checkpoints) count once touched,
which is what a user's ``top`` shows too. Where ``wait4`` is missing (Windows), psutil is polled.

Linux carries a process's RSS high-water mark across ``exec`` into the child's ``ru_maxrss``, so a
child spawned straight from a large parent (one that imported torch) would report at least the
parent's peak. The command is therefore started by a tiny launcher interpreter, whose own small
peak is the only thing its child inherits; the launcher reports the child's wall time and peak.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Run:
    """One finished subprocess: exit code, wall and CPU seconds, peak RSS in bytes and what it printed.

    CPU time (user + system) barely moves when other work shares the machine; wall time does.
    """

    returncode: int
    wall: float
    peak_rss: int
    stdout: str
    stderr: str
    cpu: float | None = None


@dataclass
class Series:
    """Repeated runs of one labelled command; medians are what the tables show."""

    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def wall(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(r.wall for r in self.runs)

    @property
    def peak_rss(self) -> float:
        """Median peak RSS in bytes."""
        return statistics.median(r.peak_rss for r in self.runs)

    @property
    def cpu(self) -> float:
        """Median CPU seconds (user + system); NaN where not measured."""
        values = [r.cpu for r in self.runs if r.cpu is not None]
        return statistics.median(values) if values else float("nan")

    @property
    def failed(self) -> Run | None:
        """The first run that exited non-zero, if any."""
        return next((r for r in self.runs if r.returncode != 0), None)


_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as fh:
    cpu = usage.ru_utime + usage.ru_stime
    fh.write(f"{os.waitstatus_to_exitcode(status)} {wall} {usage.ru_maxrss} {cpu}")
"""


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None) -> Run:
    """Run ``cmd`` to completion in a fresh process; return its wall time and peak RSS."""
    if not hasattr(os, "wait4"):
        return _run_polled(cmd, env=env, cwd=cwd)
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r", suffix=".rusage") as result,
    ):
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, result.name, *cmd]
        subprocess.run(launcher, stdout=out, stderr=err, env=env, cwd=cwd, check=True)
        code, wall, maxrss, cpu = result.read().split()
        peak = int(maxrss) * (1 if sys.platform == "darwin" else 1024)  # macOS reports bytes
        out.seek(0)
        err.seek(0)
        return Run(int(code), float(wall), peak, out.read(), err.read(), float(cpu))


def _run_polled(cmd: Sequence[str], *, env: dict[str, str] | None, cwd: str | None) -> Run:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env, cwd=cwd)
        peak = _poll_peak_rss(proc)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, wall, peak, out.read(), err.read())


def _poll_peak_rss(proc: subprocess.Popen, interval: float = 0.01) -> int:
    import psutil

    peak = 0
    handle = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, handle.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(interval)
    proc.wait()
    return peak


def measure(label: str, cmd: Sequence[str], repeat: int, **kwargs) -> Series:
    """Run ``cmd`` ``repeat`` times, each in a fresh process, and collect the runs."""
    series = Series(label)
    for _ in range(repeat):
        series.runs.append(run_measured(cmd, **kwargs))
    return series


def python_cmd(code: str) -> list[str]:
    """A command running ``code`` with this interpreter (the benchmark's venv)."""
    return [sys.executable, "-c", code]


def fmt_bytes(n: float) -> str:
    """1536 MB style (MiB, the unit ``top`` and ``ps`` use)."""
    return f"{n / 2**20:,.0f} MB"


def fmt_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *[line(r) for r in rows]])
