"""Augmented views of an image for the minority class (the seed's author proposed it): random
resized crop, horizontal flip, colour jitter -- deterministic per (image, view) so the cached
embedding of view j of an image is always the embedding of the same picture."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from .encoder import Encoder
from .images import decode_image

_AUGMENT = transforms.Compose([
    transforms.RandomResizedCrop(256, scale=(0.6, 1.0), ratio=(0.75, 1.33)),
    transforms.RandomHorizontalFlip(),
    transforms.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.03),
])


def augmented_view(img: Image.Image, seed: int) -> Image.Image:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _AUGMENT(img)


def view_seed(sha256: str, view: int) -> int:
    return (int(sha256[:12], 16) + 7919 * view) % (2 ** 31)


def embed_views(encoder: Encoder, items: list[tuple[int, str, bytes]], views: int,
                batch_size: int = 32) -> dict[tuple[int, int], np.ndarray]:
    """{(image_id, view): embedding} for views 1..``views`` of each (image_id, sha256, bytes)."""
    out: dict = {}
    keys, pixels = [], []

    def flush():
        if keys:
            for k, v in zip(keys, encoder.encode_batch(torch.stack(pixels))):
                out[k] = v
            keys.clear()
            pixels.clear()

    for iid, sha, data in items:
        img = decode_image(data, target=encoder.image_size)
        for j in range(1, views + 1):
            keys.append((iid, j))
            pixels.append(encoder.preprocess(augmented_view(img, view_seed(sha, j))))
            if len(keys) == batch_size:
                flush()
    flush()
    return out
