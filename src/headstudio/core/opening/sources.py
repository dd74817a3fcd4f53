"""Opening a SOURCE (file path or architecture spec) into a Document."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from headstudio.core.errors import Progress, SourceError, UnsupportedOperationError
from headstudio.core.model.document import Document, Origin
from headstudio.core.opening import hf
from headstudio.core.opening.checkpoints import Checkpoint, check_path, read_checkpoint, sniff_format
from headstudio.core.opening.file_specs import Trust
from headstudio.core.opening.recognition import build_for_checkpoint
from headstudio.core.opening.specs import build_model, looks_like_spec, parse_spec, spec_input_shape
from headstudio.core.opening.weights import attach_weights


def open_source(
    source: str,
    *,
    arch: str | None = None,
    trust: Trust = False,
    input_shape: tuple[int, ...] | None = None,
    materialize: bool = False,
    progress: Progress | None = None,
    weights: str | None = None,
) -> Document:
    """Open a checkpoint file or an architecture spec as a Document. Code in a file runs only with ``trust``.

    Args:
        source: a file (``.pt``/``.pth``/``.bin``/``.ckpt``/``.safetensors``/TorchScript) or a spec such as
            ``torchvision:resnet18(num_classes=10)``, ``timm:convnext_nano`` or ``mypkg.models:make_net``.
        arch: the architecture of a file that holds only weights (a spec, as above).
        trust: ``True`` allows the code this file needs (a pickle's globals, a TorchScript program, a
            recipe naming code outside the allow-list); a collection of names allows exactly those (what
            a consent dialog listed). ``source`` and ``arch`` typed by the user are built as given.
        input_shape: the shape to trace, e.g. ``(1, 3, 224, 224)``; default: what the model knows.
        materialize: build spec models with real weights (needed to save them); else on the meta device.
        progress: ``progress(message, fraction)``; raising ``Cancelled`` from it stops the work.
        weights: ``"ema"`` opens a training checkpoint's EMA copy (default: the main weights).

    Without ``arch`` the architecture comes from the file: its recipe, what its container says
    (Lightning, timm, torchvision reference scripts) or its weights' fingerprint (see ``recognition``).

    Raises:
        SourceError (and subclasses): a one-line message saying what is wrong and what to do.

    Examples::

        >>> doc = open_source("torchvision:resnet18", materialize=True)
        >>> doc.head.path, doc.trace().output
        ('fc', [1, 1000])
        >>> doc = open_source("weights.pth")  # recognised: timm:convnext_nano(num_classes=7)
        >>> doc = open_source("run/last.ckpt", arch="timm:convnext_nano")  # or say which
    """
    report = progress or (lambda message, fraction: None)
    path = Path(source).expanduser()
    if not path.exists() and looks_like_spec(source):
        if arch:
            raise SourceError(f"--arch applies to weight files; '{source}' is already an architecture")
        report(f"building {source}", 0.2)
        spec = parse_spec(source)
        if hf.is_hf_spec(spec):
            model, arch_name = hf.open_spec(spec, materialize)
            return Document(model, Origin(source, "spec", arch_name), input_shape)
        model = build_model(spec, meta=not materialize)
        origin = Origin(source, "spec", str(spec), arch_from="spec")
        return Document(model, origin, input_shape or spec_input_shape(spec))
    folder = hf.hf_folder_of(path) if not arch else None
    if folder is not None:
        model, origin = hf.open_folder(source, folder, report, materialize)
        origin.arch_from = "the folder's config.json"
        report("ready", 1.0)
        return Document(model, origin, input_shape)
    report(f"reading {path.name}", 0.1)
    if arch:
        _refuse_arch_for_archives(path)
    ckpt = read_checkpoint(path, trust=trust, weights=weights)
    report("building the model", 0.5)
    model, arch_name, arch_from = _model_for(ckpt, arch, trust, report)
    origin = Origin(source, ckpt.kind, arch_name, path, ckpt, list(ckpt.notes), arch_from)
    if ckpt.kind == "torchscript":
        origin.notes.append("TorchScript archive: inspect only; edit the original model instead")
    report("ready", 1.0)
    return Document(model.eval(), origin, input_shape or _spec_shape(arch_name, arch_from))


def _model_for(
    ckpt: Checkpoint, arch: str | None, trust: Trust, report: Progress
) -> tuple[nn.Module, str, str]:
    """The model with the file's weights attached, its spec, and how the architecture was known."""
    if ckpt.module is not None:
        if arch:
            raise UnsupportedOperationError(
                f"{ckpt.path} holds a whole {ckpt.kind} model with its own architecture; drop --arch"
            )
        module = ckpt.module
        return module, getattr(module, "original_name", None) or _qualname(module), "the file (whole model)"
    assert ckpt.state_dict is not None
    if arch is None and ckpt.recipe:
        from headstudio.core.recipe import build_from_recipe

        model, arch_name, notes = build_from_recipe(ckpt.recipe, str(ckpt.path), trust, ckpt.state_dict)
        ckpt.notes.extend(notes)
        arch_from = "the file's recipe"
    elif arch is None:
        from headstudio.core.opening.recognition import recognise

        model, arch_name, arch_from = recognise(ckpt, trust=trust, progress=report)
        return model, arch_name, arch_from  # recognise attaches (and checks) the weights itself
    elif hf.is_hf_spec(arch):
        model, arch_name, notes = hf.load_into_spec(parse_spec(arch), ckpt.state_dict, str(ckpt.path))
        ckpt.notes.extend(notes)
        return model, arch_name, "--arch"
    else:
        model, arch_name = build_for_checkpoint(parse_spec(arch), ckpt)
        arch_from = "--arch"
    attach_weights(model, ckpt, arch_name)
    return model, arch_name, arch_from


def _refuse_arch_for_archives(path: Path) -> None:
    """--arch cannot apply to a TorchScript archive; say so before asking for trust to load it."""
    check_path(path)
    if sniff_format(path) == "torchscript":
        raise UnsupportedOperationError(
            f"{path} is a TorchScript archive with its own compiled architecture, so --arch cannot apply; "
            "drop --arch (TorchScript can be inspected with --trust, not edited)"
        )


def _spec_shape(arch_name: str, arch_from: str) -> tuple[int, ...] | None:
    """A built spec's own input (video clips); files with a recipe or a whole model know theirs."""
    if arch_from in ("the file's recipe", "the file (whole model)") or not looks_like_spec(arch_name):
        return None
    try:
        return spec_input_shape(arch_name)
    except SourceError:
        return None


def _qualname(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"
