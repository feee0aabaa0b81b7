"""Keys in, embeddings out: read + decode + preprocess in a thread pool while the model runs.

Pillow and libjpeg release the GIL while decoding and torch releases it inside its kernels, so a
handful of threads keep the encoder fed. A bounded look-ahead window keeps memory flat however
many images pass through. The pool lives as long as the process: a chunk's first batch does not
wait for threads to start.

On a CUDA worker (``device_decode``, VERGE_GPU_DECODE) the resize and normalisation move to the
device, and with ``nvjpeg``, ``dali`` or ``nvimgcodec`` the threads only read bytes and headers:
plain JPEGs are decoded on the device in batched calls (``models.jpeg_decoders``), the rest by
Pillow. Device memory stays bounded: JPEGs are decoded ``DECODE_GROUP`` at a time and each
full-resolution decode is dropped as soon as it is resized; Pillow's images go up in one copy
per batch from one pinned, contiguous buffer.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable

import numpy as np
import torch

from .encoder import Encoder
from .images import ImageDecodeError, decode_image, display_size, open_checked
from .jpeg_decoders import DALI, NVIMGCODEC, NVJPEG, jpeg_decoder

_pools: dict[int, ThreadPoolExecutor] = {}
_decoders: dict = {}

# JPEGs decoded on the device per call: bounds the full-resolution images alive at once (a 12 MP
# photo is 36 MB as uint8) whatever the batch size, and is still a batch the hardware engine likes
DECODE_GROUP = 32


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


# Where a CUDA worker decodes and preprocesses (VERGE_GPU_DECODE). NVJPEG: baseline JPEGs
# decoded by torchvision's nvJPEG; DALI / NVIMGCODEC: every plain JPEG, progressive ones too,
# decoded by that library (the `gpu` extra); with all three every image is resized and
# normalised on the device.
RESIZE = "resize"   # Pillow decodes (with draft) on the CPU; resize/normalise on the device
OFF = "off"         # everything on the CPU, as on a CPU worker
GPU_DECODE_MODES = (NVJPEG, DALI, NVIMGCODEC, RESIZE, OFF)
JPEG_ON_DEVICE = (NVJPEG, DALI, NVIMGCODEC)


class _Decoded:
    """A CPU-decoded image waiting for the device: uint8 (H, W, 3), contiguous."""
    __slots__ = ("pixels",)

    def __init__(self, pixels: torch.Tensor):
        self.pixels = pixels


def _decoder_for(mode: str, device: torch.device, threads: int):
    """The process's JPEG decoder for this mode and device (a DALI pipeline is built once)."""
    key = (mode, str(device), threads)
    if key not in _decoders:
        _decoders[key] = jpeg_decoder(mode, device, threads, DECODE_GROUP)
    return _decoders[key]


def warm_up_decoder(encoder: Encoder, mode: str, threads: int) -> None:
    """On CUDA, build the process's device JPEG decoder (a DALI pipeline, nvImageCodec's
    handles) and decode one small JPEG, so the first chunk does not pay for it."""
    if encoder.device.type != "cuda" or mode not in JPEG_ON_DEVICE or encoder.device_preprocessor is None:
        return
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "JPEG")
    _decoder_for(mode, encoder.device, threads).decode([buf.getvalue()])


def upload(images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """CPU uint8 (H, W, 3) images -> (3, H, W) views on ``device``: packed into one contiguous
    buffer (pinned on CUDA, from torch's caching host allocator) and copied in one transfer,
    instead of one synchronous pageable copy per image."""
    if not images:
        return []
    sizes = [t.numel() for t in images]
    flat = torch.empty(sum(sizes), dtype=torch.uint8, pin_memory=device.type == "cuda")
    torch.cat([t.reshape(-1) for t in images], out=flat)
    on_device = flat.to(device, non_blocking=True)
    return [part.view(t.shape).permute(2, 0, 1) for part, t in zip(on_device.split(sizes), images)]


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
    decoder = (_decoder_for(device_decode, encoder.device, threads)
               if on_device is not None and device_decode in JPEG_ON_DEVICE else None)

    def decode_on_cpu(data):
        """(pixels, size): preprocessed (3, S, S) float, or uint8 for the device to finish."""
        img = decode_image(data, max_pixels=max_pixels, target=encoder.image_size)
        size = display_size(open_checked(data, max_pixels))
        if on_device is None:
            return encoder.preprocess(img), size
        return _Decoded(torch.from_numpy(np.array(img))), size

    def prepare(key):
        """(key, pixels | _Decoded | JPEG bytes, size, error) -- run in the pool."""
        try:
            data = load(key)
            if decoder is not None:
                header = open_checked(data, max_pixels)
                if decoder.takes(header, data):
                    return key, data, display_size(header), None
            return (key, *decode_on_cpu(data), None)
        except ImageDecodeError as exc:
            return key, None, None, str(exc)
        except OSError as exc:  # the blob itself could not be read
            return key, None, None, f"could not read stored image: {exc}"

    def on_device_pixels(batch):
        """Finish the batch on the device: JPEG bytes decoded there DECODE_GROUP at a time, each
        full-resolution image resized, cropped and normalised -- and dropped -- at once; then
        the CPU-decoded images, uploaded together."""
        prepared: dict[int, torch.Tensor] = {}
        jpegs = [i for i, (_, item) in enumerate(batch) if isinstance(item, bytes)]
        refused = []
        for g in range(0, len(jpegs), DECODE_GROUP):
            group = jpegs[g:g + DECODE_GROUP]
            decoded = decoder.decode([batch[i][1] for i in group])
            for j, i in enumerate(group):
                full, decoded[j] = decoded[j], None  # the list must not keep it alive either
                if full is None:
                    refused.append(i)
                else:
                    prepared[i] = on_device.prepare(full)
                del full
            del decoded
        for i in refused:  # the device decoder refused it: Pillow decodes it or says why
            key, data = batch[i]
            try:
                item, out.sizes[key] = decode_on_cpu(data)
                batch[i] = (key, item)
            except ImageDecodeError as exc:
                out.errors[key] = str(exc)
                out.sizes.pop(key, None)
        on_cpu = [i for i, (_, item) in enumerate(batch) if isinstance(item, _Decoded)]
        for i, pixels in zip(on_cpu, upload([batch[i][1].pixels for i in on_cpu], encoder.device)):
            prepared[i] = on_device.prepare(pixels)
        kept = [i for i in range(len(batch)) if i in prepared]
        return [batch[i][0] for i in kept], [prepared[i] for i in kept]

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


def intra_op_threads(requested: int, processes: int, cores: int | None = None) -> int:
    """Torch intra-op threads for one of ``processes`` pool processes sharing this machine:
    ``requested`` when set, else an equal share of the cores (at least 1)."""
    if requested > 0:
        return requested
    return max(1, (cores or os.cpu_count() or 1) // max(1, processes))


def set_intra_op_threads(requested: int, processes: int) -> int:
    """Apply ``intra_op_threads`` to this process (a freshly forked pool process: torch's pool
    would otherwise start one thread per core in each of them). Returns the count in force."""
    torch.set_num_threads(intra_op_threads(requested, processes))
    return torch.get_num_threads()
