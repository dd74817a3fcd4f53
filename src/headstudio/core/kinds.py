"""The one table of what Head Studio reads and writes: file suffixes, source kinds and output formats.

Three words that used to blur: a *source kind* says what was opened (a spec, a bare state_dict, a training
checkpoint...), an *output format* says what a save writes, and a *suffix* is how a file name hints at either.
"""

from __future__ import annotations

SOURCE_KINDS = ("spec", "state_dict", "checkpoint", "module", "safetensors", "torchscript", "hf_folder")
"""What an opened source was: built from a spec, or a file holding one of the other kinds."""

OUTPUT_FORMATS = ("safetensors", "state_dict", "checkpoint", "full", "torchscript", "export", "hf_folder")
"""What ``save`` can write (``--format``)."""

FORMAT_ALIASES = {"pt": "state_dict", "pth": "state_dict", "st": "safetensors", "script": "torchscript",
                  "pt2": "export", "hf": "hf_folder", "folder": "hf_folder"}  # fmt: skip

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
"""torch.save files: a state_dict or a training checkpoint (the container kept when saving one)."""

FORMAT_BY_SUFFIX = {".safetensors": "safetensors", ".pt2": "export"}
"""Suffixes that name one output format by themselves (torch suffixes depend on the source)."""

FORMAT_WRITES = {
    "safetensors": ("safetensors", (".safetensors",)),
    "state_dict": ("a torch.save file", TORCH_SUFFIXES),
    "checkpoint": ("a torch.save file", TORCH_SUFFIXES),
    "full": ("a torch.save file", TORCH_SUFFIXES),
    "torchscript": ("a TorchScript archive", (".pt", ".pth", ".ts", ".jit")),
    "export": ("a torch.export program", (".pt2",)),
    "hf_folder": ("a Hugging Face model folder", ("",)),
}
"""What each output format writes and the suffixes that may name it (other known suffixes contradict it)."""

CHECKPOINT_SUFFIXES = (*TORCH_SUFFIXES, ".safetensors", ".pt2")
"""Files offered by Open and listed when a directory is given instead of a file."""

PICKLE_SUFFIXES = (".pkl",)
"""Plain pickles: never specs, opened like torch files (and refused unless they hold only data)."""


def is_file_name(text: str) -> bool:
    """True when ``text`` ends like a model file ('run:best.pt' is a file, not module 'run')."""
    return text.strip().lower().endswith((*CHECKPOINT_SUFFIXES, *PICKLE_SUFFIXES))


def open_filter() -> str:
    """The Open dialog's name filter, from the same table."""
    patterns = " ".join(f"*{s}" for s in CHECKPOINT_SUFFIXES)
    return f"Checkpoints ({patterns});;All files (*)"
