"""SetTrainable and FreezeBackbone: requires_grad over subtrees, and frozen BatchNorm kept in eval mode.

``bn_eval`` registers the forward pre-hook ``keep_in_eval`` on each frozen BatchNorm layer: every forward
first switches that layer to eval mode, so ``model.train()`` cannot make its running statistics move.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from headstudio.core.edits.base import Edit, Preview, state
from headstudio.core.errors import EditError
from headstudio.core.modules import find_module, module_expr

if TYPE_CHECKING:
    from headstudio.core.model.document import Document

_GLOB = set("*?[")


def keep_in_eval(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: this (frozen) BatchNorm always runs in eval mode, so its running stats stay put."""
    module.train(False)


def has_keep_in_eval(module: nn.Module) -> bool:
    """True when ``keep_in_eval`` is registered on ``module``."""
    return any(h is keep_in_eval for h in module._forward_pre_hooks.values())


def set_keep_in_eval(module: nn.Module, on: bool) -> bool:
    """Register or remove ``keep_in_eval``; True when that changed anything."""
    if on == has_keep_in_eval(module):
        return False
    if on:
        module.register_forward_pre_hook(keep_in_eval)
    else:
        for key in [k for k, h in module._forward_pre_hooks.items() if h is keep_in_eval]:
            del module._forward_pre_hooks[key]
    return True


def matches(name: str, pattern: str) -> bool:
    """A parameter/module name matches a glob when it or one of its parent paths does."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


@dataclass
class _FlagEdit(Edit):
    """Edits that set requires_grad flags and keep-in-eval hooks: a plan, a cheap preview, exact undo."""

    def _plan(self, doc: Document) -> tuple[dict[str, bool], dict[str, bool]]:
        """({parameter name: requires_grad}, {BatchNorm path: keep in eval}) this edit would set."""
        raise NotImplementedError

    def preview(self, doc: Document) -> Preview:
        """Counts from the plan; the structure and output shape do not change, so nothing is traced again."""
        before = doc.trace().output
        total, trainable = doc.param_counts()
        problems, warnings = self.check(doc)
        result = Preview(
            before, None if problems else before, total, total, trainable, trainable, problems, warnings
        )
        if not problems:
            flags, _ = self._plan(doc)
            params = doc.model.named_parameters()
            result.trainable_after = sum(p.numel() for n, p in params if flags.get(n, p.requires_grad))
        return result

    def _apply(self, doc: Document) -> None:
        self._set(doc.model, *self._plan(doc))
        self._remember(doc)

    def _remember(self, doc: Document) -> None:
        """Keep what ``code`` needs."""

    def _set(self, model: nn.Module, trainable: dict[str, bool], bn_eval: dict[str, bool]) -> None:
        params = dict(model.named_parameters())
        modules = dict(model.named_modules())
        flags = [(params[n], params[n].requires_grad) for n in trainable]
        hooks = [modules[p] for p, on in bn_eval.items() if set_keep_in_eval(modules[p], on)]
        for n, value in trainable.items():
            params[n].requires_grad_(value)
        self._undo = (flags, hooks)

    def _revert(self, doc: Document) -> None:
        flags, hooks = self._undo
        for param, value in flags:
            param.requires_grad_(value)
        for module in hooks:
            set_keep_in_eval(module, not has_keep_in_eval(module))


@dataclass
class SetTrainable(_FlagEdit):
    """Set requires_grad on every parameter under ``path`` (recursive).

    Args:
        path: a module path, a parameter name, "" for the whole model, or a glob such as ``layer[12]*`` or
            ``*.bn*`` (matched against module paths and parameter names).
        trainable: the new requires_grad.
        bn_eval: with ``trainable=False``, keep the selected BatchNorm layers in eval mode (running statistics
            stop moving in ``model.train()``); ``trainable=True`` releases them.

    Examples::

        >>> doc.apply(SetTrainable("layer[12]*", False, bn_eval=True))
        >>> doc.apply(SetTrainable("layer4", True))
    """

    kind = "set_trainable"
    path: str
    trainable: bool
    bn_eval: bool = False
    _code: tuple | None = state()  # (loop header, condition, hooks changed) for code()

    def describe(self) -> str:
        """E.g. 'Freeze layer1 (BatchNorm in eval)'."""
        what = self.path or "whole model"
        bn = " (BatchNorm in eval)" if self.bn_eval and not self.trainable else ""
        return f"{'Unfreeze' if self.trainable else 'Freeze'} {what}{bn}"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """The path or glob must select at least one parameter."""
        if not isinstance(self.trainable, bool):
            return [f"trainable must be true or false, not {self.trainable!r}"], []
        try:
            names, _ = self._select(doc)
        except EditError as err:
            return [str(err)], []
        if not names:
            return [f"'{self.path}' selects no parameters; nothing would change"], []
        return [], []

    def _select(self, doc: Document) -> tuple[list[str], list[str]]:
        model = doc.model
        if self.path and not _GLOB & set(self.path):
            params = dict(model.named_parameters())
            if self.path in params:
                return [self.path], []
            find_module(doc.model, self.path, "module or parameter")
        chosen = [n for n, _ in model.named_parameters() if self._picks(n)]
        norms = [p for p, m in model.named_modules() if isinstance(m, _BatchNorm) and self._picks(p)]
        return chosen, norms

    def _picks(self, name: str) -> bool:
        if not self.path:
            return True
        if _GLOB & set(self.path):
            return matches(name, self.path)
        return name == self.path or name.startswith(self.path + ".")

    def _plan(self, doc: Document) -> tuple[dict[str, bool], dict[str, bool]]:
        names, norms = self._select(doc)
        bn = dict.fromkeys(norms, False) if self.trainable else {}
        if self.bn_eval and not self.trainable:
            bn = dict.fromkeys(norms, True)
        return dict.fromkeys(names, self.trainable), bn

    def _remember(self, doc: Document) -> None:
        self._code = (*_selection_code(doc.model, self.path), bool(self._undo[1]))

    def code(self) -> list[str]:
        """A requires_grad loop over the same selection (and the keep-in-eval hook when it changed)."""
        loop, select, hooks_changed = self._code
        lines = [f"{loop}", f"    p.requires_grad = {self.trainable}"] if not select else [
            loop, f"    if {select}:", f"        p.requires_grad = {self.trainable}"]  # fmt: skip
        if hooks_changed:
            lines += _bn_code(self.path, keep=not self.trainable)
        return lines


@dataclass
class FreezeBackbone(_FlagEdit):
    """Freeze everything but the head(s).

    Args:
        bn_eval: keep the frozen BatchNorm layers in eval mode.
        heads: the paths kept trainable; default: the detected heads plus heads earlier edits created.

    Examples::

        >>> doc.apply(FreezeBackbone(bn_eval=True))
    """

    kind = "freeze_backbone"
    bn_eval: bool = False
    heads: list[str] | None = None
    _resolved: list[str] | None = state()  # the head paths kept trainable, as resolved when applied

    def describe(self) -> str:
        """E.g. 'Freeze backbone (train fc)'."""
        shown = ", ".join(self._resolved or self.heads or ["detected heads"])
        return f"Freeze backbone (train {shown}){' with BatchNorm in eval' if self.bn_eval else ''}"

    def check(self, doc: Document) -> tuple[list[str], list[str]]:
        """Named heads must exist; without names, a head must be detected."""
        try:
            heads = self.resolve(doc)
        except EditError as err:
            return [str(err)], []
        return (
            [] if heads else ["no head was detected; name the head(s) to keep trainable with heads=[...]"]
        ), []

    def resolve(self, doc: Document) -> list[str]:
        """The head paths kept trainable: given ones, or detected ones plus heads earlier edits created."""
        if self.heads is not None:
            for path in self.heads:
                find_module(doc.model, path, "head")
            return list(self.heads)
        found = [h.path for h in doc.heads()]
        for edit in doc.edits:
            made = edit.created_head()
            if made:  # a new MLP head is detected by its last Linear; keep all of it trainable
                found = [made if h == made or h.startswith(made + ".") else h for h in found]
        return list(dict.fromkeys(found))

    def _plan(self, doc: Document) -> tuple[dict[str, bool], dict[str, bool]]:
        heads = self.resolve(doc)
        if not heads:
            raise EditError("no head was detected; name the head(s) to keep trainable with heads=[...]")
        self._resolved = heads
        inside = lambda name: any(name == h or name.startswith(h + ".") for h in heads)  # noqa: E731
        flags = {n: inside(n) for n, _ in doc.model.named_parameters()}
        norms = [p for p, m in doc.model.named_modules() if isinstance(m, _BatchNorm) and not inside(p)]
        return flags, dict.fromkeys(norms, True) if self.bn_eval else {}

    def code(self) -> list[str]:
        """Freeze all but the head prefixes (and keep frozen BatchNorm in eval when asked)."""
        prefixes = tuple(h + "." for h in self._resolved)
        lines = [
            "for name, p in model.named_parameters():",
            f"    p.requires_grad = name.startswith({prefixes!r})",
        ]
        if self.bn_eval:
            lines += inspect.getsource(keep_in_eval).splitlines()
            lines += [
                "for name, m in model.named_modules():",
                f"    frozen = not (name + '.').startswith({prefixes!r})",
                "    if isinstance(m, nn.modules.batchnorm._BatchNorm) and frozen:",
                "        m.register_forward_pre_hook(keep_in_eval)",
            ]
        return lines


def _selection_code(model: nn.Module, path: str) -> tuple[str, str | None]:
    """(loop header, condition) selecting the same parameters as ``SetTrainable._picks``."""
    if not path:
        return "for p in model.parameters():", None
    if _GLOB & set(path):
        return "import fnmatch\nfor name, p in model.named_parameters():", _glob_code(path)
    if path in dict(model.named_parameters()):
        return "for name, p in model.named_parameters():", f"name == {path!r}"
    return f"for p in {module_expr(model, path)}.parameters():", None


def _bn_code(path: str, keep: bool) -> list[str]:
    """Register (keep) or remove the keep-in-eval hook on the selected BatchNorm layers."""
    sel = f"model.get_submodule({path!r})" if path and not _GLOB & set(path) else "model"
    cond = f" and {_glob_code(path)}" if _GLOB & set(path) else ""
    head = [
        f"for name, m in {sel}.named_modules():",
        f"    if isinstance(m, nn.modules.batchnorm._BatchNorm){cond}:",
    ]
    if keep:
        return [
            *inspect.getsource(keep_in_eval).splitlines(),
            *head,
            "        m.register_forward_pre_hook(keep_in_eval)",
        ]
    release = "[k for k, h in m._forward_pre_hooks.items() if getattr(h, '__name__', '') == 'keep_in_eval']"
    return [*head, f"        for key in {release}:", "            del m._forward_pre_hooks[key]"]


def _glob_code(pattern: str) -> str:
    """The condition ``matches(name, pattern)`` computes, in plain Python."""
    parents = "['.'.join(name.split('.')[:i]) for i in range(1, name.count('.') + 2)]"
    return f"any(fnmatch.fnmatchcase(n, {pattern!r}) for n in {parents})"
