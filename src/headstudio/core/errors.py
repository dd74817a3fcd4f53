"""User-facing errors: each carries one line saying what is wrong and what to do."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

Progress = Callable[[str, float], None]
"""``progress(message, fraction)``: long work reports through it; raising ``Cancelled`` stops the work."""


def first_line(err: BaseException, *, with_type: bool = False, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), for people."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if with_type or not text:
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text[:limit]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters (newlines, terminal escapes) written as escapes: one plain line."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


class HeadStudioError(Exception):
    """Base class; ``str(err)`` is a complete one-line message for a person."""

    exit_code = 1


class InputError(HeadStudioError):
    """A value typed by a person (sizes, a shape, an option) is not understood."""

    exit_code = 2


class SourceError(HeadStudioError):
    """A SOURCE cannot be found, read or understood (path, spec, format)."""

    exit_code = 2


class ArchitectureRequiredError(SourceError):
    """The file holds only weights; the caller must name the architecture (``--arch``).

    ``candidates`` are the nearest known architectures, best first (fingerprint Candidates).
    """

    def __init__(self, message: str, candidates: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


class MissingDependencyError(SourceError):
    """An optional package (e.g. timm) is needed for this source."""


class UnsafeCheckpointError(HeadStudioError):
    """The file would import code to load; it is refused until the user trusts it."""

    exit_code = 2

    def __init__(self, path: str, globals_: list[str]) -> None:
        self.path = path
        # every name, the ones outside torch first: the whole truth, with a payload never buried
        self.globals = sorted(globals_, key=lambda name: (name.startswith(("torch.", "torchvision.")), name))
        super().__init__(
            f"{path} would import {', '.join(self.globals)} to load, which runs code from the file; "
            "nothing was run. If you trust this file, pass --trust to allow it for this file only."
        )


class UntrustedSpecError(UnsafeCheckpointError):
    """A file's recipe names code outside the allow-list; it is refused until the user trusts the file."""

    def __init__(self, path: str, call: str) -> None:
        super().__init__(path, [call])
        module = call.split("(", 1)[0].rpartition(".")[0]
        self.args = (
            f"{path}: its recipe would import '{module}' and call {call} to build the model; nothing was "
            "imported. If you trust this file, pass --trust to allow it, or pass --arch instead.",
        )


class TrustedCodeWarning(UserWarning):
    """Code from a file is about to run because the user allowed it (the CLI prints one line per file)."""


class ArchitectureMismatchError(HeadStudioError):
    """Weights do not fit the architecture (missing, unexpected or mismatched tensors)."""

    exit_code = 2


class TraceError(HeadStudioError):
    """The model's forward failed for the given input shape."""


class UnsupportedOperationError(HeadStudioError):
    """The operation cannot be done on this kind of model (e.g. editing TorchScript)."""

    exit_code = 2


class EditError(HeadStudioError):
    """An edit is invalid for this model; nothing was changed."""

    exit_code = 2


class SaveError(HeadStudioError):
    """Writing the output failed; the target and the source are unchanged."""


class Cancelled(HeadStudioError):
    """The user cancelled long work (raised from a progress callback)."""


class TorchScriptConsentError(UnsafeCheckpointError):
    """A TorchScript archive is compiled code: loading it runs that code, so it needs the same consent."""

    def __init__(self, path: str) -> None:
        super().__init__(path, ["TorchScript program"])
        self.args = (
            f"{path} is a TorchScript archive: loading it runs the code compiled into it; nothing was run. "
            "If you trust this file, pass --trust to inspect it (TorchScript can be inspected, not edited).",
        )


def size_text(nbytes: int) -> str:
    """Bytes for people: ``1.25 GB`` from 100 MB up, else ``12.3 MB``."""
    return f"{nbytes / 1e9:,.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:,.1f} MB"
