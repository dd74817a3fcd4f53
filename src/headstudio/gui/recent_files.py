"""Recently opened files, newest first, each with the architecture it was opened with (in QSettings)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

MAX_RECENT = 10


def recent_key(source: str) -> str:
    """Recent files are remembered by their resolved path."""
    return str(Path(source).expanduser().resolve())


class RecentFiles:
    """The recent list and the architectures that reopen those files without asking."""

    def __init__(self, settings: QSettings) -> None:
        self.settings = settings

    def paths(self) -> list[str]:
        """Recently opened files, newest first."""
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def archs(self) -> dict[str, str]:
        """Recent files' architectures (chosen in the dialog or recognised), by resolved path."""
        value = self.settings.value("recent_archs", {})
        if not isinstance(value, dict):
            return {}
        return {str(p): str(a) for p, a in value.items() if isinstance(a, str)}

    def arch_for(self, source: str) -> str | None:
        """The architecture ``source`` was last opened with, if it needed one."""
        return self.archs().get(recent_key(source))

    def add(self, path: str, arch: str | None = None) -> None:
        """Put ``path`` at the top, remembering ``arch`` for it (or forgetting an old one)."""
        paths = ([path] + [p for p in self.paths() if p != path])[:MAX_RECENT]
        self.settings.setValue("recent", paths)
        archs = {p: a for p, a in self.archs().items() if p in paths}
        if arch:
            archs[path] = arch
        else:
            archs.pop(path, None)
        self.settings.setValue("recent_archs", archs)

    def forget_arch(self, source: str) -> None:
        """Stop reopening ``source`` with its remembered architecture (it no longer fits)."""
        archs = self.archs()
        if archs.pop(recent_key(source), None) is not None:
            self.settings.setValue("recent_archs", archs)
