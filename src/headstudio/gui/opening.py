"""Opening a source for the controller: the load it runs off the UI thread, the head a new document starts
with, and the failures only the user can resolve (the window asks them; see ``open_requests.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from headstudio.core.errors import ArchitectureRequiredError, Progress, UnsafeCheckpointError

if TYPE_CHECKING:
    from headstudio.core.model.document import Document


def load_document(
    source: str,
    arch: str | None,
    trust: bool,
    input_shape: tuple[int, ...] | None,
    progress: Progress,
    weights: str | None = None,
) -> Document:
    """Runs on the worker thread: open (spec models with real weights, so they can be saved) and trace."""
    from headstudio.core.opening.sources import open_source
    from headstudio.core.opening.specs import looks_like_spec

    is_spec = not Path(source).expanduser().exists() and looks_like_spec(source)
    doc = open_source(
        source,
        arch=arch,
        trust=trust,
        input_shape=input_shape,
        materialize=is_spec,
        progress=progress,
        weights=weights,
    )
    progress("tracing shapes", 0.9)
    doc.tree()
    return doc


def detected_head(doc: Document) -> str | None:
    """The first head the trace found in ``doc``, if any."""
    heads = doc.trace().heads
    return heads[0] if heads else None


def needs_architecture(err: BaseException) -> TypeGuard[ArchitectureRequiredError]:
    """The file holds only weights: the user must say which architecture they belong to."""
    return isinstance(err, ArchitectureRequiredError)


def needs_consent(err: BaseException) -> TypeGuard[UnsafeCheckpointError]:
    """The file would run code to load: the user must allow it (for this file only)."""
    return isinstance(err, UnsafeCheckpointError)


def needs_user_choice(err: BaseException) -> bool:
    """A window that asks the user can resolve this failure (consent or an architecture)."""
    return needs_architecture(err) or needs_consent(err)
