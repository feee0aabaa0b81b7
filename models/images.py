"""Bytes -> an RGB PIL image ready for the encoder, or a one-line reason why not.

Everything people upload passes through ``decode_image``: EXIF orientation applied, alpha and
palettes flattened on white, 16-bit and CMYK converted, animations reduced to their first frame,
and oversized images refused from their header before a single pixel is decoded.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/AVIF only where the optional plugin is installed; otherwise a clear reason
    import pillow_heif  # type: ignore

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - depends on the deployment
    pass

# We enforce our own limit (max_pixels) with a clear message; PIL's global guard would raise
# its own error type at a different threshold.
Image.MAX_IMAGE_PIXELS = None


class ImageDecodeError(ValueError):
    """The bytes are not an image verge can score; ``str(err)`` is the one-line reason."""


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "HTML document, not an image"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIC/AVIF image, unsupported here (install pillow-heif to accept it)"
    if data[:4] == b"%PDF":
        return "PDF document, not an image"
    try:
        data[:512].decode("utf-8")
        return "text file, not an image"
    except UnicodeDecodeError:
        return "unrecognised file format, not an image"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32 if img.mode == "I" else np.uint16)
        top = 65535 if img.mode != "I" or arr.max() > 255 else 255
        arr8 = (arr.astype(np.float32) * (255.0 / top)).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        span = float(arr.max() - arr.min()) or 1.0
        return Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def open_checked(data: bytes, max_pixels: int = 100_000_000) -> Image.Image:
    """Read only the header: a lazy image whose format is known and whose size is within the
    limit, or ImageDecodeError with the reason. No pixel is decoded yet."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError(_sniff(data)) from None
    except Exception as exc:
        raise ImageDecodeError(f"unreadable image header: {_one_line(exc)}") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels} "
            f"(VERGE_MAX_IMAGE_PIXELS)")
    return img


def display_size(header: Image.Image) -> tuple[int, int]:
    """(width, height) as the image is shown: full resolution, EXIF rotation applied. A decoded
    image can be smaller (JPEG draft), so sizes are recorded from the header."""
    width, height = header.size
    try:
        rotated = header.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # a broken EXIF block: the decoder ignores it too
        rotated = False
    return (height, width) if rotated else (width, height)


def decode_image(data: bytes, max_pixels: int = 100_000_000, target: int | None = None) -> Image.Image:
    """Decode ``data`` into an RGB image.

    ``target`` is the model's input size: large JPEGs are decoded at a reduced scale (libjpeg's
    DCT scaling via ``draft``) that still covers it, which is several times faster than decoding
    every pixel only to throw most away.
    """
    img = open_checked(data, max_pixels)
    width, height = img.size
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animations: the first frame stands for the file
        if target and img.format == "JPEG" and min(width, height) > 2 * target:
            img.draft("RGB", (target * 2, target * 2))  # scale stays >= 2x the model's input
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette/EXIF chatter; failures still raise
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
    except ImageDecodeError:
        raise
    except OSError as exc:
        msg = _one_line(exc)
        if "truncated" in msg or "broken data stream" in msg or "premature end" in msg.lower():
            raise ImageDecodeError(f"truncated or corrupt image data ({msg})") from None
        raise ImageDecodeError(f"corrupt {img.format or 'image'} data ({msg})") from None
    except Exception as exc:  # any decoder failure is a property of the file, not of the worker
        raise ImageDecodeError(f"could not decode {img.format or 'image'}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
