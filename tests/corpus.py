"""Builders for test images: realistic good ones and a corpus of bad input, made on the fly."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fields-roads"


def jpeg_bytes(seed: int, size=(96, 72), **save) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85, **save)
    return buf.getvalue()


def png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width=20000, height=20000) -> bytes:
    """A PNG whose header claims width x height pixels (of 1-bit grey); the pixel data is a few
    kilobytes of zlib -- exactly what a decompression bomb looks like to a decoder."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """A 120x60 landscape JPEG whose EXIF says 'rotate 90°': decoded it must be 60x120."""
    img = Image.new("RGB", (120, 60), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def good_corpus() -> dict[str, bytes]:
    """Unusual but valid images: each must decode to RGB and be scored."""
    out = {}
    out["cmyk.jpg"] = (lambda b: (Image.new("CMYK", (80, 60), (10, 200, 30, 5)).save(b, "JPEG"), b.getvalue())[1])(io.BytesIO())
    out["gray16.png"] = png_bytes(Image.fromarray((np.arange(80 * 60, dtype=np.uint16).reshape(60, 80) * 13)))
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (10, 10, 40, 40))
    out["palette-transparent.png"] = png_bytes(pal, transparency=0)
    out["alpha.png"] = png_bytes(Image.new("RGBA", (50, 70), (0, 128, 255, 100)))
    out["exif-rotated.jpg"] = exif_rotated_jpeg()
    out["tiny-1x1.png"] = png_bytes(Image.new("RGB", (1, 1), (1, 2, 3)))
    frames = [Image.new("P", (40, 40), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out["animated.gif"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 90, 0)).save(buf, "WEBP")
    out["pic.webp"] = buf.getvalue()
    return out


def bad_corpus() -> dict[str, bytes]:
    """Files that must end as failed with a one-line reason, never crash a worker."""
    full = jpeg_bytes(1, (400, 300))
    png = png_bytes(Image.new("RGB", (300, 200), (5, 5, 5)))
    return {
        "zero.jpg": b"",
        "truncated.jpg": full[: len(full) // 2],
        "truncated.png": png[: len(png) // 2],
        "random.jpg": np.random.default_rng(3).integers(0, 255, 5000, dtype=np.uint8).tobytes(),
        "page.jpg": b"<!DOCTYPE html><html><body>not a photo</body></html>",
        "notes.txt": b"just some notes\n",
        "bomb.png": bomb_png(),
    }


def varied_photo_copies(folder: Path, n: int, size: int = 96, source: Path = SHARED_PHOTOS) -> list[Path]:
    """``n`` distinct JPEGs made from the shared photos (downscaled to ``size`` px, one pixel
    changed per copy: identical files would be deduplicated). Falls back to generated noise
    pictures when the photos are absent."""
    folder.mkdir(parents=True, exist_ok=True)
    bases = []
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                with Image.open(p) as im:
                    im.draft("RGB", (size * 2, size * 2))
                    bases.append(im.convert("RGB").resize((size, size * 3 // 4)))
    if not bases:
        rng = np.random.default_rng(0)
        bases = [Image.fromarray(rng.integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8))
                 for _ in range(20)]
    out = []
    for i in range(n):
        img = bases[i % len(bases)].copy()
        k = i // len(bases)
        img.putpixel((k % size, (k // size) % (size * 3 // 4)), (k % 256, (k * 7) % 256, (k * 13) % 256))
        path = folder / f"copy-{i:05d}.jpg"
        img.save(path, quality=90)
        out.append(path)
    return out
