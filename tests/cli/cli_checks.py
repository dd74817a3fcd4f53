"""Checks shared by the CLI tests: file fingerprints and the one-line-error rule."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha(path: Path) -> str:
    """SHA-256 of a file's bytes (the source must never change)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    """File names in ``directory`` (a failed command must leave nothing behind)."""
    return sorted(p.name for p in directory.iterdir())


def one_line_error(result) -> str:
    """Bad input ends with exit status != 0 and exactly one line for the user, never a traceback."""
    assert result.status != 0, result.out
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]
