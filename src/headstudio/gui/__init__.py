"""The desktop app: a PySide6 front door over the surgery core."""
