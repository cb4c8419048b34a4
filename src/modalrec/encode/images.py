"""Image decoding and the preprocessing presets the papers used.

- ``imagenet``: Resize(256) -> CenterCrop(224) -> ImageNet mean/std (KDSR's torchvision ResNet/Swin, paper-notes §1.3).
- ``half``: Resize((224, 224)) with no crop -> Normalize(0.5, 0.5) (ODMT's CLIP ViT-B/32 input, paper-notes O5).
- ``clip``: CLIP's own Resize(224, bicubic) -> CenterCrop -> CLIP mean/std.
- ``timm``: the model's own timm data config; ``processor``: the checkpoint's Hugging Face image processor.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
PRESETS = ("imagenet", "half", "clip")


def preset_transform(name: str, size: int = 224) -> T.Compose:
    """torchvision transform for a named preset (see module docstring)."""
    if name == "imagenet":
        return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), T.ToTensor(),
                          T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    if name == "half":
        return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    if name == "clip":
        return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                          T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    raise ValueError(name)


def processor_transform(processor: Any):
    """Wrap a Hugging Face image processor as a per-image PIL -> [3,H,W] transform."""
    def tf(img: Image.Image) -> torch.Tensor:
        return processor(images=img, return_tensors="pt")["pixel_values"][0]
    return tf


def load_image(path: str | None, data: bytes | None) -> Image.Image | None:
    """Decode an item image to RGB; ``None`` when it is missing. Raises OSError/ValueError when unreadable."""
    if data is not None:
        src: Any = io.BytesIO(data)
    elif path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        src = path
    else:
        return None
    with Image.open(src) as img:
        img.load()
        return img.convert("RGB")


UNREADABLE = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError)
