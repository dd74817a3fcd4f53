"""The fingerprint index: every torchvision and timm architecture's parameter names and shapes.

Built once from the installed libraries with parameters on the meta device (no memory, no init, no
download), stored compactly (interned names and shapes as integer arrays) in a user cache keyed by the
library versions, and rebuilt when those versions change.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from headstudio.core.errors import Progress

FORMAT = 1
Entries = list[tuple[str, tuple[int, ...]]]
# In-place ops that only fill values: on meta tensors they are no-ops, so skipping them saves the
# Python cost of meta kernels (weight init dominates building a model on meta).
_FILL_OPS = frozenset(
    (
        "uniform_",
        "normal_",
        "fill_",
        "zero_",
        "clamp_",
        "clamp_min_",
        "clamp_max_",
        "mul_",
        "add_",
        "sub_",
        "div_",
        "erfinv_",
        "copy_",
        "exponential_",
        "random_",
        "bernoulli_",
        "sqrt_",
        "abs_",
        "neg_",
        "exp_",
        "log_",
        "floor_",
        "ceil_",
        "round_",
        "tanh_",
        "sigmoid_",
        "masked_fill_",
        "trunc_normal_",
        "addcmul_",
        "addcdiv_",
        "fmod_",
        "remainder_",
        "lerp_",
        "pow_",
    )
)


@dataclass
class FingerprintIndex:
    """Architectures as rows of (name id, shape id) entries; ``offsets[i]:offsets[i+1]`` is arch ``i``."""

    archs: list[str]  # specs: torchvision:NAME / timm:NAME
    classes: np.ndarray  # default class count per arch (0 when unknown)
    names: Sequence[str]
    shapes: Sequence[tuple[int, ...]]
    offsets: np.ndarray
    entry_name: np.ndarray
    entry_shape: np.ndarray
    versions: dict[str, str]
    name_hashes: np.ndarray  # sorted 64-bit hashes of ``names`` ...
    name_order: np.ndarray  # ... and the name id of each: file names are looked up without a dict

    def entries(self, arch: int) -> Entries:
        """The (name, shape) pairs of architecture number ``arch``."""
        lo, hi = int(self.offsets[arch]), int(self.offsets[arch + 1])
        return [
            (self.names[n], self.shapes[s])
            for n, s in zip(self.entry_name[lo:hi].tolist(), self.entry_shape[lo:hi].tolist(), strict=True)
        ]

    def save(self, path: Path, *, compressed: bool = False) -> None:
        """Write the index atomically (a temp file beside it, then rename); compressed to ship it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            write = np.savez_compressed if compressed else np.savez  # uncompressed loads quicker
            write(
                fh,
                archs=_text(self.archs),
                classes=self.classes,
                names=_text(list(self.names)),
                shapes=_text(self.shape_texts()),
                offsets=self.offsets,
                entry_name=self.entry_name,
                entry_shape=self.entry_shape,
                versions=_text(f"{k}={v}" for k, v in sorted(self.versions.items())),
                name_hashes=self.name_hashes,
                name_order=self.name_order,
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> FingerprintIndex:
        """Read an index written by ``save``."""
        with np.load(path, allow_pickle=False) as data:
            versions = dict(v.split("=", 1) for v in _lines(data["versions"]) if "=" in v)
            return cls(
                archs=_lines(data["archs"]),
                classes=data["classes"],
                names=_Lines(data["names"].tobytes()),
                shapes=_Shapes(data["shapes"].tobytes()),
                offsets=data["offsets"],
                entry_name=data["entry_name"],
                entry_shape=data["entry_shape"],
                versions=versions,
                name_hashes=data["name_hashes"],
                name_order=data["name_order"],
            )

    def shape_texts(self) -> list[str]:
        """Every shape as text ('64,3,7,7'), in id order."""
        if isinstance(self.shapes, _Shapes):
            return self.shapes.texts()
        return [shape_text(s) for s in self.shapes]

    def name_ids(self, names: list[str]) -> np.ndarray:
        """The id of each name in the vocabulary, -1 for names no architecture has."""
        if not names:
            return np.zeros(0, dtype=np.int64)
        hashes = name_hashes(names)
        at = np.minimum(np.searchsorted(self.name_hashes, hashes), len(self.name_hashes) - 1)
        ids = self.name_order[at].astype(np.int64)
        hit = self.name_hashes[at] == hashes
        return np.where(hit, ids, -1)


def shape_text(shape: Sequence[int]) -> str:
    """A shape as the index stores it: '64,3,7,7'."""
    return ",".join(map(str, shape))


class _Lines(Sequence[str]):
    """Lines of a UTF-8 blob, each decoded when asked (an index holds ~100k names; a lookup needs few)."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 10)
        self.starts = np.concatenate(([0], ends + 1)).tolist()
        self.ends = np.concatenate((ends, [len(blob)])).tolist()

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: Any) -> Any:
        return self.blob[self.starts[i] : self.ends[i]].decode("utf-8")

    def texts(self) -> list[str]:
        return self.blob.decode("utf-8").split("\n")


class _Shapes(_Lines):
    """Shapes stored as text lines, parsed when asked."""

    def __getitem__(self, i: Any) -> Any:
        return tuple(int(d) for d in super().__getitem__(i).split(",") if d)


def name_hashes(names: list[str]) -> np.ndarray:
    """Stable 64-bit hashes of key names (the same in every process, unlike ``hash``)."""
    digests = b"".join(hashlib.blake2b(n.encode("utf-8"), digest_size=8).digest() for n in names)
    return np.frombuffer(digests, dtype="<i8")


def _text(lines: Any) -> np.ndarray:
    """Lines of text as UTF-8 bytes (numpy's own strings take four bytes a character)."""
    return np.frombuffer("\n".join(lines).encode("utf-8"), dtype=np.uint8)


def _lines(array: np.ndarray) -> list[str]:
    return array.tobytes().decode("utf-8").split("\n")


def library_versions() -> dict[str, str]:
    """The versions the index depends on (a change means a rebuild)."""
    import torchvision

    # a build's local label (+cu130, +cpu) changes no architecture: CPU and CUDA wheels share an index
    versions = {
        "format": str(FORMAT),
        "torch": _public(torch.__version__),
        "torchvision": _public(torchvision.__version__),
    }
    try:
        import timm

        versions["timm"] = _public(timm.__version__)
    except ImportError:
        versions["timm"] = "none"
    return versions


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def cache_dir() -> Path:
    """``$HEADSTUDIO_CACHE_DIR``, else ``$XDG_CACHE_HOME/headstudio``, else ``~/.cache/headstudio``."""
    if os.environ.get("HEADSTUDIO_CACHE_DIR"):
        return Path(os.environ["HEADSTUDIO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "headstudio"


def index_path(versions: dict[str, str] | None = None) -> Path:
    """Where the index for these library versions is cached."""
    v = versions or library_versions()
    return (
        cache_dir()
        / f"fingerprints-f{v['format']}-torch{v['torch']}-tv{v['torchvision']}-timm{v['timm']}.npz"
    )


_LOADED: dict[Path, FingerprintIndex] = {}
BUNDLED_DIR = Path(__file__).with_name("fingerprints")  # compressed indexes for the released versions


def load_index(progress: Progress | None = None) -> FingerprintIndex:
    """The index for the installed versions: from memory, the cache, the copy shipped with Head Studio
    for the versions it was released with, or built now (once) and cached."""
    path = index_path()
    if path in _LOADED:
        return _LOADED[path]
    index = _read(path)
    if index is None:
        index = _read(BUNDLED_DIR / path.name)
        if index is None:
            index = build_index(progress=progress)
        try:
            for stale in path.parent.glob("fingerprints-*.npz"):
                stale.unlink()
            index.save(path)  # uncompressed in the cache: later loads are a plain read
        except OSError:
            pass  # a read-only cache: keep the index for this process only
    _LOADED[path] = index
    return index


def _read(path: Path) -> FingerprintIndex | None:
    if not path.is_file():
        return None
    try:
        return FingerprintIndex.load(path)
    except Exception:  # a damaged file is rebuilt, never trusted
        return None


def known_architectures() -> list[str]:
    """Every torchvision (not quantized) and timm architecture, as specs."""
    import torchvision

    archs = [f"torchvision:{n}" for n in torchvision.models.list_models() if not n.startswith("quantized_")]
    try:
        import timm

        archs += [f"timm:{n}" for n in timm.list_models()]
    except ImportError:
        pass
    return archs


def build_index(
    archs: Sequence[str] | None = None, *, workers: int | None = None, progress: Progress | None = None
) -> FingerprintIndex:
    """Build the index for ``archs`` (default: all known), in a process pool when that pays off."""
    archs = list(archs or known_architectures())
    report = progress or (lambda message, fraction: None)
    workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
    results: dict[str, tuple[Entries, int]] = {}
    if workers <= 1 or len(archs) < 100:
        for i, arch in enumerate(archs):
            found = fingerprint_architecture(arch)
            if found is not None:
                results[arch] = found
            if i % 10 == 0:
                report(f"indexing architectures ({i}/{len(archs)})", i / len(archs))
    else:
        results = _build_in_pool(archs, workers, report)
    return _pack([a for a in archs if a in results], results)


def _build_in_pool(archs: list[str], workers: int, report: Progress) -> dict[str, tuple[Entries, int]]:
    import multiprocessing

    chunks = [archs[i :: workers * 8] for i in range(workers * 8)]
    results: dict[str, tuple[Entries, int]] = {}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_fingerprint_many, chunk) for chunk in chunks if chunk]
        for done, future in enumerate(as_completed(futures), 1):
            results.update(future.result())
            report(f"indexing architectures (once; {len(results)}/{len(archs)})", done / len(futures))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


def _fingerprint_many(archs: list[str]) -> dict[str, tuple[Entries, int]]:
    found = {arch: fingerprint_architecture(arch) for arch in archs}
    return {arch: value for arch, value in found.items() if value is not None}


def fingerprint_architecture(arch: str) -> tuple[Entries, int] | None:
    """(name, shape) of each tensor of ``arch`` and its default class count; None if it cannot be built."""
    try:
        model = build_on_meta(arch)
    except Exception:
        return None
    entries = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not ignored_key(k)]
    return entries, default_classes(model, arch)


def ignored_key(key: str) -> bool:
    """Keys that say nothing about the architecture (older checkpoints lack them)."""
    return key.endswith("num_batches_tracked")


def build_on_meta(arch: str, **kwargs: Any) -> torch.nn.Module:
    """Build a torchvision/timm architecture with its parameters on meta and weight init skipped."""
    namespace, name = arch.split(":", 1)
    factory = _factory(namespace, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"), _SkipFills():
                return factory(**kwargs)
        except Exception:  # the builder computes sizes from tensor values (torchvision regnet)
            from headstudio.core.opening.specs import _parameters_on_meta

            with _parameters_on_meta(), _SkipFills(every_device=True):
                return factory(**kwargs)


def _factory(namespace: str, name: str) -> Any:
    if namespace == "timm":
        import timm

        return lambda **kw: timm.create_model(name, pretrained=False, **kw)
    import inspect

    import torchvision

    builder = torchvision.models.get_model_builder(name)
    offline = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        offline["weights_backbone"] = None
    return lambda **kw: builder(**offline, **kw)


def default_classes(model: torch.nn.Module, arch: str) -> int:
    """The class count an architecture has by default (0 when it has none we know of)."""
    value = getattr(model, "num_classes", None)
    if isinstance(value, int):
        return value
    namespace, name = arch.split(":", 1)
    if namespace == "torchvision":
        import torchvision

        try:
            meta = torchvision.models.get_model_weights(name).DEFAULT.meta
            return len(meta.get("categories") or []) or 0
        except Exception:
            return 1000 if name in torchvision.models.list_models(module=torchvision.models) else 0
    return 0


def _pack(archs: list[str], results: dict[str, tuple[Entries, int]]) -> FingerprintIndex:
    names: dict[str, int] = {}
    shapes: dict[tuple[int, ...], int] = {}
    offsets, entry_name, entry_shape, classes = [0], [], [], []
    for arch in archs:
        entries, num_classes = results[arch]
        for name, shape in entries:
            entry_name.append(names.setdefault(name, len(names)))
            entry_shape.append(shapes.setdefault(shape, len(shapes)))
        offsets.append(len(entry_name))
        classes.append(num_classes)
    hashes = name_hashes(list(names))
    order = np.argsort(hashes, kind="stable")
    return FingerprintIndex(
        archs=archs,
        classes=np.array(classes, dtype=np.int64),
        names=list(names),
        shapes=list(shapes),
        offsets=np.array(offsets, dtype=np.int64),
        entry_name=np.array(entry_name, dtype=np.int32),
        entry_shape=np.array(entry_shape, dtype=np.int32),
        versions=library_versions(),
        name_hashes=hashes[order],
        name_order=order.astype(np.int32),
    )


class _SkipFills(TorchFunctionMode):
    """Skips value-filling in-place ops (on meta tensors, or all: shapes are all the index needs)."""

    def __init__(self, every_device: bool = False) -> None:
        super().__init__()
        self.every_device = every_device

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if (
            getattr(func, "__name__", "") in _FILL_OPS
            and args
            and isinstance(args[0], torch.Tensor)
            and (self.every_device or args[0].is_meta)
        ):
            return args[0]
        return func(*args, **(kwargs or {}))
