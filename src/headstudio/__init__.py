"""Head Studio: PyTorch model head surgery."""

__version__ = "0.1.0"
