"""Keys in, embeddings out: read + decode + preprocess in a thread pool while the model runs.

Pillow and libjpeg release the GIL while decoding and torch releases it inside its kernels, so a
handful of threads keep the encoder fed. A bounded look-ahead window keeps memory flat however
many images pass through. The pool lives as long as the process: a chunk's first batch does not
wait for threads to start.

On a CUDA worker (``device_decode``, VERGE_GPU_DECODE) the resize and normalisation move to the
device, and with ``nvjpeg`` the threads only read bytes and headers: plain JPEGs are decoded on
the device in one batched call per forward pass (``models.device_decode``), the rest by Pillow.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable

import numpy as np
import torch

from .device_decode import device_decodable
from .encoder import Encoder
from .images import ImageDecodeError, decode_image, display_size, open_checked

_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's decode pool of this size (created on first use, after any fork)."""
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verge-decode")
    return _pools[threads]


@dataclass
class Embedded:
    vectors: dict = field(default_factory=dict)   # key -> (d,) float32 unit vector
    sizes: dict = field(default_factory=dict)     # key -> (width, height), full size as shown
    errors: dict = field(default_factory=dict)    # key -> one-line reason


# Where a CUDA worker decodes and preprocesses (VERGE_GPU_DECODE):
NVJPEG = "nvjpeg"   # plain JPEGs decoded by nvJPEG; every image resized/normalised on the device
RESIZE = "resize"   # Pillow decodes (with draft) on the CPU; resize/normalise on the device
OFF = "off"         # everything on the CPU, as on a CPU worker
GPU_DECODE_MODES = (NVJPEG, RESIZE, OFF)


class _Decoded:
    """A CPU-decoded image waiting for the device: uint8 (3, H, W)."""
    __slots__ = ("pixels",)

    def __init__(self, pixels: torch.Tensor):
        self.pixels = pixels


def embed_keys(
    encoder: Encoder,
    keys: Iterable[Hashable],
    load: Callable[[Hashable], bytes],
    *,
    batch_size: int = 32,
    threads: int = 4,
    max_pixels: int = 100_000_000,
    on_progress: Callable[[int], None] | None = None,
    device_decode: str = OFF,
) -> Embedded:
    """Embed the images ``load(key)`` returns; failures land in ``errors`` and never stop the rest.

    ``device_decode`` is one of GPU_DECODE_MODES; anything but ``off`` needs a model transform
    that ``models.device_decode`` reproduces (else it falls back to ``off``)."""
    if device_decode not in GPU_DECODE_MODES:
        raise ValueError(f"device_decode must be one of {GPU_DECODE_MODES}, not {device_decode!r}")
    out = Embedded()
    on_device = encoder.device_preprocessor if device_decode != OFF else None
    use_nvjpeg = on_device is not None and device_decode == NVJPEG

    def decode_on_cpu(data):
        """(pixels, size): preprocessed (3, S, S) float, or uint8 for the device to finish."""
        img = decode_image(data, max_pixels=max_pixels, target=encoder.image_size)
        size = display_size(open_checked(data, max_pixels))
        if on_device is None:
            return encoder.preprocess(img), size
        return _Decoded(torch.from_numpy(np.array(img)).permute(2, 0, 1)), size

    def prepare(key):
        """(key, pixels | _Decoded | JPEG bytes, size, error) -- run in the pool."""
        try:
            data = load(key)
            if use_nvjpeg:
                header = open_checked(data, max_pixels)
                if device_decodable(header, data):
                    return key, data, display_size(header), None
            return (key, *decode_on_cpu(data), None)
        except ImageDecodeError as exc:
            return key, None, None, str(exc)
        except OSError as exc:  # the blob itself could not be read
            return key, None, None, f"could not read stored image: {exc}"

    def on_device_pixels(batch):
        """Finish the batch on the device: JPEG bytes decoded by nvJPEG in one call, then every
        image resized, cropped and normalised there."""
        jpegs = [i for i, (_, item) in enumerate(batch) if isinstance(item, bytes)]
        decoded = dict(zip(jpegs, on_device.decode([batch[i][1] for i in jpegs]))) if jpegs else {}
        kept, pixels = [], []
        for i, (key, item) in enumerate(batch):
            if i in decoded:
                if decoded[i] is None:  # nvJPEG refused it: Pillow decodes it or says why
                    try:
                        item, out.sizes[key] = decode_on_cpu(item)
                    except ImageDecodeError as exc:
                        out.errors[key] = str(exc)
                        out.sizes.pop(key, None)
                        continue
                else:
                    item = _Decoded(decoded[i])
            kept.append(key)
            pixels.append(on_device.prepare(item.pixels.to(encoder.device, non_blocking=True)))
        return kept, pixels

    def flush(batch):
        if not batch:
            return
        if on_device is not None:
            batch_keys, batch_pixels = on_device_pixels(batch)
        else:
            batch_keys, batch_pixels = [k for k, _ in batch], [p for _, p in batch]
        if batch_keys:
            vecs = encoder.encode_batch(torch.stack(batch_pixels))
            for k, v in zip(batch_keys, vecs):
                out.vectors[k] = v
        if on_progress:
            on_progress(len(batch))

    window = max(2 * batch_size, threads * 2)
    min_batch = max(1, batch_size // 8)
    pool = _pool(threads)
    pending: deque = deque()
    batch: list = []
    it = iter(keys)
    exhausted = False
    try:
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
            batch.append((key, pixels))
            # Full batches, except that the model never idles waiting for decodes while it
            # holds a few images (a chunk's first batch): on a CPU a small batch costs no more
            # per image, and on a GPU an idle model is the bigger waste.
            if len(batch) == batch_size or (len(batch) >= min_batch and pending and not pending[0].done()):
                flush(batch)
                batch = []
        flush(batch)
    finally:
        for f in pending:  # an exception above: don't leave decodes running for nobody
            f.cancel()
    return out


def stack(vectors: Iterable[np.ndarray], dim: int) -> np.ndarray:
    vectors = list(vectors)
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
