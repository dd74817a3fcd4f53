"""Saving a Document: formats, crash-safe writes, verification by reopening.

Every save writes a temp file in the target's directory, fsyncs it, verifies it by reading it back and
only then renames it over the target (``os.replace``), so a failed, interrupted or wrong save leaves the
previous file untouched and no partial file behind. A save killed outright cannot clean up; the next
save of the same target removes what it left (``remove_stale_partials``). The source is never a target.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so stale partial files are never guessed at
    fcntl = None  # type: ignore[assignment]

from headstudio.core.errors import (
    HeadStudioError,
    Progress,
    SaveError,
    UnsupportedOperationError,
    first_line,
    size_text,
)
from headstudio.core.kinds import (
    FORMAT_ALIASES,
    FORMAT_BY_SUFFIX,
    FORMAT_WRITES,
    OUTPUT_FORMATS,
    TORCH_SUFFIXES,
)
from headstudio.core.model.document import Document
from headstudio.core.saving.formats import VERIFIERS, WRITERS
from headstudio.core.saving.partial_files import discard, remove_stale_partials, temp_path


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
        name = FORMAT_ALIASES.get(format.lower(), format.lower())
        if name not in OUTPUT_FORMATS:
            raise SaveError(f"unknown format '{format}'; choose one of {', '.join(OUTPUT_FORMATS)}")
        if name == "checkpoint" and doc.origin.kind != "checkpoint":
            raise SaveError("--format checkpoint keeps a training checkpoint's keys; the source has none")
        if name == "hf_folder" and not _is_hf(doc):
            raise SaveError(
                "--format hf_folder writes a Hugging Face model folder; this is not a transformers model"
            )
        _check_name_fits(path, name)
        return name
    suffix = path.suffix.lower()
    if _is_hf(doc) and (path.is_dir() or not suffix):
        return "hf_folder"
    if suffix in FORMAT_BY_SUFFIX:
        return FORMAT_BY_SUFFIX[suffix]
    if suffix in TORCH_SUFFIXES:
        return "checkpoint" if doc.origin.kind == "checkpoint" else "state_dict"
    raise SaveError(
        f"cannot tell the format from '{path.name}'; use .safetensors, .pt, .pth or .pt2, or pass --format"
    )


def _check_name_fits(path: Path, fmt: str) -> None:
    """A name whose suffix says another format is refused: x.ckpt never holds safetensors bytes."""
    suffix = path.suffix.lower()
    known = {s for _, suffixes in FORMAT_WRITES.values() for s in suffixes if s}
    what, suffixes = FORMAT_WRITES[fmt]
    if suffix in known and suffix not in suffixes:
        raise SaveError(
            f"the {fmt} format writes {what}, which '{path.name}' would misname; "
            f"name it {path.stem}{suffixes[0]} or choose the format its name says"
        )


def save(
    doc: Document, path: str | Path, format: str | None = None, progress: Progress | None = None
) -> SaveReport:
    """Write ``doc`` to ``path`` atomically and verify it by reading it back; raise SaveError on failure.

    Args:
        doc: the open (possibly edited) Document; its weights must be real (not on meta).
        path: the target; never the source. Its suffix picks the format unless ``format`` is given.
        format: ``safetensors``, ``state_dict``, ``checkpoint``, ``full``, ``torchscript``, ``export``
            or ``hf_folder`` (a transformers model as a Hugging Face model folder).
        progress: ``progress(message, fraction)``; raising ``Cancelled`` leaves the target as it was.

    Examples::

        >>> report = save(doc, "resnet18-7.safetensors")
        >>> print(report.describe())
        saved resnet18-7.safetensors (safetensors, 44.7 MB, 122 tensors verified)

    ``progress(message, fraction)`` may raise ``Cancelled``; the target is then left as it was.
    """
    started = time.perf_counter()
    report_progress = progress or (lambda message, fraction: None)
    target = Path(path).expanduser()
    fmt = resolve_format(doc, target, format)
    check_target(doc, target)
    check_saveable(doc, fmt)
    check_forward(doc)
    if fmt == "hf_folder":
        from headstudio.core.saving.hf_folder import save_folder

        return save_folder(doc, target, report_progress)
    needed = bytes_needed(doc)
    check_free_space(target, needed)

    notes: list[str] = []
    remove_stale_partials(target, notes)
    temp, lock = temp_path(target)
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
        discard(temp)
        raise
    except Exception as err:
        discard(temp)
        if is_disk_full(err, target, needed):
            raise disk_full_error(target, needed) from None
        if isinstance(err, OSError):
            raise SaveError(f"could not write {target}: {err.strerror or err}; nothing was changed") from None
        raise SaveError(f"could not save {target} as {fmt}: {first_line(err)}; nothing was changed") from None
    except BaseException:
        discard(temp)
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
    if target.is_dir() and not _is_hf(doc):
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
    if target.is_dir() and not target.is_symlink() and _is_hf(doc):
        from headstudio.core.saving.hf_folder import check_folder_target

        check_folder_target(doc, target)  # a model folder is replaced whole, another folder never
    elif target.exists() or target.is_symlink():
        _check_replaceable(target)


def _check_replaceable(target: Path) -> None:
    """An existing target is replaced only if it is a regular file its owner lets us write."""
    info = target.lstat()
    if stat.S_ISLNK(info.st_mode):
        info = target.stat() if target.exists() else info
    if not stat.S_ISREG(info.st_mode):
        raise SaveError(f"cannot replace {target}: it is not a regular file; choose another -o path")
    if info.st_uid != os.geteuid():
        if not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise SaveError(
                f"cannot replace {target}: it belongs to another user and is read-only; "
                "choose another -o path"
            )
    elif not info.st_mode & stat.S_IWUSR:
        raise SaveError(
            f"cannot replace {target}: it is read-only; make it writable (chmod u+w) "
            "or choose another -o path"
        )


def bytes_needed(doc: Document) -> int:
    """About how many bytes any format takes: the model's tensors (headers and pickles are small)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for _name, tensor in _named_tensors(doc.model):
        key = (tensor.untyped_storage().data_ptr(), tensor.nbytes) if not tensor.is_meta else (id(tensor), 0)
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def check_free_space(target: Path, needed: int) -> None:
    """Refuse a save that cannot fit before writing a byte."""
    free = _free_bytes(target.parent)
    if free is not None and free < needed:
        raise disk_full_error(target, needed, free)


def is_disk_full(err: BaseException, target: Path, needed: int) -> bool:
    """True when a failed write ran out of space (ENOSPC, or torch's writer failing with the disk full)."""
    chain: BaseException | None = err
    while chain is not None:
        if isinstance(chain, OSError) and chain.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        chain = chain.__cause__ or chain.__context__
    text = str(err)
    if "No space left" in text or "Disk quota" in text:
        return True
    free = _free_bytes(target.parent)
    return "write failed" in text and free is not None and free < needed


def disk_full_error(target: Path, needed: int, free: int | None = None) -> SaveError:
    """One line naming the cause and the space needed and free."""
    free = _free_bytes(target.parent) if free is None else free
    have = f", {size_text(free)} free" if free is not None else ""
    return SaveError(
        f"could not write {target}: No space left on device "
        f"(needs {size_text(needed)}{have} in {target.parent}); "
        "free some space or save elsewhere; nothing was changed"
    )


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


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


def _is_hf(doc: Document) -> bool:
    from headstudio.core.edits.hf_config import is_hf_model

    return is_hf_model(doc.model)


def check_forward(doc: Document) -> None:
    """An edited model whose forward fails, when it worked before the edits, is never written."""
    if not doc.edits or not doc.editable:
        return
    trace = doc.trace()
    before = doc.trace_before_edits
    if not trace.error or (before is not None and before.error):
        return
    where = f" at '{trace.failed_at}'" if trace.failed_at else ""
    raise SaveError(
        f"the model's forward fails after the edits{where}: {trace.error}; nothing was written "
        "(undo or change the edit that broke it)"
    )


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


def _scaled(progress: Progress, start: float, end: float) -> Progress:
    return lambda message, fraction: progress(message, start + (end - start) * fraction)
