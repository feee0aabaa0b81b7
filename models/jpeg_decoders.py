"""Batched JPEG decoders for a CUDA worker (VERGE_GPU_DECODE): bytes in, uint8 (3, H, W) tensors
on the device out, one call per forward pass.

- ``nvjpeg``: torchvision's ``decode_jpeg`` on the device. Its batched call uses the GPU's
  hardware JPEG engine for baseline files only; a progressive file goes through a hybrid path
  serialised within the process, slower than Pillow's threads, so progressive files stay with
  Pillow.
- ``dali``: NVIDIA DALI's ``mixed`` image decoder (``pip install 'verge[gpu]'``). Huffman
  decoding of progressive files runs on DALI's own CPU threads, the rest on the GPU, and baseline
  files go to the hardware engine: every plain JPEG takes this path, progressive ones included.
- ``nvimgcodec``: NVIDIA nvImageCodec's batched decoder (the library DALI decodes with), called
  directly; also every plain JPEG.

Which files a decoder is handed is decided from the header (``takes``); a file it refuses comes
back as None and goes to Pillow, so every reason a file can fail is still written by
``models.images.decode_image``. DALI also runs on the CPU (``device="cpu"`` here), which is how
the tests check its output against Pillow's on a machine without a GPU.
"""
from __future__ import annotations

import importlib.util
import logging
import threading

import numpy as np
import torch
from PIL import Image

log = logging.getLogger("verge.decode")

# EXIF orientation tag; anything but 1 (or absent) needs a rotation the device path doesn't do
_ORIENTATION = 0x0112
_PLAIN_MODES = ("RGB", "L")

NVJPEG = "nvjpeg"
DALI = "dali"
NVIMGCODEC = "nvimgcodec"

# the Python package each library-backed decoder needs, and how to get it
_PACKAGES = {DALI: ("nvidia.dali", "NVIDIA DALI"), NVIMGCODEC: ("nvidia.nvimgcodec", "NVIDIA nvImageCodec")}


class DecoderUnavailable(RuntimeError):
    """The library a VERGE_GPU_DECODE mode needs is not installed; ``str()`` says how to get it."""


def missing_library(mode: str) -> str | None:
    """Why ``mode`` cannot run in this environment (its library is not installed), or None.
    Cheap: looks the package up without importing it (a worker's parent must not load CUDA)."""
    if mode not in _PACKAGES:
        return None
    module, name = _PACKAGES[mode]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the ``nvidia`` namespace itself is absent
        found = False
    if found:
        return None
    return (f"VERGE_GPU_DECODE={mode} needs {name}, which is not installed: "
            f"pip install 'verge[gpu]' (or use nvjpeg, resize or off)")


def device_decodable(img: Image.Image, data: bytes, progressive: bool = False) -> bool:
    """Whether a device decoder takes this file: a complete, single-frame RGB or greyscale JPEG
    that needs no EXIF rotation. ``img`` is the lazy header ``open_checked`` returned for
    ``data``. ``progressive``: the decoder handles progressive JPEGs at speed (DALI,
    nvImageCodec; not torchvision's nvJPEG)."""
    if img.format != "JPEG" or img.mode not in _PLAIN_MODES:
        return False
    if getattr(img, "n_frames", 1) != 1:  # MPO (multi-picture) files: the first frame only on CPU
        return False
    if not progressive and (img.info.get("progressive") or img.info.get("progression")):
        # nvJPEG's hardware engine takes baseline JPEGs only; a progressive one goes through
        # its hybrid path, serialised per process, which is slower than Pillow in the decode
        # threads (measured: bench/README.md, "GPU")
        return False
    if img.getexif().get(_ORIENTATION, 1) != 1:
        return False
    # a complete JPEG ends with EOI (FF D9), sometimes followed by padding
    return data.rstrip(b"\0")[-2:] == b"\xff\xd9"


def _to_chw(hwc: torch.Tensor) -> torch.Tensor:
    return hwc.permute(2, 0, 1)


class NvjpegDecoder:
    """torchvision's nvJPEG binding: baseline files only (see the module docstring)."""

    progressive = False

    def __init__(self, device: torch.device):
        self.device = device

    def takes(self, header: Image.Image, data: bytes) -> bool:
        return device_decodable(header, data)

    def decode(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        from torchvision.io import ImageReadMode, decode_jpeg

        raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        try:
            return list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            # one bad file fails the whole batched call: retry one by one to find it
            out = []
            for r in raw:
                try:
                    out.append(decode_jpeg(r, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out


class DaliDecoder:
    """One DALI pipeline per process: external bytes -> ``fn.decoders.image`` (``mixed`` on
    CUDA, ``cpu`` otherwise) -> RGB HWC uint8, handed to torch on the same device."""

    progressive = True

    def __init__(self, device: torch.device, threads: int = 4, max_batch: int = 256):
        if (why := missing_library(DALI)) is not None:
            raise DecoderUnavailable(why)
        self.device = device
        self.threads = max(1, threads)
        self.max_batch = max(1, max_batch)
        self._pipe = None
        self._lock = threading.Lock()  # feed_input + run must not interleave between threads

    def takes(self, header: Image.Image, data: bytes) -> bool:
        return device_decodable(header, data, progressive=True)

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        on_gpu = self.device.type == "cuda"
        device_id = (self.device.index if self.device.index is not None
                     else torch.cuda.current_device()) if on_gpu else None

        # synchronous and unpipelined: every run() decodes exactly the batch fed just before it
        @pipeline_def(batch_size=self.max_batch, num_threads=self.threads, device_id=device_id,
                      exec_pipelined=False, exec_async=False, prefetch_queue_depth=1)
        def jpegs():
            data = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            return fn.decoders.image(data, device="mixed" if on_gpu else "cpu",
                                     output_type=types.RGB)

        pipe = jpegs()
        pipe.build()
        return pipe

    def _run(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        if self._pipe is None:
            self._pipe = self._build()
        self._pipe.feed_input("jpegs", arrays)
        (images,) = self._pipe.run()
        from nvidia.dali.plugin.pytorch import feed_ndarray

        # the same copy on both backends (the CPU one is what the tests run): into torch's own
        # memory, on torch's stream, because DALI reuses its output buffers on the next run
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        out = []
        for i in range(len(arrays)):
            t = images[i]
            dst = torch.empty(t.shape(), dtype=torch.uint8, device=self.device)
            feed_ndarray(t, dst, cuda_stream=stream)
            out.append(_to_chw(dst))
        return out

    def decode(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        with self._lock:
            return self._decode(datas)

    def _decode(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        arrays = [np.frombuffer(d, dtype=np.uint8) for d in datas]
        out: list[torch.Tensor | None] = []
        for i in range(0, len(arrays), self.max_batch):
            group = arrays[i:i + self.max_batch]
            try:
                out.extend(self._run(group))
            except Exception as exc:
                # one file DALI cannot decode fails the whole run: a fresh pipeline (the failed
                # one's state is unknown) and one file per run to find it
                log.debug("DALI refused a group of %d files (%s); retrying one by one",
                          len(group), str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                self._pipe = None
                for a in group:
                    try:
                        out.extend(self._run([a]))
                    except Exception:
                        self._pipe = None
                        out.append(None)
        return out


class NvimgcodecDecoder:
    """nvImageCodec's batched decoder on the device: every plain JPEG, progressive included.
    It needs a CUDA device even for its CPU backends, so it only runs on a CUDA worker."""

    progressive = True

    def __init__(self, device: torch.device, threads: int = 4):
        if (why := missing_library(NVIMGCODEC)) is not None:
            raise DecoderUnavailable(why)
        if device.type != "cuda":
            raise DecoderUnavailable("VERGE_GPU_DECODE=nvimgcodec needs a CUDA device")
        from nvidia import nvimgcodec

        self.device = device
        self._nvimgcodec = nvimgcodec
        index = device.index if device.index is not None else torch.cuda.current_device()
        self._decoder = nvimgcodec.Decoder(device_id=index, max_num_cpu_threads=max(1, threads))
        # interleaved 8-bit sRGB (H, W, 3), EXIF orientation applied (takes() sends none rotated)
        self._params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.SRGB,
                                               sample_format=nvimgcodec.SampleFormat.I_RGB,
                                               allow_any_depth=False)

    def takes(self, header: Image.Image, data: bytes) -> bool:
        return device_decodable(header, data, progressive=True)

    def _stream(self, data: bytes):
        try:
            return self._nvimgcodec.CodeStream(data)
        except Exception:  # a header it cannot parse: Pillow decodes the file or says why
            return None

    def decode(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        streams = [self._stream(d) for d in datas]
        ok = [i for i, s in enumerate(streams) if s is not None]
        images: list = [None] * len(datas)
        try:
            for i, im in zip(ok, self._decoder.decode([streams[i] for i in ok], params=self._params)):
                images[i] = im
        except Exception:
            for i in ok:
                try:
                    images[i] = self._decoder.decode(streams[i], params=self._params)
                except Exception:
                    images[i] = None
        # None for a file it could not decode; the rest are (H, W, 3) on the device, read through
        # __cuda_array_interface__ (which carries the decode's stream for torch to wait on)
        return [None if im is None else _to_chw(torch.as_tensor(im, device=self.device))
                for im in images]


def jpeg_decoder(mode: str, device: torch.device, threads: int = 4, max_batch: int = 256):
    """The batched decoder for a VERGE_GPU_DECODE mode that decodes JPEGs on the device."""
    if mode == NVJPEG:
        return NvjpegDecoder(device)
    if mode == DALI:
        return DaliDecoder(device, threads, max_batch)
    if mode == NVIMGCODEC:
        return NvimgcodecDecoder(device, threads)
    raise ValueError(f"no JPEG decoder for mode {mode!r}")
