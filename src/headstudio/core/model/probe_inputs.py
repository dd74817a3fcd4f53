"""Inputs for a probe: an image prepared the way the model was trained, or a seeded random input.

Preprocessing comes from what the model knows: timm's ``pretrained_cfg`` (size, crop, mean/std,
interpolation), torchvision's weight transforms for the architecture, else ImageNet's mean/std at the
traced input size. Images are decoded with Pillow under a pixel limit, so a file whose header lies about
its size is refused before it is decoded, and a truncated file is an error, never a half-black picture.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstudio.core.errors import InputError, SourceError
from headstudio.core.model.shapes import input_dtype, takes_tokens

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_PIXELS = 64_000_000  # an 8000 x 8000 photo; larger headers are refused before decoding
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input: resize the short side, centre-crop, normalise."""

    size: tuple[int, int]  # (height, width) of the input
    resize: int  # short side before the crop (== max(size) for no crop)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    squash: bool = False  # resize to ``size`` directly (timm crop_mode 'squash')
    source: str = "ImageNet defaults"

    def describe(self) -> str:
        """E.g. 'resize 256, crop 224x224, bilinear, mean/std from timm pretrained_cfg'."""
        h, w = self.size
        how = f"resize to {h}x{w}" if self.squash else f"resize {self.resize}, crop {h}x{w}"
        return f"{how}, {self.interpolation}, mean/std from {self.source}"


@dataclass(frozen=True)
class ProbeInput:
    """The tensor a probe runs, and how it was made (for reports)."""

    tensor: torch.Tensor
    description: str

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.tensor.shape),
            "dtype": str(self.tensor.dtype),
            "description": self.description,
        }


def preprocess_for(model: nn.Module, input_shape: tuple[int, ...], arch: str | None = None) -> Preprocess:
    """The preprocessing ``model`` expects for ``input_shape`` (N,C,H,W): timm, torchvision, or defaults."""
    if len(input_shape) != 4:
        raise InputError(
            f"an image needs a model whose input is N,C,H,W, but this one takes {list(input_shape)}; "
            "use a random input instead (--random)"
        )
    size = (int(input_shape[2]), int(input_shape[3]))
    cfg = getattr(model, "pretrained_cfg", None) or _timm_cfg(arch)
    if isinstance(cfg, dict) and cfg.get("mean"):
        crop_pct = float(cfg.get("crop_pct") or 1.0)
        return Preprocess(
            size,
            math.floor(max(size) / crop_pct),
            tuple(cfg["mean"]),
            tuple(cfg.get("std") or IMAGENET_STD),
            str(cfg.get("interpolation") or "bilinear"),
            cfg.get("crop_mode") == "squash",
            "timm pretrained_cfg",
        )
    found = _torchvision_transforms(arch)
    if found is not None:
        resize, crop, mean, std, interpolation, name = found
        scale = max(size) / crop  # another input size keeps the weights' resize-to-crop ratio
        return Preprocess(size, round(resize * scale), mean, std, interpolation, False, name)
    return Preprocess(size, max(size), IMAGENET_MEAN, IMAGENET_STD)


def load_image(path: str | Path, prep: Preprocess, channels: int = 3) -> torch.Tensor:
    """Decode, resize, crop and normalise an image file into a (1, C, H, W) float tensor.

    Raises SourceError with one line for a missing file, a non-image, a truncated file, or a header
    claiming more than ``MAX_PIXELS`` pixels (nothing is decoded then).
    """
    from PIL import Image, ImageOps

    path = Path(path).expanduser()
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS or width <= 0 or height <= 0:
                    raise SourceError(
                        f"{path} says it is {width}x{height} pixels, more than the "
                        f"{MAX_PIXELS // 1_000_000} megapixels a probe decodes; use a smaller image"
                    )
                img.load()
                picture = _eight_bit(ImageOps.exif_transpose(img)).convert("L" if channels == 1 else "RGB")
    except SourceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SourceError(f"{path} claims too many pixels to decode safely; use a smaller image") from None
    except Image.UnidentifiedImageError:
        raise SourceError(
            f"{path} is not an image Pillow can read; give a PNG, JPEG, BMP, WebP... file"
        ) from None
    except (OSError, ValueError, SyntaxError) as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SourceError(f"{path} is damaged or truncated ({why}); give a complete image file") from None
    return _to_tensor(_resize_crop(picture, prep), prep, channels)


def image_input(
    path: str | Path, model: nn.Module, input_shape: tuple[int, ...], arch: str | None
) -> ProbeInput:
    """An image file as the model's input, with a line saying how it was prepared."""
    prep = preprocess_for(model, input_shape, arch)
    channels = int(input_shape[1])
    if channels not in (1, 3):
        raise InputError(f"the model takes {channels} input channels; images give 1 or 3, use --random")
    tensor = load_image(path, prep, channels).to(input_dtype(model))
    if int(input_shape[0]) > 1:
        tensor = tensor.expand(int(input_shape[0]), -1, -1, -1).contiguous()
    return ProbeInput(tensor, f"{Path(path).name}: {prep.describe()}")


def random_input(model: nn.Module, input_shape: tuple[int, ...], seed: int = DEFAULT_SEED) -> ProbeInput:
    """A seeded random input of ``input_shape``: token ids below the vocabulary size, or N(0, 1) values."""
    generator = torch.Generator().manual_seed(seed)
    if takes_tokens(model):
        vocab = next(m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding))
        ids = torch.randint(0, vocab, input_shape, generator=generator)
        return ProbeInput(ids, f"random token ids below {vocab} (seed {seed})")
    values = torch.randn(input_shape, generator=generator).to(input_dtype(model))
    return ProbeInput(values, f"random normal values (seed {seed})")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"no such image: {path}; give an image file (PNG, JPEG...) or use a random input")
    if not path.is_file():
        raise SourceError(f"{path} is not a regular file; give an image file (PNG, JPEG...)")
    if path.stat().st_size == 0:
        raise SourceError(f"{path} is empty (0 bytes); give an image file")


def _eight_bit(img: Any) -> Any:
    """16-bit, 32-bit and float greyscale images scaled to 8 bits (Pillow's convert would clip them)."""
    import numpy as np
    from PIL import Image

    if not (img.mode.startswith("I;16") or img.mode in ("I", "F")):
        return img
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        scaled = values / 257.0
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _resize_crop(img: Any, prep: Preprocess) -> Any:
    from PIL import Image

    resample = {
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
    }.get(prep.interpolation, Image.Resampling.BILINEAR)
    height, width = prep.size
    if prep.squash:
        return img.resize((width, height), resample)
    w, h = img.size
    scale = prep.resize / min(w, h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    img = img.resize((new_w, new_h), resample)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return img.crop((left, top, left + width, top + height))


def _to_tensor(img: Any, prep: Preprocess, channels: int) -> torch.Tensor:
    import numpy as np

    array = np.asarray(img, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    mean = torch.tensor(prep.mean[:channels] if channels > 1 else prep.mean[:1]).view(-1, 1, 1)
    std = torch.tensor(prep.std[:channels] if channels > 1 else prep.std[:1]).view(-1, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


def _timm_cfg(arch: str | None) -> dict[str, Any] | None:
    """timm's pretrained config for ``timm:NAME`` (read from timm's registry; nothing is downloaded)."""
    if not arch or not arch.startswith("timm:"):
        return None
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(arch.split(":", 1)[1].split("(")[0])
    except Exception:  # timm missing or an unknown name: the next source of defaults applies
        return None
    return cfg.to_dict() if cfg is not None else None


def _torchvision_transforms(arch: str | None) -> tuple[int, int, tuple, tuple, str, str] | None:
    """(resize, crop, mean, std, interpolation, source) of torchvision's default weights for ``arch``."""
    if not arch or not arch.startswith("torchvision:"):
        return None
    name = arch.split(":", 1)[1].split("(")[0]
    try:
        import torchvision

        weights = torchvision.models.get_model_weights(name).DEFAULT
        t = weights.transforms()
        resize, crop = int(t.resize_size[0]), int(t.crop_size[0])
        interpolation = str(t.interpolation.value)
    except Exception:  # not a classification model with weights metadata
        return None
    return resize, crop, tuple(t.mean), tuple(t.std), interpolation, f"torchvision {type(weights).__name__}"
