"""Document -> verified file: one writer and one verifier per output format, atomic replace, partial files."""

from headstudio.core.saving.atomic import (
    SaveReport,
    check_forward,
    check_saveable,
    check_target,
    resolve_format,
    save,
)

__all__ = ["SaveReport", "check_forward", "check_saveable", "check_target", "resolve_format", "save"]
