"""ReplaceHeadFromFile and AddHeadFromFile: a head exported to a head file, attached to a backbone.

The edit records the file's path, its sha256 and its description, so a recipe says exactly which head
it attaches; replaying it needs the file only for the weights (a meta build needs none). When the
backbone's feature size differs from the head's input, ``adapter=True`` inserts a Linear (or a 1x1
conv for conv heads) from the backbone's width to the head's; without it the edit is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from headstudio.core.edits.add_head import MultiHead, add_beside, old_key, remove_beside
from headstudio.core.edits.base import Edit, state, traced_input
from headstudio.core.edits.replace import attr_code, restore_attrs, sync_class_attrs
from headstudio.core.errors import EditError, HeadStudioError
from headstudio.core.head_description import build_described, check_description, described_code
from headstudio.core.head_files import HeadFile, file_sha256, read_head_file, rebuild_head
from headstudio.core.modules import feature_size, find_module, module_expr, swap_module

if TYPE_CHECKING:
    from headstudio.core.model.document import Document


def head_fit(doc: Document, at: str, description: dict[str, Any]) -> tuple[int | None, int]:
    """(features the backbone gives at ``at``, features the described head takes)."""
    find_module(doc.model, at, "head")
    shape = traced_input(doc, at)
    return feature_size(shape, channels=description["input"] == "channels"), int(description["in_features"])


class _FromHeadFile(Edit):
    """What both kinds share: the recorded file, its fit at ``at``, building the head (and adapter)."""

    file: str
    sha256: str
    head: dict
    adapter: bool
    seed: int | None

    @property
    def file_name(self) -> str:
        """The head file's name, for messages."""
        return Path(self.file).name

    def _sizes(self) -> str:
        return f"{self.head.get('in_features')} → {self.head.get('out_features')}"

    def _problems(self, doc: Document, at: str) -> list[str]:
        """The description is data from a file or a recipe: check it, then the fit, then the file."""
        try:
            check_description(self.head)
        except HeadStudioError as err:
            return [f"the head from {self.file_name} is not usable: {err}"]
        try:
            features, takes = head_fit(doc, at, self.head)
        except EditError as err:
            return [str(err)]
        if features is None:
            return [f"the input of '{at}' is not one tensor, so the head from {self.file_name} cannot fit"]
        if features != takes and not self.adapter:
            return [
                f"the head in {self.file_name} takes {takes} features but '{at}' gives {features}; "
                f"attach it with an adapter (Linear {features} → {takes}): --adapter auto"
            ]
        if _needs_weights(doc):
            try:
                self._located()
            except EditError as err:
                return [str(err)]
        return []

    def _located(self) -> Path:
        """The head file on this machine with the recorded sha256; EditError saying what is missing."""
        for candidate in (Path(self.file).expanduser(), Path.cwd() / self.file_name):
            if candidate.is_file():
                found = file_sha256(candidate)
                if found == self.sha256:
                    return candidate
                raise EditError(
                    f"{candidate} is not the head file this edit attaches (sha256 {found[:12]}… instead "
                    f"of {str(self.sha256)[:12]}…); use the head file the recipe was made with"
                )
        raise EditError(
            f"the head file {self.file} (sha256 {str(self.sha256)[:12]}…, head {self._sizes()}) is not on "
            "this machine; copy it there or into the current folder (the recipe holds its description, "
            "not its weights)"
        )

    def _build(self, doc: Document, at: str, like: nn.Module) -> tuple[nn.Module, list[str], int | None]:
        """(the head, with weights when the model has them, behind an adapter when asked for; the code
        lines building it as ``head``; the backbone's feature size)."""
        features, takes = head_fit(doc, at, self.head)
        dtype, device = _float_dtype(like), _real_device(like)
        if _needs_weights(doc):
            loaded: HeadFile = read_head_file(self._located())
            if loaded.sha256 != self.sha256:
                raise EditError(f"{self.file_name} changed while it was read; attach it again")
            head = rebuild_head(loaded)
            head_dtype = next((t.dtype for t in loaded.state.values() if t.is_floating_point()), dtype)
            if head_dtype != dtype:
                self.notes.append(f"the head's {head_dtype} weights were cast to the model's {dtype}")
            head.to(dtype=dtype, device=device)
        else:
            head = build_described(self.head["layers"], "meta")
        lines = [
            "from safetensors.torch import load_file",
            f"head = {described_code(self.head['layers'])}",
            f"head.load_state_dict(load_file({self.file!r}))  # sha256 {self.sha256}",
        ]
        if not self.adapter:
            return head, lines, features
        with torch.random.fork_rng(devices=[]):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            adapter, adapter_code = _adapter(self.head, features, takes)
        adapter.to(dtype=dtype, device="meta" if not _needs_weights(doc) else device)
        seed = [f"torch.manual_seed({self.seed})"] if self.seed is not None else []
        lines += [*seed, "from collections import OrderedDict"]
        lines.append(f"head = nn.Sequential(OrderedDict(adapter={adapter_code}, head=head))")
        return nn.Sequential(OrderedDict(adapter=adapter, head=head)), lines, features

    def _via(self) -> str:
        if not self.adapter:
            return ""
        features = self._adapted_from
        return f", adapter {features} → {self.head.get('in_features')}" if features else ", with adapter"


@dataclass
class ReplaceHeadFromFile(_FromHeadFile):
    """Replace the head at ``path`` by the head stored in a head file (see ``from_file``)."""

    kind = "replace_head_from_file"
    path: str
    file: str
    sha256: str
    head: dict
    adapter: bool = False
    seed: int | None = None
    _adapted_from: int | None = state()  # the backbone's feature size the adapter starts from
    _code: list[str] | None = state()  # the lines code() returns

    def created_head(self) -> str | None:
        """The head from the file, at ``path``."""
        return self.path

    @classmethod
    def from_file(cls, path: str, head_file: str | Path, adapter: bool = False, seed: int | None = None):
        """The edit for a head file on disk (read and validated now)."""
        loaded = read_head_file(head_file)
        return cls(path, str(loaded.path.resolve()), loaded.sha256, loaded.description, adapter, seed)

    def describe(self) -> str:
        """E.g. 'Replace head fc with cats.safetensors (512 → 10)'."""
        return f"Replace head {self.path} with {self.file_name} ({self._sizes()}{self._via()})"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """Valid description, a fit (or an adapter), and the file itself when weights are needed."""
        if not self.path:
            return ["the head path is empty; name the head module, e.g. fc"], []
        return self._problems(doc, self.path), []

    def _apply(self, doc: Document) -> None:
        self.notes.clear()
        old = find_module(doc.model, self.path, "head")
        new, lines, self._adapted_from = self._build(doc, self.path, old)
        classes = _out_features(old) or feature_size(doc.trace().outputs.get(self.path), False)
        expr = module_expr(doc.model, self.path)
        swap_module(doc.model, self.path, new)
        changed = sync_class_attrs(doc.model, self.path, classes, int(self.head["out_features"]))
        self._undo = (old, changed)
        self._code = [*lines, f"{expr} = head", *attr_code(changed)]

    def _revert(self, doc: Document) -> None:
        old, changed = self._undo
        swap_module(doc.model, self.path, old)
        restore_attrs(changed)

    def code(self) -> list[str]:
        """Builds the head from the file and puts it in place of the old one."""
        return list(self._code or [])


@dataclass
class AddHeadFromFile(_FromHeadFile):
    """Add the head stored in a head file as head ``name`` next to the head at ``at`` (a MultiHead)."""

    kind = "add_head_from_file"
    checks_forward = True  # a dict output must flow through what follows the head
    name: str
    at: str
    file: str
    sha256: str
    head: dict
    adapter: bool = False
    seed: int | None = None
    _adapted_from: int | None = state()  # the backbone's feature size the adapter starts from
    _code: list[str] | None = state()  # the lines code() returns

    def created_head(self) -> str | None:
        """The added head, inside the MultiHead at ``at``."""
        return f"{self.at}.heads.{self.name}"

    @classmethod
    def from_file(
        cls, name: str, at: str, head_file: str | Path, adapter: bool = False, seed: int | None = None
    ):
        """The edit for a head file on disk (read and validated now)."""
        loaded = read_head_file(head_file)
        return cls(name, at, str(loaded.path.resolve()), loaded.sha256, loaded.description, adapter, seed)

    def describe(self) -> str:
        """E.g. 'Add head cats from cats.safetensors (512 → 10) at fc'."""
        return f"Add head {self.name} from {self.file_name} ({self._sizes()}{self._via()}) at {self.at}"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """A free identifier name, then what ReplaceHeadFromFile checks."""
        if not isinstance(self.name, str) or not self.name.isidentifier():
            return [f"head name {self.name!r} must be a Python identifier, e.g. aux"], []
        if not self.at:
            return ["add the head next to which head? name it with at=, e.g. fc"], []
        problems = self._problems(doc, self.at)
        if not problems:
            old = find_module(doc.model, self.at, "head")
            if self.name in (list(old.heads) if isinstance(old, MultiHead) else [old_key(self.at)]):
                problems.append(
                    f"a head named '{self.name}' already exists at '{self.at}'; choose another name"
                )
        return problems, []

    def _apply(self, doc: Document) -> None:
        self.notes.clear()
        old = find_module(doc.model, self.at, "head")
        like = next(iter(old.heads.values())) if isinstance(old, MultiHead) else old
        new, lines, self._adapted_from = self._build(doc, self.at, like)
        self._undo, line = add_beside(doc, self.at, self.name, new, "head")
        self._code = [*lines, line]

    def _revert(self, doc: Document) -> None:
        remove_beside(doc, self.at, self.name, self._undo)

    def code(self) -> list[str]:
        """Builds the head from the file and wraps or extends the MultiHead."""
        return list(self._code or [])


def _adapter(description: dict[str, Any], features: int, takes: int) -> tuple[nn.Module, str]:
    """A Linear (or 1x1 conv for a conv head) from the backbone's width to the head's."""
    first = next(layer["kind"] for layer in description["layers"] if layer["kind"] != "dropout")
    if description["input"] == "channels":
        cls = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}.get(first, nn.Conv2d)
        return cls(features, takes, 1), f"nn.{cls.__name__}({features}, {takes}, 1)"
    return nn.Linear(features, takes), f"nn.Linear({features}, {takes})"


def _needs_weights(doc: Document) -> bool:
    """Real weights are attached unless the model lives on meta (a structure-only build or a preview)."""
    if doc.shadow:
        return False
    return any(not p.is_meta for p in doc.model.parameters())


def _out_features(module: nn.Module) -> int | None:
    value = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
    return int(value) if isinstance(value, int) else None


def _float_dtype(module: nn.Module) -> torch.dtype:
    p = next((p for p in module.parameters() if p.is_floating_point()), None)
    return p.dtype if p is not None else torch.get_default_dtype()


def _real_device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return torch.device("cpu") if p is None or p.is_meta else p.device
