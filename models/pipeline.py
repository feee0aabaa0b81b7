"""Keys in, embeddings out: read + decode + preprocess in a thread pool while the model runs.

Pillow and libjpeg release the GIL while decoding and torch releases it inside its kernels, so a
handful of threads keep the encoder fed. A bounded look-ahead window keeps memory flat however
many images pass through.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable

import numpy as np
import torch

from .encoder import Encoder
from .images import ImageDecodeError, decode_image


@dataclass
class Embedded:
    vectors: dict = field(default_factory=dict)   # key -> (d,) float32 unit vector
    sizes: dict = field(default_factory=dict)     # key -> (width, height) as decoded
    errors: dict = field(default_factory=dict)    # key -> one-line reason


def embed_keys(
    encoder: Encoder,
    keys: Iterable[Hashable],
    load: Callable[[Hashable], bytes],
    *,
    batch_size: int = 32,
    threads: int = 4,
    max_pixels: int = 100_000_000,
    on_progress: Callable[[int], None] | None = None,
) -> Embedded:
    """Embed the images ``load(key)`` returns; failures land in ``errors`` and never stop the rest."""
    out = Embedded()

    def prepare(key):
        try:
            img = decode_image(load(key), max_pixels=max_pixels, target=encoder.image_size)
            return key, encoder.preprocess(img), img.size, None
        except ImageDecodeError as exc:
            return key, None, None, str(exc)
        except OSError as exc:  # the blob itself could not be read
            return key, None, None, f"could not read stored image: {exc}"

    def flush(batch_keys, batch_pixels):
        if not batch_keys:
            return
        vecs = encoder.encode_batch(torch.stack(batch_pixels))
        for k, v in zip(batch_keys, vecs):
            out.vectors[k] = v
        if on_progress:
            on_progress(len(batch_keys))

    window = max(2 * batch_size, threads * 2)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verge-decode") as pool:
        pending: deque = deque()
        batch_keys: list = []
        batch_pixels: list = []
        it = iter(keys)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                try:
                    pending.append(pool.submit(prepare, next(it)))
                except StopIteration:
                    exhausted = True
            if not pending:
                break
            key, pixels, size, error = pending.popleft().result()
            if error is not None:
                out.errors[key] = error
                if on_progress:
                    on_progress(1)
                continue
            out.sizes[key] = size
            batch_keys.append(key)
            batch_pixels.append(pixels)
            if len(batch_keys) == batch_size:
                flush(batch_keys, batch_pixels)
                batch_keys, batch_pixels = [], []
        flush(batch_keys, batch_pixels)
    return out


def stack(vectors: Iterable[np.ndarray], dim: int) -> np.ndarray:
    vectors = list(vectors)
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
