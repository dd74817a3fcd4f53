"""Saving a Document: formats, crash-safe writes, verification by reopening.

Every save writes a temp file in the target's directory, fsyncs it, verifies it by reading it back and
only then renames it over the target (``os.replace``), so a failed, interrupted or wrong save leaves the
previous file untouched and no partial file behind. A save killed outright cannot clean up; the next
save of the same target removes what it left (``remove_stale_partials``). The source is never a target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so stale partial files are never guessed at
    fcntl = None  # type: ignore[assignment]

from .checkpoints import RECIPE_KEY
from .document import Document
from .errors import HeadStudioError, SaveError, UnsupportedOperationError

Progress = Callable[[str, float], None]
FORMATS = ("safetensors", "state_dict", "checkpoint", "full", "torchscript", "export")
_ALIASES = {
    "pt": "state_dict",
    "pth": "state_dict",
    "st": "safetensors",
    "script": "torchscript",
    "pt2": "export",
}
_SUFFIXES = {".safetensors": "safetensors", ".pt2": "export"}
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


@dataclass
class SaveReport:
    """What a save did: where, in which format, how many bytes, how many tensors were verified."""

    path: Path
    format: str
    bytes_written: int
    tensors_verified: int
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for people, e.g. ``saved x.safetensors (safetensors, 44.8 MB, 122 tensors verified)``."""
        size = f"{self.bytes_written / 1e6:,.1f} MB"
        return f"saved {self.path} ({self.format}, {size}, {self.tensors_verified} tensors verified)"


def resolve_format(doc: Document, path: Path, format: str | None = None) -> str:
    """The format to write: explicit ``format`` (or alias), else from the extension and the source."""
    if format:
        name = _ALIASES.get(format.lower(), format.lower())
        if name not in FORMATS:
            raise SaveError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
        if name == "checkpoint" and doc.origin.format != "checkpoint":
            raise SaveError("--format checkpoint keeps a training checkpoint's keys; the source has none")
        return name
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix in _TORCH_SUFFIXES:
        return "checkpoint" if doc.origin.format == "checkpoint" else "state_dict"
    raise SaveError(
        f"cannot tell the format from '{path.name}'; use .safetensors, .pt, .pth or .pt2, or pass --format"
    )


def save(
    doc: Document, path: str | Path, format: str | None = None, progress: Progress | None = None
) -> SaveReport:
    """Write ``doc`` to ``path`` atomically and verify it by reading it back; raise SaveError on failure.

    ``progress(message, fraction)`` may raise ``Cancelled``; the target is then left as it was.
    """
    started = time.perf_counter()
    report_progress = progress or (lambda message, fraction: None)
    target = Path(path).expanduser()
    fmt = resolve_format(doc, target, format)
    check_target(doc, target)
    check_saveable(doc, fmt)
    from .formats import VERIFIERS, WRITERS

    notes: list[str] = []
    remove_stale_partials(target, notes)
    temp, lock = _temp_path(target)
    try:
        report_progress(f"writing {target.name}", 0.0)
        WRITERS[fmt](doc, temp, notes, _scaled(report_progress, 0.0, 0.8))
        report_progress("verifying", 0.8)
        with ThreadPoolExecutor(1) as pool:  # the disk flushes while we re-read from the page cache
            flushed = pool.submit(_fsync, temp)
            verified = VERIFIERS[fmt](doc, temp, notes)
            flushed.result()
        size = temp.stat().st_size
        os.replace(temp, target)
        _fsync_dir(target.parent)
    except HeadStudioError:
        _discard(temp)
        raise
    except OSError as err:
        _discard(temp)
        raise SaveError(f"could not write {target}: {err.strerror or err}; nothing was changed") from None
    except Exception as err:
        _discard(temp)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise SaveError(f"could not save {target} as {fmt}: {first}; nothing was changed") from None
    except BaseException:
        _discard(temp)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    report_progress("saved", 1.0)
    return SaveReport(target, fmt, size, verified, time.perf_counter() - started, notes)


def check_target(doc: Document, target: Path) -> None:
    """Refuse targets that would lose data: the source itself, a directory, an unwritable place."""
    source = doc.origin.path
    if source is not None and _same_file(Path(source), target):
        raise SaveError(
            f"{target} is the source checkpoint; the source is never overwritten; choose another -o path"
        )
    if target.is_dir():
        raise SaveError(f"{target} is a directory; give a file name such as {target / 'model.safetensors'}")
    parent = target.parent
    if not parent.exists():
        blocker = next((p for p in [parent, *parent.parents] if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise SaveError(f"cannot write {target}: {blocker} is a file, not a directory")
        raise SaveError(f"cannot write {target}: the directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise SaveError(f"cannot write {target}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SaveError(f"cannot write {target}: no permission to write in {parent}")


def check_saveable(doc: Document, fmt: str) -> None:
    """The model must have real weights and be editable (TorchScript archives are inspect-only)."""
    if not doc.editable:
        raise UnsupportedOperationError(
            "a TorchScript archive cannot be saved again here; open and edit the original model instead"
        )
    meta = [n for n, t in _named_tensors(doc.model) if t.is_meta]
    if meta:
        raise SaveError(
            f"the model has no real weights yet ({len(meta)} tensors on the meta device, e.g. {meta[0]}); "
            "open the spec with materialize=True (the CLI does) or load a checkpoint with --arch"
        )


def recipe_json(doc: Document) -> str:
    """The recipe embedded in saved files: architecture, input shape, edits (so reopening needs no --arch)."""
    try:
        from .recipe import Recipe
    except ImportError:
        Recipe = None
    if Recipe is not None and hasattr(Recipe, "from_document"):
        return Recipe.from_document(doc).to_json()
    if doc.edits:
        raise SaveError("this Head Studio cannot record edits in a recipe yet; save without edits")
    return json.dumps({"arch": doc.origin.arch, "input_shape": list(doc.input_shape), "edits": []})


def model_state(doc: Document) -> dict[str, torch.Tensor]:
    """The model's state_dict (detached tensors that share storage stay shared; no copies)."""
    return doc.model.state_dict()


def tensors_equal(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> int:
    """Compare every tensor by name, shape, dtype and value; raise SaveError naming the first difference."""
    missing = [k for k in expected if k not in found]
    if missing:
        raise SaveError(f"verification failed: {path.name} lacks {len(missing)} tensors (e.g. {missing[0]})")
    for name, want in expected.items():
        got = found[name]
        if got.shape != want.shape or got.dtype != want.dtype or not torch.equal(got.cpu(), want.cpu()):
            raise SaveError(
                f"verification failed: tensor '{name}' differs after writing; nothing was replaced"
            )
    return len(expected)


def _named_tensors(model: torch.nn.Module):
    yield from model.named_parameters()
    yield from model.named_buffers()


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


def _temp_path(target: Path) -> tuple[Path, int | None]:
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


def _fsync(path: Path) -> None:
    with path.open("rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(temp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()


def _scaled(progress: Progress, start: float, end: float) -> Progress:
    return lambda message, fraction: progress(message, start + (end - start) * fraction)


def set_recipe_metadata(state: dict[str, torch.Tensor], recipe: str) -> dict[str, torch.Tensor]:
    """A state_dict OrderedDict whose ``_metadata['']`` carries the recipe (weights_only-loadable)."""
    from collections import OrderedDict

    out = OrderedDict(state)
    meta = OrderedDict(getattr(state, "_metadata", None) or {})
    meta[""] = {**dict(meta.get("", {})), RECIPE_KEY: recipe}
    out._metadata = meta  # type: ignore[attr-defined]
    return out
