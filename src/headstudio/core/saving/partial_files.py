"""Partial files of a save: temp names beside the target, the writer's lock, cleanup after killed saves.

A temp file's name carries the writer's pid and the writer holds an advisory lock on it, so a later save
can tell a file left by a killed process from one a live process is still writing.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so stale partial files are never guessed at
    fcntl = None  # type: ignore[assignment]

from headstudio.core.errors import SaveError


def temp_path(target: Path) -> tuple[Path, int | None]:
    """A fresh hidden file beside the target (same filesystem, so the final rename is atomic).

    Its name carries our pid and we hold an advisory lock on it until the save ends, so a later save
    can tell a partial file left by a killed process from one a live process is still writing.
    """
    try:
        fd, name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.stem}.{os.getpid()}-", suffix=f".partial{target.suffix}"
        )
    except OSError as err:
        raise SaveError(
            f"cannot write in {target.parent}: {err.strerror or err}; nothing was changed"
        ) from None
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(name, 0o666 & ~mask)  # mkstemp's 0600 would make the saved file private
    if fcntl is None or not _try_lock(fd):
        os.close(fd)
        return Path(name), None
    return Path(name), fd


def remove_stale_partials(target: Path, notes: list[str]) -> int:
    """Delete partial files of ``target`` left by saves that were killed (SIGKILL, power loss).

    Only our own pattern (``.STEM.PID-XXXXXXXX.partial.SUFFIX``), only regular files of this user,
    only when no process holds the file's lock and its pid is gone (or now names a process started
    after the file was last written). Best effort: anything uncertain is left alone.
    """
    if fcntl is None:
        return 0
    pattern = re.compile(
        rf"\.{re.escape(target.stem)}\.(\d+)-[a-z0-9_]{{8}}\.partial{re.escape(target.suffix)}"
    )
    removed = 0
    with contextlib.suppress(OSError):
        names = os.listdir(target.parent)
        for name in names:
            match = pattern.fullmatch(name)
            if match and _remove_if_abandoned(target.parent / name, int(match[1])):
                removed += 1
    if removed:
        notes.append(f"removed {removed} partial file(s) left by an interrupted save of {target.name}")
    return removed


def _remove_if_abandoned(path: Path, pid: int) -> bool:
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            return False
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if os.fstat(fd).st_ino != info.st_ino or not _try_lock(fd) or _writer_alive(pid, info.st_mtime):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases the lock we took


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held by a live save (or the filesystem cannot lock: then keep the file)
    return True


def _writer_alive(pid: int, modified: float) -> bool:
    """Whether process ``pid`` may still be writing a file last modified at ``modified``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    started = _process_start(pid)
    return started is None or started <= modified + 1.0  # else the pid was reused since


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def discard(temp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
