"""JPEG decode and preprocessing on the model's device (nvJPEG on CUDA).

On a GPU worker the CPU would otherwise be the limit: Pillow decode + open_clip's resize cost
~11 ms of CPU per photo, ~90 images/s per core, while one H100 encodes thousands per second with
ViT-B/32. Here the CPU only reads bytes and parses headers; plain JPEGs (the vast majority of
uploads) are decoded in one batched nvJPEG call and resized, cropped and normalised on the
device, then handed to the encoder without leaving it.

Only files this path reproduces faithfully and fast take it: baseline JPEGs in RGB or greyscale,
with no EXIF rotation, that end in an end-of-image marker (a truncated file must fail with its
reason on the CPU path instead of being decoded into grey); ``models.jpeg_decoders`` decides
from the header (``device_decodable``). Progressive JPEGs decode faster with Pillow in the
worker's threads than through torchvision's nvJPEG; DALI and nvImageCodec take them too.
Everything else, and any file the device decoder refuses, goes through
``models.images.decode_image`` on the CPU, so every reason a file can fail is still written by
one function.

The result matches the CPU path closely but not bit for bit (full-resolution decode + antialiased
bicubic on the device, against libjpeg's DCT-scaled decode + Pillow's bicubic): embeddings of
the same file from a CPU and a GPU worker agree to a cosine of ~0.99+ (tests/test_device_decode.py
measures it), far inside what moves a score across a threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .jpeg_decoders import NvjpegDecoder

@dataclass(frozen=True)
class Transform:
    """open_clip's eval transform, read off the model's own preprocess: shortest side to
    ``resize`` (bicubic, antialiased), centre crop ``crop``, scale to [0, 1], normalise."""
    resize: int
    crop: int
    mean: tuple
    std: tuple


def transform_of(preprocess) -> Transform | None:
    """The Transform a preprocess pipeline amounts to, or None when it holds a step this module
    does not reproduce (then the CPU path is used for everything)."""
    from torchvision import transforms as T

    resize = crop = mean = std = None
    for step in getattr(preprocess, "transforms", ()):
        name = type(step).__name__
        if isinstance(step, T.Resize):
            size = step.size if isinstance(step.size, int) else (
                step.size[0] if len(step.size) == 1 else None)
            if size is None or step.interpolation != T.InterpolationMode.BICUBIC or step.max_size:
                return None
            resize = size
        elif isinstance(step, T.CenterCrop):
            h, w = step.size
            if h != w:
                return None
            crop = h
        elif isinstance(step, T.Normalize):
            mean, std = tuple(step.mean), tuple(step.std)
        elif name in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "_convert_to_rgb") or (
                callable(step) and getattr(step, "__name__", "") == "_convert_to_rgb"):
            continue  # RGB conversion and [0, 1] scaling are part of what this module does
        else:
            return None
    if None in (resize, crop, mean, std):
        return None
    return Transform(resize, crop, mean, std)


class DevicePreprocessor:
    """Bytes of plain JPEGs in, normalised (n, 3, S, S) tensors on ``device`` out."""

    def __init__(self, transform: Transform, device: torch.device):
        self.t = transform
        self.device = device
        self.mean = torch.tensor(transform.mean, device=device).view(3, 1, 1) * 255.0
        self.std = torch.tensor(transform.std, device=device).view(3, 1, 1) * 255.0

    def decode(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        """uint8 (3, H, W) per file on the device; None where nvJPEG refused the file."""
        return NvjpegDecoder(self.device).decode(datas)

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> normalised float (3, S, S), as open_clip's transform would."""
        import torchvision.transforms.v2.functional as F
        from torchvision.transforms import InterpolationMode

        x = pixels.float()
        x = F.resize(x, [self.t.resize], interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = F.center_crop(x, [self.t.crop, self.t.crop])
        # Pillow's bicubic works on uint8 and so clamps its overshoot; match it
        return (x.clamp_(0.0, 255.0) - self.mean) / self.std
